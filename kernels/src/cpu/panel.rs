//! Convolution over flattened output pixels, for layers with many channels
//! (the "panel" algorithm).
//!
//! The [row engine](super::conv) computes one output row at a time in
//! tiles of up to 128 columns, so a 14- or 28-wide layer leaves most lanes
//! idle, and it blocks only 4 output channels per load. Here output rows
//! are computed in blocks: the input rows a block reads are copied once
//! into a "strip", zero-padded and split in stride phases, so that for
//! every tap `(ic, ky, kx)` consecutive output pixels read consecutive
//! strip values, whatever the stride and dilation. A block's output is a
//! grid of `rows x grid_w` pixels (`grid_w`: the padded width over the
//! column stride; the few columns past the output width are computed and
//! dropped), and tiles of `T = U x LANES` consecutive grid pixels, which
//! may span rows, are the unit of work. A micro-kernel accumulates `OB x
//! T` outputs in registers (6 channels x 4 vectors with AVX-512) over a
//! chunk of taps, reading the weights from a copy packed once per
//! convolution (`[block][tap][OB]`, [`pack`]); chunks keep the tap data a
//! tile reads in L1, and partial sums stay in an L2-sized block buffer.
//!
//! Accumulation order per output value is the row engine's: `bias`, then
//! taps in `(ic, ky, kx)` order as `acc = w * x + acc` ([`Vector::mul_add`]);
//! partial sums between chunks are stored as `f32` and reloaded, which
//! rounds nothing. So both algorithms give the same bits at one level, and
//! the planner's choice never changes a digest. The epilogue runs as the
//! block is copied out, through the same epilogue as the row
//! engine's path.

use super::conv::strided_copy;
use super::fused::{epilogue_copy, epilogue_in_place};
use super::interleave::split2_at;
use super::pool::{PoolRows, simple_max_row};
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
/// The widest tile any level uses (`U * LANES` with AVX-512): the strip's
/// zero tail covers a tile read past its last row.
const MAX_TILE: usize = 64;
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

/// A convolution (with its epilogue) computed a block of output rows at a
/// time into caller-provided rows: the panel algorithm, or another that
/// shares its drivers ([`run_with`], [`run_pool_with`]).
pub(crate) trait RowSource: Sync {
    /// Computes output rows `y0 .. y0 + n` of every channel into `dst`:
    /// `dst[oc]` holds channel `oc`'s `n` rows, each as wide as the output.
    fn rows(&self, y0: usize, dst: &mut [&mut [f32]], scratch: &mut Scratch);
    /// Bands start at multiples of this many rows (an algorithm that
    /// computes rows in pairs wastes nothing then).
    fn row_align(&self) -> usize {
        1
    }
}

/// Rows per band of an output `h` rows high, for `src`.
fn band_for(src: &impl RowSource, h: usize) -> usize {
    let a = src.row_align().max(1);
    band_rows(h).div_ceil(a) * a
}

/// Every output row of `src` (output `out_shape`), one band per thread.
pub(crate) fn run_with(src: &impl RowSource, out_shape: Shape) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::for_overwrite(out_shape);
    let band = band_for(src, h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    for_each_band(bands, |(b, mut rows)| {
        with_scratch(|s| src.rows(b * band, &mut rows, s));
    });
    out
}

/// The output tensor's data as every band of [`run_pointwise`] writes it.
struct SharedOut(*mut f32);

// SAFETY: the runs of `run_pointwise` write disjoint pixels of the output
// through it, and the tensor outlives them (it is returned after).
unsafe impl Sync for SharedOut {}

