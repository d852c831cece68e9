//! Loading weight tensors from `.npy` files, with their shapes checked.

use std::path::Path;

/// Reads an `.npy` file of `f32` (or `f64`, converted) values and checks its
/// shape against `expected`. The error is a message for the caller to locate.
pub(super) fn load_npy(path: &Path, expected: &[u64]) -> Result<Vec<f32>, String> {
    let (shape, values) = read_npy_f32(path)?;
    if shape != expected {
        return Err(format!(
            "{} holds shape {shape:?}, expected {expected:?}",
            path.display()
        ));
    }
    Ok(values)
}

/// Reads a C-ordered `.npy` file of float32 (or float64, converted) values
/// of any shape, every one finite: its shape and values.
///
/// # Errors
/// A message naming the file and what is wrong with it (unreadable, not
/// `.npy`, truncated, Fortran order, another dtype, a NaN or infinity).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<u64>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| format!("{} is not a valid .npy file: {e}", path.display()))?;
    let shape = npy.shape().to_vec();
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
    let count: u64 = shape.iter().product();
    if values.len() as u64 != count {
        return Err(format!(
            "{} is truncated: shape {shape:?} needs {count} values, it holds {}",
            path.display(),
            values.len()
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "{} holds a non-finite value at index {i}",
            path.display()
        ));
    }
    Ok((shape, values))
}
