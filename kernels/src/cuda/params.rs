//! Kernel parameter structs (mirroring `common.cuh`) and launch planning,
//! shared by the CUDA backend and the CPU emulation harness so both run the
//! kernels with the very same grids and parameters.

use crate::error::KernelError;
use crate::op::{ChannelAffine, Conv2d, FusedChain, Pool2d, PoolKind, Precision};
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
/// Taps from which a pool whose window is at least [`WIDE_POOL_COLS`]
/// wide runs one block per output (`pool2d_wide_f32`).
pub const WIDE_POOL_TAPS: usize = 1024;
/// Window width from which a pool may run one block per output.
pub const WIDE_POOL_COLS: usize = 32;
/// Largest grid extent along y and z.
const GRID_YZ: usize = 65_535;

/// `ConvParams` of `common.cuh`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConvParams {
    /// Input channels.
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
    /// Stride between output rows.
    pub stride_h: i32,
    /// Stride between output columns.
    pub stride_w: i32,
    /// Zero padding above the input.
    pub pad_top: i32,
    /// Zero padding left of the input.
    pub pad_left: i32,
    /// Dilation between kernel rows.
    pub dil_h: i32,
    /// Dilation between kernel columns.
    pub dil_w: i32,
    /// Channel groups.
    pub groups: i32,
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
    /// Window height.
    pub k_h: i32,
    /// Window width.
    pub k_w: i32,
    /// Stride between output rows.
    pub stride_h: i32,
    /// Stride between output columns.
    pub stride_w: i32,
    /// Padding above.
    pub pad_top: i32,
    /// Padding left.
    pub pad_left: i32,
    /// Padding below.
    pub pad_bottom: i32,
    /// Padding right.
    pub pad_right: i32,
    /// Dilation between window rows.
    pub dil_h: i32,
    /// Dilation between window columns.
    pub dil_w: i32,
    /// 0: max, 1: average.
    pub avg: i32,
    /// Average: 1 divides by the taps inside the padded input, 0 by those
    /// inside the input.
    pub count_include_pad: i32,
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
    /// `conv2d_depthwise_f32`: one input channel per group, the tile
    /// shared by its output channels.
    Depthwise,
}

impl ConvKernel {
    /// The kernel's entry point.
    pub fn name(self) -> &'static str {
        match self {
            ConvKernel::Tiled => "conv2d_f32",
            ConvKernel::Direct => "conv2d_direct_f32",
            ConvKernel::Depthwise => "conv2d_depthwise_f32",
        }
    }
}

/// How the convolution producer of a generated kernel (`chain.cu`)
/// computes its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// One thread per output position, [`OC_BLOCK`] channels, the input
    /// tile in shared memory (`SF_CHAIN_CONV 1`): few channels.
    Tiled,
    /// Implicit GEMM in f32 (`SF_CHAIN_CONV 2`): deep layers, the CPU's
    /// bits.
    Gemm,
    /// Implicit GEMM on tensor cores, f16 inputs and f32 accumulators
    /// (`SF_CHAIN_CONV 3`): [`Precision::F16`] convolutions.
    GemmF16,
}

impl Producer {
    /// The value of `SF_CHAIN_CONV` that selects it.
    pub fn code(self) -> i32 {
        match self {
            Producer::Tiled => 1,
            Producer::Gemm => 2,
            Producer::GemmF16 => 3,
        }
    }

    /// Name in plans and reports.
    pub fn name(self) -> &'static str {
        match self {
            Producer::Tiled => "tiled",
            Producer::Gemm => "implicit GEMM f32",
            Producer::GemmF16 => "implicit GEMM f16 tensor cores",
        }
    }
}

/// Output channels per group from which a convolution is a GEMM
/// ([`producer`]).
pub const GEMM_MIN_OUT: usize = 32;
/// Taps per output (input channels per group × kernel area) from which a
/// convolution is a GEMM.
pub const GEMM_MIN_TAPS: usize = 16;
/// Output columns of a GEMM tile (`SF_GEMM_BN`).
pub const GEMM_BN: usize = 64;
/// Output channels of a GEMM tile (`SF_GEMM_BM`).
pub const GEMM_BM: usize = 64;
/// Threads of a GEMM block (`SF_GEMM_THREADS`).
pub const GEMM_THREADS: u32 = 256;

