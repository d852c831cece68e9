//! Winograd convolution (the "winograd" algorithm) in three forms:
//!
//! - F(4×4, 3×3) for 3×3, stride-1 layers with many channels: 36 products
//!   per 16 outputs and input channel instead of 144 multiply-adds, 4×
//!   fewer;
//! - F(2×2, 3×3) for the same layers where their output is so small that
//!   4×4 tiles would waste more lanes and columns than they save (14×14:
//!   [`Form::of`] counts the products each form computes): 2.25× fewer;
//! - F(4×4, 4×4) on stride phases for stride-2 layers with 5- to 8-tap
//!   kernels, such as the ResNet stem's 7×7/2: split in its 2×2 stride
//!   phases, a stride-2 convolution is a stride-1 convolution of `4 x in`
//!   phase planes with kernels of at most 4×4 taps (zero where the kernel
//!   has no tap), which F(4×4, 4×4) computes with 49 products per 16
//!   outputs and phase plane: 4× fewer multiply-adds than the 16 taps of
//!   the direct form, 3× fewer than the stem's 12.25 real taps.
//!
//! Each `M×M` block of output pixels (a tile) of output channel `o` is
//! `Aᵀ [Σ_k (G g_k Gᵀ) ⊙ (Bᵀ d_k B)] A`, where `g_k` is the `R×R` filter
//! of `(o, k)` over the `A×A` input patch `d_k` the tile reads, `A = M +
//! R - 1` (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016; the F(4, 3) and F(4, 4) matrices are Cook-Toom's at
//! the points 0, ±1, ±2, ∞ and 0, ±1, ±½, 2, ∞, with `Bᵀ`'s rows scaled
//! to integers). The `A²`
//! products per tile and phase plane replace `M² R²` multiply-adds, paid
//! for by the transforms and by rounding (below).
//!
//! Layout, per block of tile rows (see [`Winograd::block`]):
//! - the input rows the block reads are copied once into the panel's
//!   strip, split in `S M` phases per axis ([`fill_strip`] with that
//!   stride): for each patch value, consecutive tiles read consecutive
//!   strip values, so the input transform runs on whole vectors of tiles;
//! - the transformed input is `[A²][in S²][tiles]`; for each of the `A²`
//!   positions the products are a matrix product `[out x in S²] x [in S² x
//!   tiles]`, computed by the panel's micro-kernel ([`tile`]) against
//!   transformed weights packed once per convolution (`[A²][block][in
//!   S²][6]`, [`pack`]);
//! - the output transform, the bias and the epilogue run per channel block
//!   as its products come out; each tile row's `M` pixels are stored back
//!   in column order ([`vector::store_zip`]), and whole output rows go
//!   through the epilogue, so the fused pool reads them as it reads any
//!   other algorithm's rows.
//!
//! Numerics: the weight transform runs in `f64` and is rounded once; the
//! transforms add and subtract in a fixed order and the products are
//! accumulated over phase planes in order with one fused multiply-add
//! each, so a given level always gives the same bits (the digest is stable),
//! but not the direct algorithms' bits. The error against the exact result
//! is bounded by a small multiple of `ε Σ |w| |x|` (KERNELS.md, "Winograd",
//! states the bounds the tests check).

use super::fused::epilogue_copy;
use super::panel::{ConvRun, OB, RowSource, Scratch, Strip, fill_strip, tile};
use super::simd::Level;
use super::vector::{self, Vector};
use crate::op::{Conv2d, Conv2dParams, EpilogueOp};
use crate::tensor::{Shape, Tensor};

/// Bytes of transformed input a block keeps (`A² x in S² x tiles`).
const INPUT_BYTES: usize = 1024 * 1024;
/// Bytes of products a chunk of output channels keeps (`A² x chunk x
/// tiles`). Per chunk, each position's transformed input (`in S² x tiles`)
/// is read once per block of [`OB`] channels while it is in L2, and the
/// whole transformed input once per chunk, not once per block of [`OB`].
const PROD_BYTES: usize = 256 * 1024;
/// Fewest tiles per block (2 vectors of AVX-512 lanes).
const MIN_TILES: usize = 32;
/// Zero bias for the micro-kernel (the bias is added after the output
/// transform).
static ZEROS: [f32; OB] = [0.0; OB];

