//! Video, camera and image-folder sources and sinks: the frame shape is
//! read from the file (or the device) here, so every later check knows it.

use serde_saphyr::Spanned;
use streamfuse_kernels::Shape;

use super::super::raw::{
    RawCameraSource, RawImagesSink, RawImagesSource, RawVideoSink, RawVideoSource,
};
use super::{Ctx, Overrides, SinkConfig, SourceConfig, SpecError};
use crate::media::video::{self, CameraInput, ImagesInput, ImagesOutput, VideoInput, VideoOutput};

/// Frame rate of a video sink when neither the spec nor the source gives one.
const DEFAULT_FPS: f64 = 30.0;

/// Refuses what needs OpenCV in a build without it, at the form's field.
fn need_opencv<T>(cx: &Ctx<'_>, at: &Spanned<T>, field: &str) -> Result<(), SpecError> {
    if video::AVAILABLE {
        Ok(())
    } else {
        Err(cx.at(
            at,
            field,
            "this streamfuse was built without OpenCV (cargo feature `opencv`); rebuild with `cargo build --release --features opencv` (needs OpenCV 4 and libclang: scripts/install-deps.sh)",
        ))
    }
}

fn no_size(form: &str) -> Result<(), SpecError> {
    Err(SpecError::Override {
        flag: "--size",
        message: format!("does not apply to a {form} source: its frames have the input's size"),
    })
}

pub(super) fn video_source(
    cx: &Ctx<'_>,
    v: RawVideoSource,
    ov: &Overrides,
) -> Result<SourceConfig, SpecError> {
    need_opencv(cx, &v.path, "source.video.path")?;
    if ov.size.is_some() {
        no_size("video")?;
    }
    if let Some(f) = v.frames.as_ref().filter(|f| f.value == 0) {
        return Err(cx.at(f, "source.video.frames", "must be at least 1"));
    }
    let path = cx.base_dir().join(&v.path.value);
    let (shape, count, fps) = video::probe_video(&path)
        .map_err(|e| cx.at(&v.path, "source.video.path", e.to_string()))?;
    let frames = ov
        .frames
        .or(v.frames.as_ref().map(|f| f.value))
        .unwrap_or(count);
    Ok(SourceConfig::Video(VideoInput {
        path,
        shape,
        frames,
        fps,
    }))
}

pub(super) fn camera_source(
    cx: &Ctx<'_>,
    c: RawCameraSource,
    ov: &Overrides,
) -> Result<SourceConfig, SpecError> {
    need_opencv(cx, &c.index, "source.camera.index")?;
    if ov.size.is_some() {
        no_size("camera")?;
    }
    for (v, f) in [(&c.width, "width"), (&c.height, "height")] {
        if let Some(v) = v.as_ref().filter(|v| v.value == 0) {
            return Err(cx.at(v, format!("source.camera.{f}"), "must be at least 1"));
        }
    }
    let size = match (&c.width, &c.height) {
        (Some(w), Some(h)) => Some((w.value, h.value)),
        (None, None) => None,
        (Some(w), None) => {
            return Err(cx.at(
                w,
                "source.camera.height",
                "missing: give `width` and `height` together",
            ));
        }
        (None, Some(h)) => {
            return Err(cx.at(
                h,
                "source.camera.width",
                "missing: give `width` and `height` together",
            ));
        }
    };
    if c.frames.value == 0 {
        return Err(cx.at(&c.frames, "source.camera.frames", "must be at least 1"));
    }
    let shape = video::probe_camera(c.index.value, size)
        .map_err(|e| cx.at(&c.index, "source.camera.index", e.to_string()))?;
    Ok(SourceConfig::Camera(CameraInput {
        index: c.index.value,
        size,
        shape,
        frames: ov.frames.unwrap_or(c.frames.value),
    }))
}

