//! Convolution over flattened output pixels, for layers with many channels
//! (the "panel" algorithm).
//!
//! The [row engine](super::conv) computes one output row at a time in
//! tiles of up to 128 columns, so a 14- or 28-wide layer leaves most lanes
//! idle, and it blocks only 4 output channels per load. Here output rows
//! are computed in blocks: a block of rows is laid out as one "grid" of
//! `rows x grid_w` pixels, and tiles of `T = U x LANES` consecutive grid
//! pixels (which may span rows) are the unit of work. For every tap
//! `(ic, ky, kx)` a tile reads `T` input values: straight from a
//! zero-padded copy of the block's input rows when the strides are 1
//! (then `grid_w` is the padded width, and the few columns past the output
//! width are computed and dropped), or from a panel gathered im2col-style
//! otherwise. A micro-kernel accumulates `OB x T` outputs in registers
//! over a chunk of taps, reading the weights from a copy packed once per
//! convolution (`[block][tap][OB]`, [`pack`]); chunks keep the tap data a
//! tile reads in L1, and partial sums go to an L2-sized block buffer.
//!
//! Accumulation order per output value is the row engine's: `bias`, then
//! taps in `(ic, ky, kx)` order as `acc = w * x + acc` ([`Vector::mul_add`]);
//! partial sums between chunks are stored as `f32` and reloaded, which
//! rounds nothing. So both algorithms give the same bits at one level, and
//! the planner's choice never changes a digest. The epilogue runs as the
//! block is copied out, through the same [`epilogue_row`] as the row
//! engine's path.

use super::fused::epilogue_row;
use super::pool::{PoolRows, horizontal_max, vertical_max};
use super::simd::{Level, level};
use super::vector::{self, Vector};
use super::{for_each_band, plane_bands};
use crate::op::{Conv2d, EpilogueOp, Pool2d};
use crate::tensor::{Shape, Tensor};

/// Output channels per register block, at every level (so the packed
/// weights do not depend on the level).
pub(crate) const OB: usize = 6;

/// Bytes of partial sums a block keeps live (`out_channels x pixels`).
const LIVE_BYTES: usize = 384 * 1024;
/// Bytes of tap data one tile reads per chunk (`chunk x T`): in L1.
const CHUNK_BYTES: usize = 16 * 1024;

/// Weights packed for the micro-kernel: each block of up to [`OB`] output
/// channels of one group, starting at channel `oc0`, as `[tap][channel]`
/// at offset `oc0 * filter_len`.
pub(crate) fn pack(conv: &Conv2d) -> Vec<f32> {
    let p = conv.params;
    let k = p.filter_len();
    let opg = p.out_per_group();
    let mut out = vec![0.0; p.out_channels * k];
    for g in 0..p.groups {
        for j in (0..opg).step_by(OB) {
            let oc0 = g * opg + j;
            let nb = OB.min(opg - j);
            let blk = &mut out[oc0 * k..(oc0 + nb) * k];
            for b in 0..nb {
                for (t, &w) in conv.filter(oc0 + b).iter().enumerate() {
                    blk[t * nb + b] = w;
                }
            }
        }
    }
    out
}

