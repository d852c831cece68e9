//! Naive, obviously-correct references, accumulating in `f64`. Used only to
//! check the fast kernels (and, later, the CUDA kernels); never on a hot path.
//!
//! Each function returns the exact-as-possible values and, where rounding
//! depends on the summation, the sum of the magnitudes of the terms, from
//! which a test derives its tolerance.

use crate::op::{Conv2d, Pool2d, PoolKind};
use crate::tensor::Shape;

/// Values in `[C, H, W]` order with their shape, in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct RefTensor {
    /// Shape.
    pub shape: Shape,
    /// Values.
    pub values: Vec<f64>,
    /// Per value: sum of `|term|` that produced it (0 where exact).
    pub magnitude: Vec<f64>,
}

/// One axis of a sliding window, written out from the ONNX operator
/// spec's formulas (independently of [`crate::op::Window`]): output size
/// for input `len`, padding `pa`/`pb`, kernel `k`, dilation `d`, stride `s`.
/// `None` when the window does not fit.
fn out_len(
    len: usize,
    pa: usize,
    pb: usize,
    k: usize,
    d: usize,
    s: usize,
    ceil: bool,
) -> Option<usize> {
    let padded = (len + pa + pb) as i64;
    let ext = ((k as i64) - 1) * d as i64 + 1;
    if s == 0 || k == 0 || d == 0 || ext > padded {
        return None;
    }
    let span = (padded - ext) as f64 / s as f64;
    let mut n = if ceil { span.ceil() } else { span.floor() } as usize + 1;
    // PyTorch and ONNX Runtime: the last window must start inside the
    // input or its leading padding.
    if ceil && (n - 1) * s >= len + pa {
        n -= 1;
    }
    Some(n)
}

/// Direct convolution, zero padding per side, strides, dilations, groups,
/// floor output size. `None` when the parameters are invalid or the kernel
/// does not fit.
pub fn conv2d(input: &[f32], shape: Shape, conv: &Conv2d) -> Option<RefTensor> {
    let p = conv.params;
    let win = p.window;
    let [pt, pl, pb, pr] = win.pads;
    let ([kh, kw], [sh, sw], [dh, dw]) = (win.kernel, win.stride, win.dilation);
    if shape.c != p.in_channels
        || p.groups == 0
        || !p.in_channels.is_multiple_of(p.groups)
        || !p.out_channels.is_multiple_of(p.groups)
    {
        return None;
    }
    let oh = out_len(shape.h, pt, pb, kh, dh, sh, false)?;
    let ow = out_len(shape.w, pl, pr, kw, dw, sw, false)?;
    let icg = p.in_channels / p.groups;
    let ocg = p.out_channels / p.groups;
    let out = Shape::new(p.out_channels, oh, ow);
    let mut values = Vec::with_capacity(out.len());
    let mut magnitude = Vec::with_capacity(out.len());
    for oc in 0..p.out_channels {
        let g = oc / ocg;
        for oy in 0..oh {
            for ox in 0..ow {
                let b = f64::from(conv.bias_of(oc));
                let (mut sum, mut mag) = (b, b.abs());
                for j in 0..icg {
                    let ic = g * icg + j;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * sh + ky * dh) as isize - pt as isize;
                            let ix = (ox * sw + kx * dw) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= shape.h as isize || ix >= shape.w as isize
                            {
                                continue;
                            }
                            let x = input[(ic * shape.h + iy as usize) * shape.w + ix as usize];
                            let w = conv.weights[((oc * icg + j) * kh + ky) * kw + kx];
                            let t = f64::from(w) * f64::from(x);
                            sum += t;
                            mag += t.abs();
                        }
                    }
                }
                values.push(sum);
                magnitude.push(mag);
            }
        }
    }
    Some(RefTensor {
        shape: out,
        values,
        magnitude,
    })
}

/// `max(x, 0)`.
pub fn relu(t: &RefTensor) -> RefTensor {
    RefTensor {
        shape: t.shape,
        values: t.values.iter().map(|&v| v.max(0.0)).collect(),
        magnitude: t.magnitude.clone(),
    }
}

