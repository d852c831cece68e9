//! Loading weight tensors from `.npy` files, with their shapes checked.

use std::path::Path;

/// Reads an `.npy` file of `f32` (or `f64`, converted) values and checks its
/// shape against `expected`. The error is a message for the caller to locate.
pub(super) fn load_npy(path: &Path, expected: &[u64]) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| format!("{} is not a valid .npy file: {e}", path.display()))?;
    let shape = npy.shape().to_vec();
    if shape != expected {
        return Err(format!(
            "{} holds shape {shape:?}, expected {expected:?}",
            path.display()
        ));
    }
    if npy.order() != npyz::Order::C {
        return Err(format!(
            "{} is Fortran-ordered; save it in C order",
            path.display()
        ));
    }
    let descr = npy.dtype().descr();
    let values = match descr.trim_matches(['\'', ' ']) {
        "<f4" | "|f4" | ">f4" => npy.into_vec::<f32>(),
        "<f8" | "|f8" | ">f8" => npy
            .into_vec::<f64>()
            .map(|v| v.into_iter().map(|x| x as f32).collect()),
        other => {
            return Err(format!(
                "{} holds dtype {other}; expected float32 or float64",
                path.display()
            ));
        }
    }
    .map_err(|e| format!("cannot read values of {}: {e}", path.display()))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "{} holds a non-finite value at index {i}",
            path.display()
        ));
    }
    Ok(values)
}