/// A pointwise convolution (1x1, stride 1, unpadded: output pixel `i` of
/// every channel reads input pixel `i` of every channel, whatever the
/// rows) computed straight into the output over its flattened pixels, one
/// run of whole vectors per thread: each block's sums are the output
/// pixels themselves, read straight from the input planes, and the
/// epilogue then runs over them in place while they are in cache, instead
/// of a copy out of a block buffer. The pixels past the last whole vector
/// (a plane that is not a whole number of vectors, such as 7x7) go through
/// one tile of zero-padded copies of their inputs. `None` for any other
/// convolution.
pub(crate) fn run_pointwise(pc: &Panel<'_>, out_shape: Shape) -> Option<Tensor> {
    let Shape { c, h, w } = out_shape;
    let win = pc.conv.params.window;
    let pointwise = win.kernel == [1, 1] && win.stride == [1, 1] && win.pads == [0; 4];
    if !pointwise || pc.input.shape().h * pc.input.shape().w != h * w || h * w == 0 {
        return None;
    }
    let total = h * w;
    let mut out = Tensor::for_overwrite(out_shape);
    let base = SharedOut(out.data_mut().as_mut_ptr());
    let l = vector::lanes(pc.level);
    let full = total / l * l;
    let bounds = super::fused::register_bounds(pc.ep);
    let bounds = bounds.as_deref().unwrap_or(&[]);
    // Runs of whole vectors: one per kernel thread, each in blocks whose
    // sums stay in L2 (`LIVE_BYTES`).
    let threads = rayon::current_num_threads().max(1);
    let run = full.div_ceil(threads).div_ceil(l).max(1) * l;
    let step = (LIVE_BYTES / (4 * c.max(1)) / l).max(1) * l;
    let runs: Vec<usize> = (0..full).step_by(run).collect();
    let strip = pc.strip(1);
    for_each_band(runs, |(_, p_run)| {
        let base = &base;
        with_scratch(|s| {
            let end = (p_run + run).min(full);
            let mut p0 = p_run;
            while p0 < end {
                let n = step.min(end - p0);
                // SAFETY: pixels `p0 .. p0 + n` (whole vectors, below
                // `full`) of every channel are this run's alone; the
                // input planes hold `total >= p0 + n` values each.
                unsafe {
                    let src = Source {
                        base: pc.input.data().as_ptr().add(p0),
                        plane: total,
                    };
                    let dst = Dest {
                        base: base.0.add(p0),
                        pitch: total,
                        pixels: n,
                        bounds,
                    };
                    pc.run_block(&strip, src, dst, s);
                }
                // A ReLU/clip epilogue was applied as the sums were
                // stored; any other runs over the pixels now.
                if bounds.is_empty() {
                    for oc in 0..c {
                        // SAFETY: as above, this run's pixels of channel `oc`.
                        let px = unsafe {
                            std::slice::from_raw_parts_mut(base.0.add(oc * total + p0), n)
                        };
                        epilogue_in_place(pc.ep, oc, px);
                    }
                }
                p0 += n;
            }
        });
    });
    if full < total {
        with_scratch(|s| pointwise_tail(pc, &mut out, full, bounds, s));
    }
    Some(out)
}

/// The last `total - full` (fewer than a vector's) pixels of a pointwise
/// convolution: one tile of the same micro-kernel over zero-padded copies
/// of their inputs, into a buffer, copied out (so the same bits as any
/// other pixel's).
fn pointwise_tail(
    pc: &Panel<'_>,
    out: &mut Tensor,
    full: usize,
    bounds: &[(f32, f32)],
    s: &mut Scratch,
) {
    let l = vector::lanes(pc.level);
    let Shape { c, h, w } = out.shape();
    let total = h * w;
    let n = total - full;
    let cin = pc.input.shape().c;
    let mut data = std::mem::take(&mut s.data);
    data.clear();
    data.resize(cin * l, 0.0);
    for (ic, d) in data.chunks_exact_mut(l).enumerate() {
        d[..n].copy_from_slice(&pc.input.data()[ic * total + full..(ic + 1) * total]);
    }
    let mut acc = std::mem::take(&mut s.acc);
    acc.clear();
    acc.resize(c * l, 0.0);
    let src = Source {
        base: data.as_ptr(),
        plane: l,
    };
    let dst = Dest {
        base: acc.as_mut_ptr(),
        pitch: l,
        pixels: l,
        bounds,
    };
    // SAFETY: `data` holds one zero-padded vector of each input channel,
    // `acc` one vector of each output channel.
    unsafe { pc.run_block(&pc.strip(1), src, dst, s) };
    for (oc, (o, a)) in out
        .data_mut()
        .chunks_exact_mut(total)
        .zip(acc.chunks_exact(l))
        .enumerate()
    {
        let px = &mut o[full..];
        px.copy_from_slice(&a[..n]);
        if bounds.is_empty() {
            epilogue_in_place(pc.ep, oc, px);
        }
    }
    s.data = data;
    s.acc = acc;
}

