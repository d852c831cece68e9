//! Loading weight tensors from `.npy` files, with their shapes checked.

use std::path::Path;

use crate::media::npy;

/// Reads an `.npy` file of `f32` (or `f64`, converted) values through the
/// one npy reader ([`npy::read_f32`]) and checks its shape against
/// `expected`. The error is a message for the caller to locate.
pub(super) fn load_npy(path: &Path, expected: &[u64]) -> Result<Vec<f32>, String> {
    let (shape, values) = npy::read_f32(path).map_err(|e| e.to_string())?;
    if shape != expected {
        return Err(format!(
            "{} holds shape {shape:?}, expected {expected:?}",
            path.display()
        ));
    }
    Ok(values)
}
