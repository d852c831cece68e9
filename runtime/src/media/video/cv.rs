//! The OpenCV side of [`super`]: `VideoCapture`, `VideoWriter`, `imread`,
//! `imwrite`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Once;

use opencv::core::{Mat, Scalar, Size, Vector};
use opencv::imgcodecs::{IMREAD_ANYCOLOR, imencode, imread, imwrite};
use opencv::prelude::*;
use opencv::videoio::{
    CAP_ANY, CAP_PROP_FPS, CAP_PROP_FRAME_COUNT, CAP_PROP_FRAME_HEIGHT, CAP_PROP_FRAME_WIDTH,
    CAP_V4L2, VideoCapture, VideoWriter,
};
use streamfuse_kernels::{Shape, Tensor};

use super::MediaOutput;
use super::{
    CameraInput, FrameIter, ImagesInput, ImagesOutput, MediaError, RESUMABLE_FOURCC, VideoInput,
    VideoOutput, chw_to_hwc_u8, err, hwc_u8_to_chw, stream_path,
};
use crate::frame::{Frame, now_ns};
use crate::media::avi::AviWriter;

/// OpenCV logs its own warnings (a file it cannot open, a missing camera)
/// on stderr; the errors here say the same in one line, so keep OpenCV to
/// errors unless `OPENCV_LOG_LEVEL` asks otherwise.
fn quiet() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("OPENCV_LOG_LEVEL").is_none() {
            let _ = opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_ERROR);
        }
    });
}

fn utf8(path: &Path) -> Result<&str, MediaError> {
    path.to_str().ok_or_else(|| {
        err(
            path.display(),
            None,
            "path is not UTF-8 (OpenCV needs UTF-8)",
        )
    })
}

/// The shape of a decoded 8-bit image, or why it cannot be a frame.
fn mat_shape(m: &Mat) -> Result<Shape, String> {
    if m.empty() {
        return Err("empty image".into());
    }
    if m.depth() != opencv::core::CV_8U {
        return Err(format!(
            "pixel depth {} is not 8-bit (OpenCV type {})",
            m.depth(),
            m.typ()
        ));
    }
    let c = m.channels() as usize;
    if c != 1 && c != 3 {
        return Err(format!("{c} channels; expected 1 (gray) or 3 (BGR)"));
    }
    Ok(Shape::new(c, m.rows() as usize, m.cols() as usize))
}

/// A decoded image as a frame tensor of `want`.
fn mat_to_tensor(m: &Mat, want: Shape) -> Result<Tensor, String> {
    let shape = mat_shape(m)?;
    if shape != want {
        return Err(format!(
            "shape {shape} ({}x{}, {} channels) differs from the first frame's {want}",
            shape.w, shape.h, shape.c
        ));
    }
    let owned;
    let m = if m.is_continuous() {
        m
    } else {
        owned = m.try_clone().map_err(|e| e.to_string())?;
        &owned
    };
    let bytes = m.data_bytes().map_err(|e| e.to_string())?;
    Tensor::from_vec(shape, hwc_u8_to_chw(bytes, shape)).map_err(|e| e.to_string())
}

/// Opens a video file for decoding.
fn open_capture(path: &Path) -> Result<VideoCapture, MediaError> {
    quiet();
    let what = path.display();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(err(&what, None, "not a file")),
        Err(e) => return Err(err(&what, None, format!("cannot open: {e}"))),
    }
    let cap = VideoCapture::from_file(utf8(path)?, CAP_ANY)
        .map_err(|e| err(&what, None, format!("cannot open as video: {e}")))?;
    if !cap.is_opened().unwrap_or(false) {
        return Err(err(
            &what,
            None,
            "OpenCV cannot decode it (not a video, or no decoder for its codec)",
        ));
    }
    Ok(cap)
}