/// The rows of `src` (output `conv_shape`) reduced by `pool` (output
/// `out_shape`): per band of pooled rows, blocks of the convolution rows
/// they read are computed into an L2-sized buffer and reduced from there
/// by the unfused pool's own routines, so the result equals the unfused
/// chain's.
pub(crate) fn run_pool_with(
    pc: &impl RowSource,
    conv_shape: Shape,
    out_shape: Shape,
    pool: Pool2d,
) -> Tensor {
    let Shape { c, h, w } = out_shape;
    let cw = conv_shape.w;
    let mut out = Tensor::for_overwrite(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    let simple = pool.is_simple_max();
    let per_pooled = c * cw * 4 * pool.window.stride[0].max(1);
    // Steps of at least one aligned block of convolution rows (a
    // Winograd tile row).
    let align = pc.row_align().max(1);
    let step = (LIVE_BYTES / per_pooled.max(1))
        .max(align.div_ceil(pool.window.stride[0].max(1)))
        .max(1);
    for_each_band(bands, |(b, mut rows)| {
        with_scratch(|s| {
            let mut pr = PoolRows::new(pool, conv_shape, w);
            let mut buf = std::mem::take(&mut s.rows);
            let mut v = vec![0.0f32; cw];
            let nrows = rows.first().map_or(0, |r| r.len() / w.max(1));
            // The convolution rows each step of pooled rows reads.
            let span = |pr: &PoolRows, r0: usize, r1: usize| {
                let (mut lo, mut hi) = (usize::MAX, 0);
                for r in r0..r1 {
                    let (first, n, _) = pr.rows_of(b * band + r);
                    if n > 0 {
                        lo = lo.min(first);
                        hi = hi.max(first + (n - 1) * pr.row_step() + 1);
                    }
                }
                (lo.min(hi), hi)
            };
            // Rows per channel the buffer holds: the widest step's, and
            // the rows to the end of its last aligned block.
            let mut cap = align - 1;
            let mut r0 = 0;
            while r0 < nrows {
                let r1 = (r0 + step).min(nrows);
                let (lo, hi) = span(&pr, r0, r1);
                cap = cap.max(hi - lo + align - 1);
                r0 = r1;
            }
            // Every value is written by `rows` before it is read.
            buf.resize(c * cap * cw, 0.0);
            // Convolution rows `have.0 .. have.1` are in the buffer (row
            // `y` of channel `oc` at `oc * cap * cw + (y - have.0) * cw`):
            // rows that overlapping windows share, and the rest of an
            // aligned block, are kept for the next step, not computed
            // again. New rows are computed to the end of an aligned block
            // (or of the convolution), so the next step's start on one.
            let mut have = (0, 0);
            let mut r0 = 0;
            while r0 < nrows {
                let r1 = (r0 + step).min(nrows);
                // Convolution rows `lo .. hi` feed pooled rows `r0 .. r1`.
                let (lo, hi) = span(&pr, r0, r1);
                let keep = if lo >= have.0 && lo < have.1 {
                    have.1 - lo
                } else {
                    0
                };
                if keep > 0 && lo > have.0 {
                    for plane in buf.chunks_mut(cap * cw).take(c) {
                        let from = (lo - have.0) * cw;
                        plane.copy_within(from..from + keep * cw, 0);
                    }
                }
                let mut end = lo + keep;
                if hi > end && cw > 0 {
                    end = hi.next_multiple_of(align).min(conv_shape.h);
                    let mut conv_rows: Vec<&mut [f32]> = buf
                        .chunks_mut(cap * cw)
                        .take(c)
                        .map(|p| &mut p[(keep * cw)..(end - lo) * cw])
                        .collect();
                    pc.rows(lo + keep, &mut conv_rows, s);
                }
                have = (lo, end);
                for (oc, out_rows) in rows.iter_mut().enumerate() {
                    let base = oc * cap * cw;
                    let at = |y: usize| &buf[base + (y - lo) * cw..base + (y - lo + 1) * cw];
                    for r in r0..r1 {
                        let out_row = &mut out_rows[r * w..(r + 1) * w];
                        let oy = b * band + r;
                        if simple {
                            let (size, stride) = (pool.size(), pool.window.stride[0]);
                            simple_max_row(&mut v, at, oy * stride, size, stride, out_row);
                        } else {
                            pr.reduce(oy, at, out_row);
                        }
                    }
                }
                r0 = r1;
            }
            s.rows = buf;
        })
    });
    out
}

/// One convolution (with its epilogue) over one input, as every
/// packed-weights algorithm (panel, Winograd) holds it.
pub(crate) struct ConvRun<'a> {
    pub(crate) conv: &'a Conv2d,
    pub(crate) input: &'a Tensor,
    /// The convolution's output shape.
    pub(crate) out: Shape,
    pub(crate) ep: &'a [EpilogueOp],
    /// The weights in the algorithm's packed layout.
    pub(crate) packed: std::sync::Arc<[f32]>,
    /// Bias per output channel (0 without bias).
    pub(crate) bias: Vec<f32>,
    pub(crate) level: Level,
}

