//! Without OpenCV (the default build): the same functions, each
//! failing with an error that says how to get them. Specs naming video,
//! camera or image sources and sinks are refused when they are resolved,
//! so a run never reaches these.

use std::path::Path;

use streamfuse_kernels::Shape;

use super::MediaOutput;
use super::{CameraInput, FrameIter, ImagesInput, MediaError, VideoInput};
use crate::frame::Frame;

fn unavailable(what: impl std::fmt::Display) -> MediaError {
    super::err(
        what,
        None,
        "this streamfuse was built without OpenCV (cargo feature `opencv`); rebuild with `cargo build --release --features opencv` (needs OpenCV 4 and libclang: scripts/install-deps.sh)",
    )
}

/// Fails: no OpenCV in this build.
///
/// # Errors
/// Always.
pub fn probe_video(path: &Path) -> Result<(Shape, u64, Option<f64>), MediaError> {
    Err(unavailable(path.display()))
}

/// Fails: no OpenCV in this build.
///
/// # Errors
/// Always.
pub fn probe_camera(index: u32, _size: Option<(usize, usize)>) -> Result<Shape, MediaError> {
    Err(unavailable(format!("camera {index}")))
}

/// Fails: no OpenCV in this build.
///
/// # Errors
/// Always.
pub fn probe_image(path: &Path) -> Result<Shape, MediaError> {
    Err(unavailable(path.display()))
}

/// Fails: no OpenCV in this build.
///
/// # Errors
/// Always.
pub fn open_video(v: &VideoInput, _start: u64) -> Result<FrameIter, MediaError> {
    Err(unavailable(v.path.display()))
}

/// Fails: no OpenCV in this build.
///
/// # Errors
/// Always.
pub fn open_camera(c: &CameraInput, _start: u64) -> Result<FrameIter, MediaError> {
    Err(unavailable(format!("camera {}", c.index)))
}

/// Fails: no OpenCV in this build.
///
/// # Errors
/// Always.
pub fn open_images(i: &ImagesInput, _start: u64) -> Result<FrameIter, MediaError> {
    Err(unavailable(i.files.first().map_or_else(
        || "images".to_owned(),
        |p| p.display().to_string(),
    )))
}

/// No video or image sink in this build.
#[derive(Debug)]
pub enum MediaSink {}

impl MediaSink {
    /// Fails: no OpenCV in this build.
    ///
    /// # Errors
    /// Always.
    pub fn open(
        cfg: MediaOutput<'_>,
        _shapes: &[Shape],
        _resume: &std::collections::BTreeMap<u32, u64>,
    ) -> Result<Self, MediaError> {
        match cfg {
            MediaOutput::Video(o) => Err(unavailable(o.path.display())),
            MediaOutput::Images(o) => Err(unavailable(o.dir.display())),
        }
    }

    /// Never called: no value of this type exists.
    ///
    /// # Errors
    /// Never.
    pub fn write(&mut self, _f: &Frame) -> Result<(), MediaError> {
        match *self {}
    }

    /// Never called: no value of this type exists.
    ///
    /// # Errors
    /// Never.
    pub fn finish(self) -> Result<(), MediaError> {
        match self {}
    }

    /// Never called: no value of this type exists.
    ///
    /// # Errors
    /// Never.
    pub fn sync(&self) -> Result<(), MediaError> {
        match *self {}
    }
}