/// Shape (of its first decoded frame), frame count (as the container
/// states it, else counted) and frame rate (when stated) of a video file.
///
/// # Errors
/// [`MediaError`] naming the file when it cannot be opened or decoded.
pub fn probe_video(path: &Path) -> Result<(Shape, u64, Option<f64>), MediaError> {
    let mut cap = open_capture(path)?;
    let what = path.display();
    let count = cap.get(CAP_PROP_FRAME_COUNT).unwrap_or(0.0);
    let fps = cap.get(CAP_PROP_FPS).unwrap_or(0.0);
    let mut m = Mat::default();
    let got = cap
        .read(&mut m)
        .map_err(|e| err(&what, Some(0), e.to_string()))?;
    if !got {
        return Err(err(&what, None, "holds no frame OpenCV can decode"));
    }
    let shape = mat_shape(&m).map_err(|msg| err(&what, Some(0), msg))?;
    let count = if count.is_finite() && count >= 1.0 {
        count as u64
    } else {
        // The container states no count: count the frames.
        let mut n = 1;
        while cap.grab().unwrap_or(false) {
            n += 1;
        }
        n
    };
    let fps = (fps.is_finite() && fps > 0.0).then_some(fps);
    Ok((shape, count, fps))
}

fn camera_name(index: u32) -> String {
    format!("camera {index} (/dev/video{index})")
}

fn open_camera_device(
    index: u32,
    size: Option<(usize, usize)>,
) -> Result<VideoCapture, MediaError> {
    quiet();
    let what = camera_name(index);
    let dev = PathBuf::from(format!("/dev/video{index}"));
    if !dev.exists() {
        return Err(err(
            &what,
            None,
            format!("no such device: {} does not exist", dev.display()),
        ));
    }
    let idx = i32::try_from(index).map_err(|_| err(&what, None, "index too large"))?;
    let mut cap = VideoCapture::new(idx, CAP_V4L2)
        .map_err(|e| err(&what, None, format!("cannot open: {e}")))?;
    if !cap.is_opened().unwrap_or(false) {
        return Err(err(
            &what,
            None,
            "cannot open with V4L2 (busy, not a capture device, or no permission)",
        ));
    }
    if let Some((w, h)) = size {
        // A driver may refuse a size or pick the nearest it has: what it
        // gives is what counts.
        let _ = cap.set(CAP_PROP_FRAME_WIDTH, w as f64);
        let _ = cap.set(CAP_PROP_FRAME_HEIGHT, h as f64);
        let gw = cap.get(CAP_PROP_FRAME_WIDTH).unwrap_or(0.0) as usize;
        let gh = cap.get(CAP_PROP_FRAME_HEIGHT).unwrap_or(0.0) as usize;
        if (gw, gh) != (w, h) {
            return Err(err(
                &what,
                None,
                format!(
                    "the device does not offer {w}x{h} (it gives {gw}x{gh}); set `width` and `height` to a size it has"
                ),
            ));
        }
    }
    Ok(cap)
}

/// The frame shape of camera `index`: `[3, height, width]` when both are
/// given (the device is not opened, so nodes without the camera can
/// resolve the spec), else from one frame captured from the device.
///
/// # Errors
/// [`MediaError`] naming the device when it is missing or yields no frame.
pub fn probe_camera(index: u32, size: Option<(usize, usize)>) -> Result<Shape, MediaError> {
    if let Some((w, h)) = size {
        return Ok(Shape::new(3, h, w));
    }
    let mut cap = open_camera_device(index, None)?;
    let mut m = Mat::default();
    let got = cap
        .read(&mut m)
        .map_err(|e| err(camera_name(index), Some(0), e.to_string()))?;
    if !got {
        return Err(err(camera_name(index), Some(0), "no frame captured"));
    }
    mat_shape(&m).map_err(|msg| err(camera_name(index), Some(0), msg))
}

fn read_image(path: &Path, seq: Option<u64>) -> Result<Mat, MediaError> {
    quiet();
    let what = path.display();
    let m = imread(utf8(path)?, IMREAD_ANYCOLOR).map_err(|e| err(&what, seq, e.to_string()))?;
    if m.empty() {
        return Err(err(
            &what,
            seq,
            "cannot read as an image (missing, unreadable or not an image format OpenCV knows)",
        ));
    }
    Ok(m)
}

/// The frame shape of an image file.
///
/// # Errors
/// [`MediaError`] naming the file when it cannot be read or is not an
/// 8-bit gray or colour image.
pub fn probe_image(path: &Path) -> Result<Shape, MediaError> {
    let m = read_image(path, None)?;
    mat_shape(&m).map_err(|msg| err(path.display(), None, msg))
}

/// Frames from a `VideoCapture`: a file (ends with the file) or a camera
/// (a missing frame is an error).
struct Capture {
    cap: VideoCapture,
    what: String,
    shape: Shape,
    frames: u64,
    next: u64,
    /// Frames of a file still to pass over before `next` (a resumed
    /// source).
    skip: u64,
    camera: bool,
    done: bool,
}

