//! The CUDA backend: CUDA C sources (one file per op family), their launch
//! planning, NVRTC compilation and, on a machine with a driver and a GPU,
//! execution through `cudarc` (loaded dynamically: nothing CUDA is needed to
//! build or to run on the CPU).
//!
//! Sources: `common.cuh` (parameter structs, tile sizes, helpers), `conv.cu`
//! (`conv2d_f32`, `conv2d_direct_f32`, `conv2d_depthwise_f32`,
//! `maxpool_f32`, `pool2d_f32`, `pool2d_wide_f32`), `elementwise.cu`
//! (`relu_f32`, `clip_f32`, `channel_affine_f32`), `fused.cu`
//! (`fused_conv_pool_f32`),
//! `vision.cu` (luma, normalisation, separable filters, Sobel, bilinear
//! resize), and `chain.cu`, the template [`codegen`] fills in for each
//! fused chain. The same files run on
//! CPU threads in the emulation harness (`kernels/emu`).

pub mod codegen;
pub mod device;
pub mod nvrtc;
pub mod nvrtc_lib;
pub mod params;
pub mod pool;

/// `common.cuh`, prepended to every source for NVRTC.
pub const COMMON: &str = include_str!("common.cuh");

/// A CUDA C source file and its entry points.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// File name.
    pub name: &'static str,
    /// Text (with `#include "common.cuh"`, and `#include "chain.cu"` where
    /// it instantiates the chain template).
    pub text: &'static str,
    /// `extern "C"` kernels it defines.
    pub kernels: &'static [&'static str],
}

/// Every source, one per op family.
pub const SOURCES: &[Source] = &[
    Source {
        name: "conv.cu",
        text: include_str!("conv.cu"),
        kernels: &[
            "conv2d_f32",
            "conv2d_direct_f32",
            "conv2d_depthwise_f32",
            "maxpool_f32",
            "pool2d_f32",
            "pool2d_wide_f32",
        ],
    },
    Source {
        name: "elementwise.cu",
        text: include_str!("elementwise.cu"),
        kernels: &["relu_f32", "clip_f32", "channel_affine_f32"],
    },
    Source {
        name: "fused.cu",
        text: include_str!("fused.cu"),
        kernels: &["fused_conv_pool_f32"],
    },
    Source {
        name: "vision.cu",
        text: include_str!("vision.cu"),
        kernels: &[
            "gray_f32",
            "normalize_f32",
            "hfilter_f32",
            "vfilter_f32",
            "sobel_h_f32",
            "sobel_v_f32",
            "resize_linear_f32",
        ],
    },
];

impl Source {
    /// The self-contained text NVRTC compiles: `common.cuh` and `chain.cu`
    /// in place of their includes.
    pub fn standalone(&self) -> String {
        self.text
            .replacen("#include \"common.cuh\"", COMMON, 1)
            .replacen("#include \"chain.cu\"", codegen::TEMPLATE, 1)
    }
}

/// Virtual architectures every kernel must compile for: Titan V (sm_70),
/// Jetson Xavier (sm_72), Jetson Orin (sm_87), H100 (sm_90).
pub const ARCHS: &[&str] = &["compute_70", "compute_72", "compute_87", "compute_90"];

/// 64-bit FNV-1a (a cache key and kernel-name hash, not a security hash).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
