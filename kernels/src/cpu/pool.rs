//! Pooling: max and average over any window ([`Pool2d`]: kernel, strides,
//! dilations, padding per side, `ceil_mode`, `count_include_pad`).
//!
//! Each output row reduces its window's valid input rows into one row
//! (vertical: the first row, then `max(v, next)` or `v + next` in row
//! order), then each output value reduces its window's valid columns of
//! that row (horizontal, in column order); an average divides the sum once.
//! Padding never takes part: a max ignores it, and an average counts it
//! only with `count_include_pad`. The fused path ([`super::fused`]) calls
//! the same [`PoolRows`] on the same values, so both give bit-identical
//! results.

use super::simd::{level, multiversion};
use super::{band_rows, max2, plane_bands};
use crate::error::KernelError;
use crate::op::{AxisTaps, Pool2d, PoolKind};
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
    /// `v[i] = v[i] + row[i]`.
    pub(crate) fn vertical_sum(v: &mut [f32], row: &[f32]) {
        for (a, &b) in v.iter_mut().zip(row) {
            *a += b;
        }
    }
}

multiversion! {
    /// `v[i] = max(a[i], b[i])`: a copy of `a` and one [`vertical_max`]
    /// pass by `b`, in one pass.
    pub(crate) fn vertical_max_of(v: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, &x), &y) in v.iter_mut().zip(a).zip(b) {
            *o = max2(x, y);
        }
    }
}

multiversion! {
    /// `v[i] = max(max(a[i], b[i]), c[i])`: [`vertical_max_of`] and one
    /// [`vertical_max`] pass by `c` (the same steps in the same order), in
    /// one pass: a 3-row window (ResNet's 3x3 pools) reads each row once
    /// and writes `v` once.
    pub(crate) fn vertical_max3(v: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
        for (((o, &x), &y), &z) in v.iter_mut().zip(a).zip(b).zip(c) {
            *o = max2(max2(x, y), z);
        }
    }
}

multiversion! {
    /// `v[i] = a[i] + b[i]`: as [`vertical_max_of`] for a sum.
    pub(crate) fn vertical_sum_of(v: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, &x), &y) in v.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    }
}

multiversion! {
    /// The stride-2 windows of [`window_passes`] from the row's even and
    /// odd values: `out[j]` reduces taps `k = 0 .. kw` (tap `k` is
    /// `even[j + k / 2]` or `odd[j + k / 2]`) in tap order, one pass per
    /// tap.
    fn stride2_windows(kind: PoolKind, even: &[f32], odd: &[f32], kw: usize, out: &mut [f32]) {
        let m = out.len();
        out.copy_from_slice(&even[..m]);
        for k in 1..kw {
            let src = if k % 2 == 1 { &odd[k / 2..k / 2 + m] } else { &even[k / 2..k / 2 + m] };
            match kind {
                PoolKind::Max => {
                    for (a, &b) in out.iter_mut().zip(src) {
                        *a = max2(*a, b);
                    }
                }
                PoolKind::Avg { .. } => {
                    for (a, &b) in out.iter_mut().zip(src) {
                        *a += b;
                    }
                }
            }
        }
    }
}

/// `out[x] = max(v[x*stride .. x*stride + size])`, for every `x` of `out`
/// (in window order, each step [`max2`]); stride 2 picks its windows with
/// a permute where the level has one.
pub(crate) fn horizontal_max(v: &[f32], out: &mut [f32], size: usize, stride: usize) {
    let done = if stride == 2 {
        super::interleave::stride2_max(out, v, size)
    } else {
        0
    };
    if done < out.len() {
        horizontal_max_rest(&v[done * stride..], &mut out[done..], size, stride);
    }
}

