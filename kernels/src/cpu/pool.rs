//! Max pooling (PyTorch floor mode, no padding).
//!
//! Each output row is the vertical max of its `size` input rows (first row,
//! then `max(v, next)` in row order) followed by the horizontal max of each
//! window (first column, then `max(m, next)`); the fused path uses the same
//! order so both give bit-identical results.

use super::simd::multiversion;
use super::{band_rows, max2, plane_bands};
use crate::error::KernelError;
use crate::op::MaxPoolParams;
use crate::tensor::{Shape, Tensor};

multiversion! {
    /// `v[i] = max(v[i], row[i])`.
    pub(crate) fn vertical_max(v: &mut [f32], row: &[f32]) {
        for (a, &b) in v.iter_mut().zip(row) {
            *a = max2(*a, b);
        }
    }
}

multiversion! {
    /// `out[x] = max(v[x*stride .. x*stride + size])`, for every `x` of `out`.
    pub(crate) fn horizontal_max(v: &[f32], out: &mut [f32], size: usize, stride: usize) {
        if size == 2 && stride == 2 {
            for (o, pair) in out.iter_mut().zip(v.chunks_exact(2)) {
                *o = max2(pair[0], pair[1]);
            }
            return;
        }
        for (x, o) in out.iter_mut().enumerate() {
            let win = &v[x * stride..x * stride + size];
            let mut m = win[0];
            for &b in &win[1..] {
                m = max2(m, b);
            }
            *o = m;
        }
    }
}

/// Max pooling of every channel of `input`.
///
/// # Errors
/// [`KernelError`] when the window does not fit the input.
pub fn maxpool(input: &Tensor, p: &MaxPoolParams) -> Result<Tensor, KernelError> {
    let in_shape = input.shape();
    let out_shape = p.output_shape(in_shape)?;
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::zeros(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut rows)| {
        let mut v = vec![0.0f32; in_shape.w];
        for (ch, rows) in rows.iter_mut().enumerate() {
            let plane = input.plane(ch);
            for (r, out_row) in rows.chunks_exact_mut(w).enumerate() {
                let y0 = (b * band + r) * p.stride;
                v.copy_from_slice(&plane[y0 * in_shape.w..(y0 + 1) * in_shape.w]);
                for y in y0 + 1..y0 + p.size {
                    vertical_max(&mut v, &plane[y * in_shape.w..(y + 1) * in_shape.w]);
                }
                horizontal_max(&v, out_row, p.size, p.stride);
            }
        }
    });
    Ok(out)
}
