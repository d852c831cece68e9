//! 2-D convolution.
//!
//! Work is done one output row at a time by a [`RowEngine`]: it copies the
//! input rows the row needs into zero-padded, stride-decimated "phase" rows
//! (so every tap reads a contiguous run of values, whatever the stride,
//! dilation and padding), then for each tile of `T` output columns and each
//! block of output channels it accumulates all `in/groups * kh * kw` taps
//! of the block's group in registers before one store. The tile loop is
//! outermost so a tile's phase data (a few KiB) stays in L1 while every
//! output channel reads it. Where a group has four or more output
//! channels, blocks are the panel algorithm's ([`super::panel::OB`]
//! channels, its packed weights): up to 6 channels x 4 vectors share each
//! load with AVX-512 (6 x 2 with AVX2's 16 registers, 6 x 4 with NEON).
//! Each tap's source is a pointer set once per output row, so the inner
//! loop is loads and multiply-adds.
//!
//! Geometry: output row `oy` reads input rows `oy * sh - pad_top + ky * dh`;
//! output column `ox`, tap `kx` reads padded column `ox * sw + kx * dw`,
//! which is phase `(kx * dw) % sw` of the row at offset `(kx * dw) / sw`.
//!
//! Accumulation order for one output value is fixed: `bias`, then taps in
//! `(ic, ky, kx)` order over the group's input channels, each as
//! `acc = w * x + acc` (fused multiply-add where the [`Level`] has it).

use super::simd::{Level, level};
use super::vector::{self, Vector};
use super::{band_rows, plane_bands};
use crate::error::KernelError;
use crate::op::Conv2d;
pub use crate::op::ConvAlgorithm as Algorithm;
use crate::tensor::{Shape, Tensor};

/// Where the values of one `(ic, ky)` input row come from for the current
/// output row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowSrc {
    /// Outside the image (padding): the shared zero row.
    Zero,
    /// Straight from the input at this offset (column stride 1, no left or
    /// right padding, and
    /// `phase_len` values from there lie inside the input; values past the
    /// row's end only feed columns past the output width, which are
    /// discarded).
    Direct(usize),
    /// From the ring buffer at this offset (`stride` phase rows).
    Ring(usize),
}

/// Computes convolution output rows for all output channels.
///
/// Padded/decimated copies of input rows live in a ring of `ext_h` rows
/// (the dilated kernel's height) per input channel, keyed by input row:
/// consecutive output rows (stride 1) share most input rows, so each input
/// row is copied once per band, not once per output row that reads it.
pub(crate) struct RowEngine<'a> {
    conv: &'a Conv2d,
    input: &'a Tensor,
    level: Level,
    /// Output columns rounded up to a multiple of the tile.
    tiles_w: usize,
    /// Values per phase row.
    phase_len: usize,
    /// Ring slots per input channel (the dilated kernel's height).
    slots: usize,
    /// Ring `[in, slots, sw, phase_len]`, then one zero row.
    phases: Vec<f32>,
    /// Input row held by each ring slot, `[in, slots]`.
    tags: Vec<Option<usize>>,
    /// Source of each `(ic, ky)` row for the current output row.
    srcs: Vec<RowSrc>,
    /// Where each tap `(ic, ky, kx)` reads output column 0 for the current
    /// output row, `[in, kh, kw]`.
    taps: Vec<*const f32>,
    /// The weights in the panel algorithm's packed layout (blocks of
    /// [`super::panel::OB`] channels) where blocks use it, else empty.
    packed: std::sync::Arc<[f32]>,
    /// Where [`RowEngine::row_direct`] stores: channel `oc`'s tile at
    /// `ptr + oc * stride + x0`, after `bounds`; `None` for [`RowEngine::row`].
    direct: Option<(*mut f32, usize)>,
    /// A direct store keeps the larger of the stored value and the new one
    /// (`new > old ? new : old`): a max pool's vertical reduction.
    direct_max: bool,
    /// ReLU/clip bounds applied in registers before a direct store.
    bounds: Vec<(f32, f32)>,
}

