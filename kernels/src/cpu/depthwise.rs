//! Depthwise convolution (one input channel per output channel, column
//! stride 1 or 2: MobileNet's 3×3 layers), channel by channel over row
//! bands (or whole planes, where a channel's input is small), with the
//! chain's epilogue applied to each band while it is in L1. With column
//! stride 2 the band's padded input rows are split into even and odd
//! columns as they are copied, so every tap still reads contiguous
//! values.
//!
//! Each output value is computed as [`super::conv`]'s engine computes it:
//! `bias`, then every tap in `(ky, kx)` order as `acc = w * x + acc` with
//! the level's rounding ([`Vector::mul_add`]), padding read as `0.0`. So this path and the general one
//! give the same bits, and a fused chain built on either equals the
//! unfused ops.

use super::simd::{Level, level};
use super::vector::{self, Vector};
use super::{band_rows, plane_bands};
use crate::op::{Conv2d, Conv2dParams, EpilogueOp};
use crate::tensor::{Shape, Tensor};

/// Largest block of a channel's whole input (padded, split) computed as
/// one piece ([`run`]).
const WHOLE_PLANE_BYTES: usize = 16 * 1024;

/// Whether `p` takes this path: depthwise without a channel multiplier,
/// column stride 1 or 2 (any row stride, dilation and padding).
pub(crate) fn applies(p: &Conv2dParams) -> bool {
    p.groups > 1
        && p.groups == p.in_channels
        && p.out_channels == p.in_channels
        && matches!(p.window.stride[1], 1 | 2)
}

/// The depthwise convolution of `input` by `conv` with `ep` applied to
/// every output value; `out_shape` is the convolution's output shape.
///
/// Work is split in row bands, or, where a channel's whole padded input is
/// at most [`WHOLE_PLANE_BYTES`] and there are at least 4 channels per
/// thread, in whole planes with the channels split among the threads (a
/// 28×28 stride-2 layer's bands of 7 rows split a quarter of their input
/// rows twice and read each channel's plane in four pieces: whole planes
/// are 25 % faster there). Per band (or plane) and channel, the input rows
/// it reads are copied once into a zero-padded block (a few KiB, in L1),
/// every output row of the band is computed from it in vectors (the last
/// vector of a row may overlap the one before it), and the epilogue runs
/// in place over the band's rows of that channel, which are contiguous.
pub(crate) fn run(input: &Tensor, conv: &Conv2d, ep: &[EpilogueOp], out_shape: Shape) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::for_overwrite(out_shape);
    let band = band_rows(h);
    let lvl = level();
    let win = conv.params.window;
    let ext = win.extent();
    let lanes = vector::lanes(lvl);
    // Column stride 2: each block row holds its padded input row split in
    // two phase rows (even, then odd columns), so every tap reads a
    // contiguous run. `pl` values per phase row: every column an output
    // vector reads; `pw` the block's row pitch.
    let sw = win.stride[1];
    let pl = w.max(lanes) + (ext[1] - 1).div_ceil(sw);
    let pw = sw * pl;
    // Where tap `kx` starts in a block row: its phase row and offset.
    let xoff: Vec<usize> = (0..win.kernel[1])
        .map(|kx| {
            let col = kx * win.dilation[1];
            (col % sw) * pl + col / sw
        })
        .collect();
    // ReLU and clip bounds are applied to the vectors before they are
    // stored; any other epilogue runs as passes over the band.
    let bounds = super::fused::register_bounds(ep);
    let geom = Geometry {
        lvl,
        pad_left: win.pads[1],
        sw,
        pw,
    };
    let pad_top = win.pads[0] as isize;
    // One channel's output rows from output row `y0` (`out_rows`, whole
    // rows), its input rows copied into `block` first.
    let channel =
        |ch: usize, y0: usize, out_rows: &mut [f32], block: &mut [f32], tail: &mut [f32]| {
            fill_block(
                &geom,
                input,
                ch,
                (y0 * win.stride[0]) as isize - pad_top,
                block,
            );
            let blk = Block {
                data: block,
                pw,
                filter: conv.filter(ch),
                bias: conv.bias_of(ch),
                kh: win.kernel[0],
                kw: win.kernel[1],
                sh: win.stride[0],
                dh: win.dilation[0],
                dw: win.dilation[1],
                xoff: &xoff,
                bounds: bounds.as_deref().unwrap_or(&[]),
            };
            compute_block(lvl, &blk, out_rows, w, tail);
            if bounds.is_none() && !ep.is_empty() {
                super::fused::epilogue_in_place(ep, ch, out_rows);
            }
        };
    // Whole planes, the channels split among the threads, where a
    // channel's whole block is small (MobileNet's stride-2 layers: 57 rows
    // of 58 values): no rows split twice at band edges, and a channel's
    // rows are read in one run.
    let threads = rayon::current_num_threads().max(1);
    let nin_all = h.saturating_sub(1) * win.stride[0] + ext[0];
    if h * w > 0 && nin_all * pw * 4 <= WHOLE_PLANE_BYTES && c >= 4 * threads {
        let per = c.div_ceil(2 * threads);
        super::for_each_chunk(out.data_mut(), per * h * w, |(i, planes)| {
            let mut block = vec![0.0f32; nin_all * pw];
            let mut tail = vec![0.0f32; lanes];
            for (j, plane) in planes.chunks_exact_mut(h * w).enumerate() {
                channel(i * per + j, 0, plane, &mut block, &mut tail);
            }
        });
        return out;
    }
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut rows)| {
        let nrows = rows.first().map_or(0, |r| r.len() / w.max(1));
        if nrows == 0 {
            return;
        }
        let nin = (nrows - 1) * win.stride[0] + ext[0];
        let mut block = vec![0.0f32; nin * pw];
        let mut tail = vec![0.0f32; lanes];
        for (ch, out_rows) in rows.iter_mut().enumerate() {
            channel(ch, b * band, out_rows, &mut block, &mut tail);
        }
    });
    out
}

