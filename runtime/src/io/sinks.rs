//! Everything the last segment writes a frame to, in one place: the sink's
//! record (latency, order, digest) and the file sinks (npy, video, images).
//! The in-process and the served segment both finish through
//! [`Sinks::finish`], so what a sink saw is built once.
//!
//! With a journal ([`super::journal`]; by default beside an npy file or in
//! an npy or image folder, for any sink with `--journal`), every frame is
//! committed before it is acknowledged, and a restarted sink resumes: it
//! reads back its record (counts, latencies, digest), cuts its files to
//! what it committed, and reports per stream where upstream should go on
//! ([`Sinks::positions`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::{Entry, Journal, JournalError, SyncPolicy, Syncer};
use super::npy::NpySink;
use super::sink::{OrderError, SinkRecord, StreamTally};
use crate::frame::{Frame, now_ns};
use crate::media::npy::{NpyError, NpyOutput};
use crate::media::video::{MediaError, MediaOutput, MediaSink, RESUMABLE_FOURCC};
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
    /// The journal cannot be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The journal holds what this sink cannot resume.
    #[error("sink journal {path}: {message}")]
    Resume {
        /// The journal.
        path: PathBuf,
        /// What cannot be resumed.
        message: String,
    },
}

/// How a sink keeps what it committed across a restart of its process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durability {
    /// The journal's file; default: beside a stacked npy file
    /// (`<file>.journal`), or `.streamfuse-journal` in an npy or image
    /// folder; other sinks keep no journal unless one is given.
    pub journal: Option<PathBuf>,
    /// When commits are forced to disk.
    pub sync: SyncPolicy,
    /// Start a new run: replace the outputs and the journal of an earlier
    /// one instead of resuming it.
    pub fresh: bool,
}

impl Durability {
    /// A new run each time (the in-process run: no upstream holds frames
    /// for it to resume from).
    pub fn fresh() -> Self {
        Self {
            fresh: true,
            ..Self::default()
        }
    }
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
    /// Frames an earlier process of this sink had committed, read back
    /// from its journal (0 for a new run).
    #[serde(default)]
    pub resumed_frames: u64,
}

/// The sinks of a pipeline's last segment.
#[derive(Debug)]
pub struct Sinks {
    record: SinkRecord,
    npy: Option<NpySink>,
    media: Option<MediaSink>,
    last_ns: u64,
    journal: Option<Journal>,
    syncer: Option<Syncer>,
    ended: BTreeMap<u32, u64>,
    resumed_frames: u64,
}

/// What a run's journal must match to be resumed: the pipeline, its sink
/// and every stream's output shape.
fn description(p: &Pipeline) -> String {
    let shapes: Vec<String> = p
        .stream_shapes(p.stages.len())
        .iter()
        .map(ToString::to_string)
        .collect();
    format!("{}\n{:?}\n{}", p.name, p.sink, shapes.join(","))
}