impl<'a> RowEngine<'a> {
    /// An engine for `conv` over `input`, whose output width is `out.w`.
    pub(crate) fn new(conv: &'a Conv2d, input: &'a Tensor, out: Shape) -> Self {
        let level = level();
        let tile = tile_for(level);
        let p = conv.params;
        let win = p.window;
        let sw = win.stride[1];
        let tiles_w = out.w.div_ceil(tile) * tile;
        let phase_len = tiles_w + ((win.kernel[1] - 1) * win.dilation[1]) / sw;
        let slots = win.extent()[0];
        let rows = p.in_channels * p.kernel_h();
        let packed = if blocked(level, p.out_per_group()) {
            conv.packed_with("panel", super::panel::pack)
        } else {
            std::sync::Arc::from(Vec::new())
        };
        Self {
            conv,
            input,
            level,
            tiles_w,
            phase_len,
            slots,
            phases: vec![0.0; (p.in_channels * slots * sw + 1) * phase_len],
            tags: vec![None; p.in_channels * slots],
            srcs: vec![RowSrc::Zero; rows],
            taps: vec![std::ptr::null(); rows * win.kernel[1]],
            packed,
            direct: None,
            direct_max: false,
            bounds: Vec::new(),
        }
    }

    /// Output columns rounded up to the tile: the width of the tiles `row`
    /// hands out (values past the real width are to be ignored).
    pub(crate) fn tiles_w(&self) -> usize {
        self.tiles_w
    }

    /// Computes output row `oy` and hands each tile to `sink(oc, x0, tile)`:
    /// output channel `oc`, columns `x0 .. x0 + tile.len()`. Tiles come in
    /// column order, and for each column range in output-channel order.
    pub(crate) fn row<F: FnMut(usize, usize, &[f32])>(&mut self, oy: usize, mut sink: F) {
        self.prepare(oy);
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F and FMA.
            Level::Avx512 => unsafe { compute_avx512(self, &mut sink) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has AVX2 and FMA.
            Level::Avx2Fma => unsafe { compute_avx2(self, &mut sink) },
            #[cfg(target_arch = "aarch64")]
            Level::Neon => compute_neon(self, &mut sink),
            _ => compute_portable(self, &mut sink),
        }
    }

    /// Computes output row `oy` straight into `dst`: channel `oc`'s row is
    /// `dst[oc * chan_stride ..][..tiles_w]`, each value through `bounds`
    /// (ReLU/clip bounds, [`super::fused::register_bounds`]) in
    /// registers before the store. The values are those [`RowEngine::row`]
    /// hands out, with the same bounds applied after.
    ///
    /// # Panics
    /// When `dst` is shorter than `(out_channels - 1) * chan_stride + tiles_w`.
    pub(crate) fn row_direct(
        &mut self,
        oy: usize,
        dst: &mut [f32],
        chan_stride: usize,
        bounds: &[(f32, f32)],
    ) {
        let need = (self.conv.params.out_channels - 1) * chan_stride + self.tiles_w;
        assert!(
            dst.len() >= need,
            "row_direct: {} values, {need} needed",
            dst.len()
        );
        self.bounds.clear();
        self.bounds.extend_from_slice(bounds);
        self.direct = Some((dst.as_mut_ptr(), chan_stride));
        self.row(oy, |_, _, _| {});
        self.direct = None;
    }

    /// As [`RowEngine::row_direct`], but each value goes into `dst` as
    /// `new > old ? new : old` ([`super::max2`] of the old value and the
    /// new one): the next row of a max pool's vertical reduction.
    ///
    /// # Panics
    /// As [`RowEngine::row_direct`].
    pub(crate) fn row_direct_max(
        &mut self,
        oy: usize,
        dst: &mut [f32],
        chan_stride: usize,
        bounds: &[(f32, f32)],
    ) {
        self.direct_max = true;
        self.row_direct(oy, dst, chan_stride, bounds);
        self.direct_max = false;
    }

