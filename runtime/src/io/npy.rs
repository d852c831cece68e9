//! `.npy` tensor files in and out.
//!
//! Source forms: `{ npy: { path: frames.npy } }`, one stacked array of shape
//! `[N, C, H, W]` (or `[C, H, W]`, one frame), or `{ npy: { dir: frames/ } }`,
//! every `*.npy` file of the folder in name order, each `[C, H, W]`. float32
//! and float64 (converted) are accepted.
//!
//! Sink forms: `{ npy: { dir: out/ } }` writes each frame as
//! `<stream>-<seq>.npy` (`[C, H, W]`, float32); `{ npy: { path: out.npy } }`
//! writes one stacked `[N, C, H, W]` float32 array, its header rewritten
//! with the final N when the run ends.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use streamfuse_kernels::{Shape, Tensor};

use crate::frame::{Frame, now_ns};
use crate::media::npy::{NpyError, NpyInput, NpyOutput};
use crate::media::npy::{STACKED_HEADER, err, header_bytes, header_of, open};

/// A stream of values read from a file.
type Values = Box<dyn Iterator<Item = std::io::Result<f32>> + Send>;

/// Frames from `.npy` files.
pub struct NpySource {
    input: NpyInput,
    shape: Shape,
    frames: u64,
    next: u64,
    /// Frames of the stacked file to pass over when it is opened.
    skip: u64,
    stacked: Option<(PathBuf, Values)>,
}

impl std::fmt::Debug for NpySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpySource")
            .field("input", &self.input)
            .field("shape", &self.shape)
            .field("frames", &self.frames)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl NpySource {
    /// A source of `frames` frames of `shape`.
    pub fn new(input: NpyInput, shape: Shape, frames: u64) -> Self {
        Self {
            input,
            shape,
            frames,
            next: 0,
            skip: 0,
            stacked: None,
        }
    }

    /// The same source from frame `seq` on (a resumed source).
    #[must_use]
    pub fn starting_at(mut self, seq: u64) -> Self {
        self.next = seq;
        self.skip = seq;
        self
    }

    fn read_values<'a, R: Read + Send + 'a>(
        path: &Path,
        npy: npyz::NpyFile<R>,
        f64: bool,
    ) -> Result<Box<dyn Iterator<Item = std::io::Result<f32>> + Send + 'a>, NpyError> {
        if f64 {
            let r = npy.data::<f64>().map_err(|e| err(path, e.to_string()))?;
            Ok(Box::new(r.map(|v| v.map(|x| x as f32))))
        } else {
            let r = npy.data::<f32>().map_err(|e| err(path, e.to_string()))?;
            Ok(Box::new(r))
        }
    }

    fn take(
        path: &Path,
        it: &mut dyn Iterator<Item = std::io::Result<f32>>,
        n: usize,
        seq: u64,
    ) -> Result<Vec<f32>, NpyError> {
        let mut v = Vec::with_capacity(n);
        for x in it.take(n) {
            v.push(x.map_err(|e| err(path, format!("frame seq {seq}: {e}")))?);
        }
        if v.len() != n {
            return Err(err(path, format!("frame seq {seq}: file ends early")));
        }
        Ok(v)
    }

    fn read(&mut self, seq: u64) -> Result<Tensor, NpyError> {
        let n = self.shape.len();
        let data = match &self.input {
            NpyInput::Stacked(path) => {
                if self.stacked.is_none() {
                    let (npy, len) = open(path)?;
                    let h = header_of(path, &npy, len)?;
                    let mut values = Self::read_values(path, npy, h.f64)?;
                    let skip = self.skip.saturating_mul(n as u64);
                    for _ in 0..skip {
                        if let Some(Err(e)) = values.next() {
                            return Err(err(path, format!("frame seq {seq}: {e}")));
                        }
                    }
                    self.stacked = Some((path.clone(), values));
                }
                let Some((path, it)) = self.stacked.as_mut() else {
                    return Err(err(Path::new("npy source"), "reader missing"));
                };
                Self::take(path, it.as_mut(), n, seq)?
            }
            NpyInput::Files(files) => {
                let path = &files[seq as usize];
                let (npy, len) = open(path)?;
                let h = header_of(path, &npy, len)?;
                let want = [
                    self.shape.c as u64,
                    self.shape.h as u64,
                    self.shape.w as u64,
                ];
                if h.shape != want {
                    return Err(err(
                        path,
                        format!(
                            "frame seq {seq}: shape {:?}, expected {want:?} like the first file",
                            h.shape
                        ),
                    ));
                }
                let mut it = Self::read_values(path, npy, h.f64)?;
                Self::take(path, it.as_mut(), n, seq)?
            }
        };
        Tensor::from_vec(self.shape, data).map_err(|e| err(Path::new("npy source"), e.to_string()))
    }
}