/// A Winograd form: its tile, its kernel, the stride it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// F(2×2, 3×3): 3×3 kernels, stride 1.
    F2x3,
    /// F(4×4, 3×3): 3×3 kernels, stride 1.
    F4x3,
    /// F(4×4, 4×4) on 2×2 stride phases: stride 2, 5 to 8 taps per axis.
    F4x4S2,
}

impl Form {
    /// The form for convolutions of `p`'s geometry with output `out`, if
    /// one applies: no dilation, one group, and a 3×3 kernel at stride 1
    /// (F(4×4, 3×3), or F(2×2, 3×3) where its 2×2 tiles waste fewer lanes
    /// and columns, [`Form::products`]) or 5 to 8 taps per axis at stride 2
    /// (F(4×4, 4×4) on stride phases).
    pub(crate) fn of(p: &Conv2dParams, out: Shape) -> Option<Form> {
        let w = p.window;
        if p.groups != 1 || w.dilation != [1, 1] {
            return None;
        }
        if w.kernel == [3, 3] && w.stride == [1, 1] {
            // F(4x4, 3x3)'s transforms cost more per product: it must save
            // a fifth of the products.
            let (big, small) = (Form::F4x3.products(p, out), Form::F2x3.products(p, out));
            Some(if 5 * big < 4 * small {
                Form::F4x3
            } else {
                Form::F2x3
            })
        } else if w.stride == [2, 2] && w.kernel.iter().all(|k| (5..=8).contains(k)) {
            Some(Form::F4x4S2)
        } else {
            None
        }
    }

    /// Products per output channel and phase plane the form computes for
    /// an output `out`: `A²` per tile, tiles counted as the blocks hold
    /// them (the columns a row's last tile reaches past and a block's
    /// tiles rounded up to 16 lanes included; band splits ignored).
    fn products(self, p: &Conv2dParams, out: Shape) -> usize {
        let gw = self.grid_w(out.w);
        let rows = out.h.div_ceil(self.m());
        let mt = self.block_tiles(self.planes(p.in_channels), gw);
        let padded = |m: usize| (m * gw).div_ceil(16) * 16;
        self.pos() * (rows / mt * padded(mt) + padded(rows % mt))
    }

    /// Tile rows per block, for `planes` phase planes and `gw` tiles per
    /// row: the transformed input within [`INPUT_BYTES`], but at least
    /// [`MIN_TILES`] tiles (a narrow, deep layer's block of one tile row
    /// would leave most of the micro-kernel's lanes idle).
    fn block_tiles(self, planes: usize, gw: usize) -> usize {
        let per_row = self.pos() * planes * gw * 4;
        (INPUT_BYTES / per_row.max(1))
            .max(MIN_TILES.div_ceil(gw.max(1)))
            .max(1)
    }

    /// Tiles per strip row for an output `out_w` wide: the output's, and
    /// the columns the last one reaches past (computed and dropped).
    fn grid_w(self, out_w: usize) -> usize {
        out_w.div_ceil(self.m()) + self.reach()
    }

    /// Phase planes a product sums over for `in_channels` inputs (`in S²`).
    fn planes(self, in_channels: usize) -> usize {
        in_channels * self.stride() * self.stride()
    }

    /// Patch values per axis (`A = M + R - 1`).
    fn a(self) -> usize {
        self.m() + self.r() - 1
    }

    /// Output pixels per tile and axis.
    fn m(self) -> usize {
        match self {
            Form::F2x3 => 2,
            Form::F4x3 | Form::F4x4S2 => 4,
        }
    }

    /// Taps per axis of a phase kernel.
    fn r(self) -> usize {
        match self {
            Form::F2x3 | Form::F4x3 => 3,
            Form::F4x4S2 => 4,
        }
    }

    /// The convolution's stride (both axes).
    pub(crate) fn stride(self) -> usize {
        match self {
            Form::F2x3 | Form::F4x3 => 1,
            Form::F4x4S2 => 2,
        }
    }

    /// Values per patch and per transformed tile.
    fn pos(self) -> usize {
        self.a() * self.a()
    }

    /// Input columns (and rows) between consecutive tiles: the strip's
    /// phase stride.
    fn step(self) -> usize {
        self.stride() * self.m()
    }