pub(super) fn images_source(
    cx: &Ctx<'_>,
    i: RawImagesSource,
    ov: &Overrides,
) -> Result<SourceConfig, SpecError> {
    need_opencv(cx, &i.dir, "source.images.dir")?;
    if ov.size.is_some() {
        no_size("images")?;
    }
    if let Some(p) = &i.pattern
        && p.value.contains('/')
    {
        return Err(cx.at(p, "source.images.pattern", "a file-name pattern has no `/`"));
    }
    let dir = cx.base_dir().join(&i.dir.value);
    let files = video::image_files(&dir, i.pattern.as_ref().map(|p| p.value.as_str())).map_err(
        |e| match &i.pattern {
            Some(p) => cx.at(p, "source.images.pattern", e.to_string()),
            None => cx.at(&i.dir, "source.images.dir", e.to_string()),
        },
    )?;
    let shape = video::probe_image(&files[0])
        .map_err(|e| cx.at(&i.dir, "source.images.dir", e.to_string()))?;
    let available = files.len() as u64;
    let wanted = ov
        .frames
        .or(i.frames.as_ref().map(|f| f.value))
        .unwrap_or(available);
    if wanted > available {
        let msg = format!("{wanted} frames asked for, the folder holds {available} matching files");
        return Err(match &i.frames {
            Some(f) if ov.frames.is_none() => cx.at(f, "source.images.frames", msg),
            _ => cx.at(&i.dir, "source.images.dir", msg),
        });
    }
    Ok(SourceConfig::Images(ImagesInput {
        files,
        shape,
        frames: wanted,
    }))
}

/// The channels a video or image sink can write.
fn writable(
    cx: &Ctx<'_>,
    at: &Spanned<String>,
    field: &str,
    output: Shape,
) -> Result<(), SpecError> {
    if output.c == 1 || output.c == 3 {
        Ok(())
    } else {
        Err(cx.at(
            at,
            field,
            format!(
                "the pipeline's output {output} has {} channels; this sink writes 1 (gray) or 3 (BGR)",
                output.c
            ),
        ))
    }
}

fn scale(cx: &Ctx<'_>, s: Option<&Spanned<f64>>, field: &str) -> Result<f32, SpecError> {
    match s {
        None => Ok(255.0),
        Some(s) if s.value.is_finite() && s.value.abs() <= f64::from(f32::MAX) => {
            Ok(s.value as f32)
        }
        Some(s) => Err(cx.at(s, field, "must be a finite number")),
    }
}

pub(super) fn video_sink(
    cx: &Ctx<'_>,
    v: RawVideoSink,
    source: &SourceConfig,
    output: Shape,
) -> Result<SinkConfig, SpecError> {
    need_opencv(cx, &v.path, "sink.video.path")?;
    writable(cx, &v.path, "sink.video.path", output)?;
    let chars: Vec<char> = v.fourcc.value.chars().collect();
    let fourcc: [char; 4] = match chars.as_slice() {
        [a, b, c, d] if chars.iter().all(|c| c.is_ascii_graphic() || *c == ' ') => [*a, *b, *c, *d],
        _ => {
            return Err(cx.at(
                &v.fourcc,
                "sink.video.fourcc",
                format!(
                    "`{}` is not a four-character codec code (e.g. FFV1, MJPG, mp4v, XVID)",
                    v.fourcc.value
                ),
            ));
        }
    };
    let fps = match &v.fps {
        Some(f) if !(f.value.is_finite() && f.value > 0.0) => {
            return Err(cx.at(f, "sink.video.fps", "must be a positive number"));
        }
        Some(f) => f.value,
        None => match source {
            SourceConfig::Video(VideoInput { fps: Some(f), .. }) => *f,
            _ => DEFAULT_FPS,
        },
    };
    let path = cx.base_dir().join(&v.path.value);
    if path.is_dir() {
        return Err(cx.at(
            &v.path,
            "sink.video.path",
            format!("{} is a folder", path.display()),
        ));
    }
    Ok(SinkConfig::Video(VideoOutput {
        path,
        fourcc,
        fps,
        scale: scale(cx, v.scale.as_ref(), "sink.video.scale")?,
    }))
}

pub(super) fn images_sink(
    cx: &Ctx<'_>,
    i: RawImagesSink,
    output: Shape,
) -> Result<SinkConfig, SpecError> {
    need_opencv(cx, &i.dir, "sink.images.dir")?;
    writable(cx, &i.dir, "sink.images.dir", output)?;
    let dir = cx.base_dir().join(&i.dir.value);
    if dir.exists() && !dir.is_dir() {
        return Err(cx.at(
            &i.dir,
            "sink.images.dir",
            format!("{} is not a folder", dir.display()),
        ));
    }
    Ok(SinkConfig::Images(ImagesOutput {
        dir,
        scale: scale(cx, i.scale.as_ref(), "sink.images.scale")?,
    }))
}
