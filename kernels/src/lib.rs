//! Op parameters, CPU kernels and naive references for streamfuse.
//!
//! Tensors are `f32`, laid out `[C, H, W]` (batch 1 per frame). Every op
//! declares its output shape, FLOPs and bytes moved ([`op::Op`]); the CPU
//! backend ([`cpu`]) runs them multi-threaded with SIMD-friendly inner loops
//! and runtime dispatch on x86 (AVX-512, AVX2+FMA) and aarch64 (NEON);
//! [`reference`] holds slow, obviously-correct versions used by the tests.

pub mod cpu;
pub mod cuda;
pub mod error;
pub mod op;
pub mod random;
pub mod reference;
pub mod tensor;
pub mod vision;

pub use error::KernelError;
pub use op::{
    ChannelAffine, Conv2d, Conv2dParams, ConvAlgorithm, EpilogueOp, FusedChain, Op, Pointwise,
    Pool2d, PoolKind, Precision, Window,
};
pub use tensor::{Shape, Tensor};
pub use vision::{ColorOrder, SobelMode, Step, Vision};
