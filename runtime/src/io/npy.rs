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
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
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
            stacked: None,
        }
    }

    fn read_values(
        path: &Path,
        npy: npyz::NpyFile<BufReader<File>>,
        f64: bool,
    ) -> Result<Values, NpyError> {
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
                    let npy = open(path)?;
                    let h = header_of(path, &npy)?;
                    self.stacked = Some((path.clone(), Self::read_values(path, npy, h.f64)?));
                }
                let Some((path, it)) = self.stacked.as_mut() else {
                    return Err(err(Path::new("npy source"), "reader missing"));
                };
                Self::take(path, it.as_mut(), n, seq)?
            }
            NpyInput::Files(files) => {
                let path = &files[seq as usize];
                let npy = open(path)?;
                let h = header_of(path, &npy)?;
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

/// Writes frames as `.npy` files.
#[derive(Debug)]
pub struct NpySink {
    out: NpyOutput,
    stacked: Option<(BufWriter<File>, Shape, u64)>,
}

impl NpySink {
    /// A sink writing to `out` (folders are created).
    ///
    /// # Errors
    /// [`NpyError`] when the folder or file cannot be created.
    pub fn new(out: NpyOutput) -> Result<Self, NpyError> {
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
            }
        }
        Ok(Self { out, stacked: None })
    }

    /// Writes one frame.
    ///
    /// # Errors
    /// [`NpyError`] on a write failure or a frame whose shape differs from
    /// the first one's (stacked form).
    pub fn write(&mut self, f: &Frame) -> Result<(), NpyError> {
        let s = f.tensor.shape();
        match &self.out {
            NpyOutput::Dir(d) => {
                let path = d.join(format!("{}-{}.npy", f.stream_id, f.seq));
                let mut w = BufWriter::new(
                    File::create(&path).map_err(|e| err(&path, format!("cannot create: {e}")))?,
                );
                w.write_all(&header_bytes(&[s.c as u64, s.h as u64, s.w as u64], 0))
                    .and_then(|()| w.write_all(f.tensor.as_bytes()))
                    .and_then(|()| w.flush())
                    .map_err(|e| err(&path, format!("frame seq {}: {e}", f.seq)))
            }
            NpyOutput::Stacked(path) => {
                if self.stacked.is_none() {
                    let mut w = BufWriter::new(
                        File::create(path).map_err(|e| err(path, format!("cannot create: {e}")))?,
                    );
                    let h = header_bytes(&[0, s.c as u64, s.h as u64, s.w as u64], STACKED_HEADER);
                    w.write_all(&h).map_err(|e| err(path, e.to_string()))?;
                    self.stacked = Some((w, s, 0));
                }
                let Some((w, shape, n)) = self.stacked.as_mut() else {
                    return Err(err(path, "writer missing"));
                };
                if *shape != s {
                    return Err(err(
                        path,
                        format!(
                            "frame seq {}: shape {s} differs from the first frame's {shape}",
                            f.seq
                        ),
                    ));
                }
                w.write_all(f.tensor.as_bytes())
                    .map_err(|e| err(path, format!("frame seq {}: {e}", f.seq)))?;
                *n += 1;
                Ok(())
            }
        }
    }

    /// Completes the stacked file's header with the number of frames.
    ///
    /// # Errors
    /// [`NpyError`] on a write failure.
    pub fn finish(&mut self) -> Result<(), NpyError> {
        let NpyOutput::Stacked(path) = &self.out else {
            return Ok(());
        };
        let Some((mut w, s, n)) = self.stacked.take() else {
            return Ok(());
        };
        let h = header_bytes(&[n, s.c as u64, s.h as u64, s.w as u64], STACKED_HEADER);
        w.flush()
            .and_then(|()| {
                let mut f = w
                    .into_inner()
                    .map_err(std::io::IntoInnerError::into_error)?;
                f.seek(SeekFrom::Start(0))?;
                f.write_all(&h)?;
                f.sync_all()
            })
            .map_err(|e| err(path, e.to_string()))
    }
}
