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
    open_source_inline(src).map(move |f| f.map(|f| Frame { stream_id, ..f }))
}

/// The source's frames, produced on the caller's thread.
pub fn open_source_inline(
    src: &SourceConfig,
) -> Box<dyn Iterator<Item = Result<Frame, SourceError>> + Send> {
    match src {
        SourceConfig::Synthetic(s) => Box::new(Synthetic::new(s.clone()).map(Ok)),
        SourceConfig::Npy {
            input,
            shape,
            frames,
        } => Box::new(
            NpySource::new(input.clone(), *shape, *frames).map(|r| r.map_err(SourceError::from)),
        ),
        SourceConfig::Video(_) | SourceConfig::Camera(_) | SourceConfig::Images(_) => {
            media_source(src)
        }
    }
}

/// A video, camera or image-folder source's frames; one error item when it
/// cannot be opened.
fn media_source(src: &SourceConfig) -> Box<dyn Iterator<Item = Result<Frame, SourceError>> + Send> {
    let opened = match src {
        SourceConfig::Video(v) => crate::media::video::open_video(v),
        SourceConfig::Camera(c) => crate::media::video::open_camera(c),
        SourceConfig::Images(i) => crate::media::video::open_images(i),
        SourceConfig::Synthetic(_) | SourceConfig::Npy { .. } => {
            return Box::new(std::iter::empty());
        }
    };
    match opened {
        Ok(frames) => Box::new(frames.map(|r| r.map_err(SourceError::from))),
        Err(e) => Box::new(std::iter::once(Err(SourceError::from(e)))),
    }
}
