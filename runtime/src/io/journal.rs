//! The sink's commit journal: what a sink has committed, so that a sink
//! process killed at any instant, then restarted, resumes where it stopped
//! with no frame lost and none written twice.
//!
//! A journal is one append-only file of fixed 64-byte records after a
//! 64-byte header. The header names the run it belongs to (a fingerprint of
//! the pipeline's name, sink and output shapes). Each record is a frame the
//! sink committed (its stream, seq, capture and arrival times, the stream's
//! output digest after it, and where the file sink put it) or the end of a
//! stream; each carries a checksum, so a record torn by a kill is
//! recognised and dropped on recovery.
//!
//! A frame is committed when its record is in the journal: the file sinks
//! write the frame first, the record last, and only then is the frame
//! acknowledged upstream. Recovery reads the records back, cuts the journal
//! after the last whole one, and the file sinks cut their files to match.
//! A journal is resumed as it is, finished or not (a sink restarted after
//! its run ended reports that run, it does not replace its outputs); a new
//! run over the same outputs is asked for explicitly (`fresh`).
//!
//! Writes reach the operating system at once (a killed process loses
//! nothing); they reach the disk per [`SyncPolicy`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use twox_hash::XxHash3_128;

/// A 64-bit checksum of `b`.
fn check(b: &[u8]) -> u64 {
    XxHash3_128::oneshot(b) as u64
}

/// Bytes of the header and of each record.
pub const RECORD: usize = 64;

const MAGIC: &[u8; 16] = b"streamfuse-sinkj";
const VERSION: u32 = 1;

/// A journal could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("sink journal {path}: {message}")]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn err(path: &Path, message: impl Into<String>) -> JournalError {
    JournalError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// When committed frames are forced to disk (`fdatasync`). Every commit
/// reaches the operating system at once, so a killed sink process loses
/// nothing under any policy; the policy decides what a power loss or a
/// kernel crash of the sink's node may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Never force; the operating system writes back on its own.
    Never,
    /// Force every commit before acknowledging it: nothing acknowledged is
    /// lost even to a power loss, at the cost of a disk flush per frame.
    Frame,
    /// Force this often, on a thread of its own (and when the run ends): a
    /// power loss may take the last interval's frames after upstream forgot
    /// them, and a journal that then claims frames its file lacks is
    /// refused on restart, saying so.
    Interval(Duration),
}

impl Default for SyncPolicy {
    /// Once a second.
    fn default() -> Self {
        Self::Interval(Duration::from_secs(1))
    }
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    /// `never`, `frame`, or an interval: `500ms`, `2s`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let ms = |v: &str, scale: u64| {
            v.trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .ok_or_else(|| {
                    format!("sync `{s}`: expected never, frame, or an interval such as 500ms or 2s")
                })
        };
        match t {
            "never" => Ok(Self::Never),
            "frame" => Ok(Self::Frame),
            _ if t.ends_with("ms") => Ok(Self::Interval(Duration::from_millis(ms(
                &t[..t.len() - 2],
                1,
            )?))),
            _ if t.ends_with('s') => Ok(Self::Interval(Duration::from_millis(ms(
                &t[..t.len() - 1],
                1000,
            )?))),
            _ => Err(format!(
                "sync `{s}`: expected never, frame, or an interval such as 500ms or 2s"
            )),
        }
    }
}

/// One journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A committed frame.
    Frame {
        /// Stream.
        stream: u32,
        /// Seq.
        seq: u64,
        /// Capture time, ns.
        capture_ns: u64,
        /// Arrival time at the sink, ns.
        arrival_ns: u64,
        /// The stream's output digest state after this frame.
        digest: u128,
        /// Frames in the stacked output file after this one (0 for other
        /// sinks).
        stacked: u64,
    },
    /// A stream ended after `frames` frames.
    End {
        /// Stream.
        stream: u32,
        /// Frames in the stream.
        frames: u64,
    },
}