/// Rows per band: one band per kernel thread (a band is computed in
/// blocks, so it needs no finer split to stay in cache).
fn band_rows(h: usize) -> usize {
    h.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// The convolution `conv` of `input` (output `out_shape`) with the epilogue
/// `ep`, by the panel algorithm.
pub(crate) fn run(input: &Tensor, conv: &Conv2d, ep: &[EpilogueOp], out_shape: Shape) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::for_overwrite(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    let pc = Panel::new(conv, input, out_shape, ep);
    for_each_band(bands, |(b, mut rows)| {
        let mut s = Scratch::default();
        pc.rows(b * band, &mut rows, &mut s);
    });
    out
}

/// The convolution, its epilogue and `pool` (output `out_shape`; the
/// convolution's is `conv_shape`), by the panel algorithm: per band of
/// pooled rows, blocks of the convolution rows they read are computed into
/// an L2-sized buffer and reduced from there by the unfused pool's own
/// routines, so the result equals the unfused chain's.
pub(crate) fn run_pool(
    input: &Tensor,
    conv: &Conv2d,
    ep: &[EpilogueOp],
    conv_shape: Shape,
    out_shape: Shape,
    pool: Pool2d,
) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let cw = conv_shape.w;
    let mut out = Tensor::for_overwrite(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    let pc = Panel::new(conv, input, conv_shape, ep);
    let simple = pool.is_simple_max();
    let per_pooled = c * cw * 4 * pool.window.stride[0].max(1);
    let step = (LIVE_BYTES / per_pooled.max(1)).max(1);
    for_each_band(bands, |(b, mut rows)| {
        let mut s = Scratch::default();
        let mut pr = PoolRows::new(pool, conv_shape, w);
        let mut buf: Vec<f32> = Vec::new();
        let mut v = vec![0.0f32; cw];
        let nrows = rows.first().map_or(0, |r| r.len() / w.max(1));
        let mut r0 = 0;
        while r0 < nrows {
            let r1 = (r0 + step).min(nrows);
            // Convolution rows `lo .. hi` feed pooled rows `r0 .. r1`.
            let (mut lo, mut hi) = (usize::MAX, 0);
            for r in r0..r1 {
                let (first, n, _) = pr.rows_of(b * band + r);
                if n > 0 {
                    lo = lo.min(first);
                    hi = hi.max(first + (n - 1) * pr.row_step() + 1);
                }
            }
            let lo = lo.min(hi);
            let plane = (hi - lo) * cw;
            buf.clear();
            buf.resize(c * plane, 0.0);
            if plane > 0 {
                let mut conv_rows: Vec<&mut [f32]> = buf.chunks_mut(plane).collect();
                pc.rows(lo, &mut conv_rows, &mut s);
            }
            for (oc, out_rows) in rows.iter_mut().enumerate() {
                let at =
                    |y: usize| &buf[oc * plane + (y - lo) * cw..oc * plane + (y - lo + 1) * cw];
                for r in r0..r1 {
                    let out_row = &mut out_rows[r * w..(r + 1) * w];
                    let oy = b * band + r;
                    if simple {
                        let size = pool.size();
                        let y0 = oy * pool.window.stride[0];
                        v.copy_from_slice(at(y0));
                        for y in y0 + 1..y0 + size {
                            vertical_max(&mut v, at(y));
                        }
                        horizontal_max(&v, out_row, size, pool.window.stride[1]);
                    } else {
                        pr.reduce(oy, at, out_row);
                    }
                }
            }
            r0 = r1;
        }
    });
    out
}

/// Where a block's tap data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Strides 1: a zero-padded copy of the block's input rows; the
    /// grid is the padded width.
    Strip,
    /// Any geometry: a panel gathered per tile and chunk; the grid is the
    /// output width.
    Gather,
}

/// The tile width (`U * LANES`) at `level`.
pub(crate) const fn tile_width(level: Level) -> usize {
    match level {
        Level::Avx512 => 64,
        Level::Avx2Fma => 16,
        Level::Neon => 16,
        Level::Portable => 8,
    }
}

/// Lanes per vector at `level`.
const fn lanes(level: Level) -> usize {
    match level {
        Level::Avx512 => 16,
        Level::Avx2Fma => 8,
        Level::Neon => 4,
        Level::Portable => 8,
    }
}

/// One convolution (with its epilogue) over one input, computed in row
/// blocks by the panel algorithm.
pub(crate) struct Panel<'a> {
    conv: &'a Conv2d,
    input: &'a Tensor,
    out: Shape,
    ep: &'a [EpilogueOp],
    packed: std::sync::Arc<[f32]>,
    bias: Vec<f32>,
    level: Level,
    source: Source,
}

/// Per-thread buffers of a [`Panel`].
#[derive(Default)]
pub(crate) struct Scratch {
    /// Partial sums of a block, `[out][grid pixels rounded to T]`.
    acc: Vec<f32>,
    /// Padded input rows (strip) or one gathered panel.
    data: Vec<f32>,
    /// Tap offsets into `data` for the current chunk.
    offs: Vec<usize>,
}

impl<'a> Panel<'a> {
    /// The convolution `conv` of `input` (output shape `out`) with the
    /// epilogue `ep` applied to every value.
    pub(crate) fn new(
        conv: &'a Conv2d,
        input: &'a Tensor,
        out: Shape,
        ep: &'a [EpilogueOp],
    ) -> Self {
        let p = conv.params;
        let source = if p.window.stride == [1, 1] {
            Source::Strip
        } else {
            Source::Gather
        };
        Self {
            conv,
            input,
            out,
            ep,
            packed: conv.packed_with(pack),
            bias: (0..p.out_channels).map(|oc| conv.bias_of(oc)).collect(),
            level: level(),
            source,
        }
    }

