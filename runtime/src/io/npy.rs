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
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use streamfuse_kernels::{Shape, Tensor};

use crate::frame::{Frame, now_ns};

/// A tensor file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct NpyError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

fn err(path: &Path, message: impl Into<String>) -> NpyError {
    NpyError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Header facts of a `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Dimensions.
    pub shape: Vec<u64>,
    /// float64 (else float32).
    pub f64: bool,
}

fn open(path: &Path) -> Result<npyz::NpyFile<BufReader<File>>, NpyError> {
    let f = File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    let npy = npyz::NpyFile::new(BufReader::new(f))
        .map_err(|e| err(path, format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(err(path, "Fortran-ordered; save it in C order"));
    }
    Ok(npy)
}

fn header_of(path: &Path, npy: &npyz::NpyFile<BufReader<File>>) -> Result<NpyHeader, NpyError> {
    let descr = npy.dtype().descr();
    let f64 = match descr.trim_matches(['\'', ' ']) {
        "<f4" => false,
        "<f8" => true,
        other => {
            return Err(err(
                path,
                format!("dtype {other}; expected float32 or float64"),
            ));
        }
    };
    Ok(NpyHeader {
        shape: npy.shape().to_vec(),
        f64,
    })
}

/// Reads a file's header.
///
/// # Errors
/// [`NpyError`] when the file is missing, not `.npy`, Fortran-ordered or
/// not float32/float64.
pub fn header(path: &Path) -> Result<NpyHeader, NpyError> {
    let npy = open(path)?;
    header_of(path, &npy)
}

/// The `*.npy` files of `dir`, in name order.
///
/// # Errors
/// [`NpyError`] when the folder cannot be read or holds no `.npy` file.
pub fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, NpyError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(dir, format!("cannot read folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "npy"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err(dir, "holds no .npy file"));
    }
    Ok(files)
}

/// Frame shape and count of a stacked file: `[N, C, H, W]` or `[C, H, W]`.
///
/// # Errors
/// [`NpyError`] when the rank is not 3 or 4 or a dimension is 0.
pub fn stacked_layout(path: &Path, h: &NpyHeader) -> Result<(Shape, u64), NpyError> {
    let dims: Vec<usize> = h.shape.iter().map(|&d| d as usize).collect();
    let (n, shape) = match dims.as_slice() {
        [n, c, hh, w] => (*n as u64, Shape::new(*c, *hh, *w)),
        [c, hh, w] => (1, Shape::new(*c, *hh, *w)),
        _ => {
            return Err(err(
                path,
                format!("shape {:?}; expected [N, C, H, W] or [C, H, W]", h.shape),
            ));
        }
    };
    if shape.is_empty() || n == 0 {
        return Err(err(path, format!("shape {:?} holds no frame", h.shape)));
    }
    Ok((shape, n))
}

/// Where an npy source reads.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyInput {
    /// One stacked file.
    Stacked(PathBuf),
    /// One file per frame.
    Files(Vec<PathBuf>),
}

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

/// Where an npy sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpyOutput {
    /// One stacked `[N, C, H, W]` file.
    Stacked(PathBuf),
    /// `<stream>-<seq>.npy` per frame in this folder.
    Dir(PathBuf),
}

/// Header bytes reserved for a stacked file, so the final header (with N)
/// fits in place.
const STACKED_HEADER: usize = 128;

/// The header of an f32 `.npy` file of `shape`, padded to `total` bytes
/// (0: to the next multiple of 64).
pub(crate) fn header_bytes(shape: &[u64], total: usize) -> Vec<u8> {
    let dims = shape
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let dims = if shape.len() == 1 {
        format!("{dims},")
    } else {
        dims
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // magic (6) + version (2) + header length (2) + dict + padding + '\n'
    let unpadded = 10 + dict.len() + 1;
    let len = if total > 0 {
        total
    } else {
        unpadded.div_ceil(64) * 64
    };
    dict.push_str(&" ".repeat(len.saturating_sub(unpadded)));
    dict.push('\n');
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
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

/// Reads a whole `.npy` file of float32 values (tests and tools).
///
/// # Errors
/// [`NpyError`] when the file cannot be read.
pub fn read_f32(path: &Path) -> Result<(Vec<u64>, Vec<f32>), NpyError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| err(path, e.to_string()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| err(path, e.to_string()))?;
    let shape = npy.shape().to_vec();
    let v = npy
        .into_vec::<f32>()
        .map_err(|e| err(path, e.to_string()))?;
    Ok((shape, v))
}