/// How a band's block holds its input rows.
#[derive(Clone, Copy)]
struct Geometry {
    /// The CPU level the rows are split at.
    lvl: Level,
    /// Zero columns before the input's first.
    pad_left: usize,
    /// Column stride (1 or 2).
    sw: usize,
    /// Values per block row (both phase rows with column stride 2).
    pw: usize,
}

/// Copies the input rows `iy0 ..` of channel `ch` into `block` (rows of
/// `pw` values, the input at column `pad_left`; with column stride 2 each
/// row is two phase rows of `pw / 2`, the padded row's even then odd
/// columns). Only the input's values are written: the columns around them
/// and the rows outside the input are the same for every channel of a
/// band, so they stay as the zeroed block left them.
fn fill_block(geom: &Geometry, input: &Tensor, ch: usize, iy0: isize, block: &mut [f32]) {
    let Geometry {
        lvl,
        pad_left,
        sw,
        pw,
    } = *geom;
    let Shape { h, w, .. } = input.shape();
    let plane = input.plane(ch);
    // The block rows that hold input rows: `j0 .. j1`, input rows from
    // `iy0 + j0`.
    let rows = block.len() / pw.max(1);
    let j0 = usize::try_from(-iy0).unwrap_or(0).min(rows);
    let j1 = usize::try_from(h as isize - iy0).unwrap_or(0).min(rows);
    if j0 >= j1 {
        return;
    }
    let first = (iy0 + j0 as isize) as usize;
    let src = &plane[first * w..(first + j1 - j0) * w];
    let dst = &mut block[j0 * pw..j1 * pw];
    if sw == 1 {
        let n = w.min(pw - pad_left);
        for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(pw)) {
            d[pad_left..pad_left + n].copy_from_slice(&s[..n]);
        }
        return;
    }
    super::interleave::split_rows_at(lvl, src, w, dst, pw, pad_left);
}

/// A band's padded input block of one channel and that channel's filter.
struct Block<'a> {
    data: &'a [f32],
    pw: usize,
    filter: &'a [f32],
    bias: f32,
    kh: usize,
    kw: usize,
    sh: usize,
    dh: usize,
    dw: usize,
    /// Where tap `kx` starts in a block row (phase row and offset).
    xoff: &'a [usize],
    /// Bounds applied before each store: `(lower, upper)`, an upper bound
    /// of NaN for a ReLU (no upper bound).
    bounds: &'a [(f32, f32)],
}

/// `acc` through `blk.bounds`.
///
/// # Safety
/// The CPU must support `V`.
#[inline(always)]
unsafe fn bound<V: Vector>(blk: &Block<'_>, acc: V) -> V {
    // SAFETY: forwarded from the caller.
    unsafe { vector::apply_bounds(acc, blk.bounds) }
}