    /// Strip rows and columns a tile reads past its own (patch values
    /// reach `S A - 1` input rows and columns from its first).
    fn reach(self) -> usize {
        (self.stride() * self.a() - 1) / self.step()
    }

    /// The name of its packed weights ([`Conv2d::packed_with`]).
    fn layout(self) -> &'static str {
        match self {
            Form::F2x3 => "winograd",
            Form::F4x3 => "winograd-4x4-3x3",
            Form::F4x4S2 => "winograd-4x4-s2",
        }
    }

    /// Its weight packing ([`pack`] in this form).
    fn packer(self) -> fn(&Conv2d) -> Vec<f32> {
        match self {
            Form::F2x3 => |c| pack(c, Form::F2x3),
            Form::F4x3 => |c| pack(c, Form::F4x3),
            Form::F4x4S2 => |c| pack(c, Form::F4x4S2),
        }
    }

    /// `G[j][k]` (`A x R`) in `f64`.
    fn g(self, j: usize, k: usize) -> f64 {
        match self {
            // [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]
            Form::F2x3 => match (j, k) {
                (0, 0) | (3, 2) => 1.0,
                (1, _) => 0.5,
                (2, 1) => -0.5,
                (2, _) => 0.5,
                _ => 0.0,
            },
            Form::F4x3 => G4X3[j][k],
            Form::F4x4S2 => G4X4[j][k],
        }
    }
}

/// F(4, 4)'s `G` at the points 0, 1, -1, ½, -½, 2, ∞, its rows divided by
/// the scales of `Bᵀ`'s ([`F4x4S2`]'s input transform).
const G4X4: [[f64; 4]; 7] = [
    [1.0 / 2.0, 0.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 18.0, -1.0 / 18.0, 1.0 / 18.0, -1.0 / 18.0],
    [8.0 / 9.0, 4.0 / 9.0, 2.0 / 9.0, 1.0 / 9.0],
    [-8.0 / 15.0, 4.0 / 15.0, -2.0 / 15.0, 1.0 / 15.0],
    [1.0 / 90.0, 1.0 / 45.0, 2.0 / 45.0, 4.0 / 45.0],
    [0.0, 0.0, 0.0, -1.0 / 4.0],
];

/// F(4, 3)'s `G` at the points 0, 1, -1, 2, -2, ∞, its rows divided by
/// the scales of `Bᵀ`'s ([`F4x3`]'s input transform).
const G4X3: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 24.0, -1.0 / 12.0, -1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Whether the Winograd algorithm can compute convolutions of `p`'s
/// geometry (one of its forms applies, [`Form::of`]).
pub fn applies(p: &Conv2dParams) -> bool {
    Form::of(p, Shape::new(p.out_channels, 1, 1)).is_some()
}

/// The output tile (pixels per axis: 2 or 4) of the Winograd form the CPU
/// computes convolutions of `p`'s geometry with output `out` by, or `None`
/// where none applies ([`crate::reference::winograd_bounds`] takes it).
pub fn output_tile(p: &Conv2dParams, out: Shape) -> Option<usize> {
    Form::of(p, out).map(Form::m)
}

/// The 1-D transforms of a form: `Bᵀ d` of a column or row of `A` patch
/// values, and `Aᵀ m` of `A` products.
trait Transforms<const A: usize, const M: usize> {
    /// `Bᵀ d`.
    ///
    /// # Safety
    /// The CPU must support `V`.
    unsafe fn input<V: Vector>(d: [V; A]) -> [V; A];
    /// `Aᵀ m`.
    ///
    /// # Safety
    /// The CPU must support `V`.
    unsafe fn output<V: Vector>(m: [V; A]) -> [V; M];
}

/// F(2×2, 3×3)'s transforms.
struct F2x3;

impl Transforms<4, 2> for F2x3 {
    #[inline(always)]
    unsafe fn input<V: Vector>(d: [V; 4]) -> [V; 4] {
        // Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        // SAFETY: forwarded from the caller.
        unsafe {
            [
                V::sub(d[0], d[2]),
                V::add(d[1], d[2]),
                V::sub(d[2], d[1]),
                V::sub(d[1], d[3]),
            ]
        }
    }
    #[inline(always)]
    unsafe fn output<V: Vector>(m: [V; 4]) -> [V; 2] {
        // Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]
        // SAFETY: forwarded from the caller.
        unsafe {
            [
                V::add(V::add(m[0], m[1]), m[2]),
                V::sub(V::sub(m[1], m[2]), m[3]),
            ]
        }
    }
}