impl Iterator for Capture {
    type Item = Result<Frame, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.frames {
            return None;
        }
        let seq = self.next;
        while self.skip > 0 {
            self.skip -= 1;
            if !matches!(self.cap.grab(), Ok(true)) {
                self.done = true;
                return Some(Err(err(
                    &self.what,
                    Some(seq),
                    "the video ended before the frame to resume at",
                )));
            }
        }
        let mut m = Mat::default();
        let got = match self.cap.read(&mut m) {
            Ok(g) => g,
            Err(e) => {
                self.done = true;
                return Some(Err(err(&self.what, Some(seq), e.to_string())));
            }
        };
        if !got || m.empty() {
            self.done = true;
            if self.camera {
                return Some(Err(err(&self.what, Some(seq), "the device gave no frame")));
            }
            tracing::warn!(
                file = %self.what,
                frames = seq,
                asked = self.frames,
                "video ended before the frames asked for"
            );
            return None;
        }
        let capture_ns = now_ns();
        self.next += 1;
        Some(match mat_to_tensor(&m, self.shape) {
            Ok(tensor) => Ok(Frame {
                stream_id: 0,
                seq,
                capture_ns,
                tensor,
            }),
            Err(msg) => {
                self.done = true;
                Err(err(&self.what, Some(seq), msg))
            }
        })
    }
}

/// The frames of a video file from frame `start` on.
///
/// # Errors
/// [`MediaError`] naming the file when it cannot be opened.
pub fn open_video(v: &VideoInput, start: u64) -> Result<FrameIter, MediaError> {
    let cap = open_capture(&v.path)?;
    Ok(Box::new(Capture {
        cap,
        what: v.path.display().to_string(),
        shape: v.shape,
        frames: v.frames,
        next: start,
        skip: start,
        camera: false,
        done: false,
    }))
}

/// The frames of a camera, numbered from `start` (a camera is live: a
/// resumed source goes on with what it captures now).
///
/// # Errors
/// [`MediaError`] naming the device when it is missing or cannot be opened.
pub fn open_camera(c: &CameraInput, start: u64) -> Result<FrameIter, MediaError> {
    let cap = open_camera_device(c.index, c.size)?;
    Ok(Box::new(Capture {
        cap,
        what: camera_name(c.index),
        shape: c.shape,
        frames: c.frames,
        next: start,
        skip: 0,
        camera: true,
        done: false,
    }))
}

/// The frames of an image folder from frame `start` on.
///
/// # Errors
/// Never at open; a file that cannot be read is an error at its frame.
pub fn open_images(i: &ImagesInput, start: u64) -> Result<FrameIter, MediaError> {
    let files: Vec<PathBuf> = i.files.iter().take(i.frames as usize).cloned().collect();
    let shape = i.shape;
    let skip = usize::try_from(start).unwrap_or(usize::MAX);
    Ok(Box::new(files.into_iter().enumerate().skip(skip).map(
        move |(k, path)| {
            let seq = k as u64;
            let m = read_image(&path, Some(seq))?;
            let capture_ns = now_ns();
            let tensor =
                mat_to_tensor(&m, shape).map_err(|msg| err(path.display(), Some(seq), msg))?;
            Ok(Frame {
                stream_id: 0,
                seq,
                capture_ns,
                tensor,
            })
        },
    )))
}

/// A frame as an 8-bit image (gray for one plane, BGR for three).
fn frame_mat(f: &Frame, scale: f32, what: &Path) -> Result<Mat, MediaError> {
    let s = f.tensor.shape();
    let typ = match s.c {
        1 => opencv::core::CV_8UC1,
        3 => opencv::core::CV_8UC3,
        c => {
            return Err(err(
                what.display(),
                Some(f.seq),
                format!("{c} channels; video and image sinks take 1 (gray) or 3 (BGR)"),
            ));
        }
    };
    let cv = |e: opencv::Error| err(what.display(), Some(f.seq), e.to_string());
    let (rows, cols) = (
        i32::try_from(s.h).map_err(|_| err(what.display(), Some(f.seq), "frame too tall"))?,
        i32::try_from(s.w).map_err(|_| err(what.display(), Some(f.seq), "frame too wide"))?,
    );
    let mut m = Mat::new_rows_cols_with_default(rows, cols, typ, Scalar::all(0.0)).map_err(cv)?;
    let values: &[f32] = f.tensor.data();
    chw_to_hwc_u8(values, s, scale, m.data_bytes_mut().map_err(cv)?);
    Ok(m)
}