impl Entry {
    fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        let (kind, stream, a, c, d, digest, e) = match *self {
            Entry::Frame {
                stream,
                seq,
                capture_ns,
                arrival_ns,
                digest,
                stacked,
            } => (1u32, stream, seq, capture_ns, arrival_ns, digest, stacked),
            Entry::End { stream, frames } => (2, stream, frames, 0, 0, 0, 0),
        };
        b[0..4].copy_from_slice(&kind.to_le_bytes());
        b[4..8].copy_from_slice(&stream.to_le_bytes());
        b[8..16].copy_from_slice(&a.to_le_bytes());
        b[16..24].copy_from_slice(&c.to_le_bytes());
        b[24..32].copy_from_slice(&d.to_le_bytes());
        b[32..48].copy_from_slice(&digest.to_le_bytes());
        b[48..56].copy_from_slice(&e.to_le_bytes());
        let sum = check(&b[..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let u32_at = |i: usize| b.get(i..i + 4)?.try_into().ok().map(u32::from_le_bytes);
        let u64_at = |i: usize| b.get(i..i + 8)?.try_into().ok().map(u64::from_le_bytes);
        if b.len() != RECORD || u64_at(56)? != check(&b[..56]) {
            return None;
        }
        let digest = u128::from_le_bytes(b.get(32..48)?.try_into().ok()?);
        match u32_at(0)? {
            1 => Some(Entry::Frame {
                stream: u32_at(4)?,
                seq: u64_at(8)?,
                capture_ns: u64_at(16)?,
                arrival_ns: u64_at(24)?,
                digest,
                stacked: u64_at(48)?,
            }),
            2 => Some(Entry::End {
                stream: u32_at(4)?,
                frames: u64_at(8)?,
            }),
            _ => None,
        }
    }
}

fn header(fingerprint: u64) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[..16].copy_from_slice(MAGIC);
    b[16..20].copy_from_slice(&VERSION.to_le_bytes());
    b[24..32].copy_from_slice(&fingerprint.to_le_bytes());
    let sum = check(&b[..56]);
    b[56..64].copy_from_slice(&sum.to_le_bytes());
    b
}

/// Forces a sink's commits to disk every interval on its own thread, so
/// the sink's thread (and the acknowledgements it sends) never waits for
/// the disk: the data's file system first (`syncfs` of the output's
/// folder), then the journal. Stops when dropped.
#[derive(Debug)]
pub struct Syncer {
    stop: Arc<AtomicBool>,
    dirty: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    /// A syncer of `data_dir` (the outputs' folder, when there are
    /// outputs) and the journal at `journal`, every `every`.
    pub fn start(every: Duration, data_dir: Option<PathBuf>, journal: PathBuf) -> Option<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let dirty = Arc::new(AtomicBool::new(false));
        let (s, d) = (stop.clone(), dirty.clone());
        let thread = std::thread::Builder::new()
            .name("sink-sync".into())
            .spawn(move || {
                let step = every.min(Duration::from_millis(50));
                let mut waited = Duration::ZERO;
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < every || !d.swap(false, Ordering::Relaxed) {
                        continue;
                    }
                    waited = Duration::ZERO;
                    if let Some(dir) = &data_dir
                        && let Err(e) = crate::io::npy::sync_folder(dir)
                    {
                        tracing::warn!("sink sync: {e}");
                    }
                    if let Err(e) = File::open(&journal).and_then(|f| f.sync_data()) {
                        tracing::warn!("sink sync: {}: {e}", journal.display());
                    }
                }
            })
            .map_err(|e| tracing::warn!("sink sync thread: {e}; commits are not forced"))
            .ok()?;
        Some(Self {
            stop,
            dirty,
            thread: Some(thread),
        })
    }

    /// Notes that something was committed since the last force.
    pub fn touch(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The fingerprint of a run's description (what a journal must match to be
/// resumed).
pub fn fingerprint(description: &str) -> u64 {
    check(description.as_bytes())
}

/// An open journal, positioned after its last whole record.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    policy: SyncPolicy,
    unsynced: bool,
}

/// What [`Journal::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The records of the run, in order (empty for a new run).
    pub entries: Vec<Entry>,
    /// Whether a run is resumed (else a new run starts and its outputs are
    /// to be replaced).
    pub resumed: bool,
    /// Bytes of a torn last record that were cut off.
    pub torn_bytes: u64,
}

