//! 2-D convolution: geometry (ONNX `Conv` in 2-D: kernel, strides,
//! dilations, padding per side, groups) and weights.

use std::sync::{Arc, Mutex};

use super::window::Window;
use crate::error::KernelError;
use crate::tensor::Shape;

const OP: &str = "conv2d";

/// Geometry of a 2-D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Channel groups: output channels of group `g` read input channels
    /// `g * in/groups ..` only (1: dense; `in`: depthwise).
    pub groups: usize,
    /// Kernel, strides, dilations and padding.
    pub window: Window,
}

impl Conv2dParams {
    /// A dense square convolution: `k`×`k`, stride `stride`, zero padding
    /// `padding` on every side, no dilation.
    pub const fn square(
        in_channels: usize,
        out_channels: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            groups: 1,
            window: Window::square(k, stride, padding),
        }
    }

    /// Kernel height.
    pub const fn kernel_h(&self) -> usize {
        self.window.kernel[0]
    }

    /// Kernel width.
    pub const fn kernel_w(&self) -> usize {
        self.window.kernel[1]
    }

    /// Input channels each output channel reads (`in / groups`).
    pub const fn in_per_group(&self) -> usize {
        match self.in_channels.checked_div(self.groups) {
            Some(n) => n,
            None => 0,
        }
    }

    /// Output channels per group (`out / groups`).
    pub const fn out_per_group(&self) -> usize {
        match self.out_channels.checked_div(self.groups) {
            Some(n) => n,
            None => 0,
        }
    }

    /// The first input channel output channel `oc` reads.
    pub const fn first_input(&self, oc: usize) -> usize {
        match oc.checked_div(self.out_per_group()) {
            Some(g) => g * self.in_per_group(),
            None => 0,
        }
    }

    /// Values per output channel's filter (`in/groups * kh * kw`).
    pub const fn filter_len(&self) -> usize {
        self.in_per_group() * self.window.kernel[0] * self.window.kernel[1]
    }

    /// Number of weight values (`out * in/groups * kh * kw`).
    pub const fn weight_len(&self) -> usize {
        self.out_channels * self.filter_len()
    }

    /// Whether each output channel reads exactly one input channel of its
    /// own (`groups == in_channels`), with any channel multiplier.
    pub const fn depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels
    }

    /// Checks the parameters alone (no input).
    ///
    /// # Errors
    /// [`KernelError::BadParam`] when a size is zero, the groups do not
    /// divide both channel counts, or the window is invalid.
    pub fn check(&self) -> Result<(), KernelError> {
        let bad = |what: String| Err(KernelError::BadParam { op: OP, what });
        if self.out_channels == 0 || self.in_channels == 0 {
            return bad("in_channels and out_channels must be at least 1".into());
        }
        if self.groups == 0 {
            return bad("groups must be at least 1".into());
        }
        if !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return bad(format!(
                "groups {} must divide in_channels {} and out_channels {}",
                self.groups, self.in_channels, self.out_channels
            ));
        }
        self.window.check(OP)
    }

    /// Output shape for `input`.
    ///
    /// # Errors
    /// [`KernelError`] when channels differ, a parameter is invalid, or the
    /// kernel does not fit the padded input.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        self.check()?;
        if input.c != self.in_channels {
            return Err(KernelError::Channels {
                op: OP,
                expected: self.in_channels,
                got: input.c,
            });
        }
        let [h, w] = self.window.output_hw(OP, input, false)?;
        Ok(Shape::new(self.out_channels, h, w))
    }
}

/// A 2-D convolution with its weights (`[out, in/groups, kh, kw]`) and
/// optional bias (`[out]`). Cheap to clone: the weights are shared.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// Geometry.
    pub params: Conv2dParams,
    /// Weights, `[out, in/groups, kh, kw]` row-major.
    pub weights: Arc<[f32]>,
    /// Bias per output channel.
    pub bias: Option<Arc<[f32]>>,
    /// The CPU algorithm asked for (`None`: the CPU's cost model picks,
    /// [`crate::cpu::conv::algorithm`]). The direct algorithms (rows,
    /// panel, depthwise) compute the same values bit for bit on one SIMD
    /// level; Winograd agrees with them within its stated tolerance.
    pub algorithm: Option<ConvAlgorithm>,
    /// The arithmetic a backend may use ([`Precision::F32`] unless a spec
    /// opts in to f16).
    pub precision: Precision,
    /// The weights in a backend's packed layout, made once on first use
    /// ([`Conv2d::packed_with`]).
    packed: PackCache,
}

/// The arithmetic a convolution may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 throughout (the default).
    #[default]
    F32,
    /// Opt-in: where a backend has tensor cores (CUDA, sm_70 and later), the
    /// implicit-GEMM convolution rounds its inputs and weights to f16 and
    /// accumulates in f32, within [`crate::reference::f16_tolerance`] of
    /// the exact result. Backends without them (the CPU) compute in f32,
    /// which is within that tolerance too. Values must fit f16 (|x| <
    /// 65504).
    F16,
}

impl Precision {
    /// Name in specs, plans and reports.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// The precision named `s` (as [`Precision::name`] gives it).
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::F32, Self::F16].into_iter().find(|p| p.name() == s)
    }
}