/// F(4×4, 3×3)'s transforms, at the points 0, 1, -1, 2, -2 and ∞.
struct F4x3;

impl Transforms<6, 4> for F4x3 {
    #[inline(always)]
    unsafe fn input<V: Vector>(d: [V; 6]) -> [V; 6] {
        // Bᵀ =
        //   [4, 0, -5,  0,  1, 0]
        //   [0, 4,  4, -1, -1, 0]
        //   [0, 4, -4, -1,  1, 0]
        //   [0, 2,  1, -2, -1, 0]
        //   [0, 2, -1, -2,  1, 0]
        //   [0, 4,  0, -5,  0, 1]
        // Rows 1 and 2 (the points ±1) are p ± q, rows 3 and 4 (±2) p' ± q'.
        // SAFETY: forwarded from the caller.
        unsafe {
            let p = fma_sum(V::sub(V::splat(0.0), d[3]), [(4.0, d[1])]);
            let q = fma_sum(V::sub(V::splat(0.0), d[4]), [(4.0, d[2])]);
            let t = V::sub(d[1], d[3]);
            let p2 = V::add(t, t);
            let q2 = V::sub(d[2], d[4]);
            [
                fma_sum(d[4], [(-5.0, d[2]), (4.0, d[0])]),
                V::add(p, q),
                V::sub(p, q),
                V::add(p2, q2),
                V::sub(p2, q2),
                fma_sum(d[5], [(-5.0, d[3]), (4.0, d[1])]),
            ]
        }
    }
    #[inline(always)]
    unsafe fn output<V: Vector>(m: [V; 6]) -> [V; 4] {
        // Aᵀ =
        //   [1, 1,  1, 1,  1, 0]
        //   [0, 1, -1, 2, -2, 0]
        //   [0, 1,  1, 4,  4, 0]
        //   [0, 1, -1, 8, -8, 1]
        // SAFETY: forwarded from the caller.
        unsafe {
            let (a, b) = (V::add(m[1], m[2]), V::sub(m[1], m[2]));
            let (c, e) = (V::add(m[3], m[4]), V::sub(m[3], m[4]));
            [
                V::add(V::add(m[0], a), c),
                fma_sum(b, [(2.0, e)]),
                fma_sum(a, [(4.0, c)]),
                V::add(fma_sum(b, [(8.0, e)]), m[5]),
            ]
        }
    }
}

/// F(4×4, 4×4)'s transforms, at the points 0, 1, -1, ½, -½, 2 and ∞.
struct F4x4S2;

/// `acc + Σ c x` over `terms` in order, one multiply-add each.
///
/// # Safety
/// The CPU must support `V`.
#[inline(always)]
unsafe fn fma_sum<V: Vector, const N: usize>(acc: V, terms: [(f32, V); N]) -> V {
    // SAFETY: forwarded from the caller.
    unsafe {
        terms
            .into_iter()
            .fold(acc, |a, (c, x)| V::mul_add(V::splat(c), x, a))
    }
}