    /// Grid width: padded input width for a strip, output width otherwise.
    fn grid_w(&self) -> usize {
        match self.source {
            Source::Strip => {
                let [_, l, _, r] = self.conv.params.window.pads;
                self.input.shape().w + l + r
            }
            Source::Gather => self.out.w,
        }
    }

    /// Output rows per block: partial sums within [`LIVE_BYTES`].
    fn block_rows(&self) -> usize {
        let per_row = self.conv.params.out_channels * self.grid_w() * 4;
        (LIVE_BYTES / per_row.max(1)).max(1)
    }

    /// Computes output rows `y0 .. y0 + n` of every channel into `dst`:
    /// `dst[oc]` holds channel `oc`'s `n` rows, each `out.w` wide.
    pub(crate) fn rows(&self, y0: usize, dst: &mut [&mut [f32]], scratch: &mut Scratch) {
        let w = self.out.w;
        let n = dst.first().map_or(0, |d| d.len() / w.max(1));
        let step = self.block_rows();
        let mut r = 0;
        while r < n {
            let m = step.min(n - r);
            self.block(y0 + r, m, scratch);
            let gw = self.grid_w();
            let plane = scratch.acc.len() / self.conv.params.out_channels.max(1);
            for (oc, d) in dst.iter_mut().enumerate() {
                let acc = &scratch.acc[oc * plane..];
                for i in 0..m {
                    let out = &mut d[(r + i) * w..(r + i + 1) * w];
                    epilogue_row(self.ep, oc, out, &acc[i * gw..i * gw + w]);
                }
            }
            r += m;
        }
    }