    /// Points the phase rows at the input rows output row `oy` needs:
    /// phase `r` of row `(ic, ky)` holds `padded[t * sw + r]` at `t`.
    fn prepare(&mut self, oy: usize) {
        let p = self.conv.params;
        let win = p.window;
        let (kh, sw) = (win.kernel[0], win.stride[1]);
        let [pad_top, pad_left, _, pad_right] = win.pads;
        let Shape { h, w, .. } = self.input.shape();
        let pl = self.phase_len;
        let data_len = self.input.data().len();
        let direct_ok = sw == 1 && pad_left == 0 && pad_right == 0;
        // Pass 1: decide each row's source and fill ring slots that miss.
        for ic in 0..p.in_channels {
            for ky in 0..kh {
                let iy = (oy * win.stride[0] + ky * win.dilation[0])
                    .checked_sub(pad_top)
                    .filter(|&iy| iy < h);
                let src = match iy {
                    None => RowSrc::Zero,
                    Some(iy) if direct_ok && (ic * h + iy) * w + pl <= data_len => {
                        RowSrc::Direct((ic * h + iy) * w)
                    }
                    Some(iy) => {
                        let slot = ic * self.slots + iy % self.slots;
                        let base = slot * sw * pl;
                        if self.tags[slot] != Some(iy) {
                            let plane = self.input.plane(ic);
                            fill_phases(
                                &mut self.phases[base..base + sw * pl],
                                &plane[iy * w..(iy + 1) * w],
                                sw,
                                pad_left,
                            );
                            self.tags[slot] = Some(iy);
                        }
                        RowSrc::Ring(base)
                    }
                };
                self.srcs[ic * kh + ky] = src;
            }
        }
        // Pass 2: pointers (taken after all writes to the ring). Tap kx of
        // a row reads phase `(kx*dw) % sw` from column `(kx*dw) / sw`.
        let ring = self.phases.as_ptr();
        let data = self.input.data().as_ptr();
        let zero_at = p.in_channels * self.slots * sw * pl;
        let (kw, dw) = (win.kernel[1], win.dilation[1]);
        for (k, src) in self.srcs.iter().enumerate() {
            for kx in 0..kw {
                let (phase, shift) = ((kx * dw) % sw, (kx * dw) / sw);
                // SAFETY: every phase row is inside its buffer with `pl`
                // values after it (the zero row and ring slots by the size
                // of `phases`, direct rows by the check in pass 1), and
                // `shift <= (kw - 1) * dw / sw` leaves `pl - shift >= tiles_w`
                // of them from the tap's start.
                self.taps[k * kw + kx] = unsafe {
                    match *src {
                        RowSrc::Zero => ring.add(zero_at),
                        RowSrc::Direct(off) => data.add(off),
                        RowSrc::Ring(base) => ring.add(base + phase * pl),
                    }
                    .add(shift)
                };
            }
        }
    }
}

/// Whether the row engine computes a group of `opg` output channels in
/// the panel algorithm's packed blocks at `level` (else one channel at a
/// time, in wider tiles).
fn blocked(level: Level, opg: usize) -> bool {
    opg >= 4 && level != Level::Portable
}

// The cost model picks Winograd for a 3×3 stride-1 layer from
// `WINOGRAD_MIN_IN` input and `WINOGRAD_MIN_OUT` output channels, or from
// `WINOGRAD_THIN_IN` input and `WINOGRAD_THIN_OUT` output channels: the
// input transform is shared by every output channel, and the output
// transform's cost per output must be paid for by enough products
// (BENCHMARKS.md, "Winograd for thin 3×3 layers").
/// Input channels from which Winograd takes 3×3 layers of 16 outputs.
const WINOGRAD_MIN_IN: usize = 8;
/// Output channels from which Winograd takes 3×3 layers of 8 inputs.
const WINOGRAD_MIN_OUT: usize = 16;
/// Fewest input channels of a thin 3×3 layer Winograd takes.
const WINOGRAD_THIN_IN: usize = 3;
/// Output channels a thin 3×3 layer (3 to 7 inputs) needs for Winograd.
const WINOGRAD_THIN_OUT: usize = 64;
/// Output channels from which the cost model picks Winograd on stride
/// phases for the stride-2 layers it applies to.
const WINOGRAD_S2_MIN_OUT: usize = 16;

