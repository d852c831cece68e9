//! The `.npy` file format: the one reader of tensor files (frames, weights,
//! tool outputs) and the header writer. One dtype policy everywhere:
//! C-ordered float32 or float64 (converted to float32), either byte order.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
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

/// The largest `.npy` header read, in bytes (the dict after the magic,
/// version and length fields). numpy refuses larger ones too (`np.load`'s
/// `max_header_size`, 10 000); the limit is checked before the header is
/// read, so a length field claiming up to 4 GiB allocates nothing.
pub const MAX_HEADER_BYTES: usize = 10_000;

/// The deepest nesting of brackets (`(`, `[`, `{`) a `.npy` header may
/// have. A float32 or float64 array's header nests two deep (the dict, the
/// shape); the Python-literal parser's time grows exponentially with the
/// depth (18 levels took over 10 s), so deeper headers are refused before
/// it runs.
pub const MAX_HEADER_NESTING: usize = 4;

/// Bytes of a file's start that [`check_header`] needs at most: magic,
/// version, a 4-byte length and the header.
const HEAD_BYTES: usize = 12 + MAX_HEADER_BYTES;

/// Checks the header at the start of a `.npy` file of `len` bytes (`head`:
/// its first bytes, up to [`HEAD_BYTES`]) before the decoder reads it: the
/// header's length against [`MAX_HEADER_BYTES`] and the file, and each
/// `shape` it states for dimensions whose product overflows (the decoder
/// multiplies them unchecked). What this does not check (the magic, the
/// dict's syntax and keys) the decoder reports. Returns the bytes of the
/// file after the header (its values).
fn check_header(path: &Path, head: &[u8], len: u64) -> Result<u64, NpyError> {
    let (text_at, size) = match head {
        [0x93, b'N', b'U', b'M', b'P', b'Y', 1, _, a, b, ..] => {
            (10, u16::from_le_bytes([*a, *b]) as usize)
        }
        [0x93, b'N', b'U', b'M', b'P', b'Y', 2 | 3, _, a, b, c, d, ..] => {
            (12, u32::from_le_bytes([*a, *b, *c, *d]) as usize)
        }
        // Not a header this reader knows: the decoder says what is wrong.
        _ => return Ok(len),
    };
    if size > MAX_HEADER_BYTES {
        return Err(err(
            path,
            format!("header claims {size} bytes, over the limit of {MAX_HEADER_BYTES}"),
        ));
    }
    let Some(text) = head.get(text_at..text_at + size) else {
        return Err(err(
            path,
            format!("header claims {size} bytes, the file holds {len} bytes in all"),
        ));
    };
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let depth = nesting(text);
    if depth > MAX_HEADER_NESTING {
        return Err(err(
            path,
            format!("header nests brackets {depth} deep, over the limit of {MAX_HEADER_NESTING}"),
        ));
    }
    let values = len.saturating_sub((text_at + size) as u64);
    let Some(py_literal::Value::Dict(dict)) = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<py_literal::Value>().ok())
    else {
        return Ok(values);
    };
    for (k, v) in &dict {
        if k.as_string().map(String::as_str) != Some("shape") {
            continue;
        }
        let (py_literal::Value::Tuple(dims) | py_literal::Value::List(dims)) = v else {
            continue;
        };
        // Every partial product the decoder forms is at most the product
        // of the nonzero dimensions.
        let mut product: u64 = 1;
        for d in dims {
            let Some(d) = d
                .as_integer()
                .and_then(|i| i.to_string().parse::<u64>().ok())
            else {
                continue;
            };
            if d == 0 {
                continue;
            }
            product = product
                .checked_mul(d)
                .ok_or_else(|| err(path, format!("shape {} overflows", py_literal_list(dims))))?;
        }
    }
    Ok(values)
}

/// The deepest nesting of brackets in `text` outside string literals.
fn nesting(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for &b in text {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if b == b'\\' => escaped = true,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    deepest
}

/// A shape as the header wrote it, for messages.
fn py_literal_list(dims: &[py_literal::Value]) -> String {
    let parts: Vec<String> = dims.iter().map(ToString::to_string).collect();
    format!("({})", parts.join(", "))
}

/// Opens the `.npy` file at `path` and reads its header: the decoder and
/// the bytes after the header (the values). Only a regular file is read (its length is what the
/// header's sizes are checked against; a device or a pipe has none).
pub(crate) fn open(path: &Path) -> Result<(npyz::NpyFile<BufReader<File>>, u64), NpyError> {
    let f = File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
    let meta = f
        .metadata()
        .map_err(|e| err(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err(path, "is not a regular file"));
    }
    let len = meta.len();
    let mut head = vec![0u8; HEAD_BYTES.min(usize::try_from(len).unwrap_or(HEAD_BYTES))];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| err(path, format!("cannot read: {e}")))?;
    let values = check_header(path, &head, len)?;
    Ok((decoder(path, BufReader::new(f))?, values))
}

