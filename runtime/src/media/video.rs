//! Video files, cameras and image folders in and out, through OpenCV
//! (cargo feature `opencv`, off by default).
//!
//! Conventions (the same for every form):
//! - a frame is an `f32` `[C, H, W]` tensor; colour frames have three planes
//!   in **BGR** order, as OpenCV decodes them (`gray` stages then say
//!   `order: bgr`), gray images one plane;
//! - values are the 8-bit levels divided by 255 (`k * (1/255)`), in
//!   `[0, 1]` like the synthetic source. `gray`, `gaussian_blur` and `sobel`
//!   are linear, so they work on this range as on 0–255;
//! - sinks turn values back into 8-bit levels as `x * scale` (default 255)
//!   rounded half to even and saturated to `[0, 255]` (NaN gives 0), as
//!   OpenCV's `convertTo`/`saturate_cast` do: a source → sink round trip
//!   gives back the input's levels. One-plane frames are written as gray,
//!   three-plane frames as BGR.
//!
//! Sources: `video` (a file, decoded with `VideoCapture`), `camera` (a V4L2
//! device by index), `images` (a folder read in name order with
//! `imgcodecs`; gray files give one plane, colour files three). Sinks:
//! `video` (`VideoWriter`, one file; frames of a stream `k > 0` go to
//! `<stem>-<k>.<ext>`) and `images` (`<stream>-<seq>.png` per frame).
//!
//! Without the `opencv` feature the types remain (specs still parse) but
//! every probe and open fails with [`MediaError`] saying OpenCV is missing.

use std::path::{Path, PathBuf};

use streamfuse_kernels::Shape;

use crate::frame::Frame;

/// A video file, camera or image could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}{}: {message}", .seq.map(|s| format!(": frame seq {s}")).unwrap_or_default())]
pub struct MediaError {
    /// The file, folder or camera (`camera 0 (/dev/video0)`).
    pub what: String,
    /// The frame, when one was being read or written.
    pub seq: Option<u64>,
    /// What is wrong.
    pub message: String,
}

fn err(what: impl std::fmt::Display, seq: Option<u64>, message: impl Into<String>) -> MediaError {
    MediaError {
        what: what.to_string(),
        seq,
        message: message.into(),
    }
}

/// `source: { video: { path, frames } }`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInput {
    /// The file.
    pub path: PathBuf,
    /// Frame shape (from the first decoded frame).
    pub shape: Shape,
    /// Frames to read (the run stops earlier if the file ends).
    pub frames: u64,
    /// The file's frame rate, when it states one.
    pub fps: Option<f64>,
}

/// `source: { camera: { index, width, height, frames } }`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraInput {
    /// V4L2 device index (`/dev/video<index>`).
    pub index: u32,
    /// Frame size asked of the device, when given.
    pub size: Option<(usize, usize)>,
    /// Frame shape (`[3, height, width]`).
    pub shape: Shape,
    /// Frames to capture.
    pub frames: u64,
}

/// `source: { images: { dir, pattern, frames } }`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagesInput {
    /// The files, in name order.
    pub files: Vec<PathBuf>,
    /// Frame shape (from the first file).
    pub shape: Shape,
    /// Frames to read.
    pub frames: u64,
}

/// `sink: { video: { path, fourcc, fps, scale } }`, resolved.
#[derive(Debug, Clone)]
pub struct VideoOutput {
    /// The file.
    pub path: PathBuf,
    /// Four-character codec code (`FFV1`, `MJPG`, `mp4v`, ...).
    pub fourcc: [char; 4],
    /// Frame rate written in the file.
    pub fps: f64,
    /// Factor applied before rounding to 8 bits.
    pub scale: f32,
}

impl PartialEq for VideoOutput {
    fn eq(&self, o: &Self) -> bool {
        self.path == o.path
            && self.fourcc == o.fourcc
            && self.fps.to_bits() == o.fps.to_bits()
            && self.scale.to_bits() == o.scale.to_bits()
    }
}

impl Eq for VideoOutput {}

/// `sink: { images: { dir, scale } }`, resolved.
#[derive(Debug, Clone)]
pub struct ImagesOutput {
    /// The folder (created when missing).
    pub dir: PathBuf,
    /// Factor applied before rounding to 8 bits.
    pub scale: f32,
}

impl PartialEq for ImagesOutput {
    fn eq(&self, o: &Self) -> bool {
        self.dir == o.dir && self.scale.to_bits() == o.scale.to_bits()
    }
}

impl Eq for ImagesOutput {}

/// Extensions an `images` source reads when no pattern is given.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "pgm", "ppm", "pnm",
];

/// Whether `name` matches a glob `pattern` (`*` any run, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The files of `dir` whose names match `pattern` (default: the
/// [`IMAGE_EXTENSIONS`]), in name order.
///
/// # Errors
/// [`MediaError`] when the folder cannot be read or nothing matches.
pub fn image_files(dir: &Path, pattern: Option<&str>) -> Result<Vec<PathBuf>, MediaError> {
    let what = dir.display();
    let entries =
        std::fs::read_dir(dir).map_err(|e| err(&what, None, format!("cannot read folder: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                return false;
            };
            match pattern {
                Some(pat) => glob_match(pat, name),
                None => p
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str())),
            }
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err(
            &what,
            None,
            match pattern {
                Some(p) => format!("no file matches `{p}`"),
                None => format!("holds no image ({})", IMAGE_EXTENSIONS.join(", ")),
            },
        ));
    }
    Ok(files)
}

