//! Kernel parameter structs (mirroring `common.cuh`) and launch planning,
//! shared by the CUDA backend and the CPU emulation harness so both run the
//! kernels with the very same grids and parameters.

use crate::error::KernelError;
use crate::op::{Conv2d, FusedChain, MaxPoolParams};
use crate::tensor::Shape;

/// Output tile width of the 2-D kernels (`SF_TILE_W`).
pub const TILE_W: u32 = 32;
/// Output tile height (`SF_TILE_H`).
pub const TILE_H: u32 = 8;
/// Output channels per thread (`SF_OC_BLOCK`).
pub const OC_BLOCK: u32 = 4;
/// Shared-memory tile capacity in floats (`SF_SMEM_FLOATS`).
pub const SMEM_FLOATS: usize = 6144;
/// Largest pool window the fused kernel handles (`SF_MAX_POOL`).
pub const MAX_POOL: usize = 3;
/// Threads per block of the 1-D kernels.
pub const THREADS_1D: u32 = 256;

/// `ConvParams` of `common.cuh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConvParams {
    /// Input channels, height, width.
    pub in_c: i32,
    /// Input height.
    pub in_h: i32,
    /// Input width.
    pub in_w: i32,
    /// Output channels.
    pub out_c: i32,
    /// Output height.
    pub out_h: i32,
    /// Output width.
    pub out_w: i32,
    /// Kernel height.
    pub k_h: i32,
    /// Kernel width.
    pub k_w: i32,
    /// Stride.
    pub stride: i32,
    /// Zero padding.
    pub pad: i32,
    /// 1 when a bias is given.
    pub has_bias: i32,
}

/// `PoolParams` of `common.cuh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolParams {
    /// Channels.
    pub c: i32,
    /// Input height.
    pub in_h: i32,
    /// Input width.
    pub in_w: i32,
    /// Output height.
    pub out_h: i32,
    /// Output width.
    pub out_w: i32,
    /// Window side.
    pub size: i32,
    /// Stride.
    pub stride: i32,
}

/// `FusedParams` of `common.cuh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FusedParams {
    /// The convolution.
    pub conv: ConvParams,
    /// 1: ReLU before the pool.
    pub relu: i32,
    /// Pool window side.
    pub pool_size: i32,
    /// Pool stride.
    pub pool_stride: i32,
    /// Pooled output height.
    pub out_h: i32,
    /// Pooled output width.
    pub out_w: i32,
}

/// Grid and block of a launch.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks per axis.
    pub grid: [u32; 3],
    /// Threads per axis.
    pub block: [u32; 3],
}

/// Which conv kernel a convolution uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKernel {
    /// `conv2d_f32`: shared-memory tile.
    Tiled,
    /// `conv2d_direct_f32`: receptive field too large for the tile.
    Direct,
}

pub(crate) fn i(v: usize, what: &str) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::BadParam {
        op: "cuda",
        what: format!("{what} {v} exceeds the CUDA kernels' 32-bit sizes"),
    })
}

pub(crate) fn grid_2d(out: Shape) -> Result<Launch, KernelError> {
    let x = u32::try_from(out.w.div_ceil(TILE_W as usize)).map_err(|_| too_big(out))?;
    let y = u32::try_from(out.h.div_ceil(TILE_H as usize)).map_err(|_| too_big(out))?;
    let z = u32::try_from(out.c.div_ceil(OC_BLOCK as usize)).map_err(|_| too_big(out))?;
    if y > 65_535 || z > 65_535 {
        return Err(too_big(out));
    }
    Ok(Launch {
        grid: [x, y, z],
        block: [TILE_W, TILE_H, 1],
    })
}

fn too_big(s: Shape) -> KernelError {
    KernelError::BadParam {
        op: "cuda",
        what: format!("output {s} exceeds the CUDA grid limits"),
    }
}

/// A 1-D grid-stride launch for `n` values.
pub fn launch_1d(n: usize) -> Launch {
    let blocks = n.div_ceil(THREADS_1D as usize).clamp(1, 65_535);
    Launch {
        grid: [blocks as u32, 1, 1],
        block: [THREADS_1D, 1, 1],
    }
}