/// The algorithm the CPU computes `conv` of an input of shape `input`
/// with (`pooled`: a max or average pool is fused after it): the one the
/// convolution asks for where it applies, else the cost model's pick.
pub fn algorithm(conv: &Conv2d, input: Shape, pooled: bool) -> Algorithm {
    let p = &conv.params;
    let depthwise = !pooled && super::depthwise::applies(p);
    match conv.algorithm {
        Some(Algorithm::Rows) => return Algorithm::Rows,
        Some(Algorithm::Panel) => return Algorithm::Panel,
        Some(Algorithm::Depthwise) if depthwise => return Algorithm::Depthwise,
        Some(Algorithm::Winograd) if super::winograd::applies(p) => return Algorithm::Winograd,
        _ => {}
    }
    if depthwise {
        return Algorithm::Depthwise;
    }
    // Winograd pays off once the products dominate its transforms: for
    // the 3x3 forms, enough input and output channels (BENCHMARKS.md,
    // "Convolution algorithms" and "Winograd for thin 3x3 layers"); for
    // F(4x4, 4x4) on stride phases, whose
    // 4 x in phase planes make even 3 input channels a 12-deep product,
    // enough output channels to share the input transform
    // (BENCHMARKS.md, "Winograd on stride phases").
    let out = p.output_shape(input).ok();
    let winograd = match out.and_then(|o| super::winograd::Form::of(p, o)) {
        Some(super::winograd::Form::F2x3 | super::winograd::Form::F4x3) => {
            (p.in_channels >= WINOGRAD_MIN_IN && p.out_channels >= WINOGRAD_MIN_OUT)
                || (p.in_channels >= WINOGRAD_THIN_IN && p.out_channels >= WINOGRAD_THIN_OUT)
        }
        Some(super::winograd::Form::F4x4S2) => p.out_channels >= WINOGRAD_S2_MIN_OUT,
        None => false,
    };
    if winograd && conv.algorithm.is_none() {
        return Algorithm::Winograd;
    }
    let out_w = out.map_or(0, |s| s.w);
    let padded = out_w.div_ceil(TILE_MAX) * TILE_MAX;
    // The measured rule (BENCHMARKS.md, "Convolution algorithms" and
    // "The row engine in the panel's channel blocks"): the row engine wins
    // only on wide rows (under 10 % of its lanes spent on the padding to
    // 128 columns) with short filters: under 192 taps with AVX-512's 6 x 4
    // register block (the ResNet stem's 147 taps: 15.8 against 16.4 ms),
    // under 64 with AVX2's 6 x 2 (the cnn layer's 27 taps: 5.8 against
    // 6.8 ms; the stem: 27.9 against 25.1 ms). The panel everywhere else:
    // deep layers, 1x1 layers, narrow rows.
    let short = if level() == Level::Avx2Fma { 64 } else { 192 };
    if 10 * (padded - out_w) < padded && p.filter_len() < short {
        Algorithm::Rows
    } else {
        Algorithm::Panel
    }
}

/// The algorithm the CPU runs `op`'s convolution with on an input of shape
/// `input` (`None`: `op` has no convolution).
pub fn op_algorithm(op: &crate::op::Op, input: Shape) -> Option<Algorithm> {
    match op {
        crate::op::Op::Conv2d(c) => Some(algorithm(c, input, false)),
        crate::op::Op::Fused(f) => f
            .conv
            .as_ref()
            .map(|c| algorithm(c, input, f.pool.is_some())),
        _ => None,
    }
}

/// Fills the `stride` phase rows (each `dst.len() / stride` long) of one
/// input row `src` with zero padding `padding`: phase `r` holds
/// `padded[t * stride + r]` at `t`.
fn fill_phases(dst: &mut [f32], src: &[f32], stride: usize, padding: usize) {
    let pl = dst.len() / stride;
    let w = src.len();
    if stride == 1 {
        let lead = padding.min(pl);
        let n = w.min(pl - lead);
        dst[..lead].fill(0.0);
        dst[lead..lead + n].copy_from_slice(&src[..n]);
        dst[lead + n..].fill(0.0);
        return;
    }
    if stride == 2 {
        let (p0, p1) = dst.split_at_mut(pl);
        super::interleave::fill_phase_rows(level(), [p0, &mut p1[..pl]], src, padding);
        return;
    }
    for (r, phase) in dst.chunks_exact_mut(pl).enumerate() {
        // Phase value t is input column t*stride + r - padding: inside the
        // input for t in t0..t1, zero elsewhere.
        let t0 = padding.saturating_sub(r).div_ceil(stride).min(pl);
        let t1 = if w + padding > r {
            ((w + padding - r - 1) / stride + 1).clamp(t0, pl)
        } else {
            t0
        };
        phase[..t0].fill(0.0);
        phase[t1..].fill(0.0);
        if t1 > t0 {
            let first = t0 * stride + r - padding;
            strided_copy(&mut phase[t0..t1], &src[first..], stride);
        }
    }
}

