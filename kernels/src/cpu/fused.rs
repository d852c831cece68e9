//! Fused chains in one pass over the image: a producer (a convolution, or a
//! plain load of the input), the chain's epilogue, and an optional pool
//! consumer.
//!
//! With a convolution, each output row is computed tile by tile
//! ([`RowEngine`]); each tile (at most 128 values, in L1) gets the
//! epilogue, one tight loop per op. A plain square max pool takes the
//! vertical max straight into a per-band row buffer that stays in cache,
//! then the horizontal max writes the pooled row. Any other pool keeps the
//! last window-height convolution rows of every channel in a ring (each row
//! computed once, however much windows overlap) and reduces them with the
//! unfused pool's [`PoolRows`]. The convolution output is never stored.
//! Without a convolution the epilogue runs in place on a copy of the input
//! and the pool reads that. Values are bit-identical to running the
//! members one by one ([`super::conv::conv2d`], each epilogue op,
//! [`super::pool::pool`]): the same expressions in the same order.

use super::conv::{Algorithm, RowEngine, algorithm};
use super::pool::{PoolRows, horizontal_max};
use super::simd::multiversion;
use super::{band_rows, max2, plane_bands, relu1};
use crate::error::KernelError;
use crate::op::{Conv2d, EpilogueOp, FusedChain, Pointwise, Pool2d, apply_epilogue};
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

/// `dst[i] = p(src[i])`, one loop per kind of op: the op is matched once,
/// not per value, so each loop vectorises (a match inside the loop
/// compiles to a jump per value).
#[inline(always)]
fn map_pointwise(p: Pointwise, dst: &mut [f32], src: &[f32]) {
    match p {
        Pointwise::Relu => map_row(|x| Pointwise::Relu.apply(x), dst, src),
        Pointwise::Clip { min, max } => {
            map_row(|x| Pointwise::Clip { min, max }.apply(x), dst, src);
        }
        Pointwise::Affine { scale, shift } => {
            map_row(|x| Pointwise::Affine { scale, shift }.apply(x), dst, src);
        }
        Pointwise::LeakyRelu { alpha } => {
            map_row(|x| Pointwise::LeakyRelu { alpha }.apply(x), dst, src);
        }
        Pointwise::Threshold { threshold, value } => map_row(
            |x| Pointwise::Threshold { threshold, value }.apply(x),
            dst,
            src,
        ),
    }
}

/// `dst[i] = op(src[i])` for one epilogue op of channel `c`.
#[inline(always)]
fn map_op(op: &EpilogueOp, c: usize, dst: &mut [f32], src: &[f32]) {
    match op {
        EpilogueOp::Pointwise(p) => map_pointwise(*p, dst, src),
        EpilogueOp::Channel(a) => map_pointwise(
            Pointwise::Affine {
                scale: a.scale[c],
                shift: a.shift[c],
            },
            dst,
            src,
        ),
    }
}

/// `dst = epilogue(src)` for channel `c`: the first op maps `src` into
/// `dst`, each further op is one in-cache pass over `dst`. Inlined into
/// its caller: the convolution engine calls it for every tile from code
/// compiled for the CPU level, so it is vectorised for that level without
/// a dispatch per tile.
#[inline(always)]
pub(crate) fn epilogue_row(ep: &[EpilogueOp], c: usize, dst: &mut [f32], src: &[f32]) {
    match ep {
        [] => dst.copy_from_slice(src),
        [EpilogueOp::Pointwise(Pointwise::Relu)] => map_row(relu1, dst, src),
        [first, rest @ ..] => {
            map_op(first, c, dst, src);
            apply_epilogue(rest, c, dst);
        }
    }
}

multiversion! {
    /// [`epilogue_row`] compiled for the CPU's level: for callers that are
    /// not (the panel and Winograd algorithms' copy-out of a block).
    pub(crate) fn epilogue_copy(ep: &[EpilogueOp], c: usize, dst: &mut [f32], src: &[f32]) {
        epilogue_row(ep, c, dst, src);
    }
}

multiversion! {
    /// `d = epilogue(d)` for channel `c`, in place: one pass per op.
    pub(crate) fn epilogue_in_place(ep: &[EpilogueOp], c: usize, d: &mut [f32]) {
        apply_epilogue(ep, c, d);
    }
}

multiversion! {
    /// `v = max(v, epilogue(src))` for channel `c`, with `scratch` for the
    /// general case.
    fn epilogue_max_row(ep: &[EpilogueOp], c: usize, v: &mut [f32], src: &[f32], scratch: &mut [f32]) {
        match ep {
            [] => max_row(|x| x, v, src),
            [EpilogueOp::Pointwise(Pointwise::Relu)] => max_row(relu1, v, src),
            _ => {
                let t = &mut scratch[..src.len()];
                t.copy_from_slice(src);
                apply_epilogue(ep, c, t);
                for (a, &b) in v.iter_mut().zip(t.iter()) {
                    *a = max2(*a, b);
                }
            }
        }
    }
}