/// The producer for convolution `c` followed by a max pool `(size,
/// stride)` (`(1, 1)`: none). The implicit GEMM takes dense or grouped
/// (not depthwise) convolutions whose pool windows do not overlap (size ==
/// stride, so no value is computed twice), with at least
/// [`GEMM_MIN_OUT`] output channels per group and [`GEMM_MIN_TAPS`] taps
/// in f32, any size in f16 (which always asks for the tensor cores);
/// everything else is [`Producer::Tiled`].
pub fn producer(c: &Conv2d, (pool_size, pool_stride): (usize, usize)) -> Producer {
    let p = c.params;
    let gemm_shape = !p.depthwise()
        && (pool_size == 1 || pool_size == pool_stride)
        && pool_size * pool_size <= GEMM_BN;
    if !gemm_shape {
        return Producer::Tiled;
    }
    if c.precision == Precision::F16 {
        return Producer::GemmF16;
    }
    let taps = p.in_per_group() * p.kernel_h() * p.kernel_w();
    if p.out_channels / p.groups.max(1) >= GEMM_MIN_OUT && taps >= GEMM_MIN_TAPS {
        Producer::Gemm
    } else {
        Producer::Tiled
    }
}

/// The `FusedParams` of a producer computing `conv`, then a max pool
/// `(size, stride)` (and a ReLU flag for `fused_conv_pool_f32`) into `out`.
///
/// # Errors
/// [`KernelError`] when a size exceeds 32 bits.
pub(crate) fn fused_params(
    conv: ConvParams,
    (pool_size, pool_stride): (usize, usize),
    relu: bool,
    out: Shape,
) -> Result<FusedParams, KernelError> {
    Ok(FusedParams {
        conv,
        relu: i32::from(relu),
        pool_size: i(pool_size, "pool size")?,
        pool_stride: i(pool_stride, "pool stride")?,
        out_h: i(out.h, "height")?,
        out_w: i(out.w, "width")?,
    })
}

/// Parameters and launch of a GEMM producer ([`producer`]) for `c` on
/// `input`, then a max pool `(size, stride)` into `out`.
///
/// # Errors
/// [`KernelError`] when the convolution cannot take `input` or sizes
/// exceed the kernels' 32-bit or grid limits.
pub(crate) fn gemm_producer(
    c: &Conv2d,
    input: Shape,
    (pool_size, pool_stride): (usize, usize),
    out: Shape,
) -> Result<(FusedParams, Launch), KernelError> {
    let conv_out = c.params.output_shape(input)?;
    let conv = conv_params(c, input, conv_out)?;
    let per = GEMM_BN / (pool_size * pool_size).max(1);
    let groups = c.params.groups.max(1);
    let x = u32::try_from((out.h * out.w).div_ceil(per)).map_err(|_| too_big(out))?;
    let y = (out.c / groups).div_ceil(GEMM_BM);
    if y > GRID_YZ || groups > GRID_YZ {
        return Err(too_big(out));
    }
    // Offsets into a group's input and weights fit 32-bit products too.
    i(input.len(), "input values")?;
    i(c.weights.len(), "weights")?;
    let params = fused_params(conv, (pool_size, pool_stride), false, out)?;
    Ok((
        params,
        Launch {
            grid: [x, y as u32, groups as u32],
            block: [GEMM_THREADS, 1, 1],
        },
    ))
}

/// Which pool kernel a pool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKernel {
    /// `maxpool_f32`: square, unpadded, undilated max pool in floor mode.
    Max,
    /// `pool2d_f32`: any window, one thread per output.
    General,
    /// `pool2d_wide_f32`: large windows (global pools), one block per
    /// output.
    Wide,
}

impl PoolKernel {
    /// The kernel's entry point.
    pub fn name(self) -> &'static str {
        match self {
            PoolKernel::Max => "maxpool_f32",
            PoolKernel::General => "pool2d_f32",
            PoolKernel::Wide => "pool2d_wide_f32",
        }
    }
}

pub(crate) fn i(v: usize, what: &str) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::BadParam {
        op: "cuda",
        what: format!("{what} {v} exceeds the CUDA kernels' 32-bit sizes"),
    })
}

/// A grid of 32×8 output tiles over `out`'s height and width with `z`
/// blocks along z.
fn tile_grid(out: Shape, z: usize) -> Result<Launch, KernelError> {
    let x = u32::try_from(out.w.div_ceil(TILE_W as usize)).map_err(|_| too_big(out))?;
    let y = out.h.div_ceil(TILE_H as usize);
    if y > GRID_YZ || z > GRID_YZ {
        return Err(too_big(out));
    }
    Ok(Launch {
        grid: [x, y as u32, z as u32],
        block: [TILE_W, TILE_H, 1],
    })
}

