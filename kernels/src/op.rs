//! Ops: typed parameters, output shapes, FLOPs and bytes, and dispatch to the
//! CPU backend.

use std::sync::Arc;

use crate::cpu;
use crate::error::KernelError;
use crate::tensor::{Shape, Tensor};
use crate::vision::{Step, Vision};

/// Geometry of a 2-D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl Conv2dParams {
    /// Values per output channel's filter (`in_channels * kh * kw`).
    pub const fn filter_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Number of weight values (`out * in * kh * kw`).
    pub const fn weight_len(&self) -> usize {
        self.out_channels * self.filter_len()
    }

    /// Output shape for `input`.
    ///
    /// # Errors
    /// [`KernelError`] when channels differ, a parameter is zero, or the
    /// kernel does not fit the padded input.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        const OP: &str = "conv2d";
        if self.kernel_h == 0 || self.kernel_w == 0 || self.stride == 0 || self.out_channels == 0 {
            return Err(KernelError::BadParam {
                op: OP,
                what: "kernel, stride and out_channels must be at least 1".into(),
            });
        }
        if input.c != self.in_channels {
            return Err(KernelError::Channels {
                op: OP,
                expected: self.in_channels,
                got: input.c,
            });
        }
        let (ph, pw) = (input.h + 2 * self.padding, input.w + 2 * self.padding);
        if self.kernel_h > ph || self.kernel_w > pw {
            return Err(KernelError::WindowTooLarge {
                op: OP,
                window_h: self.kernel_h,
                window_w: self.kernel_w,
                input,
                padded_h: ph,
                padded_w: pw,
            });
        }
        Ok(Shape::new(
            self.out_channels,
            (ph - self.kernel_h) / self.stride + 1,
            (pw - self.kernel_w) / self.stride + 1,
        ))
    }
}

/// A 2-D convolution with its weights (`[out, in, kh, kw]`) and optional
/// bias (`[out]`). Cheap to clone: the weights are shared.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// Geometry.
    pub params: Conv2dParams,
    /// Weights, `[out, in, kh, kw]` row-major.
    pub weights: Arc<[f32]>,
    /// Bias per output channel.
    pub bias: Option<Arc<[f32]>>,
}

impl Conv2d {
    /// Builds a convolution, checking the weight and bias lengths.
    ///
    /// # Errors
    /// [`KernelError::BadParam`] when a length does not match the geometry.
    pub fn new(
        params: Conv2dParams,
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<Self, KernelError> {
        if weights.len() != params.weight_len() {
            return Err(KernelError::BadParam {
                op: "conv2d",
                what: format!(
                    "weights have {} values, [{}, {}, {}, {}] needs {}",
                    weights.len(),
                    params.out_channels,
                    params.in_channels,
                    params.kernel_h,
                    params.kernel_w,
                    params.weight_len()
                ),
            });
        }
        if let Some(b) = &bias
            && b.len() != params.out_channels
        {
            return Err(KernelError::BadParam {
                op: "conv2d",
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
        })
    }

    /// The filter of output channel `oc` (`[in, kh, kw]`).
    pub fn filter(&self, oc: usize) -> &[f32] {
        let n = self.params.filter_len();
        &self.weights[oc * n..(oc + 1) * n]
    }

    /// The bias of output channel `oc` (0 without bias).
    pub fn bias_of(&self, oc: usize) -> f32 {
        self.bias.as_ref().map_or(0.0, |b| b[oc])
    }
}

/// Max pooling, PyTorch floor mode, no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxPoolParams {
    /// Window side.
    pub size: usize,
    /// Step between windows.
    pub stride: usize,
}

impl MaxPoolParams {
    /// Output shape for `input` (floor mode: partial windows are dropped).
    ///
    /// # Errors
    /// [`KernelError`] when a parameter is zero or the window exceeds the input.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        const OP: &str = "maxpool";
        if self.size == 0 || self.stride == 0 {
            return Err(KernelError::BadParam {
                op: OP,
                what: "size and stride must be at least 1".into(),
            });
        }
        if self.size > input.h || self.size > input.w {
            return Err(KernelError::WindowTooLarge {
                op: OP,
                window_h: self.size,
                window_w: self.size,
                input,
                padded_h: input.h,
                padded_w: input.w,
            });
        }
        Ok(Shape::new(
            input.c,
            (input.h - self.size) / self.stride + 1,
            (input.w - self.size) / self.stride + 1,
        ))
    }
}