/// A video sink's open writer for one stream.
struct Writer {
    w: Encoder,
    path: PathBuf,
    shape: Shape,
}

/// What writes a video file: OpenCV's `VideoWriter`, or, for fourcc
/// `MPNG`, the durable AVI writer ([`crate::media::avi`]) with PNG frames
/// that a restarted sink appends to.
enum Encoder {
    Cv(VideoWriter),
    Avi(AviWriter),
}

/// Writes frames to a video file or an image folder.
pub struct MediaSink {
    kind: Kind,
}

enum Kind {
    Video {
        out: VideoOutput,
        writers: HashMap<u32, Writer>,
    },
    Images(ImagesOutput),
}

impl std::fmt::Debug for MediaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Video { out, .. } => f.debug_struct("MediaSink").field("video", out).finish(),
            Kind::Images(o) => f.debug_struct("MediaSink").field("images", o).finish(),
        }
    }
}

fn open_writer(
    out: &VideoOutput,
    stream: u32,
    shape: Shape,
    resume: Option<u64>,
) -> Result<Writer, MediaError> {
    quiet();
    let path = stream_path(&out.path, stream);
    let what = path.display();
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)
            .map_err(|e| err(d.display(), None, format!("cannot create folder: {e}")))?;
    }
    if out.fourcc == RESUMABLE_FOURCC {
        if shape.c != 1 && shape.c != 3 {
            return Err(err(
                &what,
                None,
                format!("{} channels; a video takes 1 (gray) or 3 (BGR)", shape.c),
            ));
        }
        let (w, h) = (
            u32::try_from(shape.w).map_err(|_| err(&what, None, "frame too wide"))?,
            u32::try_from(shape.h).map_err(|_| err(&what, None, "frame too tall"))?,
        );
        let avi = match resume {
            Some(n) if n > 0 => AviWriter::resume(&path, w, h, out.fps, n),
            _ => AviWriter::create(&path, w, h, out.fps),
        }
        .map_err(|e| err(&what, None, e))?;
        return Ok(Writer {
            w: Encoder::Avi(avi),
            path,
            shape,
        });
    }
    let [a, b, c, d] = out.fourcc;
    let code = VideoWriter::fourcc(a, b, c, d).map_err(|e| err(&what, None, e.to_string()))?;
    let size = Size::new(
        i32::try_from(shape.w).map_err(|_| err(&what, None, "frame too wide"))?,
        i32::try_from(shape.h).map_err(|_| err(&what, None, "frame too tall"))?,
    );
    let fourcc: String = out.fourcc.iter().collect();
    let w = VideoWriter::new(utf8(&path)?, code, out.fps, size, shape.c == 3).map_err(|e| {
        err(
            &what,
            None,
            format!("cannot open for writing with fourcc {fourcc}: {e}"),
        )
    })?;
    if !w.is_opened().unwrap_or(false) {
        return Err(err(
            &what,
            None,
            format!(
                "OpenCV cannot write fourcc {fourcc} {}x{} {} to this file (no such encoder, or the container does not take it)",
                shape.w,
                shape.h,
                if shape.c == 3 { "BGR" } else { "gray" }
            ),
        ));
    }
    Ok(Writer {
        w: Encoder::Cv(w),
        path,
        shape,
    })
}

