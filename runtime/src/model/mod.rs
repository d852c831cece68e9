//! Reading models: ONNX (initializers and the node chain) and safetensors.

pub mod onnx;
pub mod safetensors;

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest model file read (ONNX or safetensors), in bytes: 2 GiB,
/// protobuf's limit on one message, which an ONNX model holding its
/// weights cannot exceed either. A file's length is checked against it
/// before the file is read.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The bytes of the model file at `path`: a regular file (a device or a
/// pipe has no length to check) of at most [`MAX_MODEL_BYTES`].
///
/// # Errors
/// [`ModelError::Read`] when it cannot be read or is not a regular file,
/// [`ModelError::TooLarge`] when it is over the limit.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    let read = |source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read)?;
    let meta = f.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(read(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() > MAX_MODEL_BYTES {
        return Err(ModelError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    // The length was checked; `take` holds a file that grows meanwhile to it.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_MODEL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(ModelError::TooLarge {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// A model file cannot be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_MODEL_BYTES`].
    #[error("{} holds {len} bytes, over the limit of {MAX_MODEL_BYTES} for a model file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The file is not of the format asked for.
    #[error("{} is not {format}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What it should be (`an ONNX model`, `a valid safetensors file`).
        format: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// Something the caller asked for is not in the file.
    #[error("{} has no {what}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is missing (`graph`, ``initializer `w` ``, ...).
        what: String,
    },
    /// A tensor of the file cannot be used.
    #[error("{}: {tensor} {problem}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor (``initializer `w` ``, ``tensor `w` ``).
        tensor: String,
        /// What is wrong with it.
        problem: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read() {
        let e = read_file(Path::new("/dev/zero")).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