/// `min(max(x, lo), hi)`.
pub fn clip(t: &RefTensor, lo: f64, hi: f64) -> RefTensor {
    RefTensor {
        shape: t.shape,
        values: t.values.iter().map(|&v| v.max(lo).min(hi)).collect(),
        magnitude: t.magnitude.clone(),
    }
}

/// Max or average pooling with padding per side, strides, dilations,
/// `ceil_mode` and `count_include_pad`, from the ONNX operator spec. A max
/// over a window with no value inside the input is `f32::MIN` (as ONNX
/// Runtime). The magnitude of an output is the largest magnitude in its
/// window (max) or the mean of the magnitudes (average). `None` when the
/// window does not fit.
pub fn pool(t: &RefTensor, p: &Pool2d) -> Option<RefTensor> {
    let s = t.shape;
    let win = p.window;
    let [pt, pl, pb, pr] = win.pads;
    let ([kh, kw], [sh, sw], [dh, dw]) = (win.kernel, win.stride, win.dilation);
    let oh = out_len(s.h, pt, pb, kh, dh, sh, p.ceil_mode)?;
    let ow = out_len(s.w, pl, pr, kw, dw, sw, p.ceil_mode)?;
    let out = Shape::new(s.c, oh, ow);
    let mut values = Vec::with_capacity(out.len());
    let mut magnitude = Vec::with_capacity(out.len());
    for c in 0..s.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut m, mut sum, mut mag, mut n, mut padded) =
                    (f64::NEG_INFINITY, 0.0f64, 0.0f64, 0usize, 0usize);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (oy * sh + ky * dh) as isize - pt as isize;
                        let ix = (ox * sw + kx * dw) as isize - pl as isize;
                        if iy < (s.h + pb) as isize && ix < (s.w + pr) as isize {
                            padded += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                            continue;
                        }
                        let i = (c * s.h + iy as usize) * s.w + ix as usize;
                        n += 1;
                        m = m.max(t.values[i]);
                        sum += t.values[i];
                        match p.kind {
                            PoolKind::Max => mag = mag.max(t.magnitude[i]),
                            PoolKind::Avg { .. } => mag += t.magnitude[i].max(t.values[i].abs()),
                        }
                    }
                }
                let (v, g) = match p.kind {
                    PoolKind::Max if n == 0 => (f64::from(f32::MIN), 0.0),
                    PoolKind::Max => (m, mag),
                    PoolKind::Avg { count_include_pad } => {
                        let d = if count_include_pad { padded } else { n } as f64;
                        (sum / d, mag / d.max(1.0))
                    }
                };
                values.push(v);
                magnitude.push(g);
            }
        }
    }
    Some(RefTensor {
        shape: out,
        values,
        magnitude,
    })
}

/// Max pooling, floor mode, no padding (a square window `size`, stride
/// `stride`): [`pool`] with that window.
pub fn maxpool(t: &RefTensor, size: usize, stride: usize) -> Option<RefTensor> {
    pool(t, &Pool2d::max(size, stride))
}

/// `x > 0 ? x : alpha * x`.
pub fn leaky_relu(t: &RefTensor, alpha: f64) -> RefTensor {
    RefTensor {
        shape: t.shape,
        values: t
            .values
            .iter()
            .map(|&v| if v > 0.0 { v } else { alpha * v })
            .collect(),
        magnitude: t
            .magnitude
            .iter()
            .map(|&m| m * alpha.abs().max(1.0))
            .collect(),
    }
}

