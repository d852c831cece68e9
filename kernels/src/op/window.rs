//! Sliding-window geometry shared by convolution and pooling: a kernel,
//! strides, dilations and zero padding per side, as the ONNX operator spec
//! gives them in 2-D.

use crate::error::KernelError;
use crate::tensor::Shape;

/// A 2-D sliding window: kernel, strides, dilations and padding per side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Step between windows, rows then columns.
    pub stride: [usize; 2],
    /// Distance between taps, rows then columns (1: adjacent).
    pub dilation: [usize; 2],
    /// Zero padding: top, left, bottom, right (ONNX's `pads` order).
    pub pads: [usize; 4],
}

impl Window {
    /// A square `k`×`k` window with stride `s` and padding `p` on every side.
    pub const fn square(k: usize, s: usize, p: usize) -> Self {
        Self {
            kernel: [k, k],
            stride: [s, s],
            dilation: [1, 1],
            pads: [p, p, p, p],
        }
    }

    /// Rows then columns spanned by one window (`(k - 1) * d + 1`).
    pub const fn extent(&self) -> [usize; 2] {
        [
            (self.kernel[0].saturating_sub(1)) * self.dilation[0] + 1,
            (self.kernel[1].saturating_sub(1)) * self.dilation[1] + 1,
        ]
    }

    /// Whether the padding is 0 on every side.
    pub fn unpadded(&self) -> bool {
        self.pads == [0; 4]
    }

    /// Whether the window is square and undilated, with the same stride on
    /// both axes and the same padding on every side.
    pub fn symmetric(&self) -> bool {
        let [t, l, b, r] = self.pads;
        self.kernel[0] == self.kernel[1]
            && self.stride[0] == self.stride[1]
            && self.dilation == [1, 1]
            && t == l
            && l == b
            && b == r
    }

    /// Checks the parameters: every kernel side, stride and dilation at
    /// least 1 and no padding larger than the window's extent on its axis
    /// (pools ask for less: [`Window::check_pool`]).
    ///
    /// # Errors
    /// [`KernelError::BadParam`] naming what is wrong.
    pub fn check(&self, op: &'static str) -> Result<(), KernelError> {
        let bad = |what: String| Err(KernelError::BadParam { op, what });
        if self.kernel.contains(&0) {
            return bad(format!(
                "kernel {}x{} has a zero side",
                self.kernel[0], self.kernel[1]
            ));
        }
        if self.stride.contains(&0) {
            return bad("stride must be at least 1".into());
        }
        if self.dilation.contains(&0) {
            return bad("dilation must be at least 1".into());
        }
        let ext = self.extent();
        for (i, &p) in self.pads.iter().enumerate() {
            let e = ext[i % 2];
            if p > e {
                let side = ["top", "left", "bottom", "right"][i];
                return bad(format!(
                    "padding {p} on the {side} is larger than the window's extent {e} \
                     (kernel {} dilated by {})",
                    self.kernel[i % 2],
                    self.dilation[i % 2]
                ));
            }
        }
        Ok(())
    }

    /// [`Window::check`], and each padding smaller than the window's extent:
    /// a pooling window that lies wholly in the padding has no value to take.
    ///
    /// # Errors
    /// [`KernelError::BadParam`] naming what is wrong.
    pub fn check_pool(&self, op: &'static str) -> Result<(), KernelError> {
        self.check(op)?;
        let ext = self.extent();
        for (i, &p) in self.pads.iter().enumerate() {
            if p >= ext[i % 2] {
                let side = ["top", "left", "bottom", "right"][i];
                return Err(KernelError::BadParam {
                    op,
                    what: format!(
                        "padding {p} on the {side} is not smaller than the window's extent {}",
                        ext[i % 2]
                    ),
                });
            }
        }
        Ok(())
    }

