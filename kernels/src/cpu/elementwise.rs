//! Elementwise ops.

use super::relu1;
use super::simd::multiversion;
use crate::op::{ChannelAffine, Pointwise, apply_pointwise};
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

multiversion! {
    fn affine_plane(scale: f32, shift: f32, plane: &mut [f32]) {
        Pointwise::Affine { scale, shift }.apply_slice(plane);
    }
}

/// Applies a per-channel affine to every plane (`plane` values each) of
/// `data`, in place, planes in parallel.
pub fn channel_affine_in_place(data: &mut [f32], plane: usize, a: &ChannelAffine) {
    if plane == 0 {
        return;
    }
    super::for_each_chunk(data, plane, |(c, chunk)| {
        affine_plane(a.scale[c], a.shift[c], chunk);
    });
}
