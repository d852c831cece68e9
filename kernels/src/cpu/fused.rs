//! Fused conv → bias → ReLU → max-pool in one pass over the image.
//!
//! For each pooled output row, the `size` convolution rows it needs are
//! computed tile by tile ([`RowEngine`]); each tile gets the bias (already in
//! the accumulators), the ReLU and the vertical max while still in registers,
//! into a per-band row buffer that stays in cache; the horizontal max then
//! writes the pooled row. The convolution output is never stored. Values are
//! bit-identical to [`conv2d`](super::conv::conv2d) then
//! [`relu`](super::elementwise::relu) then [`maxpool`](super::pool::maxpool).

use rayon::prelude::*;

use super::conv::RowEngine;
use super::pool::horizontal_max;
use super::{band_rows, max2, plane_bands, relu1};
use crate::error::KernelError;
use crate::op::FusedChain;
use crate::tensor::{Shape, Tensor};

/// Runs a fused chain on `input`.
///
/// # Errors
/// [`KernelError`] when a member of the chain cannot take its input.
pub fn run(input: &Tensor, chain: &FusedChain) -> Result<Tensor, KernelError> {
    let conv_shape = chain.conv.params.output_shape(input.shape())?;
    match chain.pool {
        None => conv_epilogue(input, chain, conv_shape),
        Some(pool) => {
            let out_shape = pool.output_shape(conv_shape)?;
            Ok(conv_pool(
                input,
                chain,
                conv_shape,
                out_shape,
                pool.size,
                pool.stride,
            ))
        }
    }
}

/// Applies the epilogue (ReLU or nothing) to one value.
#[inline(always)]
fn epilogue(relu: bool, x: f32) -> f32 {
    if relu { relu1(x) } else { x }
}

fn conv_epilogue(
    input: &Tensor,
    chain: &FusedChain,
    out_shape: Shape,
) -> Result<Tensor, KernelError> {
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::zeros(out_shape);
    let band = band_rows(h);
    let relu = chain.relu;
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    bands.into_par_iter().enumerate().for_each(|(b, mut rows)| {
        let mut eng = RowEngine::new(&chain.conv, input, out_shape);
        let nrows = rows.first().map_or(0, |r| r.len() / w);
        for r in 0..nrows {
            eng.row(b * band + r, |oc, x0, tile| {
                if x0 < w {
                    let n = (w - x0).min(tile.len());
                    let dst = &mut rows[oc][r * w + x0..r * w + x0 + n];
                    for (d, &v) in dst.iter_mut().zip(tile) {
                        *d = epilogue(relu, v);
                    }
                }
            });
        }
    });
    Ok(out)
}

fn conv_pool(
    input: &Tensor,
    chain: &FusedChain,
    conv_shape: Shape,
    out_shape: Shape,
    size: usize,
    stride: usize,
) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::zeros(out_shape);
    let band = band_rows(h);
    let relu = chain.relu;
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    bands.into_par_iter().enumerate().for_each(|(b, mut rows)| {
        let mut eng = RowEngine::new(&chain.conv, input, conv_shape);
        let tw = eng.tiles_w();
        // Vertical maxima of the current pooled row, one conv row per channel.
        let mut vmax = vec![0.0f32; c * tw];
        let nrows = rows.first().map_or(0, |r| r.len() / w);
        for r in 0..nrows {
            let y0 = (b * band + r) * stride;
            for j in 0..size {
                eng.row(y0 + j, |oc, x0, tile| {
                    let v = &mut vmax[oc * tw + x0..oc * tw + x0 + tile.len()];
                    if j == 0 {
                        for (a, &t) in v.iter_mut().zip(tile) {
                            *a = epilogue(relu, t);
                        }
                    } else {
                        for (a, &t) in v.iter_mut().zip(tile) {
                            *a = max2(*a, epilogue(relu, t));
                        }
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