/// The grid of the conv kernels (and the conv producer of `chain.cu`):
/// 32×8 output tiles, and along z [`OC_BLOCK`]-channel blocks group by
/// group (a block never straddles two groups).
pub(crate) fn grid_2d(out: Shape, groups: usize) -> Result<Launch, KernelError> {
    let per_group = out.c / groups.max(1);
    tile_grid(out, groups * per_group.div_ceil(OC_BLOCK as usize))
}

fn too_big(s: Shape) -> KernelError {
    KernelError::BadParam {
        op: "cuda",
        what: format!("output {s} exceeds the CUDA grid limits"),
    }
}

/// A 1-D grid-stride launch for `n` values.
pub fn launch_1d(n: usize) -> Launch {
    let blocks = n.div_ceil(THREADS_1D as usize).clamp(1, GRID_YZ);
    Launch {
        grid: [blocks as u32, 1, 1],
        block: [THREADS_1D, 1, 1],
    }
}

/// Rows × columns of the shared input tile of an `out_h`×`out_w` block of
/// convolution outputs (strides, dilations and the kernel of `c`).
fn conv_tile(c: &Conv2d, out_h: usize, out_w: usize) -> usize {
    let win = c.params.window;
    let side = |n: usize, a: usize| {
        n.saturating_sub(1)
            .saturating_mul(win.stride[a])
            .saturating_add(
                win.kernel[a]
                    .saturating_sub(1)
                    .saturating_mul(win.dilation[a]),
            )
            .saturating_add(1)
    };
    side(out_h, 0).saturating_mul(side(out_w, 1))
}

/// The `ConvParams` of `c` on `input`.
fn conv_params(c: &Conv2d, input: Shape, out: Shape) -> Result<ConvParams, KernelError> {
    let p = c.params;
    let win = p.window;
    Ok(ConvParams {
        in_c: i(input.c, "channels")?,
        in_h: i(input.h, "height")?,
        in_w: i(input.w, "width")?,
        out_c: i(out.c, "channels")?,
        out_h: i(out.h, "height")?,
        out_w: i(out.w, "width")?,
        k_h: i(win.kernel[0], "kernel")?,
        k_w: i(win.kernel[1], "kernel")?,
        stride_h: i(win.stride[0], "stride")?,
        stride_w: i(win.stride[1], "stride")?,
        pad_top: i(win.pads[0], "padding")?,
        pad_left: i(win.pads[1], "padding")?,
        dil_h: i(win.dilation[0], "dilation")?,
        dil_w: i(win.dilation[1], "dilation")?,
        groups: i(p.groups, "groups")?,
        has_bias: i32::from(c.bias.is_some()),
    })
}

/// Parameters, kernel choice and launch of a convolution on `input`:
/// depthwise convolutions (`groups == in_channels`) run
/// `conv2d_depthwise_f32`, others `conv2d_f32`, and both
/// `conv2d_direct_f32` when the receptive field of a 32×8 output tile
/// exceeds the shared tile.
///
/// # Errors
/// [`KernelError`] when the op cannot take `input` or sizes exceed the kernels' limits.
pub fn conv(conv: &Conv2d, input: Shape) -> Result<(ConvParams, ConvKernel, Launch), KernelError> {
    let out = conv.params.output_shape(input)?;
    let params = conv_params(conv, input, out)?;
    let fits = conv_tile(conv, TILE_H as usize, TILE_W as usize) <= SMEM_FLOATS;
    let kernel = match (fits, conv.params.depthwise()) {
        (true, true) => ConvKernel::Depthwise,
        (true, false) => ConvKernel::Tiled,
        (false, _) => ConvKernel::Direct,
    };
    let launch = match kernel {
        ConvKernel::Depthwise => tile_grid(out, input.c)?,
        _ => grid_2d(out, conv.params.groups)?,
    };
    Ok((params, kernel, launch))
}