multiversion! {
    /// [`horizontal_max`] one window at a time.
    fn horizontal_max_rest(v: &[f32], out: &mut [f32], size: usize, stride: usize) {
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

multiversion! {
    /// The horizontal reduction of one row: `out[x]` over the valid taps
    /// `cols[x]` of `v` (first column `x * sw - pad + k0 * dw`, every `dw`).
    fn horizontal(
        kind: PoolKind,
        v: &[f32],
        out: &mut [f32],
        cols: &[(isize, usize, usize)],
        dw: usize,
        rows: (usize, usize),
    ) {
        for (o, &(start, n, padded)) in out.iter_mut().zip(cols) {
            if n == 0 {
                // No tap inside the input (only with dilation): as ONNX
                // Runtime, the lowest value for a max, 0 / count for a mean.
                *o = match kind {
                    PoolKind::Max => f32::MIN,
                    PoolKind::Avg { count_include_pad } => {
                        let count = if count_include_pad { rows.1 * padded } else { 0 };
                        0.0 / count as f32
                    }
                };
                continue;
            }
            let s = start as usize;
            let mut acc = v[s];
            match kind {
                PoolKind::Max => {
                    for k in 1..n {
                        acc = max2(acc, v[s + k * dw]);
                    }
                    *o = acc;
                }
                PoolKind::Avg { count_include_pad } => {
                    for k in 1..n {
                        acc += v[s + k * dw];
                    }
                    let count = if count_include_pad { rows.1 * padded } else { rows.0 * n };
                    *o = acc / count as f32;
                }
            }
        }
    }
}

multiversion! {
    /// `h[i] = reduce(v[i], v[i + dw], ..., v[i + (kw - 1) * dw])` for
    /// every `i` of `h`, one vectorised pass per tap, in tap order (the
    /// same sequence of operations as [`horizontal`] per column).
    fn window_passes(kind: PoolKind, v: &[f32], h: &mut [f32], kw: usize, dw: usize) {
        let n = h.len();
        h.copy_from_slice(&v[..n]);
        for k in 1..kw {
            let src = &v[k * dw..k * dw + n];
            match kind {
                PoolKind::Max => {
                    for (a, &b) in h.iter_mut().zip(src) {
                        *a = max2(*a, b);
                    }
                }
                PoolKind::Avg { .. } => {
                    for (a, &b) in h.iter_mut().zip(src) {
                        *a += b;
                    }
                }
            }
        }
    }
}

/// A pool's geometry for one input size: the valid taps of every output
/// column, precomputed once per call, and the row taps per output row.
pub(crate) struct PoolRows {
    pool: Pool2d,
    in_h: usize,
    /// Per output column: first valid input column, valid taps, taps in
    /// the padded input.
    cols: Vec<(isize, usize, usize)>,
    /// Reduction row (input width).
    v: Vec<f32>,
    /// Output columns `full.0 .. full.1` have every tap inside the input:
    /// reduced from the row directly (stride-2 max with a permute), from
    /// its even and odd values (stride 2), or by [`window_passes`].
    full: (usize, usize),
    /// Scratch for the full columns: the window reductions at every input
    /// column (`window_passes`), or the row's even then odd values.
    hsum: Vec<f32>,
}

impl PoolRows {
    /// The geometry of `pool` over an input of `input`'s height and width,
    /// for an output of `out_w` columns.
    pub(crate) fn new(pool: Pool2d, input: Shape, out_w: usize) -> Self {
        let win = pool.window;
        let cols: Vec<(isize, usize, usize)> = (0..out_w)
            .map(|ox| {
                let t = AxisTaps::of(
                    ox,
                    input.w,
                    win.kernel[1],
                    win.stride[1],
                    win.dilation[1],
                    win.pads[1],
                    win.pads[3],
                );
                let start =
                    (ox * win.stride[1] + t.k0 * win.dilation[1]) as isize - win.pads[1] as isize;
                (start, t.n, t.padded)
            })
            .collect();
        let kw = win.kernel[1];
        let is_full = |c: &(isize, usize, usize)| c.1 == kw;
        let a = cols.iter().position(is_full).unwrap_or(cols.len());
        let b = a + cols[a..].iter().take_while(|c| is_full(c)).count();
        Self {
            pool,
            in_h: input.h,
            cols,
            v: vec![0.0; input.w],
            full: (a, b),
            hsum: Vec::new(),
        }
    }

    /// The input rows output row `oy` reads: `(first, count, padded)` as
    /// [`AxisTaps`], rows `first + k * dh`.
    pub(crate) fn rows_of(&self, oy: usize) -> (usize, usize, usize) {
        let win = self.pool.window;
        let t = AxisTaps::of(
            oy,
            self.in_h,
            win.kernel[0],
            win.stride[0],
            win.dilation[0],
            win.pads[0],
            win.pads[2],
        );
        let first = (oy * win.stride[0] + t.k0 * win.dilation[0]).saturating_sub(win.pads[0]);
        (first, t.n, t.padded)
    }

    /// Row stride between taps (`dh`).
    pub(crate) fn row_step(&self) -> usize {
        self.pool.window.dilation[0]
    }

    /// Reduces output row `oy` into `out` from its input rows, which
    /// `row(iy)` gives (each the input's width).
    pub(crate) fn reduce<'r, R: Fn(usize) -> &'r [f32]>(
        &mut self,
        oy: usize,
        row: R,
        out: &mut [f32],
    ) {
        let (first, n, padded) = self.rows_of(oy);
        let kind = self.pool.kind;
        if n == 0 {
            self.v.fill(match kind {
                PoolKind::Max => f32::MIN,
                PoolKind::Avg { .. } => 0.0,
            });
        } else {
            let mut k = 1;
            if n >= 3 && kind == PoolKind::Max {
                let step = self.row_step();
                let (r0, r1, r2) = (row(first), row(first + step), row(first + 2 * step));
                vertical_max3(&mut self.v, r0, r1, r2);
                k = 3;
            } else if n >= 2 {
                let (r0, r1) = (row(first), row(first + self.row_step()));
                match kind {
                    PoolKind::Max => vertical_max_of(&mut self.v, r0, r1),
                    PoolKind::Avg { .. } => vertical_sum_of(&mut self.v, r0, r1),
                }
                k = 2;
            } else {
                self.v.copy_from_slice(row(first));
            }
            for k in k..n {
                let r = row(first + k * self.row_step());
                match kind {
                    PoolKind::Max => vertical_max(&mut self.v, r),
                    PoolKind::Avg { .. } => vertical_sum(&mut self.v, r),
                }
            }
        }
        if n == 0 && kind == PoolKind::Max {
            out.fill(f32::MIN);
            return;
        }
        let (a, b) = self.full;
        let (dw, sw) = (self.pool.window.dilation[1], self.pool.window.stride[1]);
        horizontal(
            kind,
            &self.v,
            &mut out[..a],
            &self.cols[..a],
            dw,
            (n, padded),
        );
        if b > a {
            // Every tap inside the input: one vectorised pass per tap over
            // the columns the windows start at, then one pick per output.
            let s0 = self.cols[a].0 as usize;
            let len = (b - 1 - a) * sw + 1;
            let kw = self.pool.window.kernel[1];
            if sw == 2 && dw == 1 {
                // A max straight from the row where the level has a
                // permute for it; then the windows' starts from the row's
                // even and odd values (the last window's taps end inside
                // the row, so both reads stay in it).
                let done = match kind {
                    PoolKind::Max => {
                        super::interleave::stride2_max(&mut out[a..b], &self.v[s0..], kw)
                    }
                    PoolKind::Avg { .. } => 0,
                };
                let (a, s0) = (a + done, s0 + 2 * done);
                let m = b - a;
                if m > 0 {
                    let (ne, no) = (m + (kw - 1) / 2, if kw > 1 { m + (kw - 2) / 2 } else { 0 });
                    self.hsum.resize(ne + no, 0.0);
                    let (even, odd) = self.hsum.split_at_mut(ne);
                    super::interleave::split2_at(level(), &self.v[s0..], even, odd);
                    stride2_windows(kind, even, odd, kw, &mut out[a..b]);
                }
            } else {
                self.hsum.resize(len, 0.0);
                window_passes(kind, &self.v[s0..], &mut self.hsum, kw, dw);
                for (j, o) in out[a..b].iter_mut().enumerate() {
                    *o = self.hsum[j * sw];
                }
            }
            if let PoolKind::Avg { count_include_pad } = kind {
                let count = (if count_include_pad { padded } else { n } * kw) as f32;
                for o in &mut out[a..b] {
                    *o /= count;
                }
            }
        }
        horizontal(
            kind,
            &self.v,
            &mut out[b..],
            &self.cols[b..],
            dw,
            (n, padded),
        );
    }
}

/// Pooling of every channel of `input`.
///
/// # Errors
/// [`KernelError`] when a parameter is invalid or the window does not fit
/// the padded input.
pub fn pool(input: &Tensor, p: &Pool2d) -> Result<Tensor, KernelError> {
    let in_shape = input.shape();
    let out_shape = p.output_shape(in_shape)?;
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::for_overwrite(out_shape);
    if p.is_simple_max() {
        simple_max(input, p.size(), p.window.stride[0], &mut out);
        return Ok(out);
    }
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut rows)| {
        let mut pr = PoolRows::new(*p, in_shape, w);
        for (ch, rows) in rows.iter_mut().enumerate() {
            let plane = input.plane(ch);
            let iw = in_shape.w;
            for (r, out_row) in rows.chunks_exact_mut(w).enumerate() {
                pr.reduce(b * band + r, |y| &plane[y * iw..(y + 1) * iw], out_row);
            }
        }
    });
    Ok(out)
}

