//! Winograd convolution F(2×2, 3×3) for 3×3, stride-1, undilated,
//! ungrouped layers with many channels (the "winograd" algorithm).
//!
//! Each 2×2 block of output pixels (a tile) of output channel `o` is
//! `Aᵀ [Σ_ic (G g G ᵀ) ⊙ (Bᵀ d B)] A`, where `g` is the 3×3 filter of `(o,
//! ic)` and `d` the 4×4 input patch the tile reads (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016). The 16 products
//! per tile and input channel replace 36 multiply-adds: 2.25× fewer
//! multiply-adds than direct convolution, paid for by the transforms and by
//! rounding (below).
//!
//! Layout, per block of tile rows (see [`Winograd::block`]):
//! - the input rows the block reads are copied once into the panel's
//!   strip, split in 2×2 phases ([`fill_strip`] with stride 2): for each
//!   of the 16 patch values, consecutive tiles read consecutive strip
//!   values, so the input transform runs on whole vectors of tiles;
//! - the transformed input is `[16][in][tiles]`; for each of the 16
//!   positions the products are a matrix product `[out x in] x [in x
//!   tiles]`, computed by the panel's micro-kernel ([`tile`]) against
//!   transformed weights packed once per convolution (`[16][block][in][6]`,
//!   [`pack`]);
//! - the output transform, the bias and the epilogue run per channel block
//!   as its 16 products come out, and write whole output rows, so the fused
//!   pool reads them as it reads any other algorithm's rows.
//!
//! Numerics: the weight transform runs in `f64` and is rounded once; the
//! transforms add and subtract in a fixed order and the products are
//! accumulated over input channels in order with one fused multiply-add
//! each, so a given level always gives the same bits (the digest is stable),
//! but not the direct algorithms' bits. The error against the exact result
//! is bounded by a small multiple of `ε Σ |w| |x|` (KERNELS.md, "Winograd",
//! states the bound the tests check).

use super::fused::epilogue_copy;
use super::panel::{ConvRun, OB, RowSource, Scratch, Strip, fill_strip, tile};
use super::simd::Level;
use super::vector::{self, Vector};
use crate::op::{Conv2d, Conv2dParams, EpilogueOp};
use crate::tensor::{Shape, Tensor};

/// Values per input patch and per transformed tile.
const POS: usize = 16;
/// Bytes of transformed input a block keeps (`16 x in x tiles`).
const INPUT_BYTES: usize = 1024 * 1024;
/// Bytes of products a chunk of output channels keeps (`16 x chunk x
/// tiles`). Per chunk, each position's transformed input (`in x tiles`)
/// is read once per block of [`OB`] channels while it is in L2, and the
/// whole transformed input once per chunk, not once per block of [`OB`].
const PROD_BYTES: usize = 256 * 1024;
/// Zero bias for the micro-kernel (the bias is added after the output
/// transform).
static ZEROS: [f32; OB] = [0.0; OB];

/// Whether the Winograd algorithm can compute convolutions of `p`'s
/// geometry: a 3×3 kernel, stride 1, no dilation, one group.
pub fn applies(p: &Conv2dParams) -> bool {
    let w = p.window;
    p.groups == 1 && w.kernel == [3, 3] && w.stride == [1, 1] && w.dilation == [1, 1]
}

/// The transformed weights `G g Gᵀ` of every `(out, in)` pair, computed in
/// `f64` and rounded once, packed for the micro-kernel: for position `ξ`,
/// each block of up to [`OB`] output channels starting at `oc0` is
/// `[in][channel]` at offset `ξ * out * in + oc0 * in`.
pub(crate) fn pack(conv: &Conv2d) -> Vec<f32> {
    let p = conv.params;
    let (oc_n, ic_n) = (p.out_channels, p.in_channels);
    let mut out = vec![0.0; POS * oc_n * ic_n];
    for o in 0..oc_n {
        let oc0 = o - o % OB;
        let nb = OB.min(oc_n - oc0);
        let b = o - oc0;
        let filter = conv.filter(o);
        for ic in 0..ic_n {
            let g: [f64; 9] = std::array::from_fn(|i| f64::from(filter[ic * 9 + i]));
            let u = transform_filter(&g);
            for (xi, &v) in u.iter().enumerate() {
                out[xi * oc_n * ic_n + oc0 * ic_n + ic * nb + b] = v as f32;
            }
        }
    }
    out
}