/// The file name a video sink writes stream `stream` to: the sink's path
/// for stream 0, `<stem>-<stream>.<ext>` next to it for the others.
pub fn stream_path(path: &Path, stream: u32) -> PathBuf {
    if stream == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("video");
    let name = match path.extension().and_then(|x| x.to_str()) {
        Some(x) => format!("{stem}-{stream}.{x}"),
        None => format!("{stem}-{stream}"),
    };
    path.with_file_name(name)
}

/// An `f32` value as an 8-bit level: `x * scale`, rounded half to even,
/// saturated to `[0, 255]`; NaN gives 0 (OpenCV's `saturate_cast<uchar>`).
#[inline]
pub fn to_u8(x: f32, scale: f32) -> u8 {
    let v = (x * scale).round_ties_even();
    if v.is_nan() {
        0
    } else {
        v.clamp(0.0, 255.0) as u8
    }
}

/// 8-bit level → frame value (`k * (1/255)`, as the synthetic source).
#[inline]
pub fn from_u8(k: u8) -> f32 {
    f32::from(k) * (1.0 / 255.0)
}

/// Interleaved `H×W×C` 8-bit pixels → planar `[C, H, W]` values.
pub fn hwc_u8_to_chw(bytes: &[u8], shape: Shape) -> Vec<f32> {
    let (c, hw) = (shape.c, shape.h * shape.w);
    let mut out = vec![0.0f32; c * hw];
    if c == 1 {
        for (o, &b) in out.iter_mut().zip(bytes) {
            *o = from_u8(b);
        }
        return out;
    }
    for (ch, plane) in out.chunks_exact_mut(hw).enumerate() {
        for (i, o) in plane.iter_mut().enumerate() {
            *o = from_u8(bytes[i * c + ch]);
        }
    }
    out
}

/// Planar `[C, H, W]` values → interleaved `H×W×C` 8-bit pixels.
pub fn chw_to_hwc_u8(values: &[f32], shape: Shape, scale: f32, out: &mut [u8]) {
    let (c, hw) = (shape.c, shape.h * shape.w);
    if c == 1 {
        for (o, &v) in out.iter_mut().zip(values) {
            *o = to_u8(v, scale);
        }
        return;
    }
    for (ch, plane) in values.chunks_exact(hw).enumerate() {
        for (i, &v) in plane.iter().enumerate() {
            out[i * c + ch] = to_u8(v, scale);
        }
    }
}

/// A sink that writes media: what [`MediaSink::open`] takes.
#[derive(Debug, Clone, Copy)]
pub enum MediaOutput<'a> {
    /// A video file.
    Video(&'a VideoOutput),
    /// A folder of images.
    Images(&'a ImagesOutput),
}

/// Frames from a video file, camera or image folder.
pub type FrameIter = Box<dyn Iterator<Item = Result<Frame, MediaError>> + Send>;

#[cfg(feature = "opencv")]
mod cv;
#[cfg(feature = "opencv")]
pub use cv::{
    MediaSink, open_camera, open_images, open_video, probe_camera, probe_image, probe_video,
};

#[cfg(not(feature = "opencv"))]
mod unavailable;
#[cfg(not(feature = "opencv"))]
pub use unavailable::{
    MediaSink, open_camera, open_images, open_video, probe_camera, probe_image, probe_video,
};

/// The fourcc of the durable video sink: PNG frames in an AVI file that a
/// restarted sink appends to ([`crate::media::avi`]).
pub const RESUMABLE_FOURCC: [char; 4] = ['M', 'P', 'N', 'G'];

/// Whether this build reads and writes video, camera and image frames.
pub const AVAILABLE: bool = cfg!(feature = "opencv");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("*.png", "a.png"));
        assert!(glob_match("frame-??.png", "frame-07.png"));
        assert!(!glob_match("frame-??.png", "frame-7.png"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("*.png", "a.png.bak"));
    }

    #[test]
    fn levels_round_trip_and_saturate() {
        for k in 0..=255u8 {
            assert_eq!(to_u8(from_u8(k), 255.0), k);
        }
        assert_eq!(to_u8(2.0, 255.0), 255);
        assert_eq!(to_u8(-1.0, 255.0), 0);
        assert_eq!(to_u8(f32::NAN, 255.0), 0);
        assert_eq!(to_u8(2.5, 1.0), 2, "half to even");
        assert_eq!(to_u8(3.5, 1.0), 4, "half to even");
    }

    #[test]
    fn planes_interleave_and_back() {
        let shape = Shape::new(3, 2, 2);
        let hwc: Vec<u8> = (0..12).collect();
        let chw = hwc_u8_to_chw(&hwc, shape);
        assert_eq!(chw[0], from_u8(0));
        assert_eq!(chw[1], from_u8(3));
        assert_eq!(chw[4], from_u8(1));
        let mut back = vec![0u8; 12];
        chw_to_hwc_u8(&chw, shape, 255.0, &mut back);
        assert_eq!(back, hwc);
    }

    #[test]
    fn other_streams_get_their_own_file() {
        let p = Path::new("/tmp/out.mkv");
        assert_eq!(stream_path(p, 0), p);
        assert_eq!(stream_path(p, 2), Path::new("/tmp/out-2.mkv"));
    }
}
