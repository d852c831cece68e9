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

/// Largest allowed `|fast - reference|` for an output of a Winograd
/// F(2×2, 3×3) convolution ([`crate::ConvAlgorithm::Winograd`]) with
/// `in_channels` inputs, where `patch_magnitude` is `Σ_ic (Σ |g_ic|) (Σ
/// |d_ic|)` over the filter `g` of the output's channel and the 4×4 input
/// patch `d` of its tile (tiles start at even rows and columns), plus the
/// bias's magnitude. Every transformed value is a signed sum of at most 4
/// inputs (or, for the weights, bounded by `Σ |g|`), and an output sums 9
/// products per input channel, so the exact products sum to at most `9 x
/// patch_magnitude`; the `in_channels` multiply-adds per product and the
/// at most 10 additions of the transforms and the bias each add at most
/// one ulp of it.
pub fn winograd_tolerance(in_channels: usize, patch_magnitude: f64) -> f64 {
    9.0 * (in_channels as f64 + 10.0) * f64::from(f32::EPSILON) * patch_magnitude + 1e-30
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