/// How the CPU computes a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvAlgorithm {
    /// One output row at a time in 128-column tiles, 4 output channels per
    /// register block: few output channels, wide rows.
    Rows,
    /// Blocks of flattened output pixels (no per-row padding to a tile)
    /// against weights packed once, 6 output channels per register block:
    /// many channels, any width.
    Panel,
    /// Depthwise (one input channel per output channel, column stride 1),
    /// channel by channel over row bands.
    Depthwise,
    /// Winograd, no dilation, one group: F(4×4, 3×3) or, for small
    /// outputs, F(2×2, 3×3) for 3×3 kernels at stride 1 (4× or 2.25× fewer
    /// multiply-adds), F(4×4, 4×4) on stride phases
    /// for 5 to 8 taps per axis at stride 2 (3× fewer for a 7×7); within a
    /// stated tolerance of the direct algorithms rather than bit-identical
    /// (KERNELS.md).
    Winograd,
}

impl ConvAlgorithm {
    /// Name in specs, plans and reports.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Rows => "rows",
            ConvAlgorithm::Panel => "panel",
            ConvAlgorithm::Depthwise => "depthwise",
            ConvAlgorithm::Winograd => "winograd",
        }
    }

    /// The algorithm named `s` (as [`ConvAlgorithm::name`] gives it).
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Rows, Self::Panel, Self::Depthwise, Self::Winograd]
            .into_iter()
            .find(|a| a.name() == s)
    }
}

/// Lazily packed copies of a convolution's weights, one per layout, shared
/// by its clones (which share the weights), keyed by the layout's name and
/// the weights they were made from.
#[derive(Clone, Default)]
struct PackCache(Arc<Mutex<Vec<PackedCopy>>>);

/// One packed copy: its layout's name, the address of the weights it was
/// made from, and the packed values.
type PackedCopy = (&'static str, usize, Arc<[f32]>);

impl PartialEq for PackCache {
    /// Derived data: two convolutions are equal by their weights alone.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let copies = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let names: Vec<&str> = copies.iter().map(|c| c.0).collect();
        write!(f, "packed{names:?}")
    }
}

impl Conv2d {
    /// Builds a convolution, checking the geometry and the weight and bias
    /// lengths.
    ///
    /// # Errors
    /// [`KernelError::BadParam`] when the geometry is invalid or a length
    /// does not match it.
    pub fn new(
        params: Conv2dParams,
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self, KernelError> {
        params.check()?;
        if weights.len() != params.weight_len() {
            return Err(KernelError::BadParam {
                op: OP,
                what: format!(
                    "weights have {} values, [{}, {}, {}, {}] needs {}",
                    weights.len(),
                    params.out_channels,
                    params.in_per_group(),
                    params.kernel_h(),
                    params.kernel_w(),
                    params.weight_len()
                ),
            });
        }
        if let Some(b) = &bias
            && b.len() != params.out_channels
        {
            return Err(KernelError::BadParam {
                op: OP,
                what: format!(
                    "bias has {} values, out_channels is {}",
                    b.len(),
                    params.out_channels
                ),
            });
        }
        Ok(Self {
            params,
            weights: weights.into(),
            bias: bias.map(Into::into),
            algorithm: None,
            precision: Precision::F32,
            packed: PackCache::default(),
        })
    }

    /// The convolution with the CPU algorithm `algorithm` asked for
    /// (`None`: the cost model picks).
    #[must_use]
    pub fn with_algorithm(mut self, algorithm: Option<ConvAlgorithm>) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The convolution with arithmetic `precision` allowed.
    #[must_use]
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The weights packed by `pack` in the layout named `layout`, computed
    /// on the first call and reused after (a weight update builds a new
    /// convolution, so packing happens once per set of weights and layout,
    /// never per frame). Every caller naming `layout` must pass the same
    /// `pack`.
    pub(crate) fn packed_with(
        &self,
        layout: &'static str,
        pack: fn(&Conv2d) -> Vec<f32>,
    ) -> Arc<[f32]> {
        let key = self.weights.as_ptr() as usize;
        let mut copies = self
            .packed
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Copies made from weights replaced behind the cache's back are stale.
        copies.retain(|c| c.1 == key);
        if let Some(c) = copies.iter().find(|c| c.0 == layout) {
            return Arc::clone(&c.2);
        }
        let data: Arc<[f32]> = pack(self).into();
        copies.push((layout, key, Arc::clone(&data)));
        data
    }

    /// The filter of output channel `oc` (`[in/groups, kh, kw]`).
    pub fn filter(&self, oc: usize) -> &[f32] {
        let n = self.params.filter_len();
        &self.weights[oc * n..(oc + 1) * n]
    }

    /// The bias of output channel `oc` (0 without bias).
    pub fn bias_of(&self, oc: usize) -> f32 {
        self.bias.as_ref().map_or(0.0, |b| b[oc])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_must_divide_channels() {
        let mut p = Conv2dParams::square(6, 4, 3, 1, 1);
        p.groups = 4;
        let e = p.check().unwrap_err().to_string();
        assert!(e.contains("groups 4 must divide"), "{e}");
        p.groups = 2;
        assert_eq!(p.filter_len(), 27);
        assert_eq!(p.first_input(3), 3);
    }

    #[test]
    fn dilated_asymmetric_output() {
        let mut p = Conv2dParams::square(1, 1, 3, 1, 0);
        p.window.dilation = [2, 1];
        p.window.pads = [1, 0, 2, 1];
        p.window.stride = [2, 3];
        // rows: 10 + 3 - 5 = 8, /2 + 1 = 5; cols: 10 + 1 - 3 = 8, /3 + 1 = 3
        assert_eq!(
            p.output_shape(Shape::new(1, 10, 10)).unwrap(),
            Shape::new(1, 5, 3)
        );
    }
}