/// The epilogue as `(lower, upper)` bounds applied in registers, when it
/// is made of ReLUs and clips only: ReLU is `x > 0 ? x : 0`, a clip
/// `v = x > min ? x : min; v < max ? v : max` ([`Vector::keep_gt`],
/// [`Vector::keep_lt`]), the same expressions as the unfused ops.
pub(crate) fn register_bounds(ep: &[EpilogueOp]) -> Option<Vec<(f32, f32)>> {
    ep.iter()
        .map(|e| match e {
            EpilogueOp::Pointwise(Pointwise::Relu) => Some((0.0, f32::NAN)),
            EpilogueOp::Pointwise(Pointwise::Clip { min, max }) => Some((*min, *max)),
            _ => None,
        })
        .collect()
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
        (Some(conv), Some(pool)) => match algorithm(conv, input.shape(), true) {
            Algorithm::Panel => {
                let src = super::panel::Panel::new(conv, input, mid, ep);
                super::panel::run_pool_with(&src, mid, out_shape, pool)
            }
            Algorithm::Winograd => {
                let src = super::winograd::Winograd::new(conv, input, mid, ep);
                super::panel::run_pool_with(&src, mid, out_shape, pool)
            }
            _ if pool.is_simple_max() => conv_max(input, conv, ep, mid, out_shape, pool),
            _ => conv_pool(input, conv, ep, mid, out_shape, pool),
        },
        (None, pool) => {
            let mut t = input.clone();
            let plane = mid.h * mid.w;
            if plane > 0 {
                super::for_each_chunk(t.data_mut(), plane, |(c, d)| epilogue_in_place(ep, c, d));
            }
            match pool {
                Some(p) => super::pool::pool(&t, &p)?,
                None => t,
            }
        }
    })
}

fn conv_epilogue(input: &Tensor, conv: &Conv2d, ep: &[EpilogueOp], out_shape: Shape) -> Tensor {
    match algorithm(conv, input.shape(), false) {
        Algorithm::Depthwise => return super::depthwise::run(input, conv, ep, out_shape),
        Algorithm::Panel => {
            let src = super::panel::Panel::new(conv, input, out_shape, ep);
            return super::panel::run_pointwise(&src, out_shape)
                .unwrap_or_else(|| super::panel::run_with(&src, out_shape));
        }
        Algorithm::Winograd => {
            let src = super::winograd::Winograd::new(conv, input, out_shape, ep);
            return super::panel::run_with(&src, out_shape);
        }
        Algorithm::Rows => {}
    }
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::for_overwrite(out_shape);
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
                    epilogue_row(ep, oc, dst, &tile[..n]);
                }
            });
        }
    });
    out
}

/// Convolution, epilogue, plain square max pool.
fn conv_max(
    input: &Tensor,
    conv: &Conv2d,
    ep: &[EpilogueOp],
    conv_shape: Shape,
    out_shape: Shape,
    pool: Pool2d,
) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let (size, stride) = (pool.size(), pool.window.stride[0]);
    let bounds = register_bounds(ep);
    let mut out = Tensor::for_overwrite(out_shape);
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
                if let Some(bounds) = &bounds {
                    // ReLU/clip: bounded in registers and reduced into
                    // the row of maxima as they are stored.
                    if j == 0 {
                        eng.row_direct(y0, &mut vmax, tw, bounds);
                    } else {
                        eng.row_direct_max(y0 + j, &mut vmax, tw, bounds);
                    }
                    continue;
                }
                eng.row(y0 + j, |oc, x0, tile| {
                    let v = &mut vmax[oc * tw + x0..oc * tw + x0 + tile.len()];
                    if j == 0 {
                        epilogue_row(ep, oc, v, tile);
                    } else {
                        epilogue_max_row(ep, oc, v, tile, &mut scratch);
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

/// Convolution, epilogue, any pool: a ring of the last window-height
/// convolution rows per channel.
fn conv_pool(
    input: &Tensor,
    conv: &Conv2d,
    ep: &[EpilogueOp],
    conv_shape: Shape,
    out_shape: Shape,
    pool: Pool2d,
) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let slots = pool.window.extent()[0];
    let bounds = register_bounds(ep);
    let mut out = Tensor::for_overwrite(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut rows)| {
        let mut eng = RowEngine::new(conv, input, conv_shape);
        let tw = eng.tiles_w();
        let mut ring = vec![0.0f32; c * slots * tw];
        let mut tags: Vec<Option<usize>> = vec![None; slots];
        let mut pr = PoolRows::new(pool, conv_shape, w);
        let nrows = rows.first().map_or(0, |r| r.len() / w);
        for r in 0..nrows {
            let oy = b * band + r;
            let (first, n, _) = pr.rows_of(oy);
            for k in 0..n {
                let y = first + k * pr.row_step();
                let slot = y % slots;
                if tags[slot] != Some(y) {
                    match &bounds {
                        // ReLU/clip epilogues: stored straight into the
                        // ring, bounded in registers.
                        Some(b) => eng.row_direct(y, &mut ring[slot * tw..], slots * tw, b),
                        None => eng.row(y, |oc, x0, tile| {
                            let at = (oc * slots + slot) * tw + x0;
                            epilogue_row(ep, oc, &mut ring[at..at + tile.len()], tile);
                        }),
                    }
                    tags[slot] = Some(y);
                }
            }
            for (oc, out_rows) in rows.iter_mut().enumerate() {
                let ring = &ring;
                let row = |y: usize| {
                    let at = (oc * slots + y % slots) * tw;
                    &ring[at..at + conv_shape.w]
                };
                pr.reduce(oy, row, &mut out_rows[r * w..(r + 1) * w]);
            }
        }
    });
    out
}