/// Reads the frames of an in-memory stacked file (`[N, C, H, W]` or
/// `[C, H, W]`) as a stacked source reads its file: header, layout, then
/// frame by frame, at most `limit` frames. `path` names it in errors. For
/// tests and the fuzz targets (`fuzz/`), which drive the reader without a
/// file.
///
/// # Errors
/// [`NpyError`] naming the file and, past the header, the frame.
pub fn read_stacked_bytes(
    path: &Path,
    bytes: &[u8],
    limit: u64,
) -> Result<(Shape, u64, Vec<Tensor>), NpyError> {
    let (npy, len) = crate::media::npy::open_bytes(path, bytes)?;
    let h = header_of(path, &npy, len)?;
    let (shape, count) = crate::media::npy::stacked_layout(path, &h)?;
    let mut values = NpySource::read_values(path, npy, h.f64)?;
    let mut frames = Vec::new();
    for seq in 0..count.min(limit) {
        let data = NpySource::take(path, values.as_mut(), shape.len(), seq)?;
        frames.push(Tensor::from_vec(shape, data).map_err(|e| err(path, e.to_string()))?);
    }
    Ok((shape, count, frames))
}

impl Iterator for NpySource {
    type Item = Result<Frame, NpyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.frames {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        Some(self.read(seq).map(|tensor| Frame {
            stream_id: 0,
            seq,
            capture_ns: now_ns(),
            tensor,
        }))
    }
}

/// Writes frames as `.npy` files, each frame committed as it is written: a
/// process killed at any instant leaves valid files holding every frame
/// written before.
///
/// - stacked: the frame's bytes go after the frames already there, then
///   the header is rewritten with the new count (one small write at offset
///   0), so the file always loads as the frames counted in its header;
/// - folder: each file is written under a temporary name, then renamed
///   into place.
#[derive(Debug)]
pub struct NpySink {
    out: NpyOutput,
    stacked: Option<Stacked>,
}

/// The open stacked file.
#[derive(Debug)]
struct Stacked {
    file: File,
    shape: Shape,
    frames: u64,
}

fn stacked_header(shape: Shape, frames: u64) -> Vec<u8> {
    header_bytes(
        &[frames, shape.c as u64, shape.h as u64, shape.w as u64],
        STACKED_HEADER,
    )
}