    /// Computes output rows `y0 .. y0 + m` into `scratch.acc` (grid
    /// layout, before the epilogue).
    fn block(&self, y0: usize, m: usize, s: &mut Scratch) {
        let t = tile_width(self.level);
        let l = lanes(self.level);
        let npix = m * self.grid_w();
        let plane = npix.div_ceil(l) * l;
        // Every value is written by the first chunk before it is read.
        s.acc.resize(self.conv.params.out_channels * plane, 0.0);
        if self.source == Source::Strip {
            self.fill_strip(y0, m, t, &mut s.data);
        }
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F and FMA.
            Level::Avx512 => unsafe { block_avx512(self, y0, m, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has AVX2 and FMA.
            Level::Avx2Fma => unsafe { block_avx2(self, y0, m, s) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is part of the aarch64 base ISA.
            Level::Neon => unsafe { block_v::<vector::Neon, 4>(self, y0, m, s) },
            // SAFETY: portable lanes need no CPU feature.
            _ => unsafe { block_v::<vector::Portable, 1>(self, y0, m, s) },
        }
    }

    /// Input rows a strip of `m` output rows holds.
    fn strip_rows(&self, m: usize) -> usize {
        let win = self.conv.params.window;
        (m - 1) * win.stride[0] + win.extent()[0]
    }

    /// Copies the input rows the block of output rows `y0 .. y0 + m` reads,
    /// zero-padded, as `[ic][row][grid_w]`, plus a zero tail that every
    /// tile's last read stays within.
    fn fill_strip(&self, y0: usize, m: usize, t: usize, data: &mut Vec<f32>) {
        let p = self.conv.params;
        let win = p.window;
        let Shape { c, h, w } = self.input.shape();
        let gw = self.grid_w();
        let rows = self.strip_rows(m);
        let plane = rows * gw;
        let ext_w = win.extent()[1];
        data.clear();
        data.resize(c * plane + t + ext_w + gw, 0.0);
        let first = (y0 * win.stride[0]) as isize - win.pads[0] as isize;
        for ic in 0..c {
            let src = self.input.plane(ic);
            for r in 0..rows {
                let iy = first + r as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let iy = iy as usize;
                let at = ic * plane + r * gw + win.pads[1];
                data[at..at + w].copy_from_slice(&src[iy * w..(iy + 1) * w]);
            }
        }
    }

    /// Points `offs` at the tap data of taps `k0 .. k0 + kc` of group `g`
    /// (offsets into `s.data` of tile pixel 0, for the tile at `t0`), and
    /// for a gather, fills the panel.
    #[allow(clippy::too_many_arguments)]
    fn taps(
        &self,
        g: usize,
        k0: usize,
        kc: usize,
        y0: usize,
        m: usize,
        t0: usize,
        t: usize,
        s: &mut Scratch,
    ) {
        let p = self.conv.params;
        let win = p.window;
        let (kh, kw) = (win.kernel[0], win.kernel[1]);
        let ic0 = g * p.in_per_group();
        s.offs.clear();
        match self.source {
            Source::Strip => {
                let gw = self.grid_w();
                let plane = self.strip_rows(m) * gw;
                for k in k0..k0 + kc {
                    let (icg, ky, kx) = (k / (kh * kw), (k / kw) % kh, k % kw);
                    s.offs.push(
                        (ic0 + icg) * plane + ky * win.dilation[0] * gw + kx * win.dilation[1] + t0,
                    );
                }
            }
            Source::Gather => {
                s.data.clear();
                s.data.resize(kc * t, 0.0);
                for (kk, k) in (k0..k0 + kc).enumerate() {
                    let (icg, ky, kx) = (k / (kh * kw), (k / kw) % kh, k % kw);
                    self.gather_row(
                        (ic0 + icg, ky, kx),
                        y0,
                        m,
                        t0,
                        &mut s.data[kk * t..(kk + 1) * t],
                    );
                    s.offs.push(kk * t);
                }
            }
        }
    }

    /// The input values tap `(ic, ky, kx)` reads for grid pixels
    /// `t0 .. t0 + row.len()` of the block of `m` output rows at `y0` (zero
    /// for padding and past the block).
    fn gather_row(
        &self,
        tap: (usize, usize, usize),
        y0: usize,
        m: usize,
        t0: usize,
        row: &mut [f32],
    ) {
        let (ic, ky, kx) = tap;
        let win = self.conv.params.window;
        let Shape { h, w, .. } = self.input.shape();
        let ow = self.out.w;
        let plane = self.input.plane(ic);
        let (sh, sw) = (win.stride[0] as isize, win.stride[1] as isize);
        let off_y = (ky * win.dilation[0]) as isize - win.pads[0] as isize;
        let off_x = (kx * win.dilation[1]) as isize - win.pads[1] as isize;
        let mut j = 0;
        let mut n = t0;
        while j < row.len() {
            if n >= m * ow {
                row[j..].fill(0.0);
                break;
            }
            let (r, ox) = (n / ow, n % ow);
            let len = (ow - ox).min(row.len() - j);
            let seg = &mut row[j..j + len];
            let iy = (y0 + r) as isize * sh + off_y;
            if iy < 0 || iy >= h as isize {
                seg.fill(0.0);
            } else {
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                for (i, v) in seg.iter_mut().enumerate() {
                    let ix = (ox + i) as isize * sw + off_x;
                    *v = if ix >= 0 && ix < w as isize {
                        src[ix as usize]
                    } else {
                        0.0
                    };
                }
            }
            j += len;
            n += len;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,fma")]
unsafe fn block_avx512(pc: &Panel<'_>, y0: usize, m: usize, s: &mut Scratch) {
    // SAFETY: forwarded from the caller; AVX-512F and FMA are enabled here.
    unsafe { block_v::<vector::Avx512, 4>(pc, y0, m, s) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(pc: &Panel<'_>, y0: usize, m: usize, s: &mut Scratch) {
    // SAFETY: forwarded from the caller; AVX2 and FMA are enabled here.
    unsafe { block_v::<vector::Avx2, 2>(pc, y0, m, s) }
}

/// The block of output rows `y0 .. y0 + m` into `s.acc`: per group, per
/// chunk of taps, per tile, every block of [`OB`] output channels.
///
/// # Safety
/// The CPU must support `V`; `U * V::LANES` is [`tile_width`] of the
/// panel's level; `s.acc` holds `out_channels` planes of the block's grid
/// pixels rounded up to the tile, and for a strip `s.data` holds the
/// block's padded rows ([`Panel::fill_strip`]).
#[inline(always)]
unsafe fn block_v<V: Vector, const U: usize>(pc: &Panel<'_>, y0: usize, m: usize, s: &mut Scratch) {
    let l = V::LANES;
    let t = U * l;
    let p = pc.conv.params;
    let k_all = p.filter_len();
    let chunk = (CHUNK_BYTES / 4 / t).max(8);
    let plane = s.acc.len() / p.out_channels.max(1);
    for g in 0..p.groups {
        let mut k0 = 0;
        while k0 < k_all {
            let kc = chunk.min(k_all - k0);
            let first = k0 == 0;
            let mut t0 = 0;
            while t0 < plane {
                // The last tile is as many vectors as the block has left.
                let vecs = U.min((plane - t0) / l);
                pc.taps(g, k0, kc, y0, m, t0, vecs * l, s);
                let job = Job {
                    x: s.data.as_ptr(),
                    offs: s.offs.as_slice(),
                    acc: s.acc.as_mut_ptr(),
                    plane,
                    k_all,
                    k0,
                    t0,
                    first,
                };
                // SAFETY: forwarded; `t0 + vecs * LANES <= plane`.
                unsafe {
                    match vecs {
                        1 => tile_channels::<V, 1>(pc, &job, g),
                        2 => tile_channels::<V, 2>(pc, &job, g),
                        3 => tile_channels::<V, 3>(pc, &job, g),
                        _ => tile_channels::<V, U>(pc, &job, g),
                    }
                }
                t0 += vecs * l;
            }
            k0 += kc;
        }
    }
}

/// One tile's work for one chunk of taps.
struct Job<'s> {
    /// Tap data base and per-tap offsets ([`Panel::taps`]).
    x: *const f32,
    offs: &'s [usize],
    /// Partial sums, `[out][plane]`.
    acc: *mut f32,
    plane: usize,
    /// Taps per filter; the chunk's first tap.
    k_all: usize,
    k0: usize,
    /// The tile's first grid pixel.
    t0: usize,
    /// Whether the chunk is the first (start from the bias).
    first: bool,
}

/// Every block of [`OB`] output channels of group `g` for one tile of `U`
/// vectors.
///
/// # Safety
/// As [`block_v`]; `job.t0 + U * V::LANES <= job.plane`.
#[inline(always)]
unsafe fn tile_channels<V: Vector, const U: usize>(pc: &Panel<'_>, job: &Job<'_>, g: usize) {
    let p = pc.conv.params;
    let opg = p.out_per_group();
    let mut j = 0;
    while j < opg {
        let oc0 = g * opg + j;
        let nb = OB.min(opg - j);
        // SAFETY: the packed block of `nb` channels at `oc0` holds
        // `k_all * nb` weights from `oc0 * k_all`; the partial sums of
        // channel `oc` are `acc[oc * plane + t0 ..][..U * LANES]`, inside
        // the plane; every tap offset plus `U * LANES` stays inside the tap
        // data (the strip's zero tail, or the panel).
        unsafe {
            let w = pc.packed.as_ptr().add(oc0 * job.k_all + job.k0 * nb);
            let d = job.acc.add(oc0 * job.plane + job.t0);
            let bias = pc.bias.as_ptr().add(oc0);
            if nb == OB {
                tile::<V, U, OB>(job.x, job.offs, w, nb, d, job.plane, bias, job.first);
            } else {
                for b in 0..nb {
                    tile::<V, U, 1>(
                        job.x,
                        job.offs,
                        w.add(b),
                        nb,
                        d.add(b * job.plane),
                        job.plane,
                        bias.add(b),
                        job.first,
                    );
                }
            }
        }
        j += nb;
    }
}

/// The micro-kernel: `B` channels x `U` vectors of one tile, over the taps
/// of `offs`: starts from the bias (`first`) or the stored partial sums,
/// adds `w * x` per tap in order, and stores.
///
/// # Safety
/// The CPU must support `V`; `x + offs[k]` is readable for `U * LANES`
/// values, `w + k * ws + b` for every tap `k` and `b < B`, `bias + b`, and
/// `dst + b * ds` is writable (and readable) for `U * LANES` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<V: Vector, const U: usize, const B: usize>(
    x: *const f32,
    offs: &[usize],
    w: *const f32,
    ws: usize,
    dst: *mut f32,
    ds: usize,
    bias: *const f32,
    first: bool,
) {
    let l = V::LANES;
    // SAFETY (all accesses): the caller's contract.
    unsafe {
        let mut acc: [[V; U]; B] = if first {
            std::array::from_fn(|b| [V::splat(*bias.add(b)); U])
        } else {
            std::array::from_fn(|b| std::array::from_fn(|u| V::load(dst.add(b * ds + u * l))))
        };
        let mut wk = w;
        for &o in offs {
            let xr = x.add(o);
            let xs: [V; U] = std::array::from_fn(|u| V::load(xr.add(u * l)));
            for (b, accb) in acc.iter_mut().enumerate() {
                let wv = V::splat(*wk.add(b));
                for (a, &xv) in accb.iter_mut().zip(&xs) {
                    *a = V::mul_add(wv, xv, *a);
                }
            }
            wk = wk.add(ws);
        }
        for (b, accb) in acc.iter().enumerate() {
            for (u, a) in accb.iter().enumerate() {
                a.store(dst.add(b * ds + u * l));
            }
        }
    }
}
