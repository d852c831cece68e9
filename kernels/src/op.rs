//! Ops: typed parameters, output shapes, FLOPs and bytes, and dispatch to the
//! CPU backend.

use std::sync::Arc;

use crate::cpu;
use crate::error::KernelError;
use crate::tensor::{Shape, Tensor};

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

/// A fused chain: a convolution (with its bias), an optional ReLU epilogue
/// applied in registers, and an optional max-pool consumer that reduces
/// before the store. One pass over the image; bit-identical to running the
/// ops one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedChain {
    /// The producer.
    pub conv: Conv2d,
    /// ReLU after the convolution.
    pub relu: bool,
    /// Max pool after the ReLU.
    pub pool: Option<MaxPoolParams>,
}

impl FusedChain {
    /// Output shape for `input`.
    ///
    /// # Errors
    /// [`KernelError`] when any member rejects its input.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        let s = self.conv.params.output_shape(input)?;
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
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (ONNX `Clip`; a bounded ReLU with `min` 0).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// Max pooling.
    MaxPool(MaxPoolParams),
    /// Several ops run as one pass.
    Fused(FusedChain),
}

impl Op {
    /// Short name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::Relu => "relu",
            Op::Clip { .. } => "clip",
            Op::MaxPool(_) => "maxpool",
            Op::Fused(f) => match (f.relu, f.pool.is_some()) {
                (true, true) => "fused(conv2d+relu+maxpool)",
                (true, false) => "fused(conv2d+relu)",
                (false, true) => "fused(conv2d+maxpool)",
                (false, false) => "fused(conv2d)",
            },
        }
    }

    /// Output shape for `input`.
    ///
    /// # Errors
    /// [`KernelError`] when the op cannot take `input`.
    pub fn output_shape(&self, input: Shape) -> Result<Shape, KernelError> {
        match self {
            Op::Conv2d(c) => c.params.output_shape(input),
            Op::Relu => Ok(input),
            Op::Clip { min, max } if min > max => Err(KernelError::BadParam {
                op: "clip",
                what: format!("min {min} is above max {max}"),
            }),
            Op::Clip { .. } => Ok(input),
            Op::MaxPool(p) => p.output_shape(input),
            Op::Fused(f) => f.output_shape(input),
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
            Op::Relu => out.len() as u64,
            Op::Clip { .. } => 2 * out.len() as u64,
            Op::MaxPool(p) => (out.len() * (p.size * p.size - 1)) as u64,
            Op::Fused(f) => {
                let conv_out = f.conv.params.output_shape(input)?;
                let mut n = conv_flops(&f.conv, conv_out);
                if f.relu {
                    n += conv_out.len() as u64;
                }
                if let Some(p) = &f.pool {
                    n += (out.len() * (p.size * p.size - 1)) as u64;
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
            Op::Conv2d(c) | Op::Fused(FusedChain { conv: c, .. }) => {
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
            Op::Relu => Ok(cpu::elementwise::relu(input)),
            Op::Clip { min, max } => {
                self.output_shape(input.shape())?;
                let mut out = input.clone();
                cpu::elementwise::clip_in_place(out.data_mut(), *min, *max);
                Ok(out)
            }
            Op::MaxPool(p) => cpu::pool::maxpool(input, p),
            Op::Fused(f) => cpu::fused::run(input, f),
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
            Op::Relu => {
                cpu::elementwise::relu_in_place(input.data_mut());
                Ok(input)
            }
            Op::Clip { min, max } => {
                self.output_shape(input.shape())?;
                cpu::elementwise::clip_in_place(input.data_mut(), *min, *max);
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
