//! Frame sources: synthetic, npy, video, camera and image folders, each
//! stream produced on its own thread.

use crossbeam_channel::bounded;

use super::npy::NpySource;
use super::synthetic::Synthetic;
use crate::frame::Frame;
use crate::media::npy::NpyError;
use crate::media::video::MediaError;
use crate::spec::{Pipeline, SourceConfig};

/// A source could not produce a frame.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A tensor file could not be read.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// A video file, camera or image could not be read.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// A thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Frames a source thread may have ready ahead of its segment.
const SOURCE_AHEAD: usize = 2;

/// The source's frames, produced on their own thread (`source`) up to
/// [`SOURCE_AHEAD`] frames ahead of the caller, as a camera delivers frames
/// while the previous ones are processed: producing the next frame overlaps
/// processing this one. Each frame's `capture_ns` is stamped when it is
/// produced, so time spent waiting for the segment counts as latency.
pub fn open_source(
    src: &SourceConfig,
) -> Box<dyn Iterator<Item = Result<Frame, SourceError>> + Send> {
    let inner = open_source_inline(src);
    let (tx, rx) = bounded(SOURCE_AHEAD);
    let spawned = std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            for item in inner {
                let stop = item.is_err();
                if tx.send(item).is_err() || stop {
                    break;
                }
            }
        });
    match spawned {
        Ok(_) => Box::new(rx.into_iter()),
        Err(e) => {
            tracing::warn!(error = %e, "no source thread; producing frames inline");
            open_source_inline(src)
        }
    }
}

/// Every source's frames, each stream produced on its own thread (so a
/// slow or ended stream does not hold back the others) and interleaved as
/// they come; with one source, [`open_source`].
pub fn open_sources(p: &Pipeline) -> Box<dyn Iterator<Item = Result<Frame, SourceError>> + Send> {
    if p.extra_sources.is_empty() {
        return open_source(&p.source);
    }
    let (tx, rx) = bounded(SOURCE_AHEAD);
    for (stream, src) in p.sources().enumerate() {
        let to_thread = tx.clone();
        let src = src.clone();
        let stream_id = u32::try_from(stream).unwrap_or(u32::MAX);
        let spawned = std::thread::Builder::new()
            .name(format!("source-{stream}"))
            .spawn(move || {
                for item in stream_frames(&src, stream_id) {
                    let stop = item.is_err();
                    if to_thread.send(item).is_err() || stop {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            let _ = tx.send(Err(SourceError::Thread {
                what: format!("source (stream {stream})"),
                source: e,
            }));
        }
    }
    Box::new(rx.into_iter())
}

/// One source's frames as stream `stream_id`, on the caller's thread.
pub fn stream_frames(
    src: &SourceConfig,
    stream_id: u32,
) -> impl Iterator<Item = Result<Frame, SourceError>> + Send + use<> {
    stream_frames_from(src, stream_id, 0)
}

/// One source's frames as stream `stream_id` from seq `start` on, on the
/// caller's thread: a resumed source. Files (npy, video, images) and the
/// synthetic source give the frames they gave before from `start`; a
/// camera is live and numbers what it captures now from `start`.
pub fn stream_frames_from(
    src: &SourceConfig,
    stream_id: u32,
    start: u64,
) -> impl Iterator<Item = Result<Frame, SourceError>> + Send + use<> {
    open_source_from(src, start).map(move |f| f.map(|f| Frame { stream_id, ..f }))
}

/// The source's frames, produced on the caller's thread.
pub fn open_source_inline(
    src: &SourceConfig,
) -> Box<dyn Iterator<Item = Result<Frame, SourceError>> + Send> {
    open_source_from(src, 0)
}

/// The source's frames from seq `start` on, produced on the caller's
/// thread.
fn open_source_from(
    src: &SourceConfig,
    start: u64,
) -> Box<dyn Iterator<Item = Result<Frame, SourceError>> + Send> {
    match src {
        SourceConfig::Synthetic(s) => Box::new(Synthetic::starting_at(s.clone(), start).map(Ok)),
        SourceConfig::Npy {
            input,
            shape,
            frames,
        } => Box::new(
            NpySource::new(input.clone(), *shape, *frames)
                .starting_at(start)
                .map(|r| r.map_err(SourceError::from)),
        ),
        SourceConfig::Video(_) | SourceConfig::Camera(_) | SourceConfig::Images(_) => {
            media_source(src, start)
        }
    }
}

/// A video, camera or image-folder source's frames from seq `start` on;
/// one error item when it cannot be opened.
fn media_source(
    src: &SourceConfig,
    start: u64,
) -> Box<dyn Iterator<Item = Result<Frame, SourceError>> + Send> {
    let opened = match src {
        SourceConfig::Video(v) => crate::media::video::open_video(v, start),
        SourceConfig::Camera(c) => crate::media::video::open_camera(c, start),
        SourceConfig::Images(i) => crate::media::video::open_images(i, start),
        SourceConfig::Synthetic(_) | SourceConfig::Npy { .. } => {
            return Box::new(std::iter::empty());
        }
    };
    match opened {
        Ok(frames) => Box::new(frames.map(|r| r.map_err(SourceError::from))),
        Err(e) => Box::new(std::iter::once(Err(SourceError::from(e)))),
    }
}