impl MediaSink {
    /// The sink of `cfg` for frames of `shapes` (per stream). A video file
    /// is opened here, so a codec or path problem stops the run before any
    /// frame; a resumable one (`MPNG`) of a stream with frames in `resume`
    /// is reopened after that many frames.
    ///
    /// # Errors
    /// [`MediaError`] naming the file or folder that cannot be created.
    pub fn open(
        cfg: MediaOutput<'_>,
        shapes: &[Shape],
        resume: &BTreeMap<u32, u64>,
    ) -> Result<Self, MediaError> {
        let shape = shapes.first().copied().unwrap_or(Shape::new(1, 1, 1));
        let kind = match cfg {
            MediaOutput::Video(out) => {
                let mut writers = HashMap::new();
                writers.insert(0, open_writer(out, 0, shape, resume.get(&0).copied())?);
                for (&stream, &n) in resume.iter().filter(|(s, n)| **s != 0 && **n > 0) {
                    // Another stream's file, resumed at its own frame size.
                    let s = usize::try_from(stream)
                        .ok()
                        .and_then(|i| shapes.get(i))
                        .copied()
                        .unwrap_or(shape);
                    writers.insert(stream, open_writer(out, stream, s, Some(n))?);
                }
                Kind::Video {
                    out: out.clone(),
                    writers,
                }
            }
            MediaOutput::Images(out) => {
                std::fs::create_dir_all(&out.dir).map_err(|e| {
                    err(
                        out.dir.display(),
                        None,
                        format!("cannot create folder: {e}"),
                    )
                })?;
                Kind::Images(out.clone())
            }
        };
        Ok(Self { kind })
    }

    /// Writes one frame.
    ///
    /// # Errors
    /// [`MediaError`] naming the file and the frame's seq.
    pub fn write(&mut self, f: &Frame) -> Result<(), MediaError> {
        match &mut self.kind {
            Kind::Video { out, writers } => {
                let w = match writers.entry(f.stream_id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    // Another stream (`sources:`): its own file, at its
                    // own frame size.
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(open_writer(out, f.stream_id, f.tensor.shape(), None)?)
                    }
                };
                if f.tensor.shape() != w.shape {
                    return Err(err(
                        w.path.display(),
                        Some(f.seq),
                        format!(
                            "shape {} differs from the video's {}",
                            f.tensor.shape(),
                            w.shape
                        ),
                    ));
                }
                let m = frame_mat(f, out.scale, &w.path)?;
                match &mut w.w {
                    Encoder::Cv(v) => v
                        .write(&m)
                        .map_err(|e| err(w.path.display(), Some(f.seq), e.to_string())),
                    Encoder::Avi(a) => {
                        let mut png = Vector::<u8>::new();
                        let ok = imencode(".png", &m, &mut png, &Vector::<i32>::new())
                            .map_err(|e| err(w.path.display(), Some(f.seq), e.to_string()))?;
                        if !ok {
                            return Err(err(w.path.display(), Some(f.seq), "PNG encoding failed"));
                        }
                        a.append(png.as_slice())
                            .map_err(|e| err(w.path.display(), Some(f.seq), e))
                    }
                }
            }
            Kind::Images(out) => {
                // Written under a temporary name, then renamed into place:
                // a killed process leaves whole images only.
                let name = format!("{}-{}.png", f.stream_id, f.seq);
                let path = out.dir.join(&name);
                let tmp = out.dir.join(format!(".{name}.tmp.png"));
                let m = frame_mat(f, out.scale, &path)?;
                let ok = imwrite(utf8(&tmp)?, &m, &Vector::<i32>::new())
                    .map_err(|e| err(path.display(), Some(f.seq), e.to_string()))?;
                if ok {
                    std::fs::rename(&tmp, &path)
                        .map_err(|e| err(path.display(), Some(f.seq), e.to_string()))
                } else {
                    Err(err(
                        path.display(),
                        Some(f.seq),
                        "OpenCV could not write it",
                    ))
                }
            }
        }
    }

    /// Closes the video files (their trailers are written here).
    ///
    /// # Errors
    /// [`MediaError`] naming the file.
    pub fn finish(self) -> Result<(), MediaError> {
        if let Kind::Video { writers, .. } = self.kind {
            for (_, mut w) in writers {
                match &mut w.w {
                    Encoder::Cv(v) => v
                        .release()
                        .map_err(|e| err(w.path.display(), None, e.to_string()))?,
                    Encoder::Avi(a) => a.finish().map_err(|e| err(w.path.display(), None, e))?,
                }
            }
        }
        Ok(())
    }

    /// Forces committed frames to disk (the durable video writer's).
    ///
    /// # Errors
    /// [`MediaError`] naming the file.
    pub fn sync(&self) -> Result<(), MediaError> {
        if let Kind::Video { writers, .. } = &self.kind {
            for w in writers.values() {
                if let Encoder::Avi(a) = &w.w {
                    a.sync().map_err(|e| err(w.path.display(), None, e))?;
                }
            }
        }
        Ok(())
    }
}