    /// Output rows and columns for an input of `h`×`w`; `ceil` rounds
    /// partial windows up (ONNX `ceil_mode`), dropping a last window that
    /// would start in the bottom or right padding.
    ///
    /// # Errors
    /// [`KernelError`] when a parameter is invalid or the window does not
    /// fit the padded input.
    pub fn output_hw(
        &self,
        op: &'static str,
        input: Shape,
        ceil: bool,
    ) -> Result<[usize; 2], KernelError> {
        self.check(op)?;
        let ext = self.extent();
        let [t, l, b, r] = self.pads;
        let padded = [input.h + t + b, input.w + l + r];
        if ext[0] > padded[0] || ext[1] > padded[1] {
            return Err(KernelError::WindowTooLarge {
                op,
                window_h: ext[0],
                window_w: ext[1],
                input,
                padded_h: padded[0],
                padded_w: padded[1],
            });
        }
        let lens = [input.h, input.w];
        let lead = [t, l];
        Ok(std::array::from_fn(|a| {
            let span = padded[a] - ext[a];
            let s = self.stride[a];
            if ceil {
                let mut n = span.div_ceil(s) + 1;
                if (n - 1) * s >= lens[a] + lead[a] {
                    n -= 1;
                }
                n
            } else {
                span / s + 1
            }
        }))
    }

    /// Padding that makes the output `ceil(len / stride)` on each axis of
    /// `input` (ONNX `auto_pad` `SAME_UPPER`, or `SAME_LOWER` when `lower`):
    /// the odd unit goes at the end (upper) or the start (lower).
    pub fn same_pads(
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        input: Shape,
        lower: bool,
    ) -> [usize; 4] {
        let lens = [input.h, input.w];
        let mut pads = [0; 4];
        for a in 0..2 {
            let s = stride[a].max(1);
            let ext = kernel[a].saturating_sub(1) * dilation[a] + 1;
            let out = lens[a].div_ceil(s);
            let total = ((out.max(1) - 1) * s + ext).saturating_sub(lens[a]);
            let (small, big) = (total / 2, total - total / 2);
            let (head, tail) = if lower { (big, small) } else { (small, big) };
            pads[a] = head;
            pads[a + 2] = tail;
        }
        pads
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.kernel[0], self.kernel[1])?;
        if self.stride != [1, 1] {
            write!(f, "/{}x{}", self.stride[0], self.stride[1])?;
        }
        if self.dilation != [1, 1] {
            write!(f, " dil {}x{}", self.dilation[0], self.dilation[1])?;
        }
        if !self.unpadded() {
            let [t, l, b, r] = self.pads;
            write!(f, " pad {t},{l},{b},{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_ceil_sizes() {
        let w = Window::square(3, 2, 0);
        let s = Shape::new(1, 6, 6);
        assert_eq!(w.output_hw("t", s, false).unwrap(), [2, 2]);
        assert_eq!(w.output_hw("t", s, true).unwrap(), [3, 3]);
        // A last window that would start in the padding is dropped.
        let w = Window::square(2, 2, 1);
        let s = Shape::new(1, 3, 3);
        assert_eq!(w.output_hw("t", s, true).unwrap(), [2, 2]);
    }

    #[test]
    fn same_pads_match_onnx() {
        let s = Shape::new(1, 5, 6);
        let p = Window::same_pads([3, 3], [2, 2], [1, 1], s, false);
        // Rows: out 3, total (3-1)*2+3-5 = 2 -> 1,1; cols: out 3, total 1 -> 0,1.
        assert_eq!(p, [1, 0, 1, 1]);
        let p = Window::same_pads([3, 3], [2, 2], [1, 1], s, true);
        assert_eq!(p, [1, 1, 1, 0]);
    }

    #[test]
    fn padding_must_not_exceed_the_extent() {
        let mut w = Window::square(3, 1, 4);
        assert!(w.check("t").is_err());
        w.pads = [3; 4];
        assert!(w.check("t").is_ok());
        assert!(w.check_pool("t").is_err());
        w.dilation = [2, 2];
        assert!(w.check_pool("t").is_ok());
    }
}
