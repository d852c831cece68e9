//! Everything the last segment writes a frame to, in one place: the sink's
//! record (latency, order, digest) and the file sinks (npy, video, images).
//! The in-process and the served segment both finish through
//! [`Sinks::finish`], so what a sink saw is built once.

use serde::{Deserialize, Serialize};

use super::npy::NpySink;
use super::sink::{OrderError, SinkRecord, StreamTally};
use crate::frame::{Frame, now_ns};
use crate::media::npy::NpyError;
use crate::media::video::{MediaError, MediaOutput, MediaSink};
use crate::spec::{Pipeline, SinkConfig};

/// A sink could not take a frame, or could not be opened or finished.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A tensor file could not be written.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// A video file or image could not be written.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Frames reached the sink out of order.
    #[error(transparent)]
    Order(#[from] OrderError),
}

/// What the sink saw over a run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SinkOutcome {
    /// Latency of every frame, ns, in order.
    pub latencies_ns: Vec<u64>,
    /// Wall-clock arrival time of every frame, ns, in order.
    #[serde(default)]
    pub arrivals_ns: Vec<u64>,
    /// Each stream's tally.
    #[serde(default)]
    pub streams: Vec<StreamTally>,
    /// Output digest (stats sink).
    pub digest: Option<String>,
    /// Wall clock when the last frame arrived, ns.
    pub last_ns: u64,
}

/// The sinks of a pipeline's last segment.
#[derive(Debug)]
pub struct Sinks {
    record: SinkRecord,
    npy: Option<NpySink>,
    media: Option<MediaSink>,
    last_ns: u64,
}

impl Sinks {
    /// Opens the sinks `p` names (a video file is created here, so a codec
    /// or path problem stops the run before any frame).
    ///
    /// # Errors
    /// [`SinkError`] naming the file or folder that cannot be created.
    pub fn open(p: &Pipeline) -> Result<Self, SinkError> {
        let npy = match &p.sink {
            SinkConfig::Npy(out) => Some(NpySink::new(out.clone())?),
            _ => None,
        };
        let media = match &p.sink {
            SinkConfig::Video(v) => Some(MediaOutput::Video(v)),
            SinkConfig::Images(i) => Some(MediaOutput::Images(i)),
            SinkConfig::Null | SinkConfig::Stats | SinkConfig::Npy(_) => None,
        };
        Ok(Self {
            record: SinkRecord::new(p.sink != SinkConfig::Null),
            npy,
            media: media
                .map(|m| MediaSink::open(m, p.output_shape()))
                .transpose()?,
            last_ns: 0,
        })
    }

    /// Takes one frame: records it (in order per stream), then writes it to
    /// the file sinks.
    ///
    /// # Errors
    /// [`SinkError`] when the frame is out of order or cannot be written.
    pub fn write(&mut self, f: &Frame) -> Result<(), SinkError> {
        self.record.accept(f, now_ns())?;
        if let Some(n) = self.npy.as_mut() {
            n.write(f)?;
        }
        if let Some(m) = self.media.as_mut() {
            m.write(f)?;
        }
        self.last_ns = now_ns();
        Ok(())
    }

    /// Closes the files and returns what the sink saw.
    ///
    /// # Errors
    /// [`SinkError`] when a file cannot be completed.
    pub fn finish(mut self) -> Result<SinkOutcome, SinkError> {
        if let Some(n) = self.npy.as_mut() {
            n.finish()?;
        }
        if let Some(m) = self.media.take() {
            m.finish()?;
        }
        Ok(SinkOutcome {
            digest: self.record.digest(),
            streams: self.record.streams(),
            latencies_ns: self.record.latencies_ns,
            arrivals_ns: self.record.arrivals_ns,
            last_ns: self.last_ns,
        })
    }
}