/// Batch normalization at inference from its statistics, in f64:
/// `(x - mean) / sqrt(var + eps) * gamma + beta` per channel.
pub fn batch_norm(
    t: &RefTensor,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> RefTensor {
    let plane = t.shape.h * t.shape.w;
    let mut values = Vec::with_capacity(t.values.len());
    let mut magnitude = Vec::with_capacity(t.values.len());
    for (i, (&v, &m)) in t.values.iter().zip(&t.magnitude).enumerate() {
        let c = i / plane.max(1);
        let k = f64::from(gamma[c]) / (f64::from(var[c]) + eps).sqrt();
        values.push((v - f64::from(mean[c])) * k + f64::from(beta[c]));
        magnitude
            .push((m.max(v.abs()) + f64::from(mean[c]).abs()) * k.abs() + f64::from(beta[c]).abs());
    }
    RefTensor {
        shape: t.shape,
        values,
        magnitude,
    }
}

/// Lifts an `f32` tensor into a reference tensor (magnitudes 0).
pub fn from_f32(data: &[f32], shape: Shape) -> RefTensor {
    RefTensor {
        shape,
        values: data.iter().map(|&v| f64::from(v)).collect(),
        magnitude: vec![0.0; data.len()],
    }
}

/// Largest allowed `|fast - reference|` for a value built from `terms`
/// products whose magnitudes sum to `magnitude`: each of the `terms`
/// roundings of an `f32` accumulation can add at most one ulp of the
/// running sum.
pub fn tolerance(terms: usize, magnitude: f64) -> f64 {
    (terms as f64 + 2.0) * f64::from(f32::EPSILON) * magnitude + 1e-30
}

/// Largest allowed `|fast - reference|` for a convolution output computed
/// with [`crate::Precision::F16`] on tensor cores: inputs and weights
/// rounded to f16 (relative error at most 2^-11 each, so each product is
/// within 2^-10 of the exact one, plus 2^-22 for the product of the two
/// errors), then `terms` products accumulated in f32 in an unspecified
/// order, with at most one f32 ulp of the running sum per addition even if
/// the hardware truncates (2^-23), and the bias added once more. The
/// absolute floor (2^-20) covers operands below f16's normal range (6.1e-5),
/// where rounding is absolute (2^-25) instead of relative. Values must be
/// within f16's range (|x| < 65504).
pub fn f16_tolerance(terms: usize, magnitude: f64) -> f64 {
    let rounding = 2f64.powi(-10) + 2f64.powi(-22);
    let accumulation = (terms as f64 + 2.0) * 2f64.powi(-23);
    (rounding + accumulation) * magnitude + 2f64.powi(-20)
}

/// Cook-Toom's matrices of the 1-D Winograd form F(m, r) at the finite
/// points `pts` (`m + r - 2` of them) and ∞, as `(Aᵀ, G, Bᵀ)` row by row
/// (`m x α`, `α x r`, `α x α`, `α = m + r - 1`): `y = Aᵀ [(G g) ⊙ (Bᵀ
/// d)]` is the correlation `y_i = Σ_k g_k d_(i+k)`. `Bᵀ` is the inverse
/// transpose of the Vandermonde matrix of the points (∞ taking the
/// leading coefficient), unscaled: a form that scales `Bᵀ`'s rows and
/// divides `G`'s by the same has the same products.
fn cook_toom(m: usize, r: usize, pts: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let a = m + r - 1;
    let row = |p: Option<f64>, n: usize| -> Vec<f64> {
        (0..n)
            .map(|k| match p {
                Some(p) => p.powi(k as i32),
                None => f64::from(u8::from(k == n - 1)),
            })
            .collect()
    };
    let points: Vec<Option<f64>> = pts.iter().map(|&p| Some(p)).chain([None]).collect();
    // Gauss-Jordan on [V | I] with partial pivoting.
    let mut aug: Vec<Vec<f64>> = points
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let mut v = row(p, a);
            v.extend((0..a).map(|j| f64::from(u8::from(i == j))));
            v
        })
        .collect();
    for c in 0..a {
        let piv = (c..a)
            .max_by(|&x, &y| aug[x][c].abs().total_cmp(&aug[y][c].abs()))
            .unwrap_or(c);
        aug.swap(c, piv);
        let pv = aug[c][c];
        aug[c].iter_mut().for_each(|x| *x /= pv);
        let pivot_row = aug[c].clone();
        for (r2, row) in aug.iter_mut().enumerate() {
            if r2 != c {
                let f = row[c];
                row.iter_mut()
                    .zip(&pivot_row)
                    .for_each(|(x, y)| *x -= f * y);
            }
        }
    }
    let bt: Vec<f64> = (0..a * a).map(|i| aug[i % a][a + i / a]).collect();
    let g: Vec<f64> = points.iter().flat_map(|&p| row(p, r)).collect();
    let at: Vec<f64> = (0..m)
        .flat_map(|i| {
            points.iter().map(move |&p| match p {
                Some(p) => p.powi(i as i32),
                None => f64::from(u8::from(i == m - 1)),
            })
        })
        .collect();
    (at, g, bt)
}

