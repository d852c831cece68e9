//! Vision preprocessing ops: colour to luma, per-channel normalisation,
//! bilinear resize, Gaussian blur and Sobel gradients — what runs on camera
//! frames before any CNN layer.
//!
//! Conventions follow OpenCV's functions on `float32` images, the reference
//! the tests compare with:
//! - borders are `BORDER_REFLECT_101` (`gfedcb|abcdefgh|gfedcba`), OpenCV's
//!   default for `GaussianBlur` and `Sobel`;
//! - separable filters run the horizontal pass first, then the vertical one;
//! - `resize` uses `INTER_LINEAR`'s pixel-centre mapping
//!   (`src = (dst + 0.5) * scale - 0.5`, clamped at the edges);
//! - the Gaussian kernel is `getGaussianKernel`'s (its fixed tables for
//!   sizes 3, 5 and 7 when no sigma is given).
//!
//! Frames stay `f32` `[C, H, W]`: a colour frame is three planes of 0–255
//! values in the order its `ColorOrder` names.

use crate::error::KernelError;
use crate::op::Pointwise;
use crate::tensor::Shape;

/// Order of the three colour planes of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (OpenCV's order).
    Bgr,
}

/// What a Sobel stage outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SobelMode {
    /// `d/dx`: `[-1 0 1]` across, `[1 2 1]` down.
    Dx,
    /// `d/dy`: `[1 2 1]` across, `[-1 0 1]` down.
    Dy,
    /// `sqrt(dx² + dy²)`.
    Magnitude,
}

impl SobelMode {
    /// Name in specs and reports.
    pub fn name(self) -> &'static str {
        match self {
            SobelMode::Dx => "dx",
            SobelMode::Dy => "dy",
            SobelMode::Magnitude => "magnitude",
        }
    }
}

/// A vision op.
#[derive(Debug, Clone, PartialEq)]
pub enum Vision {
    /// Luma from three colour planes, BT.601:
    /// `0.299 R + 0.587 G + 0.114 B`, summed in plane order.
    Gray {
        /// Order of the input planes.
        order: ColorOrder,
    },
    /// `(x * scale - mean[c]) / std[c]` on every value of plane `c`.
    Normalize {
        /// Applied first (`1/255` maps 0–255 to 0–1).
        scale: f32,
        /// Per-channel mean (one value applies to every channel).
        mean: Vec<f32>,
        /// Per-channel standard deviation (one value applies to every
        /// channel).
        std: Vec<f32>,
    },
    /// Bilinear resize to `width × height`.
    Resize {
        /// Output width.
        width: usize,
        /// Output height.
        height: usize,
    },
    /// Separable Gaussian blur.
    GaussianBlur {
        /// Kernel size (odd).
        ksize: usize,
        /// Standard deviation; `0` derives it from the size as OpenCV does.
        sigma: f32,
    },
    /// 3×3 Sobel gradient.
    Sobel {
        /// What to output.
        mode: SobelMode,
    },
}

