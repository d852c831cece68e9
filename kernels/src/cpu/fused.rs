//! Fused chains in one pass over the image: a producer (a convolution, or a
//! plain load of the input), the chain's pointwise epilogue, and an
//! optional max-pool consumer.
//!
//! With a convolution, each output row is computed tile by tile
//! ([`RowEngine`]); each tile (at most 128 values, in L1) gets the
//! epilogue, one tight loop per op, and with a pool the vertical max, into
//! a per-band row buffer that stays in cache; the horizontal max then
//! writes the pooled row. The convolution output is never stored. Without
//! a convolution the same happens to input rows. Values are bit-identical
//! to running the members one by one ([`super::conv::conv2d`], each
//! [`Pointwise`], [`super::pool::maxpool`]): the same expressions in the
//! same order.

use super::conv::RowEngine;
use super::pool::horizontal_max;
use super::simd::multiversion;
use super::{band_rows, max2, plane_bands, relu1};
use crate::error::KernelError;
use crate::op::{Conv2d, FusedChain, MaxPoolParams, Pointwise, apply_pointwise};
use crate::tensor::{Shape, Tensor};

/// `dst[i] = g(src[i])`.
#[inline(always)]
fn map_row<F: Fn(f32) -> f32>(g: F, dst: &mut [f32], src: &[f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = g(x);
    }
}

/// `v[i] = max(v[i], g(src[i]))`.
#[inline(always)]
fn max_row<F: Fn(f32) -> f32>(g: F, v: &mut [f32], src: &[f32]) {
    for (a, &x) in v.iter_mut().zip(src) {
        *a = max2(*a, g(x));
    }
}

multiversion! {
    /// `dst = epilogue(src)`: one loop for the common epilogues (none, a
    /// single ReLU), else a copy and one in-cache pass per op.
    fn epilogue_row(ep: &[Pointwise], dst: &mut [f32], src: &[f32]) {
        match ep {
            [] => dst.copy_from_slice(src),
            [Pointwise::Relu] => map_row(relu1, dst, src),
            _ => {
                dst.copy_from_slice(src);
                apply_pointwise(ep, dst);
            }
        }
    }
}

multiversion! {
    /// `v = max(v, epilogue(src))`, with `scratch` for the general case.
    fn epilogue_max_row(ep: &[Pointwise], v: &mut [f32], src: &[f32], scratch: &mut [f32]) {
        match ep {
            [] => max_row(|x| x, v, src),
            [Pointwise::Relu] => max_row(relu1, v, src),
            _ => {
                let t = &mut scratch[..src.len()];
                t.copy_from_slice(src);
                apply_pointwise(ep, t);
                for (a, &b) in v.iter_mut().zip(t.iter()) {
                    *a = max2(*a, b);
                }
            }
        }
    }
}

/// Runs a fused chain on `input`.
///
/// # Errors
/// [`KernelError`] when a member of the chain cannot take its input.
pub fn run(input: &Tensor, chain: &FusedChain) -> Result<Tensor, KernelError> {
    let mid = chain.produced_shape(input.shape())?;
    let out_shape = chain.output_shape(input.shape())?;
    let ep = chain.epilogue.as_slice();
    Ok(match (&chain.conv, chain.pool) {
        (Some(conv), None) => conv_epilogue(input, conv, ep, out_shape),
        (Some(conv), Some(pool)) => conv_pool(input, conv, ep, mid, out_shape, pool),
        (None, Some(pool)) => load_pool(input, ep, out_shape, pool),
        (None, None) => {
            let mut out = input.clone();
            super::elementwise::pointwise_in_place(out.data_mut(), ep);
            out
        }
    })
}

fn conv_epilogue(input: &Tensor, conv: &Conv2d, ep: &[Pointwise], out_shape: Shape) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::zeros(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut rows)| {
        let mut eng = RowEngine::new(conv, input, out_shape);
        let nrows = rows.first().map_or(0, |r| r.len() / w);
        for r in 0..nrows {
            eng.row(b * band + r, |oc, x0, tile| {
                if x0 < w {
                    let n = (w - x0).min(tile.len());
                    let dst = &mut rows[oc][r * w + x0..r * w + x0 + n];
                    epilogue_row(ep, dst, &tile[..n]);
                }
            });
        }
    });
    out
}

fn conv_pool(
    input: &Tensor,
    conv: &Conv2d,
    ep: &[Pointwise],
    conv_shape: Shape,
    out_shape: Shape,
    pool: MaxPoolParams,
) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let (size, stride) = (pool.size, pool.stride);
    let mut out = Tensor::zeros(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut rows)| {
        let mut eng = RowEngine::new(conv, input, conv_shape);
        let tw = eng.tiles_w();
        // Vertical maxima of the current pooled row, one conv row per channel.
        let mut vmax = vec![0.0f32; c * tw];
        let mut scratch = vec![0.0f32; tw];
        let nrows = rows.first().map_or(0, |r| r.len() / w);
        for r in 0..nrows {
            let y0 = (b * band + r) * stride;
            for j in 0..size {
                eng.row(y0 + j, |oc, x0, tile| {
                    let v = &mut vmax[oc * tw + x0..oc * tw + x0 + tile.len()];
                    if j == 0 {
                        epilogue_row(ep, v, tile);
                    } else {
                        epilogue_max_row(ep, v, tile, &mut scratch);
                    }
                });
            }
            for (oc, out_rows) in rows.iter_mut().enumerate() {
                let v = &vmax[oc * tw..oc * tw + conv_shape.w];
                horizontal_max(v, &mut out_rows[r * w..(r + 1) * w], size, stride);
            }
        }
    });
    out
}

fn load_pool(input: &Tensor, ep: &[Pointwise], out_shape: Shape, pool: MaxPoolParams) -> Tensor {
    let in_shape = input.shape();
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::zeros(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut rows)| {
        let mut v = vec![0.0f32; in_shape.w];
        let mut t = vec![0.0f32; in_shape.w];
        for (ch, rows) in rows.iter_mut().enumerate() {
            let plane = input.plane(ch);
            for (r, out_row) in rows.chunks_exact_mut(w).enumerate() {
                let y0 = (b * band + r) * pool.stride;
                let row = |y: usize| &plane[y * in_shape.w..(y + 1) * in_shape.w];
                epilogue_row(ep, &mut v, row(y0));
                for y in y0 + 1..y0 + pool.size {
                    epilogue_max_row(ep, &mut v, row(y), &mut t);
                }
                horizontal_max(&v, out_row, pool.size, pool.stride);
            }
        }
    });
    out
}
