//! The `.npy` file format: the one reader of tensor files (frames, weights,
//! tool outputs) and the header writer. One dtype policy everywhere:
//! C-ordered float32 or float64 (converted to float32), either byte order.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use streamfuse_kernels::Shape;

/// A tensor file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct NpyError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

pub(crate) fn err(path: &Path, message: impl Into<String>) -> NpyError {
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

pub(crate) fn open(path: &Path) -> Result<npyz::NpyFile<BufReader<File>>, NpyError> {
    let f = File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    let npy = npyz::NpyFile::new(BufReader::new(f))
        .map_err(|e| err(path, format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(err(path, "Fortran-ordered; save it in C order"));
    }
    Ok(npy)
}

pub(crate) fn header_of(
    path: &Path,
    npy: &npyz::NpyFile<BufReader<File>>,
) -> Result<NpyHeader, NpyError> {
    let descr = npy.dtype().descr();
    let f64 = match descr.trim_matches(['\'', ' ']) {
        "<f4" | ">f4" => false,
        "<f8" | ">f8" => true,
        other => {
            return Err(err(
                path,
                format!("dtype {other}; expected float32 or float64"),
            ));
        }
    };
    // A header may claim any size: check it against the file before
    // anything is allocated for it.
    let shape = npy.shape().to_vec();
    let item: u64 = if f64 { 8 } else { 4 };
    let claimed = shape
        .iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| err(path, format!("shape {shape:?} overflows")))?;
    let len = std::fs::metadata(path)
        .map_err(|e| err(path, format!("cannot read: {e}")))?
        .len();
    if claimed > len {
        return Err(err(
            path,
            format!(
                "shape {shape:?} claims {claimed} bytes of values, the file holds {len} bytes in all"
            ),
        ));
    }
    Ok(NpyHeader { shape, f64 })
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
pub(crate) const STACKED_HEADER: usize = 128;

/// The header of an f32 `.npy` file of `shape`, padded to `total` bytes
/// (0: to the next multiple of 64).
pub fn header_bytes(shape: &[u64], total: usize) -> Vec<u8> {
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

/// Reads a whole C-ordered `.npy` file of float32 (or float64, converted)
/// values of any shape, every one finite: its shape and values.
///
/// # Errors
/// [`NpyError`] naming the file and what is wrong with it (unreadable, not
/// `.npy`, truncated, Fortran order, another dtype, a NaN or infinity).
pub fn read_f32(path: &Path) -> Result<(Vec<u64>, Vec<f32>), NpyError> {
    let npy = open(path)?;
    let h = header_of(path, &npy)?;
    let count: u64 = h.shape.iter().product();
    let values: Vec<f32> = if h.f64 {
        npy.into_vec::<f64>()
            .map(|v| v.into_iter().map(|x| x as f32).collect())
    } else {
        npy.into_vec::<f32>()
    }
    .map_err(|e| err(path, format!("cannot read values: {e}")))?;
    if values.len() as u64 != count {
        return Err(err(
            path,
            format!(
                "truncated: shape {:?} needs {count} values, it holds {}",
                h.shape,
                values.len()
            ),
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(err(path, format!("holds a non-finite value at index {i}")));
    }
    Ok((h.shape, values))
}