/// Parameters, kernel choice and launch of a pool on `input`: the plain
/// square max pool runs `maxpool_f32`; windows at least
/// [`WIDE_POOL_COLS`] wide with at least [`WIDE_POOL_TAPS`] taps (global
/// pools of large frames) `pool2d_wide_f32`, one block per output; any
/// other `pool2d_f32`.
///
/// # Errors
/// [`KernelError`] when the window does not fit or sizes exceed the limits.
pub fn pool(p: &Pool2d, input: Shape) -> Result<(PoolParams, PoolKernel, Launch), KernelError> {
    let out = p.output_shape(input)?;
    let win = p.window;
    let (avg, cip) = match p.kind {
        PoolKind::Max => (0, 0),
        PoolKind::Avg { count_include_pad } => (1, i32::from(count_include_pad)),
    };
    let params = PoolParams {
        c: i(input.c, "channels")?,
        in_h: i(input.h, "height")?,
        in_w: i(input.w, "width")?,
        out_h: i(out.h, "height")?,
        out_w: i(out.w, "width")?,
        k_h: i(win.kernel[0], "pool kernel")?,
        k_w: i(win.kernel[1], "pool kernel")?,
        stride_h: i(win.stride[0], "pool stride")?,
        stride_w: i(win.stride[1], "pool stride")?,
        pad_top: i(win.pads[0], "pool padding")?,
        pad_left: i(win.pads[1], "pool padding")?,
        pad_bottom: i(win.pads[2], "pool padding")?,
        pad_right: i(win.pads[3], "pool padding")?,
        dil_h: i(win.dilation[0], "pool dilation")?,
        dil_w: i(win.dilation[1], "pool dilation")?,
        avg,
        count_include_pad: cip,
    };
    // Taps and every count a kernel forms from them must fit in 32 bits.
    i(p.taps(), "pool window taps")?;
    if p.is_simple_max() {
        return Ok((params, PoolKernel::Max, launch_1d(out.len())));
    }
    let wide = win.kernel[1] >= WIDE_POOL_COLS
        && p.taps() >= WIDE_POOL_TAPS
        && win.kernel[1] <= SMEM_FLOATS
        && out.h <= GRID_YZ
        && out.c <= GRID_YZ;
    if wide {
        let launch = Launch {
            grid: [
                u32::try_from(out.w).map_err(|_| too_big(out))?,
                out.h as u32,
                out.c as u32,
            ],
            block: [THREADS_1D, 1, 1],
        };
        return Ok((params, PoolKernel::Wide, launch));
    }
    Ok((params, PoolKernel::General, launch_1d(out.len())))
}

/// Arguments and launch of `channel_affine_f32` on `input`: channels,
/// values per plane, grid.
///
/// # Errors
/// [`KernelError`] when the affine's channels differ from the input's or
/// sizes exceed the kernel's limits.
pub fn channel_affine(a: &ChannelAffine, input: Shape) -> Result<(i32, i64, Launch), KernelError> {
    a.check_channels(input.c)?;
    let plane = input.h * input.w;
    let plane64 = i64::try_from(plane).map_err(|_| too_big(input))?;
    let x = plane.div_ceil(THREADS_1D as usize).clamp(1, GRID_YZ);
    let y = input.c.clamp(1, GRID_YZ);
    Ok((
        i(input.c, "channels")?,
        plane64,
        Launch {
            grid: [x as u32, y as u32, 1],
            block: [THREADS_1D, 1, 1],
        },
    ))
}

/// Parameters and launch of the fused conv → (ReLU) → pool kernel, or
/// `None` when the chain has no pool, its pool is not a plain max pool of
/// at most [`MAX_POOL`], or its input tile exceeds the shared memory (then
/// a generated kernel or the members one by one run instead).
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
    if !pool.is_simple_max() || producer(c, (pool.size(), pool.window.stride[0])) != Producer::Tiled
    {
        return Ok(None);
    }
    let out = pool.output_shape(c.params.output_shape(input)?)?;
    conv_producer(c, input, (pool.size(), pool.window.stride[0]), relu, out)
}

/// Parameters and launch of a kernel with the conv producer of `chain.cu`
/// (the fused kernel and generated conv chains): `pool` is `(size, stride)`
/// (`(1, 1)` stores every value), `out` the final output shape. Any
/// strides, dilations, padding and groups; `None` when the window exceeds
/// [`MAX_POOL`] or the input tile the shared memory.
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
    let conv_out = c.params.output_shape(input)?;
    let conv = conv_params(c, input, conv_out)?;
    let conv_w = (TILE_W as usize - 1) * pool_stride + pool_size;
    let conv_h = (TILE_H as usize - 1) * pool_stride + pool_size;
    if pool_size > MAX_POOL || conv_tile(c, conv_h, conv_w) > SMEM_FLOATS {
        return Ok(None);
    }
    let params = fused_params(conv, (pool_size, pool_stride), relu, out)?;
    Ok(Some((params, grid_2d(out, c.params.groups)?)))
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