impl<'a> ConvRun<'a> {
    /// `conv` of `input` (output shape `out`) with the epilogue `ep`, its
    /// weights packed by `pack` in the layout named `layout` (once per set
    /// of weights, [`Conv2d::packed_with`]).
    pub(crate) fn new(
        conv: &'a Conv2d,
        input: &'a Tensor,
        out: Shape,
        ep: &'a [EpilogueOp],
        layout: &'static str,
        pack: fn(&Conv2d) -> Vec<f32>,
    ) -> Self {
        Self {
            conv,
            input,
            out,
            ep,
            packed: conv.packed_with(layout, pack),
            bias: (0..conv.params.out_channels)
                .map(|oc| conv.bias_of(oc))
                .collect(),
            level: level(),
        }
    }
}

/// One convolution (with its epilogue) over one input, computed in row
/// blocks by the panel algorithm.
pub(crate) struct Panel<'a>(ConvRun<'a>);

impl<'a> std::ops::Deref for Panel<'a> {
    type Target = ConvRun<'a>;
    fn deref(&self) -> &ConvRun<'a> {
        &self.0
    }
}

/// Runs `f` with this thread's scratch buffers, which live as long as the
/// thread: blocks reuse them from call to call and frame to frame instead
/// of allocating (and faulting in) fresh pages.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    }
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        // Re-entered on this thread (a nested parallel call ran a block
        // here while it waited): fresh buffers for the inner call.
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Per-thread buffers of a [`Panel`].
#[derive(Default)]
pub(crate) struct Scratch {
    /// Convolution rows a fused pool reads ([`run_pool_with`]).
    rows: Vec<f32>,
    /// Partial sums of a block, `[out][grid pixels rounded to lanes]`.
    acc: Vec<f32>,
    /// The block's input rows, padded and split in stride phases
    /// ([`fill_strip`]).
    pub(crate) data: Vec<f32>,
    /// Per tap of the current group, where grid pixel 0 reads in `data`.
    pub(crate) offs: Vec<usize>,
    /// The Winograd algorithm's transformed input and products
    /// ([`super::winograd`]).
    pub(crate) wino: Vec<f32>,
    /// The Winograd algorithm's transformed outputs of one channel block.
    pub(crate) prod: Vec<f32>,
    /// The Winograd algorithm's output values of one channel, in tiles.
    pub(crate) line: Vec<f32>,
}

/// The layout of a block's strip: per input channel, `sh * sw` phase
/// planes of `rows x grid_w` values. Phase `(py, px)` row `i`, column `j`
/// holds the zero-padded input at padded row `i * sh + py`, padded column
/// `j * sw + px` (padded coordinates: row `y0 * sh - pad_top + r`, column
/// `x - pad_left`). Output pixel `(oy, ox)` of the block reads tap
/// `(ky, kx)` at phase `((ky dh) % sh, (kx dw) % sw)`, row `oy + ky dh /
/// sh`, column `ox + kx dw / sw`: consecutive grid pixels read
/// consecutive values, whatever the stride.
pub(crate) struct Strip {
    /// Phase columns: the padded width over the column stride, rounded up.
    pub(crate) grid_w: usize,
    /// Phase rows.
    pub(crate) rows: usize,
}

