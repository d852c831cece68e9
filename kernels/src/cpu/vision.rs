//! Vision ops on the CPU ([`crate::vision`]): a chain of row-local steps
//! (luma, normalisation, Gaussian blur, Sobel, pointwise ops) in one pass
//! over row bands, and bilinear resize.
//!
//! A chain runs band by band (bands of output rows, in parallel). For a
//! band, each step's needed rows are found backwards from the output (a
//! step that reads `r` rows above and below needs `r` more rows of its
//! input on each side, within the image: reflected borders fall inside
//! them), then the steps run forwards, each writing its rows into a
//! band-sized buffer that stays in cache for the next step. Rows of the
//! band's halo are computed by both neighbouring bands. A single op is a
//! chain of one step, so fused and unfused runs execute the same row code
//! and give bit-identical values.
//!
//! Separable filters run the horizontal pass over every input row the band
//! needs, then the vertical pass; every tap is `acc = acc + k * x` in tap
//! order (no contraction), so the SIMD level does not change any value.

use super::simd::multiversion;
use super::{band_rows, plane_bands};
use crate::error::KernelError;
use crate::op::Pointwise;
use crate::tensor::{Shape, Tensor};
use crate::vision::{
    SobelMode, Step, Vision, gaussian_kernel, gray_weights, linear_taps, reflect101,
};

/// Rows `lo..` of every plane of an image `h` rows high, planes `plane`
/// values apart.
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    plane: usize,
    lo: usize,
    w: usize,
    h: usize,
}

impl<'a> Rows<'a> {
    #[inline]
    fn row(&self, ch: usize, y: usize) -> &'a [f32] {
        let off = ch * self.plane + (y - self.lo) * self.w;
        &self.data[off..off + self.w]
    }

    /// Row `y + d` reflected into the image.
    #[inline]
    fn near(&self, ch: usize, y: usize, d: isize) -> &'a [f32] {
        self.row(ch, reflect101(y as isize + d, self.h))
    }
}

/// Runs a chain of steps on `input` in one pass over row bands.
///
/// # Errors
/// [`KernelError`] when a step cannot take its input.
pub fn run_chain(input: &Tensor, steps: &[Step]) -> Result<Tensor, KernelError> {
    let mut shapes = vec![input.shape()];
    for s in steps {
        let next = s.output_shape(shapes[shapes.len() - 1])?;
        shapes.push(next);
    }
    let out_shape = shapes[shapes.len() - 1];
    if steps.is_empty() {
        return Ok(input.clone());
    }
    let Shape { c, h, w } = out_shape;
    let mut out = Tensor::zeros(out_shape);
    // Bands small enough that a step's rows stay in L2, and enough of them
    // to balance the threads.
    let band = band_rows(h).min(32);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    super::for_each_band(bands, |(b, mut dst)| {
        let y0 = b * band;
        let y1 = (y0 + band).min(h);
        // Rows each step produces, backwards from the band.
        let mut ranges = vec![y0..y1; steps.len() + 1];
        for i in (0..steps.len()).rev() {
            let r = steps[i].reach();
            let next = &ranges[i + 1];
            ranges[i] = next.start.saturating_sub(r)..(next.end + r).min(h);
        }
        let mut held: Vec<f32> = Vec::new();
        let mut lo = ranges[0].start;
        for (i, step) in steps.iter().enumerate() {
            let src = Rows {
                data: if i == 0 {
                    &input.data()[lo * w..]
                } else {
                    &held
                },
                plane: if i == 0 { h * w } else { ranges[i].len() * w },
                lo,
                w,
                h,
            };
            let rows = ranges[i + 1].clone();
            let cout = shapes[i + 1].c;
            if i + 1 == steps.len() {
                run_step(step, src, shapes[i].c, rows, &mut dst);
            } else {
                let mut buf = vec![0.0f32; cout * rows.len() * w];
                {
                    let mut planes: Vec<&mut [f32]> =
                        buf.chunks_mut(rows.len() * w).take(cout).collect();
                    run_step(step, src, shapes[i].c, rows.clone(), &mut planes);
                }
                held = buf;
                lo = rows.start;
            }
        }
    });
    Ok(out)
}