/// The square, unpadded max pool in floor mode: vertical maxima of the
/// window's rows, then [`horizontal_max`] (the same values and order as
/// the general path).
fn simple_max(input: &Tensor, size: usize, stride: usize, out: &mut Tensor) {
    let in_shape = input.shape();
    let Shape { c, h, w } = out.shape();
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut rows)| {
        let mut v = vec![0.0f32; in_shape.w];
        for (ch, rows) in rows.iter_mut().enumerate() {
            let plane = input.plane(ch);
            let iw = in_shape.w;
            for (r, out_row) in rows.chunks_exact_mut(w).enumerate() {
                let row = |y: usize| &plane[y * iw..(y + 1) * iw];
                simple_max_row(&mut v, row, (b * band + r) * stride, size, stride, out_row);
            }
        }
    });
}

/// One output row of the square, unpadded floor-mode max pool (`size` x
/// `size` windows at `stride` on both axes): the vertical maxima of input
/// rows `y0 .. y0 + size` (`row(y)`, each `v.len()` wide) into `v`, then
/// [`horizontal_max`] into `out`. Every path that computes this pool calls
/// it, so all give the same bits.
pub(crate) fn simple_max_row<'r, R: Fn(usize) -> &'r [f32]>(
    v: &mut [f32],
    row: R,
    y0: usize,
    size: usize,
    stride: usize,
    out: &mut [f32],
) {
    v.copy_from_slice(row(y0));
    for y in y0 + 1..y0 + size {
        vertical_max(v, row(y));
    }
    horizontal_max(v, out, size, stride);
}