/// The decoder of a `.npy` file whose header [`check_header`] passed.
fn decoder<R: Read>(path: &Path, r: R) -> Result<npyz::NpyFile<R>, NpyError> {
    let npy =
        npyz::NpyFile::new(r).map_err(|e| err(path, format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(err(path, "Fortran-ordered; save it in C order"));
    }
    Ok(npy)
}

/// Opens an in-memory `.npy` file (`path` names it in errors): the
/// decoder and the bytes after the header, as [`open`] does for a file.
pub(crate) fn open_bytes<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(npyz::NpyFile<&'a [u8]>, u64), NpyError> {
    let len = bytes.len() as u64;
    let values = check_header(path, &bytes[..bytes.len().min(HEAD_BYTES)], len)?;
    Ok((decoder(path, bytes)?, values))
}

/// The header facts of an opened file holding `len` bytes after its
/// header, the size its shape claims checked against `len` before anything
/// is allocated for its values.
pub(crate) fn header_of<R: Read>(
    path: &Path,
    npy: &npyz::NpyFile<R>,
    len: u64,
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
    if claimed > len {
        return Err(err(
            path,
            format!(
                "shape {shape:?} claims {claimed} bytes of values, the file holds {len} bytes after its header"
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
    let (npy, len) = open(path)?;
    header_of(path, &npy, len)
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
    let (npy, len) = open(path)?;
    values_of(path, npy, len)
}

/// [`read_f32`] of an in-memory file; `path` names it in errors.
///
/// # Errors
/// As [`read_f32`].
pub fn read_f32_bytes(path: &Path, bytes: &[u8]) -> Result<(Vec<u64>, Vec<f32>), NpyError> {
    let (npy, len) = open_bytes(path, bytes)?;
    values_of(path, npy, len)
}

/// The shape and values of an opened file holding `len` bytes after its
/// header.
fn values_of<R: Read>(
    path: &Path,
    npy: npyz::NpyFile<R>,
    len: u64,
) -> Result<(Vec<u64>, Vec<f32>), NpyError> {
    let h = header_of(path, &npy, len)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(shape: &[u64], values: usize) -> Vec<u8> {
        let mut b = header_bytes(shape, 0);
        b.extend(std::iter::repeat_n(0u8, 4 * values));
        b
    }

    fn message(bytes: &[u8]) -> String {
        match read_f32_bytes(Path::new("x.npy"), bytes) {
            Ok(v) => panic!("read {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn reads_an_in_memory_file() {
        let (shape, values) = read_f32_bytes(Path::new("x.npy"), &file(&[1, 2, 3], 6))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((shape, values.len()), (vec![1, 2, 3], 6));
    }

    /// The file: a shape claiming 40 PB is refused before any
    /// allocation, naming the file.
    #[test]
    fn claimed_sizes_are_checked_against_the_file() {
        let e = message(&file(&[3, 1, 99_999_999, 99_999_999], 4));
        assert!(
            e.starts_with("x.npy: shape [3, 1, 99999999, 99999999] claims"),
            "{e}"
        );
        let e = message(&file(&[1, 4, 4], 5));
        assert!(e.contains("claims 64 bytes"), "{e}");
    }

    /// A zero dimension makes the product 0, but the decoder's partial
    /// products of the others overflowed (a panic with overflow checks).
    #[test]
    fn shapes_whose_products_overflow_are_refused() {
        let e = message(&file(&[0, 1 << 40, 1 << 40], 0));
        assert!(e.contains("overflows"), "{e}");
        let e = message(&file(&[1 << 33, 1 << 33], 0));
        assert!(e.contains("overflows"), "{e}");
    }

    /// A version-2 length field claiming 4 GiB of header allocated it
    /// before reading.
    #[test]
    fn header_length_is_limited() {
        let mut b = b"\x93NUMPY\x02\x00\xff\xff\xff\xff".to_vec();
        b.extend_from_slice(b"{'descr': '<f4'");
        let e = message(&b);
        assert!(
            e.contains("header claims 4294967295 bytes, over the limit"),
            "{e}"
        );
        let mut b = b"\x93NUMPY\x01\x00\x00\x10".to_vec();
        b.extend_from_slice(b"{'descr': '<f4'");
        let e = message(&b);
        assert!(
            e.contains("header claims 4096 bytes, the file holds"),
            "{e}"
        );
    }

    /// Found by the npy fuzz target (`regress-nested-brackets-hang`): the
    /// header parser backtracks exponentially in nested brackets, 18 took
    /// over 10 s.
    #[test]
    fn deeply_nested_headers_are_refused() {
        let mut b = header_bytes(&[1, 1, 2], 0);
        let at = 10;
        b.splice(at..at, std::iter::repeat_n(b'[', 18));
        let len = (b.len() - 10) as u16;
        b[8..10].copy_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        let e = message(&b);
        assert!(
            e.contains("nests brackets 20 deep, over the limit of 4"),
            "{e}"
        );
        // Brackets in strings do not count.
        assert_eq!(nesting(b"{'a': '[[[[[[', 'b': (1, 2)}"), 2);
    }

    #[test]
    fn only_regular_files_are_read() {
        let e = header(Path::new("/dev/zero"))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