/// Largest allowed `|fast - reference|` for every output of `conv` on
/// `input` computed by the Winograd algorithm
/// ([`crate::ConvAlgorithm::Winograd`]) in its form of `tile × tile`
/// output tiles ([`crate::cpu::winograd_tile`] tells which the CPU takes),
/// or `None` where no such form applies. The forms, as the CPU computes
/// them:
/// - F(2×2, 3×3) at the points 0, ±1, ∞, and F(4×4, 3×3) at 0, ±1, ±2, ∞,
///   for 3×3 kernels at stride 1;
/// - F(4×4, 4×4) at 0, ±1, ±½, 2, ∞ on the 2×2 stride phases for 5 to 8
///   taps per axis at stride 2: phase plane `k = (ic, py, px)` holds input
///   `x[ic][2u + py - pad_top][2v + px - pad_left]`, its kernel `g[a][b] =
///   w[2a + py][2b + px]` (zero past the kernel).
///
/// Tiles of `M×M` outputs start at multiples of `M`. Each output is
/// computed from the transformed weights `U_k = G g_k Gᵀ` (rounded once),
/// the transformed patches `V_k = Bᵀ d_k B` (additions and multiply-adds
/// by constants), the products summed over the `K` phase planes, and the
/// output transform `Aᵀ (Σ_k U_k ⊙ V_k) A` plus the bias, every step
/// rounding once. So the error is at most `γ(K + 30)` (`γ(n) = n ε / (1 -
/// n ε)`, at most 30 steps in the transforms, the weight and the bias)
/// times the same sums over absolute values: `Σ_ξ |Aᵀ_iξa| |Aᵀ_jξb| Σ_k
/// |U_k[ξ]| (|Bᵀ| |d_k| |B|)[ξ] + |bias|`, a bound that row scalings of
/// `Bᵀ` against `G` leave unchanged.
pub fn winograd_bounds(
    input: &[f32],
    shape: Shape,
    conv: &Conv2d,
    tile: usize,
) -> Option<Vec<f64>> {
    let p = conv.params;
    let win = p.window;
    if p.groups != 1 || win.dilation != [1, 1] || shape.c != p.in_channels {
        return None;
    }
    let (m, r, s, pts): (usize, usize, usize, &[f64]) = match (win.kernel, win.stride) {
        ([3, 3], [1, 1]) if tile == 2 => (2, 3, 1, &[0.0, 1.0, -1.0]),
        ([3, 3], [1, 1]) if tile == 4 => (4, 3, 1, &[0.0, 1.0, -1.0, 2.0, -2.0]),
        (k, [2, 2]) if tile == 4 && k.iter().all(|k| (5..=8).contains(k)) => {
            (4, 4, 2, &[0.0, 1.0, -1.0, 0.5, -0.5, 2.0])
        }
        _ => return None,
    };
    let a = m + r - 1;
    let (at, g, bt) = cook_toom(m, r, pts);
    let [pt, pl, pb, pr] = win.pads;
    let [kh, kw] = win.kernel;
    let oh = out_len(shape.h, pt, pb, kh, 1, s, false)?;
    let ow = out_len(shape.w, pl, pr, kw, 1, s, false)?;
    let k_n = p.in_channels * s * s;
    let x = |ic: usize, y: isize, xx: isize| -> f64 {
        if y < 0 || xx < 0 || y as usize >= shape.h || xx as usize >= shape.w {
            0.0
        } else {
            f64::from(input[(ic * shape.h + y as usize) * shape.w + xx as usize]).abs()
        }
    };
    // |U_k[ξ]| per output channel, `[oc][k][ξ]`.
    let mut u = vec![0.0; p.out_channels * k_n * a * a];
    for oc in 0..p.out_channels {
        let filter = conv.filter(oc);
        for k in 0..k_n {
            let (ic, py, px) = (k / (s * s), k / s % s, k % s);
            let gk = |i: usize, j: usize| {
                let (y, xx) = (s * i + py, s * j + px);
                if y < kh && xx < kw {
                    f64::from(filter[(ic * kh + y) * kw + xx])
                } else {
                    0.0
                }
            };
            for xi in 0..a * a {
                let (ea, eb) = (xi / a, xi % a);
                let mut v = 0.0;
                for i in 0..r {
                    for j in 0..r {
                        v += g[ea * r + i] * gk(i, j) * g[eb * r + j];
                    }
                }
                u[(oc * k_n + k) * a * a + xi] = v.abs();
            }
        }
    }
    let n = (k_n + 30) as f64 * f64::from(f32::EPSILON);
    let gamma = n / (1.0 - n);
    let mut bounds = vec![0.0; p.out_channels * oh * ow];
    let mut vabs = vec![0.0; k_n * a * a];
    for ty in (0..oh).step_by(m) {
        for tx in (0..ow).step_by(m) {
            // (|Bᵀ| |d_k| |B|)[ξ] of this tile, `[k][ξ]`.
            for k in 0..k_n {
                let (ic, py, px) = (k / (s * s), k / s % s, k % s);
                let d: Vec<f64> = (0..a * a)
                    .map(|q| {
                        let (i, j) = (q / a, q % a);
                        x(
                            ic,
                            (s * (ty + i) + py) as isize - pt as isize,
                            (s * (tx + j) + px) as isize - pl as isize,
                        )
                    })
                    .collect();
                for xi in 0..a * a {
                    let (ea, eb) = (xi / a, xi % a);
                    let mut v = 0.0;
                    for (q, dv) in d.iter().enumerate() {
                        v += bt[ea * a + q / a].abs() * dv * bt[eb * a + q % a].abs();
                    }
                    vabs[k * a * a + xi] = v;
                }
            }
            for oc in 0..p.out_channels {
                let prod: Vec<f64> = (0..a * a)
                    .map(|xi| {
                        (0..k_n)
                            .map(|k| u[(oc * k_n + k) * a * a + xi] * vabs[k * a * a + xi])
                            .sum()
                    })
                    .collect();
                let bias = f64::from(conv.bias_of(oc)).abs();
                for i in 0..m.min(oh - ty) {
                    for j in 0..m.min(ow - tx) {
                        let mag: f64 = (0..a * a)
                            .map(|xi| {
                                at[i * a + xi / a].abs() * at[j * a + xi % a].abs() * prod[xi]
                            })
                            .sum::<f64>()
                            + bias;
                        bounds[(oc * oh + ty + i) * ow + tx + j] = gamma * mag + 1e-30;
                    }
                }
            }
        }
    }
    Some(bounds)
}

