//! Ops: typed parameters, output shapes, FLOPs and bytes, and dispatch to the
//! CPU backend.
//!
//! - [`conv`]: 2-D convolution (kernel, strides, dilations, padding per
//!   side, groups);
//! - [`pool`]: max and average pooling, global pools;
//! - [`pointwise`]: functions of each value, the per-channel affine, and
//!   the epilogue ops of a fused chain;
//! - [`window`]: the sliding-window geometry convolution and pooling share.

pub mod conv;
pub mod pointwise;
pub mod pool;
pub mod window;

pub use conv::{Conv2d, Conv2dParams, ConvAlgorithm, Precision};
pub use pointwise::{ChannelAffine, EpilogueOp, Pointwise, apply_epilogue, apply_pointwise};
pub use pool::{AxisTaps, Pool2d, PoolKind};
pub use window::Window;

use crate::cpu;
use crate::error::KernelError;
use crate::tensor::{Shape, Tensor};
use crate::vision::{Step, Vision};

/// A fused chain: a producer (a convolution with its bias, or a plain load
/// of the input), any number of epilogue ops applied while the values are
/// in registers or cache, and an optional pool consumer that reduces
/// before the store. One pass over the image; bit-identical to running the
/// ops one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedChain {
    /// The producer; `None` loads the input as it is.
    pub conv: Option<Conv2d>,
    /// Ops after the producer, in order.
    pub epilogue: Vec<EpilogueOp>,
    /// Pool after the epilogue.
    pub pool: Option<Pool2d>,
}

impl FusedChain {
    /// The classic chain: conv, optional ReLU, optional pool.
    pub fn conv_relu_pool(conv: Conv2d, relu: bool, pool: Option<Pool2d>) -> Self {
        Self {
            conv: Some(conv),
            epilogue: if relu {
                vec![EpilogueOp::Pointwise(Pointwise::Relu)]
            } else {
                vec![]
            },
            pool,
        }
    }

    /// `Some(relu)` when the epilogue is empty or a single ReLU (the shape
    /// of the hand-written fused kernels), else `None`.
    pub fn relu_only(&self) -> Option<bool> {
        match self.epilogue.as_slice() {
            [] => Some(false),
            [EpilogueOp::Pointwise(Pointwise::Relu)] => Some(true),
            _ => None,
        }
    }

    /// The epilogue as pointwise ops, when every op is one (no
    /// per-channel op).
    pub fn pointwise_epilogue(&self) -> Option<Vec<Pointwise>> {
        self.epilogue
            .iter()
            .map(|e| match e {
                EpilogueOp::Pointwise(p) => Some(*p),
                EpilogueOp::Channel(_) => None,
            })
            .collect()
    }

    /// Members joined by `+`, e.g. `conv2d+relu+maxpool`.
    pub fn label(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        parts.push(match &self.conv {
            Some(c) if c.params.depthwise() => "dwconv2d",
            Some(_) => "conv2d",
            None => "load",
        });
        parts.extend(self.epilogue.iter().map(EpilogueOp::name));
        if let Some(p) = &self.pool {
            parts.push(p.name());
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
            p.check(s.c)?;
        }
        match &self.pool {
            Some(p) => p.output_shape(s),
            None => Ok(s),
        }
    }

    /// The members as ops, in order (what the chain computes unfused).
    pub fn members(&self) -> Vec<Op> {
        let mut v = Vec::new();
        if let Some(c) = &self.conv {
            v.push(Op::Conv2d(c.clone()));
        }
        v.extend(self.epilogue.iter().map(EpilogueOp::to_op));
        if let Some(p) = self.pool {
            v.push(Op::Pool(p));
        }
        v
    }
}

/// A stage's computation on one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// 2-D convolution with optional bias.
    Conv2d(Conv2d),
    /// A function of each value: ReLU, clip (ONNX `Clip`), leaky ReLU,
    /// affine, threshold ([`Pointwise`]).
    Pointwise(Pointwise),
    /// A per-channel affine: batch normalization at inference.
    ChannelAffine(ChannelAffine),
    /// Max or average pooling.
    Pool(Pool2d),
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
            Op::Conv2d(c) if c.params.depthwise() => "dwconv2d",
            Op::Conv2d(_) => "conv2d",
            Op::Pointwise(p) => p.name(),
            Op::ChannelAffine(_) => "batchnorm",
            Op::Pool(p) => p.name(),
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

    /// The op as an epilogue op of a fused chain, when it can be one.
    pub fn epilogue(&self) -> Option<EpilogueOp> {
        match self {
            Op::Pointwise(p) => Some(EpilogueOp::Pointwise(*p)),
            Op::ChannelAffine(a) => Some(EpilogueOp::Channel(a.clone())),
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
            Op::ChannelAffine(a) => {
                a.check_channels(input.c)?;
                Ok(input)
            }
            Op::Pool(p) => p.output_shape(input),
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
            Op::ChannelAffine(_) => 2 * out.len() as u64,
            Op::Pool(p) => p.flops(input)?,
            Op::Fused(f) => {
                let mid = f.produced_shape(input)?;
                let mut n = f.conv.as_ref().map_or(0, |c| conv_flops(c, mid));
                n += f.epilogue.iter().map(EpilogueOp::flops).sum::<u64>() * mid.len() as u64;
                if let Some(p) = &f.pool {
                    n += p.flops(mid)?;
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
            Op::ChannelAffine(a) => a.channels() * 8,
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
            Op::Pointwise(_) | Op::ChannelAffine(_) => self.run_cpu_owned(input.clone()),
            Op::Pool(p) => cpu::pool::pool(input, p),
            Op::Fused(f) => cpu::fused::run(input, f),
            Op::Vision(Vision::Resize { width, height }) => {
                cpu::vision::resize(input, *width, *height)
            }
            Op::Vision(v) => cpu::vision::run_chain(input, &[Step::Vision(v.clone())]),
            Op::VisionChain(steps) => cpu::vision::run_chain(input, steps),
        }
    }

    /// Runs the op on the CPU, consuming the input: elementwise ops work in
    /// place (no allocation, one pass), others read it and return a new
    /// tensor. A shared input (a received payload) is never written: the op
    /// is copied first. Same values as [`Op::run_cpu`].
    ///
    /// # Errors
    /// [`KernelError`] when the op cannot take `input`.
    pub fn run_cpu_owned(&self, input: Tensor) -> Result<Tensor, KernelError> {
        let mut input = input;
        // `data_mut` copies a shared input (a received payload) first.
        match self {
            Op::Pointwise(p) => {
                p.check()?;
                cpu::elementwise::pointwise_in_place(input.data_mut(), &[*p]);
                Ok(input)
            }
            Op::ChannelAffine(a) => {
                let s = input.shape();
                a.check_channels(s.c)?;
                cpu::elementwise::channel_affine_in_place(input.data_mut(), s.h * s.w, a);
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
