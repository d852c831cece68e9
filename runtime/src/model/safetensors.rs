//! Tensors from safetensors files (PyTorch's `save_file`), f32 or f16.

use std::path::Path;

use super::ModelError;

/// Reads tensor `name` of the file at `path` as `f32` values, checking its
/// shape against `expected`. The error is a message naming the file, the
/// tensor and both shapes, for the caller to locate.
///
/// # Errors
/// [`ModelError`] when the file cannot be read or decoded, has no such
/// tensor, or the tensor's shape, dtype or values do not fit.
pub fn load(path: &Path, name: &str, expected: &[u64]) -> Result<Vec<f32>, ModelError> {
    load_bytes(path, &super::read_file(path)?, name, expected)
}

/// [`load`] from an in-memory file; `path` names it in errors.
///
/// # Errors
/// As [`load`].
pub fn load_bytes(
    path: &Path,
    bytes: &[u8],
    name: &str,
    expected: &[u64],
) -> Result<Vec<f32>, ModelError> {
    let bad = |problem: String| ModelError::Tensor {
        path: path.to_path_buf(),
        tensor: format!("tensor `{name}`"),
        problem,
    };
    let st = ::safetensors::SafeTensors::deserialize(bytes).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        format: "a valid safetensors file",
        message: e.to_string(),
    })?;
    let t = st.tensor(name).map_err(|_| {
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_owned()).collect();
        names.sort();
        ModelError::Missing {
            path: path.to_path_buf(),
            what: format!("tensor `{name}` (it has: {})", names.join(", ")),
        }
    })?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    if shape != expected {
        return Err(bad(format!("has shape {shape:?}, expected {expected:?}")));
    }
    let data = t.data();
    let values: Vec<f32> = match t.dtype() {
        ::safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        ::safetensors::Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(bad(format!("is {other:?}; expected F32 or F16")));
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("holds a non-finite value at {i}")));
    }
    Ok(values)
}