/// A function of one value, applied to every value of a tensor: what a
/// fused chain's epilogue is made of. Each is defined by one expression
/// that the CPU and CUDA backends evaluate identically (no contraction into
/// FMA), so a fused chain gives the same bits as the ops run one by one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pointwise {
    /// `x > 0 ? x : 0`.
    Relu,
    /// `v = x > min ? x : min; v < max ? v : max`.
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `x * scale + shift`, rounded after the multiply and after the add.
    Affine {
        /// Factor.
        scale: f32,
        /// Offset.
        shift: f32,
    },
    /// `x > threshold ? value : 0` (OpenCV's `THRESH_BINARY`).
    Threshold {
        /// Level.
        threshold: f32,
        /// Value above the level.
        value: f32,
    },
}

impl Pointwise {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Pointwise::Relu => "relu",
            Pointwise::Clip { .. } => "clip",
            Pointwise::Affine { .. } => "affine",
            Pointwise::Threshold { .. } => "threshold",
        }
    }

    /// The function at one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Pointwise::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Pointwise::Clip { min, max } => {
                let v = if x > min { x } else { min };
                if v < max { v } else { max }
            }
            Pointwise::Affine { scale, shift } => x * scale + shift,
            Pointwise::Threshold { threshold, value } => {
                if x > threshold {
                    value
                } else {
                    0.0
                }
            }
        }
    }

    /// The function on every value of `d`, in place (one tight loop per
    /// op, so it vectorises).
    #[inline(always)]
    pub fn apply_slice(self, d: &mut [f32]) {
        match self {
            Pointwise::Relu => d.iter_mut().for_each(|v| *v = Pointwise::Relu.apply(*v)),
            Pointwise::Clip { min, max } => d
                .iter_mut()
                .for_each(|v| *v = Pointwise::Clip { min, max }.apply(*v)),
            Pointwise::Affine { scale, shift } => d
                .iter_mut()
                .for_each(|v| *v = Pointwise::Affine { scale, shift }.apply(*v)),
            Pointwise::Threshold { threshold, value } => d
                .iter_mut()
                .for_each(|v| *v = Pointwise::Threshold { threshold, value }.apply(*v)),
        }
    }

    /// Floating-point operations per value.
    pub fn flops(self) -> u64 {
        match self {
            Pointwise::Relu | Pointwise::Threshold { .. } => 1,
            Pointwise::Clip { .. } | Pointwise::Affine { .. } => 2,
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`KernelError::BadParam`] for a clip whose `min` is above its `max`
    /// or a parameter that is NaN.
    pub fn check(self) -> Result<(), KernelError> {
        let bad = |what: String| {
            Err(KernelError::BadParam {
                op: self.name(),
                what,
            })
        };
        match self {
            Pointwise::Relu => Ok(()),
            Pointwise::Clip { min, max } if min > max => {
                bad(format!("min {min} is above max {max}"))
            }
            Pointwise::Clip { min, max } if min.is_nan() || max.is_nan() => {
                bad("min and max must be numbers".into())
            }
            Pointwise::Affine { scale, shift } if !scale.is_finite() || !shift.is_finite() => {
                bad(format!("scale {scale} and shift {shift} must be finite"))
            }
            Pointwise::Threshold { threshold, value } if threshold.is_nan() || value.is_nan() => {
                bad("threshold and value must be numbers".into())
            }
            _ => Ok(()),
        }
    }
}

impl From<Pointwise> for Op {
    fn from(p: Pointwise) -> Self {
        Op::Pointwise(p)
    }
}

/// Applies `ops` in order to every value of `d`, in place.
#[inline(always)]
pub fn apply_pointwise(ops: &[Pointwise], d: &mut [f32]) {
    for op in ops {
        op.apply_slice(d);
    }
}