impl Journal {
    /// Opens the journal at `path` for a run described by `fingerprint`:
    /// resumes the run it holds, or starts a new one (no journal, an empty
    /// one, or `fresh`).
    ///
    /// # Errors
    /// [`JournalError`] when the file cannot be read or written, is not a
    /// journal, or holds an unfinished run of another description (the
    /// outputs it describes are kept: pass `fresh` to replace them).
    pub fn open(
        path: &Path,
        fingerprint: u64,
        policy: SyncPolicy,
        fresh: bool,
    ) -> Result<(Self, Recovered), JournalError> {
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| err(d, format!("cannot create folder: {e}")))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| err(path, format!("cannot open: {e}")))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| err(path, format!("cannot read: {e}")))?;
        let mut rec = Recovered::default();
        let mut keep = 0usize;
        if !fresh && bytes.len() >= RECORD {
            let h = &bytes[..RECORD];
            if &h[..16] != MAGIC {
                return Err(err(
                    path,
                    "not a streamfuse sink journal (remove it, or pass --fresh)",
                ));
            }
            if h != header(fingerprint) {
                return Err(err(
                    path,
                    "holds a run of another pipeline, sink or frame shape; its outputs are kept: remove the journal or pass --fresh to replace them",
                ));
            }
            let mut at = RECORD;
            while at + RECORD <= bytes.len() {
                let Some(e) = Entry::decode(&bytes[at..at + RECORD]) else {
                    break;
                };
                rec.entries.push(e);
                at += RECORD;
            }
            rec.torn_bytes = (bytes.len() - at) as u64;
            rec.resumed = true;
            keep = at;
        }
        let io = |e: std::io::Error| err(path, e.to_string());
        if keep == 0 {
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.write_all(&header(fingerprint)).map_err(io)?;
        } else {
            file.set_len(keep as u64).map_err(io)?;
            file.seek(SeekFrom::Start(keep as u64)).map_err(io)?;
        }
        file.sync_data().map_err(io)?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                policy,
                unsynced: false,
            },
            rec,
        ))
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `e` (one write: a kill leaves it whole or detectably torn).
    ///
    /// # Errors
    /// [`JournalError`] when the write fails.
    pub fn append(&mut self, e: &Entry) -> Result<(), JournalError> {
        self.file
            .write_all(&e.encode())
            .map_err(|x| err(&self.path, format!("cannot append: {x}")))?;
        self.unsynced = true;
        Ok(())
    }

    /// Whether the policy wants the commits forced to disk now, on the
    /// committing thread.
    ///
    /// Only [`SyncPolicy::Frame`] forces on the committing thread; an
    /// interval is forced by [`Syncer`], off the acknowledgement path.
    pub fn sync_due(&self) -> bool {
        self.unsynced && self.policy == SyncPolicy::Frame
    }

    /// Forces the journal to disk (after the caller forced its outputs).
    ///
    /// # Errors
    /// [`JournalError`] when the flush fails.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file
            .sync_data()
            .map_err(|x| err(&self.path, format!("cannot sync: {x}")))?;
        self.unsynced = false;
        Ok(())
    }

    /// The sync policy.
    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Entry {
        Entry::Frame {
            stream: 2,
            seq,
            capture_ns: 100 + seq,
            arrival_ns: 200 + seq,
            digest: u128::from(seq) << 70 | 5,
            stacked: seq + 1,
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_one_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, rec) = Journal::open(&path, 7, SyncPolicy::Frame, false).unwrap();
        assert!(!rec.resumed && rec.entries.is_empty());
        for q in 0..3 {
            j.append(&frame(q)).unwrap();
        }
        j.append(&Entry::End {
            stream: 2,
            frames: 3,
        })
        .unwrap();
        drop(j);
        // A record torn by a kill: half of one, then garbage.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&frame(3).encode()[..40]).unwrap();
        drop(f);
        let (j, rec) = Journal::open(&path, 7, SyncPolicy::Frame, false).unwrap();
        assert!(rec.resumed);
        assert_eq!(rec.torn_bytes, 40);
        assert_eq!(rec.entries.len(), 4);
        assert_eq!(rec.entries[1], frame(1));
        assert_eq!(
            rec.entries[3],
            Entry::End {
                stream: 2,
                frames: 3
            }
        );
        drop(j);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (RECORD * 5) as u64,
            "cut after the last whole record"
        );
        // A flipped bit ends the records there.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[RECORD * 2 + 9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, rec) = Journal::open(&path, 7, SyncPolicy::Frame, false).unwrap();
        assert_eq!(rec.entries, vec![frame(0)]);
    }

    #[test]
    fn another_run_is_refused_unless_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path, 7, SyncPolicy::Never, false).unwrap();
        j.append(&frame(0)).unwrap();
        drop(j);
        let e = Journal::open(&path, 8, SyncPolicy::Never, false).unwrap_err();
        assert!(e.to_string().contains("another pipeline"), "{e}");
        let (_, rec) = Journal::open(&path, 7, SyncPolicy::Never, false).unwrap();
        assert!(rec.resumed);
        assert_eq!(rec.entries.len(), 1);
        // `fresh` replaces a run of any description.
        let (_, rec) = Journal::open(&path, 9, SyncPolicy::Never, true).unwrap();
        assert!(!rec.resumed && rec.entries.is_empty());
        let (_, rec) = Journal::open(&path, 9, SyncPolicy::Never, false).unwrap();
        assert!(rec.resumed && rec.entries.is_empty());
        std::fs::write(
            &path,
            b"not a journal at all, certainly not one of ours....................",
        )
        .unwrap();
        assert!(Journal::open(&path, 9, SyncPolicy::Never, false).is_err());
    }

    #[test]
    fn sync_policies_parse() {
        assert_eq!("never".parse(), Ok(SyncPolicy::Never));
        assert_eq!("frame".parse(), Ok(SyncPolicy::Frame));
        assert_eq!(
            "250ms".parse(),
            Ok(SyncPolicy::Interval(Duration::from_millis(250)))
        );
        assert_eq!(
            "2s".parse(),
            Ok(SyncPolicy::Interval(Duration::from_secs(2)))
        );
        assert!("soon".parse::<SyncPolicy>().is_err());
        assert!("xs".parse::<SyncPolicy>().is_err());
    }
}