impl Vision {
    /// Name in specs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Vision::Gray { .. } => "gray",
            Vision::Normalize { .. } => "normalize",
            Vision::Resize { .. } => "resize",
            Vision::GaussianBlur { .. } => "gaussian_blur",
            Vision::Sobel { .. } => "sobel",
        }
    }

    /// Rows above and below an output row that it reads (its vertical
    /// reach); `None` for `resize`, whose rows are not the input's.
    pub fn reach(&self) -> Option<usize> {
        match self {
            Vision::Gray { .. } | Vision::Normalize { .. } => Some(0),
            Vision::GaussianBlur { ksize, .. } => Some(ksize / 2),
            Vision::Sobel { .. } => Some(1),
            Vision::Resize { .. } => None,
        }
    }

    /// Checks the parameters against an input shape and returns the
    /// output shape.
    ///
    /// # Errors
    /// [`KernelError::Param`] naming what is wrong.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        let bad = |what: String| KernelError::BadParam {
            op: self.name(),
            what,
        };
        if input.h == 0 || input.w == 0 {
            return Err(bad(format!("empty input {input}")));
        }
        match self {
            Vision::Gray { .. } => {
                if input.c != 3 {
                    return Err(KernelError::Channels {
                        op: "gray",
                        expected: 3,
                        got: input.c,
                    });
                }
                Ok(Shape::new(1, input.h, input.w))
            }
            Vision::Normalize { scale, mean, std } => {
                for (name, v) in [("mean", mean), ("std", std)] {
                    if v.len() != 1 && v.len() != input.c {
                        return Err(bad(format!(
                            "{name} has {} values for {} channels (give 1 or {})",
                            v.len(),
                            input.c,
                            input.c
                        )));
                    }
                }
                if !scale.is_finite() || mean.iter().any(|m| !m.is_finite()) {
                    return Err(bad("scale and mean must be finite".into()));
                }
                if std.iter().any(|s| !s.is_finite() || *s == 0.0) {
                    return Err(bad("std must be finite and non-zero".into()));
                }
                Ok(input)
            }
            Vision::Resize { width, height } => {
                if *width == 0 || *height == 0 {
                    return Err(bad(format!("output size {width}x{height} is empty")));
                }
                Ok(Shape::new(input.c, *height, *width))
            }
            Vision::GaussianBlur { ksize, sigma } => {
                if ksize % 2 == 0 {
                    return Err(bad(format!("kernel size {ksize} must be odd")));
                }
                if !sigma.is_finite() || *sigma < 0.0 {
                    return Err(bad(format!("sigma {sigma} must be ≥ 0")));
                }
                if *ksize > 2 * input.h.min(input.w) - 1 {
                    return Err(bad(format!(
                        "kernel size {ksize} is too large for input {input} (reflected borders)"
                    )));
                }
                Ok(input)
            }
            Vision::Sobel { .. } => {
                if input.h < 2 || input.w < 2 {
                    return Err(bad(format!("input {input} is smaller than 2x2")));
                }
                Ok(input)
            }
        }
    }

    /// Floating-point operations per frame.
    ///
    /// # Errors
    /// As [`Vision::output_shape`].
    pub fn flops(&self, input: Shape) -> Result<u64, KernelError> {
        let out = self.output_shape(input)?;
        let n = out.len() as u64;
        Ok(match self {
            Vision::Gray { .. } => 5 * n,
            Vision::Normalize { .. } => 2 * n,
            Vision::Resize { .. } => 6 * n,
            Vision::GaussianBlur { ksize, .. } => 2 * (2 * *ksize as u64 - 1) * n,
            Vision::Sobel { mode } => match mode {
                SobelMode::Dx | SobelMode::Dy => 6 * n,
                SobelMode::Magnitude => 15 * n,
            },
        })
    }
}

/// A step of a fused vision chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A vision op that keeps rows where they are (not `resize`).
    Vision(Vision),
    /// A pointwise op.
    Pointwise(Pointwise),
}

impl Step {
    /// Rows above and below an output row the step reads.
    pub fn reach(&self) -> usize {
        match self {
            Step::Vision(v) => v.reach().unwrap_or(0),
            Step::Pointwise(_) => 0,
        }
    }

    /// Output shape for `input`.
    ///
    /// # Errors
    /// [`KernelError`] when the step cannot take `input` (or is a resize).
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        match self {
            Step::Vision(v) if v.reach().is_none() => Err(KernelError::BadParam {
                op: v.name(),
                what: "changes the frame size, so it cannot be a step of a row chain".into(),
            }),
            Step::Vision(v) => v.output_shape(input),
            Step::Pointwise(p) => {
                p.check()?;
                Ok(input)
            }
        }
    }

    /// Name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Vision(v) => v.name(),
            Step::Pointwise(p) => p.name(),
        }
    }
}

/// Weights of the three planes for luma, in plane order.
pub fn gray_weights(order: ColorOrder) -> [f32; 3] {
    match order {
        ColorOrder::Rgb => [0.299, 0.587, 0.114],
        ColorOrder::Bgr => [0.114, 0.587, 0.299],
    }
}