/// Every output row of the band (`out`, rows of `w`) from `blk`, at `lvl`.
fn compute_block(lvl: Level, blk: &Block<'_>, out: &mut [f32], w: usize, tail: &mut [f32]) {
    match lvl {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F and FMA.
        Level::Avx512 => unsafe { block_avx512(blk, out, w, tail) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has AVX2 and FMA.
        Level::Avx2Fma => unsafe { block_avx2(blk, out, w, tail) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 base ISA.
        Level::Neon => unsafe { block_v::<vector::Neon>(blk, out, w, tail) },
        // SAFETY: portable lanes need no CPU feature.
        _ => unsafe { block_v::<vector::Portable>(blk, out, w, tail) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,fma")]
unsafe fn block_avx512(blk: &Block<'_>, out: &mut [f32], w: usize, tail: &mut [f32]) {
    // SAFETY: forwarded from the caller; AVX-512F and FMA are enabled here.
    unsafe { block_v::<vector::Avx512>(blk, out, w, tail) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(blk: &Block<'_>, out: &mut [f32], w: usize, tail: &mut [f32]) {
    // SAFETY: forwarded from the caller; AVX2 and FMA are enabled here.
    unsafe { block_v::<vector::Avx2>(blk, out, w, tail) }
}

/// One vector of outputs at column `ox` of the output row whose first tap
/// row starts at `row0` in the block: bias, then every tap in `(ky, kx)`
/// order.
///
/// # Safety
/// The CPU must support `V`; `row0 + (kh - 1) * dh * pw + ox + (kw - 1) *
/// dw + LANES <= blk.data.len()`.
#[inline(always)]
unsafe fn one<V: Vector>(blk: &Block<'_>, row0: usize, ox: usize) -> V {
    let mut acc = unsafe { V::splat(blk.bias) };
    // (bounds are applied by the caller, before the store)
    let base = blk.data.as_ptr();
    for ky in 0..blk.kh {
        let r = row0 + ky * blk.dh * blk.pw + ox;
        for kx in 0..blk.kw {
            // SAFETY: in bounds by the caller's contract.
            unsafe {
                let x = V::load(base.add(r + blk.xoff[kx]));
                acc = V::mul_add(V::splat(blk.filter[ky * blk.kw + kx]), x, acc);
            }
        }
    }
    acc
}

/// The band at vector type `V`: four vectors at a time, then one, the last
/// overlapping the one before it; a row narrower than a vector goes
/// through `tail`.
///
/// # Safety
/// The CPU must support `V`'s instructions; the block holds every row and
/// column the band's outputs read (see [`run`]).
#[inline(always)]
unsafe fn block_v<V: Vector>(blk: &Block<'_>, out: &mut [f32], w: usize, tail: &mut [f32]) {
    let l = V::LANES;
    if blk.kh == 3 && blk.kw == 3 && blk.dh == 1 && blk.dw == 1 && w >= l {
        // SAFETY: forwarded from the caller; `w >= LANES`.
        match blk.sh {
            1 => return unsafe { block3::<V, 1>(blk, out, w) },
            2 => return unsafe { block3::<V, 2>(blk, out, w) },
            _ => {}
        }
    }
    for (r, orow) in out.chunks_exact_mut(w).enumerate() {
        let row0 = r * blk.sh * blk.pw;
        if w < l {
            // SAFETY: the block is at least `l + span` wide.
            unsafe { bound(blk, one::<V>(blk, row0, 0)).store(tail.as_mut_ptr()) };
            orow.copy_from_slice(&tail[..w]);
            continue;
        }
        let mut ox = 0;
        // SAFETY (all calls): `ox + l <= w` and the block is `w + span`
        // wide, so every load stays inside it.
        unsafe {
            while ox + 4 * l <= w {
                let mut acc = [V::splat(blk.bias); 4];
                let base = blk.data.as_ptr();
                for ky in 0..blk.kh {
                    let rr = row0 + ky * blk.dh * blk.pw + ox;
                    for kx in 0..blk.kw {
                        let wv = V::splat(blk.filter[ky * blk.kw + kx]);
                        let p = base.add(rr + blk.xoff[kx]);
                        for (u, a) in acc.iter_mut().enumerate() {
                            *a = V::mul_add(wv, V::load(p.add(u * l)), *a);
                        }
                    }
                }
                for (u, a) in acc.iter().enumerate() {
                    bound(blk, *a).store(orow.as_mut_ptr().add(ox + u * l));
                }
                ox += 4 * l;
            }
            while ox < w {
                let at = ox.min(w - l);
                bound(blk, one::<V>(blk, row0, at)).store(orow.as_mut_ptr().add(at));
                ox = at + l;
            }
        }
    }
}

/// The band of a 3×3, dilation-1 filter at row stride `SH`: two output
/// rows at a time (they share input rows), in strips of four vectors (or
/// two, or one, for narrower rows), the last strip of a row overlapping
/// the one before it so that every strip runs at full width.
///
/// # Safety
/// As [`block_v`], and `w >= V::LANES`.
#[inline(always)]
unsafe fn block3<V: Vector, const SH: usize>(blk: &Block<'_>, out: &mut [f32], w: usize) {
    let rows = out.len() / w;
    // SAFETY (the splats): the CPU supports `V`.
    let taps: [V; 9] = std::array::from_fn(|i| unsafe { V::splat(blk.filter[i]) });
    let o = out.as_mut_ptr();
    let mut r = 0;
    // SAFETY (all calls): rows `r` and `r + 1` are rows of `out`; every
    // strip ends at or before `w`; the block holds the rows and columns
    // they read (see `run`).
    unsafe {
        while r + 2 <= rows {
            strips::<V, SH, 2>(
                blk,
                &taps,
                r * SH * blk.pw,
                [o.add(r * w), o.add((r + 1) * w)],
                w,
            );
            r += 2;
        }
        if r < rows {
            strips::<V, SH, 1>(blk, &taps, r * SH * blk.pw, [o.add(r * w)], w);
        }
    }
}

/// Every strip of `R` output rows: four vectors wide where the row allows,
/// else two, else one; the last strip overlaps the one before it.
///
/// # Safety
/// As [`block3`]; `outs` are `R` rows of `w` writable values.
#[inline(always)]
unsafe fn strips<V: Vector, const SH: usize, const R: usize>(
    blk: &Block<'_>,
    taps: &[V; 9],
    row0: usize,
    outs: [*mut f32; R],
    w: usize,
) {
    let l = V::LANES;
    // SAFETY (all): forwarded from the caller; each strip starts at
    // `ox <= w - u * l`.
    unsafe {
        if w >= 4 * l {
            let mut ox = 0;
            loop {
                strip::<V, SH, R, 4>(blk, taps, row0, &outs, ox);
                if ox + 4 * l >= w {
                    break;
                }
                ox = (ox + 4 * l).min(w - 4 * l);
            }
        } else if w >= 2 * l {
            strip::<V, SH, R, 2>(blk, taps, row0, &outs, 0);
            strip::<V, SH, R, 2>(blk, taps, row0, &outs, w - 2 * l);
        } else {
            strip::<V, SH, R, 1>(blk, taps, row0, &outs, 0);
            strip::<V, SH, R, 1>(blk, taps, row0, &outs, w - l);
        }
    }
}

/// `U` vectors of `R` output rows at column `ox`: bias, then the taps in
/// `(ky, kx)` order per output, each input vector loaded once for every
/// output row that reads it.
///
/// # Safety
/// As [`strips`]; `ox + U * LANES <= w`.
#[inline(always)]
unsafe fn strip<V: Vector, const SH: usize, const R: usize, const U: usize>(
    blk: &Block<'_>,
    taps: &[V; 9],
    row0: usize,
    outs: &[*mut f32; R],
    ox: usize,
) {
    let l = V::LANES;
    // SAFETY (all): the CPU supports `V`; the loads stay in the block
    // and the stores in the rows, by the caller's contract.
    unsafe {
        let mut acc = [[V::splat(blk.bias); U]; R];
        let xo = [blk.xoff[0], blk.xoff[1], blk.xoff[2]];
        let base = blk.data.as_ptr().add(row0 + ox);
        for t in 0..(R - 1) * SH + 3 {
            let p = base.add(t * blk.pw);
            for kx in 0..3 {
                let xs: [V; U] = std::array::from_fn(|u| V::load(p.add(xo[kx] + u * l)));
                for (j, row) in acc.iter_mut().enumerate() {
                    if t >= j * SH && t - j * SH < 3 {
                        let wv = taps[(t - j * SH) * 3 + kx];
                        for (a, x) in row.iter_mut().zip(xs) {
                            *a = V::mul_add(wv, x, *a);
                        }
                    }
                }
            }
        }
        for (row, &dst) in acc.iter().zip(outs) {
            for (u, a) in row.iter().enumerate() {
                bound(blk, *a).store(dst.add(ox + u * l));
            }
        }
    }
}