/// One step: rows `rows` of each output plane into `dst` (plane `k` holds
/// exactly those rows), from `src` (which holds the rows they need).
fn run_step(
    step: &Step,
    src: Rows<'_>,
    cin: usize,
    rows: std::ops::Range<usize>,
    dst: &mut [&mut [f32]],
) {
    let w = src.w;
    let y0 = rows.start;
    match step {
        Step::Pointwise(p) => {
            for (ch, plane) in dst.iter_mut().enumerate() {
                for y in rows.clone() {
                    let d = &mut plane[(y - y0) * w..(y - y0 + 1) * w];
                    pointwise_row(*p, d, src.row(ch, y));
                }
            }
        }
        Step::Vision(Vision::Gray { order }) => {
            let k = gray_weights(*order);
            for y in rows {
                let d = &mut dst[0][(y - y0) * w..(y - y0 + 1) * w];
                gray_row(k, d, src.row(0, y), src.row(1, y), src.row(2, y));
            }
        }
        Step::Vision(Vision::Normalize { scale, mean, std }) => {
            for (ch, plane) in dst.iter_mut().enumerate() {
                let m = mean[if mean.len() == 1 { 0 } else { ch }];
                let s = std[if std.len() == 1 { 0 } else { ch }];
                for y in rows.clone() {
                    let d = &mut plane[(y - y0) * w..(y - y0 + 1) * w];
                    normalize_row(*scale, m, s, d, src.row(ch, y));
                }
            }
        }
        Step::Vision(Vision::GaussianBlur { ksize, sigma }) => {
            let k = gaussian_kernel(*ksize, *sigma);
            let r = ksize / 2;
            let need = rows.start.saturating_sub(r)..(rows.end + r).min(src.h);
            let mut tmp = vec![0.0f32; need.len() * w];
            for (ch, plane) in dst.iter_mut().enumerate().take(cin) {
                for y in need.clone() {
                    let t = &mut tmp[(y - need.start) * w..(y - need.start + 1) * w];
                    hfilter_row(&k, t, src.row(ch, y));
                }
                let h = Rows {
                    data: &tmp,
                    plane: 0,
                    lo: need.start,
                    w,
                    h: src.h,
                };
                for y in rows.clone() {
                    let d = &mut plane[(y - y0) * w..(y - y0 + 1) * w];
                    mul_row(k[0], d, h.near(0, y, -(r as isize)));
                    for (j, &kj) in k.iter().enumerate().skip(1) {
                        axpy_row(kj, d, h.near(0, y, j as isize - r as isize));
                    }
                }
            }
        }
        Step::Vision(Vision::Sobel { mode }) => {
            let need = rows.start.saturating_sub(1)..(rows.end + 1).min(src.h);
            let n = need.len() * w;
            // Horizontal derivative and horizontal smoothing of each row.
            let mut hd = vec![0.0f32; if *mode == SobelMode::Dy { 0 } else { n }];
            let mut hs = vec![0.0f32; if *mode == SobelMode::Dx { 0 } else { n }];
            let mut gx = vec![0.0f32; w];
            for (ch, plane) in dst.iter_mut().enumerate().take(cin) {
                for y in need.clone() {
                    let at = (y - need.start) * w;
                    if !hd.is_empty() {
                        hderiv_row(&mut hd[at..at + w], src.row(ch, y));
                    }
                    if !hs.is_empty() {
                        hsmooth_row(&mut hs[at..at + w], src.row(ch, y));
                    }
                }
                let vd = Rows {
                    data: &hd,
                    plane: 0,
                    lo: need.start,
                    w,
                    h: src.h,
                };
                let vs = Rows { data: &hs, ..vd };
                for y in rows.clone() {
                    let d = &mut plane[(y - y0) * w..(y - y0 + 1) * w];
                    match mode {
                        SobelMode::Dx => {
                            vsmooth_row(d, vd.near(0, y, -1), vd.row(0, y), vd.near(0, y, 1));
                        }
                        SobelMode::Dy => vderiv_row(d, vs.near(0, y, -1), vs.near(0, y, 1)),
                        SobelMode::Magnitude => {
                            vsmooth_row(&mut gx, vd.near(0, y, -1), vd.row(0, y), vd.near(0, y, 1));
                            vderiv_row(d, vs.near(0, y, -1), vs.near(0, y, 1));
                            magnitude_row(d, &gx);
                        }
                    }
                }
            }
        }
        Step::Vision(Vision::Resize { .. }) => {
            // Refused by `Step::output_shape` before any band runs.
        }
    }
}

multiversion! {
    fn pointwise_row(p: Pointwise, d: &mut [f32], s: &[f32]) {
        d.copy_from_slice(s);
        p.apply_slice(d);
    }
}

multiversion! {
    fn gray_row(k: [f32; 3], d: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
        for (((o, &x), &y), &z) in d.iter_mut().zip(a).zip(b).zip(c) {
            *o = (x * k[0] + y * k[1]) + z * k[2];
        }
    }
}

multiversion! {
    fn normalize_row(scale: f32, mean: f32, std: f32, d: &mut [f32], s: &[f32]) {
        for (o, &x) in d.iter_mut().zip(s) {
            *o = (x * scale - mean) / std;
        }
    }
}

multiversion! {
    fn mul_row(k: f32, d: &mut [f32], s: &[f32]) {
        for (o, &x) in d.iter_mut().zip(s) {
            *o = k * x;
        }
    }
}

multiversion! {
    fn axpy_row(k: f32, d: &mut [f32], s: &[f32]) {
        for (o, &x) in d.iter_mut().zip(s) {
            *o += k * x;
        }
    }
}