impl Strip {
    /// Values per phase plane.
    pub(crate) fn plane(&self) -> usize {
        self.rows * self.grid_w
    }
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
        Self(ConvRun::new(conv, input, out, ep, "panel", pack))
    }

    /// The strip of a block of `m` output rows.
    fn strip(&self, m: usize) -> Strip {
        let win = self.conv.params.window;
        let [_, l, _, r] = win.pads;
        let padded_w = self.input.shape().w + l + r;
        let padded_h = (m - 1) * win.stride[0] + win.extent()[0];
        Strip {
            grid_w: padded_w.div_ceil(win.stride[1]),
            rows: padded_h.div_ceil(win.stride[0]),
        }
    }

    /// Output rows per block: partial sums within [`LIVE_BYTES`].
    fn block_rows(&self) -> usize {
        let per_row = self.conv.params.out_channels * self.strip(1).grid_w * 4;
        (LIVE_BYTES / per_row.max(1)).max(1)
    }

    /// Computes output rows `y0 .. y0 + m` into `scratch.acc` (grid
    /// layout, before the epilogue).
    /// Returns the grid width.
    fn block(&self, y0: usize, m: usize, s: &mut Scratch) -> usize {
        let l = vector::lanes(self.level);
        let strip = self.strip(m);
        let npix = m * strip.grid_w;
        let plane = npix.div_ceil(l) * l;
        // Every value is written by the first chunk before it is read.
        s.acc.resize(self.conv.params.out_channels * plane, 0.0);
        let dst = Dest {
            base: s.acc.as_mut_ptr(),
            pitch: plane,
            pixels: plane,
            bounds: &[],
        };
        self.compute(y0, &strip, plane, dst, s);
        strip.grid_w
    }

    /// Computes the block of output rows from `y0` whose strip is `strip`
    /// into `dst` (`plane`: its pixels rounded up to lanes).
    fn compute(&self, y0: usize, strip: &Strip, plane: usize, dst: Dest<'_>, s: &mut Scratch) {
        let src = match self.direct(y0, plane) {
            Some(src) => src,
            None => {
                self.fill_strip(y0, strip, &mut s.data);
                Source {
                    base: s.data.as_ptr(),
                    plane: strip.plane(),
                }
            }
        };
        // SAFETY: `src` is the block's strip, or the input where every
        // tile's reads stay inside it (`direct`); `dst` holds `plane`
        // values of every output channel (the callers').
        unsafe { self.run_block(strip, src, dst, s) }
    }

    /// The micro-kernels of the CPU's level over a block: taps read from
    /// `src`, sums into `dst`.
    ///
    /// # Safety
    /// As [`block_v`]: `dst` is writable and readable for `dst.pixels`
    /// values (a multiple of the lanes) of every output channel, and every
    /// tile's reads from `src` stay inside it.
    unsafe fn run_block(&self, strip: &Strip, src: Source, dst: Dest<'_>, s: &mut Scratch) {
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F and FMA.
            Level::Avx512 => unsafe { block_avx512(self, strip, src, dst, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has AVX2 and FMA.
            Level::Avx2Fma => unsafe { block_avx2(self, strip, src, dst, s) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: NEON is part of the aarch64 base ISA.
            Level::Neon => unsafe { block_v::<vector::Neon, 4>(self, strip, src, dst, s) },
            // SAFETY: portable lanes need no CPU feature.
            _ => unsafe { block_v::<vector::Portable, 1>(self, strip, src, dst, s) },
        }
    }

    /// Where a block of a pointwise convolution (1x1, stride 1, no
    /// padding) at output row `y0` reads its taps straight from the
    /// input, without a strip: its grid is the input's rows, so tap `ic`
    /// of grid pixel `i` is input value `ic * H*W + y0 * W + i`. `None`
    /// for any other convolution, or when the block's last tile (`plane`
    /// pixels, rounded up to lanes) would read past the input plane.
    fn direct(&self, y0: usize, plane: usize) -> Option<Source> {
        let win = self.conv.params.window;
        let Shape { h, w, .. } = self.input.shape();
        let pointwise = win.kernel == [1, 1] && win.stride == [1, 1] && win.pads == [0; 4];
        (pointwise && y0 * w + plane <= h * w).then(|| Source {
            // SAFETY: `y0 * w <= h * w`, within the input.
            base: unsafe { self.input.data().as_ptr().add(y0 * w) },
            plane: h * w,
        })
    }

    /// Copies the input rows the block at output row `y0` reads into its
    /// strip ([`fill_strip`]).
    fn fill_strip(&self, y0: usize, strip: &Strip, data: &mut Vec<f32>) {
        let win = self.conv.params.window;
        let first = (y0 * win.stride[0]) as isize - win.pads[0] as isize;
        fill_strip(
            self.input,
            first,
            win.stride,
            win.pads[1],
            win.extent()[1],
            strip,
            data,
        );
    }

    /// Sets `s.offs` to where grid pixel 0 reads each tap of group `g`, in
    /// a source whose phase planes are `plane` values apart.
    fn tap_offsets(&self, g: usize, strip: &Strip, plane: usize, offs: &mut Vec<usize>) {
        let p = self.conv.params;
        let win = p.window;
        let [kh, kw] = win.kernel;
        let [sh, sw] = win.stride;
        offs.clear();
        for icg in 0..p.in_per_group() {
            let ic = g * p.in_per_group() + icg;
            for ky in 0..kh {
                let ry = ky * win.dilation[0];
                for kx in 0..kw {
                    let cx = kx * win.dilation[1];
                    let phase = (ic * sh + ry % sh) * sw + cx % sw;
                    offs.push(phase * plane + (ry / sh) * strip.grid_w + cx / sw);
                }
            }
        }
    }
}

impl RowSource for Panel<'_> {
    fn rows(&self, y0: usize, dst: &mut [&mut [f32]], scratch: &mut Scratch) {
        let w = self.out.w;
        let n = dst.first().map_or(0, |d| d.len() / w.max(1));
        let step = self.block_rows();
        let mut r = 0;
        while r < n {
            let m = step.min(n - r);
            let gw = self.block(y0 + r, m, scratch);
            let plane = scratch.acc.len() / self.conv.params.out_channels.max(1);
            for (oc, d) in dst.iter_mut().enumerate() {
                let acc = &scratch.acc[oc * plane..];
                for i in 0..m {
                    let out = &mut d[(r + i) * w..(r + i + 1) * w];
                    epilogue_copy(self.ep, oc, out, &acc[i * gw..i * gw + w]);
                }
            }
            r += m;
        }
    }
}