impl NpySink {
    /// A sink writing to `out` (folders are created). `resume`: the frames
    /// of shape `shape` an earlier process committed to the stacked file,
    /// which is cut to them and appended to; `None` starts a new file.
    ///
    /// # Errors
    /// [`NpyError`] when the folder or file cannot be created, or the file
    /// to resume holds fewer frames than were committed.
    pub fn new(out: NpyOutput, resume: Option<(u64, Shape)>) -> Result<Self, NpyError> {
        let mut stacked = None;
        match &out {
            NpyOutput::Dir(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| err(d, format!("cannot create folder: {e}")))?;
            }
            NpyOutput::Stacked(p) => {
                if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(d)
                        .map_err(|e| err(d, format!("cannot create folder: {e}")))?;
                }
                if let Some((frames, shape)) = resume.filter(|(n, _)| *n > 0) {
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(p)
                        .map_err(|e| err(p, format!("cannot reopen to resume: {e}")))?;
                    let want = STACKED_HEADER as u64 + frames * shape.bytes() as u64;
                    let len = file.metadata().map_err(|e| err(p, e.to_string()))?.len();
                    if len < want {
                        return Err(err(
                            p,
                            format!(
                                "holds {len} bytes, fewer than the {frames} frames its journal committed ({want} bytes): remove the journal or pass --fresh"
                            ),
                        ));
                    }
                    // Cut what a kill left after the last committed frame.
                    file.set_len(want).map_err(|e| err(p, e.to_string()))?;
                    file.write_all_at(&stacked_header(shape, frames), 0)
                        .map_err(|e| err(p, e.to_string()))?;
                    stacked = Some(Stacked {
                        file,
                        shape,
                        frames,
                    });
                }
            }
        }
        Ok(Self { out, stacked })
    }

    /// Frames in the stacked file (0 for a folder).
    pub fn stacked_frames(&self) -> u64 {
        self.stacked.as_ref().map_or(0, |s| s.frames)
    }

    /// Writes and commits one frame.
    ///
    /// # Errors
    /// [`NpyError`] on a write failure or a frame whose shape differs from
    /// the first one's (stacked form).
    pub fn write(&mut self, f: &Frame) -> Result<(), NpyError> {
        let s = f.tensor.shape();
        match &self.out {
            NpyOutput::Dir(d) => {
                let name = format!("{}-{}.npy", f.stream_id, f.seq);
                let path = d.join(&name);
                let tmp = d.join(format!(".{name}.tmp"));
                let mut w = BufWriter::new(
                    File::create(&tmp).map_err(|e| err(&tmp, format!("cannot create: {e}")))?,
                );
                w.write_all(&header_bytes(&[s.c as u64, s.h as u64, s.w as u64], 0))
                    .and_then(|()| w.write_all(f.tensor.as_bytes()))
                    .and_then(|()| w.flush())
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| err(&path, format!("frame seq {}: {e}", f.seq)))
            }
            NpyOutput::Stacked(path) => {
                if self.stacked.is_none() {
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(path)
                        .map_err(|e| err(path, format!("cannot create: {e}")))?;
                    file.write_all_at(&stacked_header(s, 0), 0)
                        .map_err(|e| err(path, e.to_string()))?;
                    self.stacked = Some(Stacked {
                        file,
                        shape: s,
                        frames: 0,
                    });
                }
                let Some(st) = self.stacked.as_mut() else {
                    return Err(err(path, "writer missing"));
                };
                if st.shape != s {
                    return Err(err(
                        path,
                        format!(
                            "frame seq {}: shape {s} differs from the first frame's {}",
                            f.seq, st.shape
                        ),
                    ));
                }
                let at = STACKED_HEADER as u64 + st.frames * s.bytes() as u64;
                st.file
                    .write_all_at(f.tensor.as_bytes(), at)
                    .and_then(|()| st.file.write_all_at(&stacked_header(s, st.frames + 1), 0))
                    .map_err(|e| err(path, format!("frame seq {}: {e}", f.seq)))?;
                st.frames += 1;
                Ok(())
            }
        }
    }

    /// Forces what was written to disk.
    ///
    /// # Errors
    /// [`NpyError`] when the flush fails.
    pub fn sync(&self) -> Result<(), NpyError> {
        match (&self.out, &self.stacked) {
            (NpyOutput::Stacked(path), Some(st)) => {
                st.file.sync_data().map_err(|e| err(path, e.to_string()))
            }
            (NpyOutput::Dir(d), _) => sync_folder(d),
            (NpyOutput::Stacked(_), None) => Ok(()),
        }
    }

    /// Completes the files (every frame is already committed): forces them
    /// to disk.
    ///
    /// # Errors
    /// [`NpyError`] on a write failure.
    pub fn finish(&mut self) -> Result<(), NpyError> {
        self.sync()
    }
}

/// Forces every file of the file system holding `d` to disk (its files
/// were renamed into place one by one).
pub(crate) fn sync_folder(d: &Path) -> Result<(), NpyError> {
    let f = File::open(d).map_err(|e| err(d, e.to_string()))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `f` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(err(d, std::io::Error::last_os_error().to_string()));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        f.sync_all().map_err(|e| err(d, e.to_string()))
    }
}