multiversion! {
    /// `d[x] = Σ_j k[j] * s[reflect(x - r + j)]`, taps in order.
    fn hfilter_row(k: &[f32], d: &mut [f32], s: &[f32]) {
        let w = s.len();
        let r = k.len() / 2;
        let tap = |x: usize, j: usize| s[reflect101(x as isize + j as isize - r as isize, w)];
        let edge = |x: usize| {
            let mut acc = k[0] * tap(x, 0);
            for (j, &kj) in k.iter().enumerate().skip(1) {
                acc += kj * tap(x, j);
            }
            acc
        };
        if w > 2 * r {
            let n = w - 2 * r;
            let mid = &mut d[r..r + n];
            for (o, &x) in mid.iter_mut().zip(&s[..n]) {
                *o = k[0] * x;
            }
            for (j, &kj) in k.iter().enumerate().skip(1) {
                for (o, &x) in mid.iter_mut().zip(&s[j..j + n]) {
                    *o += kj * x;
                }
            }
            for x in (0..r).chain(w - r..w) {
                d[x] = edge(x);
            }
        } else {
            for (x, o) in d.iter_mut().enumerate() {
                *o = edge(x);
            }
        }
    }
}

multiversion! {
    /// `d[x] = s[x+1] - s[x-1]` (reflected at the ends).
    fn hderiv_row(d: &mut [f32], s: &[f32]) {
        let w = s.len();
        let at = |i: isize| s[reflect101(i, w)];
        if w > 2 {
            for (o, win) in d[1..w - 1].iter_mut().zip(s.windows(3)) {
                *o = win[2] - win[0];
            }
        }
        d[0] = at(1) - at(-1);
        d[w - 1] = at(w as isize) - at(w as isize - 2);
    }
}

multiversion! {
    /// `d[x] = (s[x-1] + 2 s[x]) + s[x+1]` (reflected at the ends).
    fn hsmooth_row(d: &mut [f32], s: &[f32]) {
        let w = s.len();
        let at = |i: isize| s[reflect101(i, w)];
        if w > 2 {
            for (o, win) in d[1..w - 1].iter_mut().zip(s.windows(3)) {
                *o = (win[0] + 2.0 * win[1]) + win[2];
            }
        }
        d[0] = (at(-1) + 2.0 * at(0)) + at(1);
        let e = w as isize - 1;
        d[w - 1] = (at(e - 1) + 2.0 * at(e)) + at(e + 1);
    }
}

multiversion! {
    fn vsmooth_row(d: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
        for (((o, &x), &y), &z) in d.iter_mut().zip(a).zip(b).zip(c) {
            *o = (x + 2.0 * y) + z;
        }
    }
}

multiversion! {
    fn vderiv_row(d: &mut [f32], a: &[f32], c: &[f32]) {
        for ((o, &x), &z) in d.iter_mut().zip(a).zip(c) {
            *o = z - x;
        }
    }
}

multiversion! {
    /// `d = sqrt(gx² + d²)`.
    fn magnitude_row(d: &mut [f32], gx: &[f32]) {
        for (o, &x) in d.iter_mut().zip(gx) {
            *o = (x * x + *o * *o).sqrt();
        }
    }
}

/// Bilinear resize (OpenCV `INTER_LINEAR` on `float32`): per output row, the
/// two source rows are each interpolated across, then blended down.
///
/// # Errors
/// [`KernelError`] when the output size is empty.
pub fn resize(input: &Tensor, width: usize, height: usize) -> Result<Tensor, KernelError> {
    let in_shape = input.shape();
    let out_shape = Vision::Resize { width, height }.output_shape(in_shape)?;
    let Shape { c, h, w } = out_shape;
    let xs = linear_taps(in_shape.w, w);
    let ys = linear_taps(in_shape.h, h);
    let mut out = Tensor::zeros(out_shape);
    let band = band_rows(h);
    let bands = plane_bands(out.data_mut(), c, h, w, band);
    let last = in_shape.w - 1;
    super::for_each_band(bands, |(b, mut planes)| {
        let mut r0 = vec![0.0f32; w];
        let mut r1 = vec![0.0f32; w];
        for (ch, plane) in planes.iter_mut().enumerate() {
            let src = input.plane(ch);
            let row = |y: usize| &src[y * in_shape.w..(y + 1) * in_shape.w];
            for (r, d) in plane.chunks_exact_mut(w).enumerate() {
                let (sy, fy) = ys[b * band + r];
                let sy1 = (sy + 1).min(in_shape.h - 1);
                hlerp_row(&xs, last, &mut r0, row(sy));
                hlerp_row(&xs, last, &mut r1, row(sy1));
                vlerp_row(1.0 - fy, fy, d, &r0, &r1);
            }
        }
    });
    Ok(out)
}

multiversion! {
    fn hlerp_row(xs: &[(usize, f32)], last: usize, d: &mut [f32], s: &[f32]) {
        for (o, &(i, f)) in d.iter_mut().zip(xs) {
            *o = s[i] * (1.0 - f) + s[(i + 1).min(last)] * f;
        }
    }
}

multiversion! {
    fn vlerp_row(a: f32, b: f32, d: &mut [f32], r0: &[f32], r1: &[f32]) {
        for ((o, &x), &y) in d.iter_mut().zip(r0).zip(r1) {
            *o = x * a + y * b;
        }
    }
}