/// Parameters, kernel choice and launch of a convolution on `input`.
///
/// # Errors
/// [`KernelError`] when the op cannot take `input` or sizes exceed the kernels' limits.
pub fn conv(conv: &Conv2d, input: Shape) -> Result<(ConvParams, ConvKernel, Launch), KernelError> {
    let out = conv.params.output_shape(input)?;
    let p = conv.params;
    let params = ConvParams {
        in_c: i(input.c, "channels")?,
        in_h: i(input.h, "height")?,
        in_w: i(input.w, "width")?,
        out_c: i(out.c, "channels")?,
        out_h: i(out.h, "height")?,
        out_w: i(out.w, "width")?,
        k_h: i(p.kernel_h, "kernel")?,
        k_w: i(p.kernel_w, "kernel")?,
        stride: i(p.stride, "stride")?,
        pad: i(p.padding, "padding")?,
        has_bias: i32::from(conv.bias.is_some()),
    };
    let tile = ((TILE_H as usize - 1) * p.stride + p.kernel_h)
        * ((TILE_W as usize - 1) * p.stride + p.kernel_w);
    let kernel = if tile <= SMEM_FLOATS {
        ConvKernel::Tiled
    } else {
        ConvKernel::Direct
    };
    Ok((params, kernel, grid_2d(out)?))
}

/// Parameters and launch of a max pool on `input`.
///
/// # Errors
/// [`KernelError`] when the window does not fit or sizes exceed the limits.
pub fn pool(p: &MaxPoolParams, input: Shape) -> Result<(PoolParams, Launch), KernelError> {
    let out = p.output_shape(input)?;
    let params = PoolParams {
        c: i(input.c, "channels")?,
        in_h: i(input.h, "height")?,
        in_w: i(input.w, "width")?,
        out_h: i(out.h, "height")?,
        out_w: i(out.w, "width")?,
        size: i(p.size, "pool size")?,
        stride: i(p.stride, "pool stride")?,
    };
    Ok((params, launch_1d(out.len())))
}

/// Parameters and launch of the fused conv → (ReLU) → pool kernel, or
/// `None` when the chain has no pool, its window exceeds [`MAX_POOL`], or
/// its input tile exceeds the shared memory (then the ops run one by one).
///
/// # Errors
/// [`KernelError`] when a member cannot take its input.
pub fn fused(
    chain: &FusedChain,
    input: Shape,
) -> Result<Option<(FusedParams, Launch)>, KernelError> {
    let (Some(c), Some(pool), Some(relu)) = (&chain.conv, chain.pool, chain.relu_only()) else {
        return Ok(None);
    };
    let out = pool.output_shape(c.params.output_shape(input)?)?;
    conv_producer(c, input, (pool.size, pool.stride), relu, out)
}

/// Parameters and launch of a kernel with the conv producer of `chain.cu`
/// (the fused kernel and generated conv chains): `pool` is `(size, stride)`
/// (`(1, 1)` stores every value), `out` the final output shape. `None` when
/// the window exceeds [`MAX_POOL`] or the input tile the shared memory.
///
/// # Errors
/// [`KernelError`] when the convolution cannot take `input` or sizes exceed
/// the kernels' 32-bit limits.
pub(crate) fn conv_producer(
    c: &Conv2d,
    input: Shape,
    (pool_size, pool_stride): (usize, usize),
    relu: bool,
    out: Shape,
) -> Result<Option<(FusedParams, Launch)>, KernelError> {
    let (conv, _, _) = self::conv(c, input)?;
    let s = c.params.stride;
    let conv_w = (TILE_W as usize - 1) * pool_stride + pool_size;
    let conv_h = (TILE_H as usize - 1) * pool_stride + pool_size;
    let tile = ((conv_h - 1) * s + c.params.kernel_h) * ((conv_w - 1) * s + c.params.kernel_w);
    if pool_size > MAX_POOL || tile > SMEM_FLOATS {
        return Ok(None);
    }
    let params = FusedParams {
        conv,
        relu: i32::from(relu),
        pool_size: i(pool_size, "pool size")?,
        pool_stride: i(pool_stride, "pool stride")?,
        out_h: i(out.h, "height")?,
        out_w: i(out.w, "width")?,
    };
    Ok(Some((params, grid_2d(out)?)))
}