/// `dst[t] = src[t * stride]` for every `t` of `dst` (stride 2 goes through
/// [`super::interleave::split_phases_at`] instead, both phases at once).
pub(crate) fn strided_copy(dst: &mut [f32], src: &[f32], stride: usize) {
    for (d, x) in dst.iter_mut().zip(src.iter().step_by(stride)) {
        *d = *x;
    }
}

/// Widest tile any level uses; rows are padded to a multiple of it, so
/// every level's tile width (a divisor) steps through them exactly.
const TILE_MAX: usize = 128;

/// Row padding granularity per level (all levels: [`TILE_MAX`]).
const fn tile_for(_level: Level) -> usize {
    TILE_MAX
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,fma")]
fn compute_avx512<F: FnMut(usize, usize, &[f32])>(eng: &RowEngine<'_>, sink: &mut F) {
    // SAFETY: AVX-512F and FMA are enabled here; `compute` keeps its
    // accesses inside the phase rows (see `block`). Many output channels:
    // 6 channels x 64 columns share each load (24 of the 32 registers);
    // few: 128 columns in 8 independent chains hide the FMA latency.
    unsafe { compute_level::<vector::Avx512, 4, 8, F>(eng, sink) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn compute_avx2<F: FnMut(usize, usize, &[f32])>(eng: &RowEngine<'_>, sink: &mut F) {
    // SAFETY: AVX2 and FMA are enabled here. Many output channels: 6
    // channels x 16 columns (12 of the 16 registers).
    unsafe { compute_level::<vector::Avx2, 2, 8, F>(eng, sink) }
}

#[cfg(target_arch = "aarch64")]
fn compute_neon<F: FnMut(usize, usize, &[f32])>(eng: &RowEngine<'_>, sink: &mut F) {
    // SAFETY: NEON is part of the aarch64 base ISA. Many output channels:
    // 6 channels x 16 columns (24 of the 32 registers).
    unsafe { compute_level::<vector::Neon, 4, 16, F>(eng, sink) }
}

fn compute_portable<F: FnMut(usize, usize, &[f32])>(eng: &RowEngine<'_>, sink: &mut F) {
    // SAFETY: portable lanes need no CPU feature (never `blocked`).
    unsafe { compute_level::<vector::Portable, 1, 4, F>(eng, sink) }
}

/// A row at one level: in the panel's channel blocks, `UB` vectors wide,
/// where [`blocked`] says so, else one channel at a time, `U1` wide.
///
/// # Safety
/// As [`compute`], for both widths.
#[inline(always)]
unsafe fn compute_level<
    V: Vector,
    const UB: usize,
    const U1: usize,
    F: FnMut(usize, usize, &[f32]),
>(
    eng: &RowEngine<'_>,
    sink: &mut F,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if blocked(eng.level, eng.conv.params.out_per_group()) {
            compute_blocks::<V, UB, F>(eng, sink)
        } else {
            compute::<V, U1, F>(eng, sink)
        }
    }
}

/// The hot loop over a row, one output channel at a time: for each tile
/// of `U * V::LANES` columns, every output channel.
///
/// # Safety
/// The CPU must support `V`'s instructions; `U * V::LANES` must divide the
/// engine's tile width.
#[inline(always)]
unsafe fn compute<V: Vector, const U: usize, F: FnMut(usize, usize, &[f32])>(
    eng: &RowEngine<'_>,
    sink: &mut F,
) {
    let t = U * V::LANES;
    debug_assert!(t <= TILE_MAX && eng.tiles_w.is_multiple_of(t));
    let p = eng.conv.params;
    let flen = p.filter_len();
    let opg = p.out_per_group();
    let mut buf = [0.0f32; TILE_MAX];
    for x0 in (0..eng.tiles_w).step_by(t) {
        for g in 0..p.groups {
            let taps = group_taps(eng, g);
            for oc in g * opg..(g + 1) * opg {
                // SAFETY: forwarded from the caller; channel `oc`'s filter
                // is `flen` weights from `oc * flen`.
                unsafe {
                    let w = eng.conv.weights.as_ptr().add(oc * flen);
                    block::<V, U, 1, F>(eng, taps, x0, oc, w, &mut buf, sink);
                }
            }
        }
    }
}

/// The hot loop over a row in the panel algorithm's channel blocks: for
/// each tile of `U * V::LANES` columns, each group's blocks of up to
/// [`super::panel::OB`] output channels, with their packed weights.
///
/// # Safety
/// As [`compute`]; the engine's packed weights are the panel layout's.
#[inline(always)]
unsafe fn compute_blocks<V: Vector, const U: usize, F: FnMut(usize, usize, &[f32])>(
    eng: &RowEngine<'_>,
    sink: &mut F,
) {
    use super::panel::OB;
    let t = U * V::LANES;
    debug_assert!(t <= TILE_MAX && eng.tiles_w.is_multiple_of(t));
    let p = eng.conv.params;
    let (flen, opg) = (p.filter_len(), p.out_per_group());
    debug_assert_eq!(eng.packed.len(), p.out_channels * flen);
    let mut buf = [0.0f32; TILE_MAX];
    for x0 in (0..eng.tiles_w).step_by(t) {
        // Blocks never straddle a group: every channel of a block reads the
        // same input channels.
        for g in 0..p.groups {
            let tp = group_taps(eng, g);
            for j in (0..opg).step_by(OB) {
                let oc0 = g * opg + j;
                let nb = OB.min(opg - j);
                // SAFETY: forwarded from the caller; the packed block of
                // `nb` channels at `oc0` is `[tap][nb]` from `oc0 * flen`.
                unsafe {
                    let w = eng.packed.as_ptr().add(oc0 * flen);
                    let b = &mut buf;
                    match nb {
                        1 => block::<V, U, 1, F>(eng, tp, x0, oc0, w, b, sink),
                        2 => block::<V, U, 2, F>(eng, tp, x0, oc0, w, b, sink),
                        3 => block::<V, U, 3, F>(eng, tp, x0, oc0, w, b, sink),
                        4 => block::<V, U, 4, F>(eng, tp, x0, oc0, w, b, sink),
                        5 => block::<V, U, 5, F>(eng, tp, x0, oc0, w, b, sink),
                        _ => block::<V, U, OB, F>(eng, tp, x0, oc0, w, b, sink),
                    }
                }
            }
        }
    }
}

/// The taps of group `g`'s input channels, in `(ic, ky, kx)` order: looked
/// up once per group and tile, not per block (the group's bounds take
/// integer divisions).
#[inline(always)]
fn group_taps<'e>(eng: &'e RowEngine<'_>, g: usize) -> &'e [*const f32] {
    let p = eng.conv.params;
    let n = p.in_per_group() * p.kernel_h() * p.kernel_w();
    &eng.taps[g * n..(g + 1) * n]
}

/// One tile (`U` vectors from column `x0`) of output channels
/// `oc0 .. oc0 + B` (one group's, whose taps are `taps`): all taps
/// accumulated in registers, then handed to `sink`. The weights of tap `k`
/// are `w[k * B ..][..B]` (a packed block, or one channel's filter when
/// `B` is 1).
///
/// # Safety
/// As [`compute`]; `x0 + U * V::LANES <= tiles_w`, `oc0 + B <= out_channels`,
/// the channels in one group, `taps` that group's ([`group_taps`]), and
/// `w` readable for `filter_len * B` values.
#[inline(always)]
unsafe fn block<V: Vector, const U: usize, const B: usize, F: FnMut(usize, usize, &[f32])>(
    eng: &RowEngine<'_>,
    taps: &[*const f32],
    x0: usize,
    oc0: usize,
    w: *const f32,
    buf: &mut [f32; TILE_MAX],
    sink: &mut F,
) {
    let p = eng.conv.params;
    debug_assert!(x0 + U * V::LANES <= eng.tiles_w && oc0 + B <= p.out_channels);
    // SAFETY (all pointer arithmetic below): `eng.taps` holds, per tap
    // `(ic, ky, kx)`, where output column 0 reads, with at least
    // `tiles_w` readable values from there (see `prepare`); a tile reads
    // `U * LANES` values from column `x0`, which end at most at `tiles_w`.
    // Weights: the caller's contract.
    let bias: [f32; B] = std::array::from_fn(|b| eng.conv.bias_of(oc0 + b));
    // SAFETY: as above.
    let acc = unsafe { accumulate::<V, U, B>(taps, x0, w, bias) };
    if let Some((dst, chan_stride)) = eng.direct {
        for (b, accb) in acc.iter().enumerate() {
            for (u, a) in accb.iter().enumerate() {
                // SAFETY: `row_direct` checked that `dst` holds
                // `(out - 1) * chan_stride + tiles_w` values, and
                // `x0 + U * LANES <= tiles_w`.
                unsafe {
                    let at = dst.add((oc0 + b) * chan_stride + x0 + u * V::LANES);
                    let mut v = vector::apply_bounds(*a, &eng.bounds);
                    if eng.direct_max {
                        v = V::keep_gt(v, V::load(at));
                    }
                    v.store(at);
                }
            }
        }
        return;
    }
    for (b, accb) in acc.iter().enumerate() {
        for (u, a) in accb.iter().enumerate() {
            // SAFETY: `buf` holds TILE_MAX >= U * LANES values.
            unsafe { a.store(buf.as_mut_ptr().add(u * V::LANES)) };
        }
        sink(oc0 + b, x0, &buf[..U * V::LANES]);
    }
}

/// The sums of one block: from `bias`, each tap's `U` vectors at column
/// `x0` times its `B` weights (`w[k * B ..][..B]` for tap `k`), in tap
/// order. Its own function so that the compiler keeps the `B x U`
/// accumulators in registers (inlined into `block`'s epilogue code, they
/// were spilled to the stack every tap).
///
/// # Safety
/// As [`block`].
#[inline(always)]
unsafe fn accumulate<V: Vector, const U: usize, const B: usize>(
    taps: &[*const f32],
    x0: usize,
    w: *const f32,
    bias: [f32; B],
) -> [[V; U]; B] {
    // SAFETY (all accesses): the caller's contract.
    unsafe {
        let mut acc: [[V; U]; B] = std::array::from_fn(|b| [V::splat(bias[b]); U]);
        let mut wk = w;
        for &tap in taps {
            let src = tap.add(x0);
            let xs: [V; U] = std::array::from_fn(|u| V::load(src.add(u * V::LANES)));
            for (b, accb) in acc.iter_mut().enumerate() {
                let wv = V::splat(*wk.add(b));
                for (a, &x) in accb.iter_mut().zip(&xs) {
                    *a = V::mul_add(wv, x, *a);
                }
            }
            wk = wk.add(B);
        }
        acc
    }
}

/// Convolution of `input` by `conv` (zero padding, floor output size,
/// any strides, dilations and groups).
///
/// # Errors
/// [`KernelError`] when the input's channels or size do not suit `conv`.
pub fn conv2d(input: &Tensor, conv: &Conv2d) -> Result<Tensor, KernelError> {
    let out_shape = conv.params.output_shape(input.shape())?;
    match algorithm(conv, input.shape(), false) {
        Algorithm::Depthwise => return Ok(super::depthwise::run(input, conv, &[], out_shape)),
        Algorithm::Panel => {
            let src = super::panel::Panel::new(conv, input, out_shape, &[]);
            return Ok(super::panel::run_pointwise(&src, out_shape)
                .unwrap_or_else(|| super::panel::run_with(&src, out_shape)));
        }
        Algorithm::Winograd => {
            let src = super::winograd::Winograd::new(conv, input, out_shape, &[]);
            return Ok(super::panel::run_with(&src, out_shape));
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
                    rows[oc][r * w + x0..r * w + x0 + n].copy_from_slice(&tile[..n]);
                }
            });
        }
    });
    Ok(out)
}