impl Transforms<7, 4> for F4x4S2 {
    #[inline(always)]
    unsafe fn input<V: Vector>(d: [V; 7]) -> [V; 7] {
        // Bᵀ =
        //   [2, -1, -10,   5,   8, -4,  0]
        //   [0,  2,   1,  -9,  -4,  4,  0]
        //   [0,  2,  -3,  -7,  12, -4,  0]
        //   [0,  2,   3,  -4,  -3,  2,  0]
        //   [0,  2,  -5,   0,   5, -2,  0]
        //   [0,  1,   0,  -5,   0,  4,  0]
        //   [0,  2,  -1, -10,   5,  8, -4]
        // Rows 1 and 2 (the points ±1) are p ± q, rows 3 and 4 (±½) p' ±
        // 2q', where q and q' are p and p' one value on.
        // SAFETY: forwarded from the caller.
        unsafe {
            let p1 = |i: usize| {
                let s = V::sub(V::add(d[i], d[i]), d[i + 1]);
                fma_sum(s, [(-8.0, d[i + 2]), (4.0, d[i + 3])])
            };
            let p2 = |i: usize| {
                let s = V::sub(V::add(d[i], d[i]), d[i + 1]);
                V::add(fma_sum(s, [(-2.0, d[i + 2])]), d[i + 3])
            };
            let (a, b) = (p1(1), p1(2));
            let (c, e) = (p2(1), p2(2));
            let two = V::splat(2.0);
            let v0 = |i: usize| {
                let s = V::sub(V::add(d[i], d[i]), d[i + 1]);
                fma_sum(
                    s,
                    [
                        (-10.0, d[i + 2]),
                        (5.0, d[i + 3]),
                        (8.0, d[i + 4]),
                        (-4.0, d[i + 5]),
                    ],
                )
            };
            [
                v0(0),
                V::add(a, b),
                V::sub(a, b),
                V::mul_add(two, e, c),
                V::mul_add(V::splat(-2.0), e, c),
                fma_sum(d[1], [(-5.0, d[3]), (4.0, d[5])]),
                v0(1),
            ]
        }
    }
    #[inline(always)]
    unsafe fn output<V: Vector>(m: [V; 7]) -> [V; 4] {
        // Aᵀ =
        //   [1, 1,  1,   1,    1,  1, 0]
        //   [0, 1, -1,   ½,   -½,  2, 0]
        //   [0, 1,  1,   ¼,    ¼,  4, 0]
        //   [0, 1, -1,   ⅛,   -⅛,  8, 1]
        // SAFETY: forwarded from the caller.
        unsafe {
            let (a, b) = (V::add(m[1], m[2]), V::sub(m[1], m[2]));
            let (c, e) = (V::add(m[3], m[4]), V::sub(m[3], m[4]));
            [
                V::add(V::add(V::add(m[0], a), c), m[5]),
                fma_sum(b, [(0.5, e), (2.0, m[5])]),
                fma_sum(a, [(0.25, c), (4.0, m[5])]),
                V::add(fma_sum(b, [(0.125, e), (8.0, m[5])]), m[6]),
            ]
        }
    }
}

/// The transformed weights `G g Gᵀ` of every output channel and phase
/// plane `k = ic S² + py S + px` (the phase kernel `g[a][b] = w[S a +
/// py][S b + px]`, zero past the kernel), computed in `f64` and rounded
/// once, packed for the micro-kernel: for position `ξ`, each block of up to
/// [`OB`] output channels starting at `oc0` is `[k][channel]` at offset
/// `ξ * out * K + oc0 * K` (`K = in S²`).
fn pack(conv: &Conv2d, form: Form) -> Vec<f32> {
    let p = conv.params;
    let (a, r, s) = (form.a(), form.r(), form.stride());
    let [kh, kw] = p.window.kernel;
    let (oc_n, k_n) = (p.out_channels, p.in_channels * s * s);
    let mut out = vec![0.0; form.pos() * oc_n * k_n];
    for o in 0..oc_n {
        let oc0 = o - o % OB;
        let nb = OB.min(oc_n - oc0);
        let b = o - oc0;
        let filter = conv.filter(o);
        for k in 0..k_n {
            let (ic, py, px) = (k / (s * s), k / s % s, k % s);
            let g = |i: usize, j: usize| -> f64 {
                let (y, x) = (s * i + py, s * j + px);
                if y < kh && x < kw {
                    f64::from(filter[(ic * kh + y) * kw + x])
                } else {
                    0.0
                }
            };
            // t = G g (A x R), u = t Gᵀ (A x A).
            let t: Vec<f64> = (0..a * r)
                .map(|i| (0..r).map(|q| form.g(i / r, q) * g(q, i % r)).sum())
                .collect();
            for xi in 0..a * a {
                let (i, j) = (xi / a, xi % a);
                let u: f64 = (0..r).map(|q| t[i * r + q] * form.g(j, q)).sum();
                out[xi * oc_n * k_n + oc0 * k_n + k * nb + b] = u as f32;
            }
        }
    }
    out
}

/// One convolution (with its epilogue) over one input, computed in blocks
/// of tile rows by the Winograd algorithm.
pub(crate) struct Winograd<'a> {
    run: ConvRun<'a>,
    form: Form,
}

impl<'a> std::ops::Deref for Winograd<'a> {
    type Target = ConvRun<'a>;
    fn deref(&self) -> &ConvRun<'a> {
        &self.run
    }
}

