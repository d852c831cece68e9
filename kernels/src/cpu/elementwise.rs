//! Elementwise ops.

use super::relu1;
use super::simd::multiversion;
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

/// ReLU in place.
pub fn relu_in_place(data: &mut [f32]) {
    super::for_each_chunk(data, CHUNK, |(_, c)| relu_chunk(c));
}

multiversion! {
    fn relu_chunk(chunk: &mut [f32]) {
        for v in chunk {
            *v = relu1(*v);
        }
    }
}

multiversion! {
    fn pointwise_chunk(ops: &[Pointwise], chunk: &mut [f32]) {
        apply_pointwise(ops, chunk);
    }
}

/// Applies `ops` in order to every value, in place, in one pass (each
/// chunk gets every op while it is in cache).
pub fn pointwise_in_place(data: &mut [f32], ops: &[Pointwise]) {
    super::for_each_chunk(data, CHUNK / 4, |(_, chunk)| pointwise_chunk(ops, chunk));
}