/// `G g Gᵀ` with `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`, as
/// 16 values row by row.
fn transform_filter(g: &[f64; 9]) -> [f64; POS] {
    let gm = |r: usize, k: usize| -> f64 {
        match (r, k) {
            (0, 0) | (3, 2) => 1.0,
            (1, _) => 0.5,
            (2, 1) => -0.5,
            (2, _) => 0.5,
            _ => 0.0,
        }
    };
    // t = G g (4x3), u = t Gᵀ (4x4).
    let mut t = [[0.0f64; 3]; 4];
    for (r, tr) in t.iter_mut().enumerate() {
        for (c, tv) in tr.iter_mut().enumerate() {
            *tv = (0..3).map(|k| gm(r, k) * g[k * 3 + c]).sum();
        }
    }
    std::array::from_fn(|i| {
        let (r, c) = (i / 4, i % 4);
        (0..3).map(|k| t[r][k] * gm(c, k)).sum()
    })
}

/// One convolution (with its epilogue) over one input, computed in blocks
/// of tile rows by the Winograd algorithm.
pub(crate) struct Winograd<'a>(ConvRun<'a>);

impl<'a> std::ops::Deref for Winograd<'a> {
    type Target = ConvRun<'a>;
    fn deref(&self) -> &ConvRun<'a> {
        &self.0
    }
}

impl<'a> Winograd<'a> {
    /// The convolution `conv` of `input` (output shape `out`) with the
    /// epilogue `ep`. `conv` must be one [`applies`] to.
    pub(crate) fn new(
        conv: &'a Conv2d,
        input: &'a Tensor,
        out: Shape,
        ep: &'a [EpilogueOp],
    ) -> Self {
        Self(ConvRun::new(conv, input, out, ep, "winograd", pack))
    }

    /// The strip of `m` tile rows: `2m + 2` padded rows in 2×2 phases,
    /// `grid_w` tiles per row (the tiles past the output are computed and
    /// dropped).
    fn strip(&self, m: usize) -> Strip {
        let [_, l, _, r] = self.conv.params.window.pads;
        Strip {
            grid_w: (self.input.shape().w + l + r).div_ceil(2),
            rows: m + 1,
        }
    }

    /// Tile rows per block: the transformed input within [`INPUT_BYTES`].
    fn block_tiles(&self) -> usize {
        let per_row = POS * self.conv.params.in_channels * self.strip(1).grid_w * 4;
        (INPUT_BYTES / per_row.max(1)).max(1)
    }

    /// Computes output rows `y0 .. y0 + n` (`n` = the rows in `dst`) in
    /// blocks of tile rows. Tiles start at even output rows whatever `y0`
    /// (a row's value depends on its place in its tile), so every band
    /// split and every fused pool's row blocks give the same bits.
    fn compute(&self, y0: usize, dst: &mut [&mut [f32]], s: &mut Scratch) {
        let w = self.out.w;
        let n = dst.first().map_or(0, |d| d.len() / w.max(1));
        let ya = y0 - y0 % 2;
        let tiles = (y0 + n - ya).div_ceil(2);
        let step = self.block_tiles();
        let mut r = 0;
        while r < tiles {
            let m = step.min(tiles - r);
            self.block(ya + 2 * r, y0, m, dst, s);
            r += m;
        }
    }

