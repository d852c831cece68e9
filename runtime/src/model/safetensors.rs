//! Tensors from safetensors files (PyTorch's `save_file`), f32 or f16.

use std::path::Path;

/// Reads tensor `name` of the file at `path` as `f32` values, checking its
/// shape against `expected`. The error is a message naming the file, the
/// tensor and both shapes, for the caller to locate.
pub fn load(path: &Path, name: &str, expected: &[u64]) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let st = ::safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{} is not a valid safetensors file: {e}", path.display()))?;
    let t = st.tensor(name).map_err(|_| {
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_owned()).collect();
        names.sort();
        format!(
            "{} has no tensor `{name}` (it has: {})",
            path.display(),
            names.join(", ")
        )
    })?;
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    if shape != expected {
        return Err(format!(
            "{}: tensor `{name}` has shape {shape:?}, expected {expected:?}",
            path.display()
        ));
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
            return Err(format!(
                "{}: tensor `{name}` is {other:?}; expected F32 or F16",
                path.display()
            ));
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "{}: tensor `{name}` holds a non-finite value at {i}",
            path.display()
        ));
    }
    Ok(values)
}
