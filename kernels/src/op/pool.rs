//! 2-D pooling: max and average over a sliding window (ONNX `MaxPool` and
//! `AveragePool` in 2-D: kernel, strides, dilations, padding per side,
//! `ceil_mode`, `count_include_pad`), and the global pools as windows the
//! size of the input.

use super::window::Window;
use crate::error::KernelError;
use crate::tensor::Shape;

/// What a pool computes over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// The largest value; padding never wins.
    Max,
    /// The mean.
    Avg {
        /// Divide by the taps inside the padded input (`true`) or only by
        /// those inside the input (`false`, ONNX's default).
        count_include_pad: bool,
    },
}

/// A pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2d {
    /// Max or average.
    pub kind: PoolKind,
    /// Kernel, strides, dilations and padding.
    pub window: Window,
    /// Round partial windows up (ONNX `ceil_mode`).
    pub ceil_mode: bool,
}

impl Pool2d {
    /// A square max pool with no padding, floor mode (the classic one).
    pub const fn max(size: usize, stride: usize) -> Self {
        Self {
            kind: PoolKind::Max,
            window: Window::square(size, stride, 0),
            ceil_mode: false,
        }
    }

    /// A window covering the whole of an `h`×`w` input (global pooling).
    pub const fn global(kind: PoolKind, h: usize, w: usize) -> Self {
        Self {
            kind,
            window: Window {
                kernel: [h, w],
                stride: [1, 1],
                dilation: [1, 1],
                pads: [0; 4],
            },
            ceil_mode: false,
        }
    }

    /// Short name.
    pub fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "maxpool",
            PoolKind::Avg { .. } => "avgpool",
        }
    }

    /// Whether the pool is the plain square, unpadded, undilated max pool
    /// in floor mode that every backend's fused kernels handle.
    pub fn is_simple_max(&self) -> bool {
        self.kind == PoolKind::Max
            && self.window.symmetric()
            && self.window.unpadded()
            && !self.ceil_mode
    }

    /// Window side for a simple max pool (the kernel's height).
    pub fn size(&self) -> usize {
        self.window.kernel[0]
    }

    /// Taps per window.
    pub fn taps(&self) -> usize {
        self.window.kernel[0] * self.window.kernel[1]
    }

    /// Output shape for `input`.
    ///
    /// # Errors
    /// [`KernelError`] when a parameter is invalid or the window does not
    /// fit the padded input.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        self.window.check_pool(self.name())?;
        let [h, w] = self.window.output_hw(self.name(), input, self.ceil_mode)?;
        Ok(Shape::new(input.c, h, w))
    }

    /// Floating-point operations per frame for `input`: a max compares
    /// `taps - 1` times per output; an average adds `taps - 1` times and
    /// divides once.
    ///
    /// # Errors
    /// As [`Pool2d::output_shape`].
    pub fn flops(&self, input: Shape) -> Result<u64, KernelError> {
        let out = self.output_shape(input)?;
        let per = match self.kind {
            PoolKind::Max => self.taps().saturating_sub(1),
            PoolKind::Avg { .. } => self.taps(),
        };
        Ok((out.len() * per) as u64)
    }
}

/// The taps of one axis of one window: `(first, count)` of the input
/// positions `o * stride - pad + k * dilation` (`k < kernel`) that lie in
/// `0..len`, and the number of positions inside the padded input
/// (`count_include_pad`'s divisor), for output position `o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisTaps {
    /// Index of the first valid tap (`k`), when there is one.
    pub k0: usize,
    /// Valid taps, from `k0`, every `dilation`.
    pub n: usize,
    /// Taps inside the padded input (`pad + len + pad_end`).
    pub padded: usize,
}

impl AxisTaps {
    /// The taps of output position `o` along an axis of length `len`.
    #[allow(clippy::too_many_arguments)]
    pub fn of(
        o: usize,
        len: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pad: usize,
        pad_end: usize,
    ) -> Self {
        let start = (o * stride) as isize - pad as isize;
        let d = dilation as isize;
        let (mut k0, mut n, mut padded) = (None, 0, 0);
        for k in 0..kernel {
            let p = start + k as isize * d;
            if p < (len + pad_end) as isize {
                padded += 1;
            }
            if p >= 0 && p < len as isize {
                if k0.is_none() {
                    k0 = Some(k);
                }
                n += 1;
            }
        }
        Self {
            k0: k0.unwrap_or(0),
            n,
            padded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet_stem_pool_shape() {
        let mut p = Pool2d::max(3, 2);
        p.window.pads = [1; 4];
        assert_eq!(
            p.output_shape(Shape::new(64, 360, 640)).unwrap(),
            Shape::new(64, 180, 320)
        );
        assert!(!p.is_simple_max());
    }

    #[test]
    fn axis_taps_count_padding() {
        // len 5, k 3, s 2, pad 1 each side, position 0: taps -1, 0, 1.
        let t = AxisTaps::of(0, 5, 3, 2, 1, 1, 1);
        assert_eq!((t.k0, t.n, t.padded), (1, 2, 3));
        // ceil mode overhang: position 3 starts at 5 (past the end padding 1 -> 1 padded tap).
        let t = AxisTaps::of(3, 5, 3, 2, 1, 1, 0);
        assert_eq!((t.n, t.padded), (0, 0));
    }
}