    /// The `m` tile rows from output row `ya` (even), written to `dst`
    /// (whose first row is output row `y0`; rows outside it are dropped).
    fn block(&self, ya: usize, y0: usize, m: usize, dst: &mut [&mut [f32]], s: &mut Scratch) {
        let l = vector::lanes(self.level);
        let strip = self.strip(m);
        let pads = self.conv.params.window.pads;
        let first = ya as isize - pads[0] as isize;
        fill_strip(self.input, first, [2, 2], pads[1], 2, &strip, &mut s.data);
        let plane = (m * strip.grid_w).div_ceil(l) * l;
        let ic_n = self.conv.params.in_channels;
        // Every value is written by the input transform before it is read.
        s.wino.resize(POS * ic_n * plane, 0.0);
        // Output channels per chunk: their products within PROD_BYTES,
        // a multiple of OB.
        let chunk = (PROD_BYTES / (POS * 4 * plane) / OB).max(1) * OB;
        s.prod.resize(POS * chunk * plane, 0.0);
        s.line.resize(4 * plane + 2 * strip.grid_w, 0.0);
        s.offs.clear();
        s.offs.extend((0..ic_n).map(|k| k * plane));
        let job = Block {
            strip,
            plane,
            ya,
            y0,
            m,
            chunk,
        };
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F and FMA.
            Level::Avx512 => unsafe { block_avx512(self, &job, dst, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has AVX2 and FMA.
            Level::Avx2Fma => unsafe { block_avx2(self, &job, dst, s) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is part of the aarch64 base ISA.
            Level::Neon => unsafe { block_v::<vector::Neon, 4>(self, &job, dst, s) },
            // SAFETY: portable lanes need no CPU feature.
            _ => unsafe { block_v::<vector::Portable, 1>(self, &job, dst, s) },
        }
    }
}

impl RowSource for Winograd<'_> {
    fn rows(&self, y0: usize, dst: &mut [&mut [f32]], scratch: &mut Scratch) {
        self.compute(y0, dst, scratch);
    }

    fn row_align(&self) -> usize {
        2
    }
}

/// One block: its strip, its tiles rounded up to lanes (`plane`), its
/// first output row `ya`, the destination's first output row `y0`, and its
/// tile rows.
struct Block {
    strip: Strip,
    plane: usize,
    ya: usize,
    y0: usize,
    m: usize,
    /// Output channels whose products are computed before their output
    /// transform (a multiple of [`OB`]).
    chunk: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,fma")]
unsafe fn block_avx512(wg: &Winograd<'_>, job: &Block, dst: &mut [&mut [f32]], s: &mut Scratch) {
    // SAFETY: forwarded from the caller; AVX-512F and FMA are enabled here.
    unsafe { block_v::<vector::Avx512, 4>(wg, job, dst, s) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(wg: &Winograd<'_>, job: &Block, dst: &mut [&mut [f32]], s: &mut Scratch) {
    // SAFETY: forwarded from the caller; AVX2 and FMA are enabled here.
    unsafe { block_v::<vector::Avx2, 2>(wg, job, dst, s) }
}

/// A block: the input transform, then per block of [`OB`] output channels
/// the 16 products and the output transform into `dst`.
///
/// # Safety
/// The CPU must support `V`; `U * V::LANES` is at most the panel's widest
/// tile; `s` was sized for `job` by [`Winograd::block`].
#[inline(always)]
unsafe fn block_v<V: Vector, const U: usize>(
    wg: &Winograd<'_>,
    job: &Block,
    dst: &mut [&mut [f32]],
    s: &mut Scratch,
) {
    let p = wg.conv.params;
    let (oc_n, ic_n) = (p.out_channels, p.in_channels);
    let plane = job.plane;
    // SAFETY: the strip holds the block's padded rows and a tail that
    // reads past the last tile stay in; `s.wino` holds 16 x in x plane.
    unsafe { input_transform::<V>(&s.data, &job.strip, ic_n, plane, &mut s.wino) };
    let chunk = job.chunk;
    let mut oc_c = 0;
    while oc_c < oc_n {
        let cn = chunk.min(oc_n - oc_c);
        for xi in 0..POS {
            let mut j = 0;
            while j < cn {
                // Chunks start at multiples of OB: so do packed blocks.
                let nb = OB.min(cn - j);
                // SAFETY: `s.prod` holds 16 x chunk x plane values,
                // position `xi` and channel `b` of the chunk at `(xi *
                // chunk + b) * plane`; the packed block of `nb` channels at
                // `oc_c + j` holds `in x nb` weights; every tile reads `in`
                // rows of `s.wino` at `s.offs` within position `xi`.
                unsafe {
                    let x = s.wino.as_ptr().add(xi * ic_n * plane);
                    let w = wg.packed.as_ptr().add(xi * oc_n * ic_n + (oc_c + j) * ic_n);
                    let d = s.prod.as_mut_ptr().add((xi * chunk + j) * plane);
                    products::<V, U>(x, &s.offs, w, d, plane, nb);
                }
                j += nb;
            }
        }
        for b in 0..cn {
            let oc = oc_c + b;
            // SAFETY: `s.prod` holds the 16 products of the chunk's
            // channel `b` for `plane` tiles; `s.line` holds 4 x plane
            // values and a row.
            unsafe {
                output_transform::<V>(&s.prod, b, chunk, plane, wg.bias[oc], &mut s.line);
            }
            write_rows(wg, job, oc, &mut s.line, plane, dst[oc]);
        }
        oc_c += cn;
    }
}

/// The products of one position for `nb` channels and every tile: `d + b *
/// plane` gets channel `b`'s.
///
/// # Safety
/// As [`tile`], for every tile of `plane` (a multiple of `LANES`).
#[inline(always)]
unsafe fn products<V: Vector, const U: usize>(
    x: *const f32,
    offs: &[usize],
    w: *const f32,
    d: *mut f32,
    plane: usize,
    nb: usize,
) {
    let l = V::LANES;
    let mut t0 = 0;
    while t0 < plane {
        // The last tile is as many vectors as the block has left.
        let vecs = U.min((plane - t0) / l);
        // SAFETY: forwarded; `t0 + vecs * LANES <= plane`.
        unsafe {
            let (x, d) = (x.add(t0), d.add(t0));
            match vecs {
                1 => channels::<V, 1>(x, offs, w, d, plane, nb),
                2 => channels::<V, 2>(x, offs, w, d, plane, nb),
                3 => channels::<V, 3>(x, offs, w, d, plane, nb),
                _ => channels::<V, U>(x, offs, w, d, plane, nb),
            }
        }
        t0 += vecs * l;
    }
}

/// One tile of `U` vectors for a block of `nb` channels.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn channels<V: Vector, const U: usize>(
    x: *const f32,
    offs: &[usize],
    w: *const f32,
    d: *mut f32,
    plane: usize,
    nb: usize,
) {
    let z = ZEROS.as_ptr();
    // SAFETY: forwarded.
    unsafe {
        match nb {
            1 => tile::<V, U, 1>(x, offs, w, d, plane, z, true),
            2 => tile::<V, U, 2>(x, offs, w, d, plane, z, true),
            3 => tile::<V, U, 3>(x, offs, w, d, plane, z, true),
            4 => tile::<V, U, 4>(x, offs, w, d, plane, z, true),
            5 => tile::<V, U, 5>(x, offs, w, d, plane, z, true),
            _ => tile::<V, U, OB>(x, offs, w, d, plane, z, true),
        }
    }
}

/// `Bᵀ d B` of every tile and input channel into `v` (`[16][in][plane]`),
/// with `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
/// Patch value `d[i][j]` of tile `t` is at phase `(i % 2, j % 2)`, `t + (i
/// / 2) grid_w + j / 2` of the strip.
///
/// # Safety
/// The CPU must support `V`; `data` is the strip of [`fill_strip`] with
/// stride 2 (with its tail) for `ic_n` channels; `plane` is a multiple of
/// `LANES`; `v` holds `16 * ic_n * plane` values.
#[inline(always)]
unsafe fn input_transform<V: Vector>(
    data: &[f32],
    strip: &Strip,
    ic_n: usize,
    plane: usize,
    v: &mut [f32],
) {
    let l = V::LANES;
    let (gw, pp) = (strip.grid_w, strip.plane());
    let src = data.as_ptr();
    let dst = v.as_mut_ptr();
    // SAFETY (all accesses): the caller's contract; reads of the last
    // vector stay within the strip's tail (see `fill_strip`).
    unsafe {
        for ic in 0..ic_n {
            let base = src.add(ic * 4 * pp);
            let at =
                |i: usize, j: usize| base.add(((i % 2) * 2 + j % 2) * pp + (i / 2) * gw + j / 2);
            let ptrs: [[*const f32; 4]; 4] =
                std::array::from_fn(|i| std::array::from_fn(|j| at(i, j)));
            let out = dst.add(ic * plane);
            let mut t = 0;
            while t < plane {
                let d: [[V; 4]; 4] =
                    std::array::from_fn(|i| std::array::from_fn(|j| V::load(ptrs[i][j].add(t))));
                // Rows: Bᵀ d.
                let r: [[V; 4]; 4] = std::array::from_fn(|j| {
                    [
                        V::sub(d[0][j], d[2][j]),
                        V::add(d[1][j], d[2][j]),
                        V::sub(d[2][j], d[1][j]),
                        V::sub(d[1][j], d[3][j]),
                    ]
                });
                // Columns: (Bᵀ d) B; `r[j][i]` is row `i`, column `j`.
                #[allow(clippy::needless_range_loop)] // `i` indexes the inner arrays
                for i in 0..4 {
                    let c = [
                        V::sub(r[0][i], r[2][i]),
                        V::add(r[1][i], r[2][i]),
                        V::sub(r[2][i], r[1][i]),
                        V::sub(r[1][i], r[3][i]),
                    ];
                    for (j, cv) in c.iter().enumerate() {
                        cv.store(out.add(((i * 4 + j) * ic_n) * plane + t));
                    }
                }
                t += l;
            }
        }
    }
}

/// `Aᵀ m A + bias` of channel `b`'s products for every tile into `line`
/// (`[4][plane]`: output pixels (0, 0), (0, 1), (1, 0), (1, 1) of each
/// tile), with `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`.
///
/// # Safety
/// The CPU must support `V`; `prod` holds `[16][chunk][plane]`, `plane` is a
/// multiple of `LANES`, and `line` holds at least `4 * plane` values.
#[inline(always)]
unsafe fn output_transform<V: Vector>(
    prod: &[f32],
    b: usize,
    chunk: usize,
    plane: usize,
    bias: f32,
    line: &mut [f32],
) {
    let l = V::LANES;
    let src = prod.as_ptr();
    let dst = line.as_mut_ptr();
    // SAFETY (all accesses): the caller's contract.
    unsafe {
        let bv = V::splat(bias);
        let mut t = 0;
        while t < plane {
            let m: [V; POS] =
                std::array::from_fn(|xi| V::load(src.add((xi * chunk + b) * plane + t)));
            // Rows: Aᵀ m, per column j.
            let s0: [V; 4] = std::array::from_fn(|j| V::add(V::add(m[j], m[4 + j]), m[8 + j]));
            let s1: [V; 4] = std::array::from_fn(|j| V::sub(V::sub(m[4 + j], m[8 + j]), m[12 + j]));
            for (i, s) in [s0, s1].iter().enumerate() {
                let y0 = V::add(V::add(s[0], s[1]), s[2]);
                let y1 = V::sub(V::sub(s[1], s[2]), s[3]);
                V::add(y0, bv).store(dst.add((2 * i) * plane + t));
                V::add(y1, bv).store(dst.add((2 * i + 1) * plane + t));
            }
            t += l;
        }
    }
}

/// Writes channel `oc`'s output rows of a block from its tiles in `line`
/// (`[4][plane]`, then room for one row), through the epilogue.
fn write_rows(
    wg: &Winograd<'_>,
    job: &Block,
    oc: usize,
    line: &mut [f32],
    plane: usize,
    dst: &mut [f32],
) {
    let w = wg.out.w;
    let gw = job.strip.grid_w;
    let nrows = dst.len() / w.max(1);
    let tw = w.div_ceil(2);
    let (tiles, row) = line.split_at_mut(4 * plane);
    for r in 0..job.m {
        for i in 0..2 {
            let y = job.ya + 2 * r + i;
            if y < job.y0 || y >= job.y0 + nrows {
                continue;
            }
            let y = y - job.y0;
            let p0 = &tiles[(2 * i) * plane + r * gw..][..tw];
            let p1 = &tiles[(2 * i + 1) * plane + r * gw..][..tw];
            for (tx, (&a, &b)) in p0.iter().zip(p1).enumerate() {
                row[2 * tx] = a;
                row[2 * tx + 1] = b;
            }
            epilogue_copy(wg.ep, oc, &mut dst[y * w..(y + 1) * w], &row[..w]);
        }
    }
}
