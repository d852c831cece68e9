//! Naive, obviously-correct references, accumulating in `f64`. Used only to
//! check the fast kernels (and, later, the CUDA kernels); never on a hot path.
//!
//! Each function returns the exact-as-possible values and, where rounding
//! depends on the summation, the sum of the magnitudes of the terms, from
//! which a test derives its tolerance.

use crate::op::{Conv2d, MaxPoolParams};
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

/// Direct convolution, zero padding, floor output size. `None` when the
/// kernel does not fit.
pub fn conv2d(input: &[f32], shape: Shape, conv: &Conv2d) -> Option<RefTensor> {
    let p = conv.params;
    if shape.c != p.in_channels || p.stride == 0 {
        return None;
    }
    let ph = shape.h + 2 * p.padding;
    let pw = shape.w + 2 * p.padding;
    if p.kernel_h > ph || p.kernel_w > pw {
        return None;
    }
    let oh = (ph - p.kernel_h) / p.stride + 1;
    let ow = (pw - p.kernel_w) / p.stride + 1;
    let out = Shape::new(p.out_channels, oh, ow);
    let mut values = Vec::with_capacity(out.len());
    let mut magnitude = Vec::with_capacity(out.len());
    for oc in 0..p.out_channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let b = f64::from(conv.bias_of(oc));
                let (mut sum, mut mag) = (b, b.abs());
                for ic in 0..p.in_channels {
                    for ky in 0..p.kernel_h {
                        for kx in 0..p.kernel_w {
                            let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                            let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                            if iy < 0 || ix < 0 || iy >= shape.h as isize || ix >= shape.w as isize
                            {
                                continue;
                            }
                            let x = input[(ic * shape.h + iy as usize) * shape.w + ix as usize];
                            let w = conv.weights
                                [((oc * p.in_channels + ic) * p.kernel_h + ky) * p.kernel_w + kx];
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

/// Max pooling, floor mode. The magnitude of an output is the largest
/// magnitude in its window. `None` when the window does not fit.
pub fn maxpool(t: &RefTensor, p: &MaxPoolParams) -> Option<RefTensor> {
    let s = t.shape;
    if p.size == 0 || p.stride == 0 || p.size > s.h || p.size > s.w {
        return None;
    }
    let oh = (s.h - p.size) / p.stride + 1;
    let ow = (s.w - p.size) / p.stride + 1;
    let out = Shape::new(s.c, oh, ow);
    let mut values = Vec::with_capacity(out.len());
    let mut magnitude = Vec::with_capacity(out.len());
    for c in 0..s.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f64::NEG_INFINITY;
                let mut mag = 0.0f64;
                for dy in 0..p.size {
                    for dx in 0..p.size {
                        let i = (c * s.h + oy * p.stride + dy) * s.w + ox * p.stride + dx;
                        m = m.max(t.values[i]);
                        mag = mag.max(t.magnitude[i]);
                    }
                }
                values.push(m);
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