/// Copies the input rows a block reads into its strip: padded rows from
/// `first` (an input row index; negative or past the end reads zero
/// padding), split in `stride` phases, columns padded by `pad_left` on the
/// left and zeros on the right, plus a zero tail of a tile, a row and
/// `extent_w` values that every tile's last read stays within. Each value
/// is written once: copied, or zeroed where it is padding.
pub(crate) fn fill_strip(
    input: &Tensor,
    first: isize,
    stride: [usize; 2],
    pad_left: usize,
    extent_w: usize,
    strip: &Strip,
    data: &mut Vec<f32>,
) {
    let [sh, sw] = stride;
    let Shape { c, h, w } = input.shape();
    let (gw, plane) = (strip.grid_w, strip.plane());
    let lvl = level();
    let pl = pad_left;
    let body = c * sh * sw * plane;
    data.resize(body + MAX_TILE + gw + extent_w, 0.0);
    data[body..].fill(0.0);
    for ic in 0..c {
        let src = input.plane(ic);
        for r in 0..strip.rows * sh {
            let (py, i) = (r % sh, r / sh);
            let iy = first + r as isize;
            let row =
                (iy >= 0 && iy < h as isize).then(|| &src[iy as usize * w..(iy as usize + 1) * w]);
            if sw == 2 {
                // Both phase rows (`plane` values apart) from one pass over
                // the input row.
                let at = (ic * sh + py) * sw * plane + i * gw;
                let (a, b) = data[at..].split_at_mut(plane);
                let (p0, p1) = (&mut a[..gw], &mut b[..gw]);
                match row {
                    Some(row) => super::interleave::fill_phase_rows(lvl, [p0, p1], row, pl),
                    None => {
                        p0.fill(0.0);
                        p1.fill(0.0);
                    }
                }
                continue;
            }
            if sw > 2 && sw.is_power_of_two() {
                // All `sw` phase rows by halving the padded row in turn.
                let at = (ic * sh + py) * sw * plane + i * gw;
                match row {
                    Some(row) => split_pow2(lvl, row, pl, sw, gw, &mut data[at..], plane),
                    None => (0..sw).for_each(|px| data[at + px * plane..][..gw].fill(0.0)),
                }
                continue;
            }
            for px in 0..sw {
                let at = ((ic * sh + py) * sw + px) * plane + i * gw;
                let dst = &mut data[at..at + gw];
                // Phase columns j hold input column j * sw + px - pl.
                let j0 = pl.saturating_sub(px).div_ceil(sw).min(gw);
                let x0 = j0 * sw + px - pl;
                match row {
                    Some(row) if x0 < w => {
                        let n = ((w - 1 - x0) / sw + 1).min(gw - j0);
                        dst[..j0].fill(0.0);
                        strided_copy(&mut dst[j0..j0 + n], &row[x0..], sw);
                        dst[j0 + n..].fill(0.0);
                    }
                    _ => dst.fill(0.0),
                }
            }
        }
    }
}