/// A fused chain: a producer (a convolution with its bias, or a plain load
/// of the input), any number of pointwise ops applied while the values are
/// in registers or cache, and an optional max-pool consumer that reduces
/// before the store. One pass over the image; bit-identical to running the
/// ops one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedChain {
    /// The producer; `None` loads the input as it is.
    pub conv: Option<Conv2d>,
    /// Pointwise ops after the producer, in order.
    pub epilogue: Vec<Pointwise>,
    /// Max pool after the epilogue.
    pub pool: Option<MaxPoolParams>,
}

impl FusedChain {
    /// The classic chain: conv, optional ReLU, optional pool.
    pub fn conv_relu_pool(conv: Conv2d, relu: bool, pool: Option<MaxPoolParams>) -> Self {
        Self {
            conv: Some(conv),
            epilogue: if relu { vec![Pointwise::Relu] } else { vec![] },
            pool,
        }
    }

    /// `Some(relu)` when the epilogue is empty or a single ReLU (the shape
    /// of the hand-written fused kernels), else `None`.
    pub fn relu_only(&self) -> Option<bool> {
        match self.epilogue.as_slice() {
            [] => Some(false),
            [Pointwise::Relu] => Some(true),
            _ => None,
        }
    }

    /// Members joined by `+`, e.g. `conv2d+relu+maxpool`.
    pub fn label(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        parts.push(if self.conv.is_some() {
            "conv2d"
        } else {
            "load"
        });
        parts.extend(self.epilogue.iter().map(|p| p.name()));
        if self.pool.is_some() {
            parts.push("maxpool");
        }
        parts.join("+")
    }

    /// Shape after the producer.
    ///
    /// # Errors
    /// [`KernelError`] when the convolution rejects its input.
    pub fn produced_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        match &self.conv {
            Some(c) => c.params.output_shape(input),
            None => Ok(input),
        }
    }

    /// Output shape for `input`.
    ///
    /// # Errors
    /// [`KernelError`] when any member rejects its input.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        let s = self.produced_shape(input)?;
        for p in &self.epilogue {
            p.check()?;
        }
        match &self.pool {
            Some(p) => p.output_shape(s),
            None => Ok(s),
        }
    }
}

/// A stage's computation on one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// 2-D convolution with optional bias.
    Conv2d(Conv2d),
    /// A function of each value: ReLU, clip (ONNX `Clip`), affine,
    /// threshold ([`Pointwise`]).
    Pointwise(Pointwise),
    /// Max pooling.
    MaxPool(MaxPoolParams),
    /// Several ops run as one pass.
    Fused(FusedChain),
    /// A vision op ([`Vision`]).
    Vision(Vision),
    /// Row-local vision and pointwise ops run as one pass over row bands
    /// (e.g. gray → blur → Sobel).
    VisionChain(Vec<Step>),
}