impl Sinks {
    /// Opens the sinks `p` names (a video file is created here, so a codec
    /// or path problem stops the run before any frame), resuming what an
    /// earlier process of this sink committed where `durability` keeps a
    /// journal.
    ///
    /// # Errors
    /// [`SinkError`] naming the file or folder that cannot be created, or a
    /// journal that cannot be read or resumed.
    pub fn open(p: &Pipeline, durability: &Durability) -> Result<Self, SinkError> {
        let journal_path = durability.journal.clone().or_else(|| match &p.sink {
            SinkConfig::Npy(NpyOutput::Stacked(f)) => {
                let mut name = f.as_os_str().to_owned();
                name.push(".journal");
                Some(PathBuf::from(name))
            }
            SinkConfig::Npy(NpyOutput::Dir(d)) => Some(d.join(".streamfuse-journal")),
            SinkConfig::Images(i) => Some(i.dir.join(".streamfuse-journal")),
            SinkConfig::Video(v) => {
                let mut name = v.path.as_os_str().to_owned();
                name.push(".journal");
                Some(PathBuf::from(name))
            }
            _ => None,
        });
        let (journal, recovered) = match &journal_path {
            Some(path) => {
                let fp = super::journal::fingerprint(&description(p));
                let (j, r) = Journal::open(path, fp, durability.sync, durability.fresh)?;
                (Some(j), r)
            }
            None => (None, super::journal::Recovered::default()),
        };
        let mut record = SinkRecord::new(p.sink != SinkConfig::Null);
        let mut ended = BTreeMap::new();
        let mut stacked = 0u64;
        let mut resumed_frames = 0u64;
        let resume_err = |message: String| SinkError::Resume {
            path: journal_path.clone().unwrap_or_default(),
            message,
        };
        for e in &recovered.entries {
            match *e {
                Entry::Frame {
                    stream,
                    seq,
                    capture_ns,
                    arrival_ns,
                    digest,
                    stacked: n,
                } => {
                    record
                        .restore(stream, seq, capture_ns, arrival_ns, digest)
                        .map_err(|o| resume_err(o.to_string()))?;
                    stacked = n;
                    resumed_frames += 1;
                }
                Entry::End { stream, frames } => {
                    ended.insert(stream, frames);
                }
            }
        }
        if let SinkConfig::Video(v) = &p.sink
            && recovered.resumed
            && resumed_frames > 0
            && v.fourcc != RESUMABLE_FOURCC
        {
            let fourcc: String = v.fourcc.iter().collect();
            return Err(resume_err(format!(
                "{resumed_frames} frames were committed to a video file of fourcc {fourcc}, which cannot be appended to: write fourcc MPNG in .avi (PNG frames, lossless) for a video sink that resumes, or pass --fresh to start the file again"
            )));
        }
        // Frames each stream committed (a resumed video appends to them).
        let per_stream: BTreeMap<u32, u64> = record
            .streams()
            .iter()
            .filter_map(|t| {
                let n = record.next_seq(t.stream_id)?.checked_sub(t.first_seq)?;
                Some((t.stream_id, n))
            })
            .collect();
        let npy = match &p.sink {
            SinkConfig::Npy(out) => Some(NpySink::new(
                out.clone(),
                recovered.resumed.then_some((stacked, p.output_shape())),
            )?),
            _ => None,
        };
        let media = match &p.sink {
            SinkConfig::Video(v) => Some(MediaOutput::Video(v)),
            SinkConfig::Images(i) => Some(MediaOutput::Images(i)),
            SinkConfig::Null | SinkConfig::Stats | SinkConfig::Npy(_) => None,
        };
        if resumed_frames > 0 || recovered.torn_bytes > 0 {
            tracing::info!(
                frames = resumed_frames,
                ended = ended.len(),
                torn_bytes = recovered.torn_bytes,
                journal = %journal_path.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                "sink resumes what it committed"
            );
        }
        // The folder the outputs are in, forced with the journal.
        let data_dir = match &p.sink {
            SinkConfig::Npy(NpyOutput::Stacked(f)) => f.parent().map(Path::to_path_buf),
            SinkConfig::Npy(NpyOutput::Dir(d)) => Some(d.clone()),
            SinkConfig::Images(i) => Some(i.dir.clone()),
            SinkConfig::Video(v) => v.path.parent().map(Path::to_path_buf),
            SinkConfig::Null | SinkConfig::Stats => None,
        }
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
        });
        let syncer = match (&journal, durability.sync) {
            (Some(j), SyncPolicy::Interval(every)) => {
                Syncer::start(every, data_dir, j.path().to_path_buf())
            }
            _ => None,
        };
        Ok(Self {
            syncer,
            record,
            npy,
            media: media
                .map(|m| MediaSink::open(m, &p.stream_shapes(p.stages.len()), &per_stream))
                .transpose()?,
            last_ns: 0,
            journal,
            ended,
            resumed_frames,
        })
    }

    /// Per stream, the seq this sink takes next: one past its last
    /// committed frame, or the frame count plus one for an ended stream
    /// (the acknowledgement of its end-of-stream marker).
    pub fn positions(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for t in self.record.streams() {
            if let Some(n) = self.record.next_seq(t.stream_id) {
                out.insert(t.stream_id, n);
            }
        }
        for (&s, &frames) in &self.ended {
            out.insert(s, frames + 1);
        }
        out
    }

    /// Streams whose end was committed.
    pub fn ended(&self) -> BTreeSet<u32> {
        self.ended.keys().copied().collect()
    }

    /// Whether frames are committed to a journal (and so survive a restart
    /// of this process).
    pub fn durable(&self) -> bool {
        self.journal.is_some()
    }

    /// Takes one frame: records it (in order per stream), writes it to the
    /// file sinks, and commits it to the journal.
    ///
    /// # Errors
    /// [`SinkError`] when the frame is out of order or cannot be written.
    pub fn write(&mut self, f: &Frame) -> Result<(), SinkError> {
        let arrival = now_ns();
        self.record.accept(f, arrival)?;
        if let Some(n) = self.npy.as_mut() {
            n.write(f)?;
        }
        if let Some(m) = self.media.as_mut() {
            m.write(f)?;
        }
        self.last_ns = now_ns();
        if let Some(j) = self.journal.as_mut() {
            j.append(&Entry::Frame {
                stream: f.stream_id,
                seq: f.seq,
                capture_ns: f.capture_ns,
                arrival_ns: arrival,
                digest: self.record.digest_state(f.stream_id),
                stacked: self.npy.as_ref().map_or(0, NpySink::stacked_frames),
            })?;
        }
        self.sync_if_due()
    }

    /// Commits the end of `stream` after `frames` frames.
    ///
    /// # Errors
    /// [`SinkError`] when the journal cannot be written.
    pub fn end_stream(&mut self, stream: u32, frames: u64) -> Result<(), SinkError> {
        if self.ended.insert(stream, frames).is_none()
            && let Some(j) = self.journal.as_mut()
        {
            j.append(&Entry::End { stream, frames })?;
        }
        self.sync_if_due()
    }

    fn sync_if_due(&mut self) -> Result<(), SinkError> {
        if let Some(s) = &self.syncer {
            s.touch();
        }
        if let Some(j) = self.journal.as_mut()
            && j.sync_due()
        {
            if let Some(n) = &self.npy {
                n.sync()?;
            }
            if let Some(m) = &self.media {
                m.sync()?;
            }
            j.sync()?;
        }
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
        if let Some(j) = self.journal.as_mut()
            && j.policy() != SyncPolicy::Never
        {
            j.sync()?;
        }
        Ok(SinkOutcome {
            digest: self.record.digest(),
            streams: self.record.streams(),
            latencies_ns: self.record.latencies_ns,
            arrivals_ns: self.record.arrivals_ns,
            last_ns: self.last_ns,
            resumed_frames: self.resumed_frames,
        })
    }
}