/// A vision op ([`crate::vision::Vision`]) computed directly in `f64`:
/// 2-D sums over reflected neighbourhoods (not the separable passes the
/// fast kernels use), magnitudes for the tolerance. `None` when the op
/// cannot take the input.
pub fn vision(t: &RefTensor, op: &crate::vision::Vision) -> Option<RefTensor> {
    use crate::vision::{SobelMode, Vision, gaussian_kernel, gray_weights, reflect101};
    let s = t.shape;
    let out = op.output_shape(s).ok()?;
    let at = |c: usize, y: isize, x: isize| {
        let i = (c * s.h + reflect101(y, s.h)) * s.w + reflect101(x, s.w);
        (t.values[i], t.magnitude[i].max(t.values[i].abs()))
    };
    let mut values = Vec::with_capacity(out.len());
    let mut magnitude = Vec::with_capacity(out.len());
    // A sum of weighted neighbours: value and sum of |term|.
    let stencil = |c: usize, y: usize, x: usize, k: &dyn Fn(isize, isize) -> f64, r: isize| {
        let (mut v, mut m) = (0.0, 0.0);
        for dy in -r..=r {
            for dx in -r..=r {
                let wgt = k(dy, dx);
                if wgt != 0.0 {
                    let (x0, m0) = at(c, y as isize + dy, x as isize + dx);
                    v += wgt * x0;
                    m += (wgt * m0).abs();
                }
            }
        }
        (v, m)
    };
    match op {
        Vision::Resize { width, height } => {
            let xs = crate::vision::linear_taps(s.w, *width);
            let ys = crate::vision::linear_taps(s.h, *height);
            for c in 0..s.c {
                for &(sy, fy) in &ys {
                    for &(sx, fx) in &xs {
                        let (fx, fy) = (f64::from(fx), f64::from(fy));
                        let p = |y: usize, x: usize| {
                            at(c, y.min(s.h - 1) as isize, x.min(s.w - 1) as isize)
                        };
                        let (a, ma) = p(sy, sx);
                        let (b, mb) = p(sy, sx + 1);
                        let (cc, mc) = p(sy + 1, sx);
                        let (d, md) = p(sy + 1, sx + 1);
                        values.push(
                            (1.0 - fy) * ((1.0 - fx) * a + fx * b)
                                + fy * ((1.0 - fx) * cc + fx * d),
                        );
                        magnitude.push(ma.max(mb).max(mc).max(md));
                    }
                }
            }
        }
        _ => {
            for c in 0..out.c {
                for y in 0..s.h {
                    for x in 0..s.w {
                        let (v, m) = match op {
                            Vision::Gray { order } => {
                                let k = gray_weights(*order);
                                let mut v = 0.0;
                                let mut m = 0.0;
                                for (ch, &kc) in k.iter().enumerate() {
                                    let (x0, m0) = at(ch, y as isize, x as isize);
                                    v += f64::from(kc) * x0;
                                    m += (f64::from(kc) * m0).abs();
                                }
                                (v, m)
                            }
                            Vision::Normalize { scale, mean, std } => {
                                let mu = f64::from(mean[if mean.len() == 1 { 0 } else { c }]);
                                let sd = f64::from(std[if std.len() == 1 { 0 } else { c }]);
                                let (x0, m0) = at(c, y as isize, x as isize);
                                let sc = f64::from(*scale);
                                ((x0 * sc - mu) / sd, (m0 * sc.abs() + mu.abs()) / sd.abs())
                            }
                            Vision::GaussianBlur { ksize, sigma } => {
                                let g = gaussian_kernel(*ksize, *sigma);
                                let r = (ksize / 2) as isize;
                                let k = |dy: isize, dx: isize| {
                                    f64::from(g[(dy + r) as usize])
                                        * f64::from(g[(dx + r) as usize])
                                };
                                stencil(c, y, x, &k, r)
                            }
                            Vision::Sobel { mode } => {
                                let smooth = |d: isize| if d == 0 { 2.0 } else { 1.0 };
                                let kx = |dy: isize, dx: isize| dx as f64 * smooth(dy);
                                let ky = |dy: isize, dx: isize| dy as f64 * smooth(dx);
                                match mode {
                                    SobelMode::Dx => stencil(c, y, x, &kx, 1),
                                    SobelMode::Dy => stencil(c, y, x, &ky, 1),
                                    SobelMode::Magnitude => {
                                        let (gx, mx) = stencil(c, y, x, &kx, 1);
                                        let (gy, my) = stencil(c, y, x, &ky, 1);
                                        ((gx * gx + gy * gy).sqrt(), mx.max(my) * 2.0)
                                    }
                                }
                            }
                            Vision::Resize { .. } => unreachable!("handled above"),
                        };
                        values.push(v);
                        magnitude.push(m);
                    }
                }
            }
        }
    }
    Some(RefTensor {
        shape: out,
        values,
        magnitude,
    })
}