impl Op {
    /// Short name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::Pointwise(p) => p.name(),
            Op::MaxPool(_) => "maxpool",
            Op::Fused(_) | Op::VisionChain(_) => "fused",
            Op::Vision(v) => v.name(),
        }
    }

    /// Name with the members of a fused chain, e.g.
    /// `fused(conv2d+relu+maxpool)`.
    pub fn label(&self) -> String {
        match self {
            Op::Fused(f) => format!("fused({})", f.label()),
            Op::VisionChain(steps) => format!(
                "fused({})",
                steps.iter().map(Step::name).collect::<Vec<_>>().join("+")
            ),
            other => other.name().to_owned(),
        }
    }

    /// The op as a pointwise function, when it is one.
    pub fn pointwise(&self) -> Option<Pointwise> {
        match *self {
            Op::Pointwise(p) => Some(p),
            _ => None,
        }
    }

    /// Output shape for `input`.
    ///
    /// # Errors
    /// [`KernelError`] when the op cannot take `input`.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        match self {
            Op::Conv2d(c) => c.params.output_shape(input),
            Op::Pointwise(p) => {
                p.check()?;
                Ok(input)
            }
            Op::MaxPool(p) => p.output_shape(input),
            Op::Fused(f) => f.output_shape(input),
            Op::Vision(v) => v.output_shape(input),
            Op::VisionChain(steps) => steps
                .iter()
                .try_fold(input, |shape, s| s.output_shape(shape)),
        }
    }

    /// Floating-point operations per frame (a multiply-add counts 2; a
    /// comparison counts 1).
    ///
    /// # Errors
    /// [`KernelError`] when the op cannot take `input`.
    pub fn flops(&self, input: Shape) -> Result<u64, KernelError> {
        let out = self.output_shape(input)?;
        Ok(match self {
            Op::Conv2d(c) => conv_flops(c, out),
            Op::Pointwise(p) => p.flops() * out.len() as u64,
            Op::MaxPool(p) => (out.len() * (p.size * p.size - 1)) as u64,
            Op::Fused(f) => {
                let mid = f.produced_shape(input)?;
                let mut n = f.conv.as_ref().map_or(0, |c| conv_flops(c, mid));
                n += f.epilogue.iter().map(|p| p.flops()).sum::<u64>() * mid.len() as u64;
                if let Some(p) = &f.pool {
                    n += (out.len() * (p.size * p.size - 1)) as u64;
                }
                n
            }
            Op::Vision(v) => v.flops(input)?,
            Op::VisionChain(steps) => {
                let (mut n, mut shape) = (0, input);
                for s in steps {
                    n += match s {
                        Step::Vision(v) => v.flops(shape)?,
                        Step::Pointwise(p) => p.flops() * shape.len() as u64,
                    };
                    shape = s.output_shape(shape)?;
                }
                n
            }
        })
    }

    /// Bytes the op must read and write per frame at minimum (input,
    /// weights, output; intermediates of a fused chain stay in cache).
    ///
    /// # Errors
    /// [`KernelError`] when the op cannot take `input`.
    pub fn min_bytes(&self, input: Shape) -> Result<u64, KernelError> {
        let out = self.output_shape(input)?;
        let weights = match self {
            Op::Conv2d(c) | Op::Fused(FusedChain { conv: Some(c), .. }) => {
                (c.weights.len() + c.bias.as_ref().map_or(0, |b| b.len())) * 4
            }
            _ => 0,
        };
        Ok((input.bytes() + out.bytes() + weights) as u64)
    }

    /// Runs the op on the CPU.
    ///
    /// # Errors
    /// [`KernelError`] when the op cannot take `input`.
    pub fn run_cpu(&self, input: &Tensor) -> Result<Tensor, KernelError> {
        match self {
            Op::Conv2d(c) => cpu::conv::conv2d(input, c),
            Op::Pointwise(p) => {
                p.check()?;
                let mut out = input.clone();
                cpu::elementwise::pointwise_in_place(out.data_mut(), &[*p]);
                Ok(out)
            }
            Op::MaxPool(p) => cpu::pool::maxpool(input, p),
            Op::Fused(f) => cpu::fused::run(input, f),
            Op::Vision(Vision::Resize { width, height }) => {
                cpu::vision::resize(input, *width, *height)
            }
            Op::Vision(v) => cpu::vision::run_chain(input, &[Step::Vision(v.clone())]),
            Op::VisionChain(steps) => cpu::vision::run_chain(input, steps),
        }
    }
}

impl Op {
    /// Runs the op on the CPU, consuming the input: elementwise ops work in
    /// place (no allocation, one pass), others read it and return a new
    /// tensor. A shared input (a received payload) is never written: the op
    /// runs out of place instead. Same values as [`Op::run_cpu`].
    ///
    /// # Errors
    /// [`KernelError`] when the op cannot take `input`.
    pub fn run_cpu_owned(&self, mut input: Tensor) -> Result<Tensor, KernelError> {
        if input.is_shared() {
            return self.run_cpu(&input);
        }
        match self {
            Op::Pointwise(p) => {
                p.check()?;
                cpu::elementwise::pointwise_in_place(input.data_mut(), &[*p]);
                Ok(input)
            }
            other => other.run_cpu(&input),
        }
    }
}

fn conv_flops(c: &Conv2d, out: Shape) -> u64 {
    let bias = u64::from(c.bias.is_some());
    out.len() as u64 * (2 * c.params.filter_len() as u64 + bias)
}
