//! Elementwise ops.

use rayon::prelude::*;

use super::relu1;
use crate::op::{Pointwise, apply_pointwise};
use crate::tensor::Tensor;

/// Values per parallel chunk.
const CHUNK: usize = 1 << 15;

/// `max(x, 0)` for every value (NaN and -0.0 become +0.0).
pub fn relu(input: &Tensor) -> Tensor {
    let mut out = input.clone();
    relu_in_place(out.data_mut());
    out
}

/// Clamps every value to `[min, max]` in place, as `x > min ? x : min`
/// then `v < max ? v : max` (NaN becomes `min`, like ReLU's NaN → 0).
pub fn clip_in_place(data: &mut [f32], min: f32, max: f32) {
    data.par_chunks_mut(CHUNK).for_each(|chunk| {
        for v in chunk {
            let x = if *v > min { *v } else { min };
            *v = if x < max { x } else { max };
        }
    });
}

/// ReLU in place.
pub fn relu_in_place(data: &mut [f32]) {
    data.par_chunks_mut(CHUNK).for_each(|chunk| {
        for v in chunk {
            *v = relu1(*v);
        }
    });
}

/// Applies `ops` in order to every value, in place, in one pass (each
/// chunk gets every op while it is in cache).
pub fn pointwise_in_place(data: &mut [f32], ops: &[Pointwise]) {
    data.par_chunks_mut(CHUNK / 4)
        .for_each(|chunk| apply_pointwise(ops, chunk));
}