/// Most taps of a separable filter on the GPU (`SF_MAX_TAPS`).
pub const MAX_TAPS: usize = 32;

/// `VisionParams` of `common.cuh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisionParams {
    /// Planes of the input.
    pub planes: i32,
    /// Input height.
    pub h: i32,
    /// Input width.
    pub w: i32,
    /// Output height (resize).
    pub out_h: i32,
    /// Output width (resize).
    pub out_w: i32,
    /// Filter taps used in `k`.
    pub ksize: i32,
    /// Filter taps, or the luma weights in `k[0..3]`.
    pub k: [f32; MAX_TAPS],
    /// Sobel output: 0 dx, 1 dy, 2 magnitude.
    pub mode: i32,
}

/// The vision kernels a [`crate::vision::Vision`] op runs as.
#[derive(Debug, Clone, PartialEq)]
pub enum VisionLaunch {
    /// `gray_f32`.
    Gray(VisionParams, Launch),
    /// `normalize_f32` once per plane: `(scale, mean, std)` of each.
    Normalize(Vec<(f32, f32, f32)>, usize, Launch),
    /// `hfilter_f32` then `vfilter_f32`, through a buffer of the input's size.
    Separable(VisionParams, Launch),
    /// `sobel_h_f32` into two buffers of the input's size, then `sobel_v_f32`.
    Sobel(VisionParams, Launch),
    /// `resize_linear_f32`.
    Resize(VisionParams, Launch),
}

/// Parameters and launches of a vision op on `input`.
///
/// # Errors
/// [`KernelError`] when the op cannot take `input`, or a filter has more
/// than [`MAX_TAPS`] taps, or sizes exceed 32 bits.
pub fn vision(op: &crate::vision::Vision, input: Shape) -> Result<VisionLaunch, KernelError> {
    use crate::vision::{SobelMode, Vision, gaussian_kernel, gray_weights};
    let out = op.output_shape(input)?;
    let mut p = VisionParams {
        planes: i(input.c, "channels")?,
        h: i(input.h, "height")?,
        w: i(input.w, "width")?,
        out_h: i(out.h, "height")?,
        out_w: i(out.w, "width")?,
        ksize: 0,
        k: [0.0; MAX_TAPS],
        mode: 0,
    };
    Ok(match op {
        Vision::Gray { order } => {
            p.k[..3].copy_from_slice(&gray_weights(*order));
            p.ksize = 3;
            VisionLaunch::Gray(p, launch_1d(out.len()))
        }
        Vision::Normalize { scale, mean, std } => {
            let per = (0..input.c)
                .map(|c| {
                    let m = mean[if mean.len() == 1 { 0 } else { c }];
                    let s = std[if std.len() == 1 { 0 } else { c }];
                    (*scale, m, s)
                })
                .collect();
            VisionLaunch::Normalize(per, input.h * input.w, launch_1d(input.h * input.w))
        }
        Vision::GaussianBlur { ksize, sigma } => {
            if *ksize > MAX_TAPS {
                return Err(KernelError::BadParam {
                    op: "gaussian_blur",
                    what: format!("kernel size {ksize} exceeds the GPU kernels' {MAX_TAPS} taps"),
                });
            }
            let k = gaussian_kernel(*ksize, *sigma);
            p.k[..k.len()].copy_from_slice(&k);
            p.ksize = i(*ksize, "kernel size")?;
            VisionLaunch::Separable(p, launch_1d(input.len()))
        }
        Vision::Sobel { mode } => {
            p.mode = match mode {
                SobelMode::Dx => 0,
                SobelMode::Dy => 1,
                SobelMode::Magnitude => 2,
            };
            VisionLaunch::Sobel(p, launch_1d(input.len()))
        }
        Vision::Resize { .. } => VisionLaunch::Resize(p, launch_1d(out.len())),
    })
}