/// The Gaussian kernel OpenCV's `getGaussianKernel(ksize, sigma, CV_32F)`
/// returns: its fixed tables for sizes 1, 3, 5 and 7 when `sigma` is 0,
/// else `exp(-x² / 2σ²)` (σ from the size when 0), normalised to sum 1.
pub fn gaussian_kernel(ksize: usize, sigma: f32) -> Vec<f32> {
    const TABLES: [&[f32]; 4] = [
        &[1.0],
        &[0.25, 0.5, 0.25],
        &[0.0625, 0.25, 0.375, 0.25, 0.0625],
        &[
            0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125,
        ],
    ];
    if ksize % 2 == 1 && ksize <= 7 && sigma <= 0.0 {
        return TABLES[ksize / 2].to_vec();
    }
    let s = if sigma > 0.0 {
        f64::from(sigma)
    } else {
        ((ksize as f64 - 1.0) * 0.5 - 1.0) * 0.3 + 0.8
    };
    let scale2 = -0.5 / (s * s);
    let mut k: Vec<f32> = (0..ksize)
        .map(|i| {
            let x = i as f64 - (ksize as f64 - 1.0) * 0.5;
            (scale2 * x * x).exp() as f32
        })
        .collect();
    let sum: f64 = k.iter().map(|&v| f64::from(v)).sum();
    for v in &mut k {
        *v = (f64::from(*v) / sum) as f32;
    }
    k
}

/// OpenCV's `BORDER_REFLECT_101` index for position `i` (may be negative
/// or past the end) in a line of `n` values.
#[inline(always)]
pub fn reflect101(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let mut i = i;
    // Repeated reflection, for reaches longer than the line.
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * n - 2 - i;
        } else {
            return i as usize;
        }
    }
}

/// `INTER_LINEAR` source positions for `dst` outputs from `src` inputs:
/// for each output, the first source index and the weight of the second
/// (the first weighs `1 - w`); at the edges the index is clamped and the
/// weight is 0.
pub fn linear_taps(src: usize, dst: usize) -> Vec<(usize, f32)> {
    // As OpenCV: the inverse of the inverse scale.
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut i = f.floor();
            let mut w = f - i;
            if i < 0.0 {
                i = 0.0;
                w = 0.0;
            }
            let mut i = i as usize;
            if i + 1 >= src {
                i = src - 1;
                w = 0.0;
            }
            (i, w)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect101_mirrors_without_repeating_the_edge() {
        let idx: Vec<usize> = (-3..8).map(|i| reflect101(i, 5)).collect();
        assert_eq!(idx, [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(reflect101(-1, 1), 0);
    }

    #[test]
    fn gaussian_kernels_sum_to_one_and_match_the_tables() {
        assert_eq!(gaussian_kernel(5, 0.0), [0.0625, 0.25, 0.375, 0.25, 0.0625]);
        for (k, s) in [(5, 1.0), (9, 0.0), (7, 2.5), (3, 0.3)] {
            let g = gaussian_kernel(k, s);
            let sum: f64 = g.iter().map(|&v| f64::from(v)).sum();
            assert!((sum - 1.0).abs() < 1e-6, "{k} {s}: {sum}");
            for i in 0..k / 2 {
                assert_eq!(g[i], g[k - 1 - i], "{k} {s}: symmetric");
                assert!(g[i] <= g[i + 1], "{k} {s}: rises to the centre");
            }
        }
    }

    #[test]
    fn linear_taps_use_pixel_centres() {
        // Halving: each output sits between two inputs, weight one half.
        assert_eq!(linear_taps(4, 2), [(0, 0.5), (2, 0.5)]);
        // Doubling: centres at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        assert_eq!(
            linear_taps(2, 4),
            [(0, 0.0), (0, 0.25), (0, 0.75), (1, 0.0)]
        );
    }
}