impl<'a> Winograd<'a> {
    /// The convolution `conv` of `input` (output shape `out`) with the
    /// epilogue `ep`.
    ///
    /// # Panics
    /// When no form applies to `conv` ([`applies`]).
    pub(crate) fn new(
        conv: &'a Conv2d,
        input: &'a Tensor,
        out: Shape,
        ep: &'a [EpilogueOp],
    ) -> Self {
        let Some(form) = Form::of(&conv.params, out) else {
            panic!("winograd: no form for {:?}", conv.params.window)
        };
        Self {
            run: ConvRun::new(conv, input, out, ep, form.layout(), form.packer()),
            form,
        }
    }

    /// The strip of `m` tile rows: `m + reach` rows of `step` phases per
    /// axis, as many tiles per row as the output has and the columns the
    /// last one reaches past (the tiles past the output are computed and
    /// dropped).
    fn strip(&self, m: usize) -> Strip {
        Strip {
            grid_w: self.form.grid_w(self.out.w),
            rows: m + self.form.reach(),
        }
    }

    /// Phase planes a product sums over (`in S²`).
    fn planes(&self) -> usize {
        self.form.planes(self.conv.params.in_channels)
    }

    /// Tile rows per block ([`Form::block_tiles`]).
    fn block_tiles(&self) -> usize {
        self.form.block_tiles(self.planes(), self.strip(1).grid_w)
    }

    /// Computes output rows `y0 .. y0 + n` (`n` = the rows in `dst`) in
    /// blocks of tile rows. Tiles start at multiples of `M` output rows
    /// whatever `y0` (a row's value depends on its place in its tile), so
    /// every band split and every fused pool's row blocks give the same
    /// bits.
    fn compute(&self, y0: usize, dst: &mut [&mut [f32]], s: &mut Scratch) {
        let (w, mt) = (self.out.w, self.form.m());
        let n = dst.first().map_or(0, |d| d.len() / w.max(1));
        let ya = y0 - y0 % mt;
        let tiles = (y0 + n - ya).div_ceil(mt);
        let step = self.block_tiles();
        let mut r = 0;
        while r < tiles {
            let m = step.min(tiles - r);
            self.block(ya + mt * r, y0, m, dst, s);
            r += m;
        }
    }