/// The `sw` phase rows (`sw` a power of two) of `row` padded by `pad_left`
/// zeros on the left and zeros on the right: phase `px` (column `j` holds
/// padded column `j * sw + px`) into `data[px * plane..][..gw]`. Each
/// halving splits every part in its even and odd values ([`split2_at`]),
/// so the part of index `q` holds the columns `q` modulo the parts.
fn split_pow2(
    lvl: Level,
    row: &[f32],
    pad_left: usize,
    sw: usize,
    gw: usize,
    data: &mut [f32],
    plane: usize,
) {
    thread_local! {
        static PARTS: std::cell::RefCell<[Vec<f32>; 2]> = std::cell::RefCell::default();
    }
    let n = sw * gw;
    PARTS.with(|parts| {
        let mut parts = parts.borrow_mut();
        let [cur, next] = &mut *parts;
        cur.clear();
        cur.resize(n, 0.0);
        next.resize(n, 0.0);
        let start = pad_left.min(n);
        let take = row.len().min(n - start);
        cur[start..start + take].copy_from_slice(&row[..take]);
        let mut k = 1;
        while 2 * k < sw {
            let len = n / k;
            for q in 0..k {
                let (lo, hi) = next.split_at_mut((q + k) * len / 2);
                split2_at(
                    lvl,
                    &cur[q * len..][..len],
                    &mut lo[q * len / 2..][..len / 2],
                    &mut hi[..len / 2],
                );
            }
            std::mem::swap(cur, next);
            k *= 2;
        }
        for q in 0..k {
            let (lo, hi) = data.split_at_mut((q + k) * plane);
            split2_at(
                lvl,
                &cur[q * 2 * gw..][..2 * gw],
                &mut lo[q * plane..][..gw],
                &mut hi[..gw],
            );
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,fma")]
unsafe fn block_avx512(pc: &Panel<'_>, strip: &Strip, src: Source, dst: Dest<'_>, s: &mut Scratch) {
    // SAFETY: forwarded from the caller; AVX-512F and FMA are enabled here.
    unsafe { block_v::<vector::Avx512, 4>(pc, strip, src, dst, s) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(pc: &Panel<'_>, strip: &Strip, src: Source, dst: Dest<'_>, s: &mut Scratch) {
    // SAFETY: forwarded from the caller; AVX2 and FMA are enabled here.
    unsafe { block_v::<vector::Avx2, 2>(pc, strip, src, dst, s) }
}

/// Where a block's taps are read: the block's strip ([`Panel::fill_strip`])
/// or, for a pointwise convolution, the input itself ([`Panel::direct`]).
#[derive(Clone, Copy)]
struct Source {
    /// Grid pixel 0 of phase plane 0.
    base: *const f32,
    /// Values between consecutive phase planes (input channels).
    plane: usize,
}

/// Where a block's sums go: `pixels` values (a multiple of the lanes) per
/// output channel, channel `oc`'s from `base + oc * pitch`, through the
/// ReLU/clip `bounds` once the last tap is in ([`super::fused::register_bounds`];
/// empty: stored as they are).
#[derive(Clone, Copy)]
struct Dest<'b> {
    base: *mut f32,
    pitch: usize,
    pixels: usize,
    bounds: &'b [(f32, f32)],
}

/// A block into `dst`: per group, per chunk of taps, per tile, every
/// block of [`OB`] output channels.
///
/// # Safety
/// The CPU must support `V`; `U * V::LANES <= MAX_TILE`; `dst` is
/// writable and readable for `pixels` values of every output channel,
/// and `src` the block's strip, or the input where every tile's reads stay
/// inside it ([`Panel::direct`]).
#[inline(always)]
unsafe fn block_v<V: Vector, const U: usize>(
    pc: &Panel<'_>,
    strip: &Strip,
    src: Source,
    dst: Dest<'_>,
    s: &mut Scratch,
) {
    let l = V::LANES;
    let t = U * l;
    let p = pc.conv.params;
    let k_all = p.filter_len();
    let chunk = (CHUNK_BYTES / 4 / t).max(8);
    let plane = dst.pixels;
    for g in 0..p.groups {
        pc.tap_offsets(g, strip, src.plane, &mut s.offs);
        let mut k0 = 0;
        while k0 < k_all {
            let kc = chunk.min(k_all - k0);
            let mut t0 = 0;
            while t0 < plane {
                // The last tile is as many vectors as the block has left.
                let vecs = U.min((plane - t0) / l);
                let job = Job {
                    // SAFETY: in the source; reads stay in the strip's tail
                    // (`fill_strip`) or the input plane (`Panel::direct`).
                    x: unsafe { src.base.add(t0) },
                    offs: &s.offs[k0..k0 + kc],
                    acc: dst.base,
                    plane: dst.pitch,
                    k_all,
                    k0,
                    t0,
                    first: k0 == 0,
                    bounds: if k0 + kc == k_all { dst.bounds } else { &[] },
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
    /// Tap data of the tile's first pixel, and per-tap offsets from it.
    x: *const f32,
    offs: &'s [usize],
    /// Partial sums, channel `oc`'s from `acc + oc * plane`.
    acc: *mut f32,
    plane: usize,
    /// Taps per filter; the chunk's first tap.
    k_all: usize,
    k0: usize,
    /// The tile's first grid pixel.
    t0: usize,
    /// Whether the chunk is the first (start from the bias).
    first: bool,
    /// Bounds applied to the stored sums (the last chunk's only).
    bounds: &'s [(f32, f32)],
}

/// Every block of [`OB`] output channels of group `g` for one tile of `U`
/// vectors; a group's last block of fewer channels runs as one block of
/// its size.
///
/// # Safety
/// As [`block_v`]; `job.t0 + U * V::LANES <= job.plane`.
#[inline(always)]
unsafe fn tile_channels<V: Vector, const U: usize>(pc: &Panel<'_>, job: &Job<'_>, g: usize) {
    let opg = pc.conv.params.out_per_group();
    let mut j = 0;
    while j < opg {
        let oc0 = g * opg + j;
        let nb = OB.min(opg - j);
        // SAFETY: the packed block of `nb` channels at `oc0` holds
        // `k_all * nb` weights from `oc0 * k_all`; the partial sums of
        // channel `oc` are `acc[oc * plane + t0 ..][..U * LANES]`, inside
        // the plane; every tap offset plus `U * LANES` stays inside the
        // strip and its tail.
        unsafe {
            let w = pc.packed.as_ptr().add(oc0 * job.k_all + job.k0 * nb);
            let d = job.acc.add(oc0 * job.plane + job.t0);
            let bias = pc.bias.as_ptr().add(oc0);
            let (x, o, pl, f) = (job.x, job.offs, job.plane, job.first);
            match nb {
                1 => tile::<V, U, 1>(x, o, w, d, pl, bias, f),
                2 => tile::<V, U, 2>(x, o, w, d, pl, bias, f),
                3 => tile::<V, U, 3>(x, o, w, d, pl, bias, f),
                4 => tile::<V, U, 4>(x, o, w, d, pl, bias, f),
                5 => tile::<V, U, 5>(x, o, w, d, pl, bias, f),
                _ => tile::<V, U, OB>(x, o, w, d, pl, bias, f),
            }
            // ReLU/clip bounds on the sums just stored, still in L1: the
            // values the epilogue would give them after (the row engine
            // applies the same bounds before its stores).
            if !job.bounds.is_empty() {
                for b in 0..nb {
                    for u in 0..U {
                        let at = d.add(b * pl + u * V::LANES);
                        vector::apply_bounds(V::load(at), job.bounds).store(at);
                    }
                }
            }
        }
        j += nb;
    }
}

/// The micro-kernel: `B` channels x `U` vectors of one tile, over the taps
/// of `offs`: starts from the bias (`first`) or the stored partial sums,
/// adds `w * x` per tap in order, and stores. The weights of tap `k` are
/// `w[k * B ..][..B]` (a packed block of `B` channels).
///
/// # Safety
/// The CPU must support `V`; `x + offs[k]` is readable for `U * LANES`
/// values, `w + k * B + b` for every tap `k` and `b < B`, `bias + b`, and
/// `dst + b * ds` is writable (and readable) for `U * LANES` values.
#[inline(always)]
pub(crate) unsafe fn tile<V: Vector, const U: usize, const B: usize>(
    x: *const f32,
    offs: &[usize],
    w: *const f32,
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
            wk = wk.add(B);
        }
        for (b, accb) in acc.iter().enumerate() {
            for (u, a) in accb.iter().enumerate() {
                a.store(dst.add(b * ds + u * l));
            }
        }
    }
}