    /// The `m` tile rows from output row `ya` (a multiple of `M`), written
    /// to `dst` (whose first row is output row `y0`; rows outside it are
    /// dropped).
    fn block(&self, ya: usize, y0: usize, m: usize, dst: &mut [&mut [f32]], s: &mut Scratch) {
        let f = self.form;
        let l = vector::lanes(self.level);
        let strip = self.strip(m);
        let pads = self.conv.params.window.pads;
        let first = (f.stride() * ya) as isize - pads[0] as isize;
        let step = f.step();
        fill_strip(
            self.input,
            first,
            [step, step],
            pads[1],
            2,
            &strip,
            &mut s.data,
        );
        let plane = (m * strip.grid_w).div_ceil(l) * l;
        let k_n = self.planes();
        let pos = f.pos();
        // Every value is written by the input transform before it is read.
        s.wino.resize(pos * k_n * plane, 0.0);
        // Output channels per chunk: their products within PROD_BYTES,
        // a multiple of OB.
        let chunk = (PROD_BYTES / (pos * 4 * plane) / OB).max(1) * OB;
        s.prod.resize(pos * chunk * plane, 0.0);
        s.line
            .resize(f.m() * f.m() * plane + strip.grid_w * f.m(), 0.0);
        s.offs.clear();
        s.offs.extend((0..k_n).map(|k| k * plane));
        let job = Block {
            strip,
            plane,
            ya,
            y0,
            m,
            chunk,
        };
        match (self.level, f) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F and FMA.
            (Level::Avx512, _) => unsafe { block_avx512(self, &job, dst, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has AVX2 and FMA.
            (Level::Avx2Fma, _) => unsafe { block_avx2(self, &job, dst, s) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is part of the aarch64 base ISA.
            (Level::Neon, _) => unsafe { block_form::<vector::Neon, 4>(self, &job, dst, s) },
            // SAFETY: portable lanes need no CPU feature.
            _ => unsafe { block_form::<vector::Portable, 1>(self, &job, dst, s) },
        }
    }
}

impl RowSource for Winograd<'_> {
    fn rows(&self, y0: usize, dst: &mut [&mut [f32]], scratch: &mut Scratch) {
        self.compute(y0, dst, scratch);
    }

    fn row_align(&self) -> usize {
        self.form.m()
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
    unsafe { block_form::<vector::Avx512, 4>(wg, job, dst, s) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(wg: &Winograd<'_>, job: &Block, dst: &mut [&mut [f32]], s: &mut Scratch) {
    // SAFETY: forwarded from the caller; AVX2 and FMA are enabled here.
    unsafe { block_form::<vector::Avx2, 2>(wg, job, dst, s) }
}

/// A block in `wg`'s form.
///
/// # Safety
/// As [`block_v`].
#[inline(always)]
unsafe fn block_form<V: Vector, const U: usize>(
    wg: &Winograd<'_>,
    job: &Block,
    dst: &mut [&mut [f32]],
    s: &mut Scratch,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match wg.form {
            Form::F2x3 => block_v::<V, U, 4, 2, F2x3>(wg, job, dst, s),
            Form::F4x3 => block_v::<V, U, 6, 4, F4x3>(wg, job, dst, s),
            Form::F4x4S2 => block_v::<V, U, 7, 4, F4x4S2>(wg, job, dst, s),
        }
    }
}

/// A block: the input transform, then per block of [`OB`] output channels
/// the `A²` products and the output transform into `dst`.
///
/// # Safety
/// The CPU must support `V`; `U * V::LANES` is at most the panel's widest
/// tile; `s` was sized for `job` by [`Winograd::block`]; `(A, M)` is
/// `wg.form`'s and `T` its transforms.
#[inline(always)]
unsafe fn block_v<V: Vector, const U: usize, const A: usize, const M: usize, T>(
    wg: &Winograd<'_>,
    job: &Block,
    dst: &mut [&mut [f32]],
    s: &mut Scratch,
) where
    T: Transforms<A, M>,
{
    let oc_n = wg.conv.params.out_channels;
    let k_n = wg.planes();
    let plane = job.plane;
    let pos = A * A;
    // SAFETY: the strip holds the block's padded rows and a tail that
    // reads past the last tile stay in; `s.wino` holds A² x K x plane.
    unsafe {
        input_transform::<V, A, M, T>(
            &s.data,
            &job.strip,
            wg.conv.params.in_channels,
            wg.form.stride(),
            plane,
            &mut s.wino,
        )
    };
    let chunk = job.chunk;
    let mut oc_c = 0;
    while oc_c < oc_n {
        let cn = chunk.min(oc_n - oc_c);
        for xi in 0..pos {
            let mut j = 0;
            while j < cn {
                // Chunks start at multiples of OB: so do packed blocks.
                let nb = OB.min(cn - j);
                // SAFETY: `s.prod` holds A² x chunk x plane values,
                // position `xi` and channel `b` of the chunk at `(xi *
                // chunk + b) * plane`; the packed block of `nb` channels at
                // `oc_c + j` holds `K x nb` weights; every tile reads `K`
                // rows of `s.wino` at `s.offs` within position `xi`.
                unsafe {
                    let x = s.wino.as_ptr().add(xi * k_n * plane);
                    let w = wg.packed.as_ptr().add(xi * oc_n * k_n + (oc_c + j) * k_n);
                    let d = s.prod.as_mut_ptr().add((xi * chunk + j) * plane);
                    products::<V, U>(x, &s.offs, w, d, plane, nb);
                }
                j += nb;
            }
        }
        for b in 0..cn {
            let oc = oc_c + b;
            // SAFETY: `s.prod` holds the A² products of the chunk's
            // channel `b` for `plane` tiles; `s.line` holds M² x plane
            // values.
            unsafe {
                output_transform::<V, A, M, T>(&s.prod, b, chunk, plane, wg.bias[oc], &mut s.line);
            }
            write_rows(wg, job, oc, &s.line, plane, dst[oc]);
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

/// `Bᵀ d B` of every tile and phase plane into `v` (`[A²][K][plane]`).
/// Patch value `d[i][j]` of phase plane `(ic, py, px)` and tile `t` is
/// input row `S i + py`, column `S j + px` from the tile's first: strip
/// phase `((S i + py) % step, (S j + px) % step)`, value `t + ((S i + py)
/// / step) grid_w + (S j + px) / step`.
///
/// # Safety
/// The CPU must support `V`; `data` is the strip of [`fill_strip`] with
/// the form's step (with its tail) for `ic_n` channels; `plane` is a
/// multiple of `LANES`; `v` holds `A² * ic_n * S² * plane` values.
#[inline(always)]
unsafe fn input_transform<V: Vector, const A: usize, const M: usize, T: Transforms<A, M>>(
    data: &[f32],
    strip: &Strip,
    ic_n: usize,
    s: usize,
    plane: usize,
    v: &mut [f32],
) {
    let l = V::LANES;
    let step = s * M;
    let (gw, pp) = (strip.grid_w, strip.plane());
    let k_n = ic_n * s * s;
    let src = data.as_ptr();
    let dst = v.as_mut_ptr();
    // SAFETY (all accesses): the caller's contract; reads of the last
    // vector stay within the strip's tail (see `fill_strip`).
    unsafe {
        for k in 0..k_n {
            let (ic, py, px) = (k / (s * s), k / s % s, k % s);
            let base = src.add(ic * step * step * pp);
            let at = |i: usize, j: usize| {
                let (y, x) = (s * i + py, s * j + px);
                base.add(((y % step) * step + x % step) * pp + (y / step) * gw + x / step)
            };
            let ptrs: [[*const f32; A]; A] =
                std::array::from_fn(|i| std::array::from_fn(|j| at(i, j)));
            let out = dst.add(k * plane);
            let mut t = 0;
            while t < plane {
                // Rows: Bᵀ d, per column `j` (`r[j][i]` is row `i`).
                let r: [[V; A]; A] = std::array::from_fn(|j| {
                    T::input(std::array::from_fn(|i| V::load(ptrs[i][j].add(t))))
                });
                // Columns: (Bᵀ d) B, per row `i`.
                #[allow(clippy::needless_range_loop)] // `i` indexes the inner arrays
                for i in 0..A {
                    let c = T::input(std::array::from_fn(|j| r[j][i]));
                    for (j, cv) in c.iter().enumerate() {
                        cv.store(out.add(((i * A + j) * k_n) * plane + t));
                    }
                }
                t += l;
            }
        }
    }
}

/// `Aᵀ m A + bias` of channel `b`'s products for every tile into `line`
/// (`[M][plane M]`: row `i` of tile `t` at `i * plane * M + t * M`, its `M`
/// pixels in column order).
///
/// # Safety
/// The CPU must support `V`; `prod` holds `[A²][chunk][plane]`, `plane` is
/// a multiple of `LANES`, and `line` holds at least `M² * plane` values.
#[inline(always)]
unsafe fn output_transform<V: Vector, const A: usize, const M: usize, T: Transforms<A, M>>(
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
            let at = |i: usize, j: usize| src.add(((i * A + j) * chunk + b) * plane + t);
            // Rows: Aᵀ m, per column `j` (`s[j][i]` is row `i`).
            let s: [[V; M]; A] =
                std::array::from_fn(|j| T::output(std::array::from_fn(|i| V::load(at(i, j)))));
            #[allow(clippy::needless_range_loop)] // `i` indexes the inner arrays
            for i in 0..M {
                let y = T::output(std::array::from_fn(|j| s[j][i]));
                let y: [V; M] = std::array::from_fn(|j| V::add(y[j], bv));
                vector::store_zip::<V, M>(y, dst.add(i * plane * M + t * M));
            }
            t += l;
        }
    }
}

/// Writes channel `oc`'s output rows of a block from its tiles in `line`
/// (as [`output_transform`] leaves them), through the epilogue.
fn write_rows(
    wg: &Winograd<'_>,
    job: &Block,
    oc: usize,
    line: &[f32],
    plane: usize,
    dst: &mut [f32],
) {
    let (w, mt) = (wg.out.w, wg.form.m());
    let gw = job.strip.grid_w;
    let nrows = dst.len() / w.max(1);
    for r in 0..job.m {
        for i in 0..mt {
            let y = job.ya + mt * r + i;
            if y < job.y0 || y >= job.y0 + nrows {
                continue;
            }
            let y = y - job.y0;
            let row = &line[i * plane * mt + r * gw * mt..][..w];
            epilogue_copy(wg.ep, oc, &mut dst[y * w..(y + 1) * w], row);
        }
    }
}
