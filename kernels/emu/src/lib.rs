//! Runs streamfuse's CUDA C kernels on CPU threads (see `cuda_emu.h`), with
//! the same launch planning and op sequencing as the CUDA backend
//! (`streamfuse_kernels::cuda`), so tests on machines without a GPU check
//! the very kernels a GPU would run.

use std::ffi::c_void;

use streamfuse_kernels::cuda::params::{
    self, ConvKernel, ConvParams, FusedParams, Launch, PoolKernel, PoolParams, VisionLaunch,
    VisionParams,
};
use streamfuse_kernels::{
    ChannelAffine, Conv2d, EpilogueOp, FusedChain, KernelError, Op, Pointwise, Pool2d, Step,
    Tensor, Vision,
};

pub mod generated;

/// One emulated thread of a kernel compiled elsewhere (a generated
/// kernel's library): `(arg, thread, block, block_dim, grid_dim)`.
pub(crate) type ThreadBody = unsafe extern "C" fn(
    *mut c_void,
    *const [u32; 3],
    *const [u32; 3],
    *const [u32; 3],
    *const [u32; 3],
);

/// The launcher a generated kernel's library calls back (`cuda_emu.h`):
/// `(launch, serial, body, arg, the library's barrier hook)`.
pub(crate) type HostLaunch = unsafe extern "C" fn(
    *const Launch,
    i32,
    ThreadBody,
    *mut c_void,
    *mut Option<unsafe extern "C" fn()>,
);

unsafe extern "C" {
    /// Runs `body` for every thread of the grid `l` (serially when
    /// `serial` is 1), with the launch's barrier in `wait`.
    pub(crate) fn sf_emu_host_launch(
        l: *const Launch,
        serial: i32,
        body: ThreadBody,
        arg: *mut c_void,
        wait: *mut Option<unsafe extern "C" fn()>,
    );
    fn sf_emu_conv2d(
        l: *const Launch,
        kernel: i32,
        input: *const f32,
        w: *const f32,
        bias: *const f32,
        out: *mut f32,
        p: *const ConvParams,
    );
    fn sf_emu_broken_conv2d(
        l: *const Launch,
        input: *const f32,
        w: *const f32,
        bias: *const f32,
        out: *mut f32,
        p: *const ConvParams,
    );
    fn sf_emu_pool(
        l: *const Launch,
        kernel: i32,
        input: *const f32,
        out: *mut f32,
        p: *const PoolParams,
    );
    fn sf_emu_channel_affine(
        l: *const Launch,
        data: *mut f32,
        scale: *const f32,
        shift: *const f32,
        channels: i32,
        plane: std::ffi::c_long,
    );
    fn sf_emu_relu(l: *const Launch, data: *mut f32, n: std::ffi::c_long);
    fn sf_emu_clip(l: *const Launch, data: *mut f32, n: std::ffi::c_long, lo: f32, hi: f32);
    fn sf_emu_fused(
        l: *const Launch,
        input: *const f32,
        w: *const f32,
        bias: *const f32,
        out: *mut f32,
        chan: *const f32,
        p: *const FusedParams,
    );
    fn sf_emu_vision(
        l: *const Launch,
        which: i32,
        input: *const f32,
        out: *mut f32,
        p: *const VisionParams,
    );
    fn sf_emu_normalize(
        l: *const Launch,
        input: *const f32,
        out: *mut f32,
        n: std::ffi::c_long,
        scale: f32,
        mean: f32,
        std: f32,
    );
    fn sf_emu_sobel(
        l: *const Launch,
        input: *const f32,
        deriv: *mut f32,
        smooth: *mut f32,
        out: *mut f32,
        p: *const VisionParams,
    );
}

/// A vision op through the kernels of `vision.cu`, launched as the CUDA
/// backend launches them.
///
/// # Errors
/// [`KernelError`] when the op cannot take the input.
pub fn vision(op: &Vision, input: &Tensor) -> Result<Tensor, KernelError> {
    let mut out = Tensor::zeros(op.output_shape(input.shape())?);
    let (src, dst) = (input.data().as_ptr(), out.data_mut().as_mut_ptr());
    // SAFETY (every call): the buffers hold the shapes the params describe
    // (`params::vision` derives both from the same shapes).
    match params::vision(op, input.shape())? {
        VisionLaunch::Gray(p, l) => unsafe { sf_emu_vision(&l, 0, src, dst, &p) },
        VisionLaunch::Resize(p, l) => unsafe { sf_emu_vision(&l, 3, src, dst, &p) },
        VisionLaunch::Separable(p, l) => {
            let mut tmp = vec![0.0f32; input.data().len()];
            unsafe {
                sf_emu_vision(&l, 1, src, tmp.as_mut_ptr(), &p);
                sf_emu_vision(&l, 2, tmp.as_ptr(), dst, &p);
            }
        }
        VisionLaunch::Sobel(p, l) => {
            let n = input.data().len();
            let (mut d, mut sm) = (vec![0.0f32; n], vec![0.0f32; n]);
            unsafe { sf_emu_sobel(&l, src, d.as_mut_ptr(), sm.as_mut_ptr(), dst, &p) };
        }
        VisionLaunch::Normalize(per, plane, l) => {
            for (c, (scale, mean, std)) in per.into_iter().enumerate() {
                unsafe {
                    sf_emu_normalize(
                        &l,
                        src.add(c * plane),
                        dst.add(c * plane),
                        plane as std::ffi::c_long,
                        scale,
                        mean,
                        std,
                    );
                }
            }
        }
    }
    Ok(out)
}

const ZERO: [f32; 1] = [0.0];

fn bias_ptr(c: &Conv2d) -> *const f32 {
    c.bias.as_ref().map_or(ZERO.as_ptr(), |b| b.as_ptr())
}

/// Which conv kernel source to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The real kernels.
    Real,
    /// `conv2d_f32` with an off-by-one halo (tests must catch it). Only for
    /// convolutions the planner gives the tiled kernel: others are refused
    /// (their receptive field would overflow the kernel's shared tile).
    BrokenHalo,
}

/// Convolution through the kernel the planner picks (`conv2d_f32`,
/// `conv2d_depthwise_f32` or `conv2d_direct_f32`).
///
/// # Errors
/// [`KernelError`] when the op cannot take the input, or `variant` is
/// [`Variant::BrokenHalo`] and the planner picks the direct kernel.
pub fn conv2d(input: &Tensor, c: &Conv2d, variant: Variant) -> Result<Tensor, KernelError> {
    let (p, kernel, launch) = params::conv(c, input.shape())?;
    if variant == Variant::BrokenHalo && kernel != ConvKernel::Tiled {
        return Err(KernelError::BadParam {
            op: "conv2d",
            what: format!(
                "the broken tiled kernel cannot run a convolution planned for {}",
                kernel.name()
            ),
        });
    }
    let mut out = Tensor::zeros(c.params.output_shape(input.shape())?);
    let which = match kernel {
        ConvKernel::Tiled => 0,
        ConvKernel::Direct => 1,
        ConvKernel::Depthwise => 2,
    };
    // SAFETY: buffers hold the shapes `p` describes (checked by the planner);
    // the weights hold out*in/groups*kh*kw values; bias is read only when
    // has_bias.
    unsafe {
        match variant {
            Variant::Real => sf_emu_conv2d(
                &launch,
                which,
                input.data().as_ptr(),
                c.weights.as_ptr(),
                bias_ptr(c),
                out.data_mut().as_mut_ptr(),
                &p,
            ),
            Variant::BrokenHalo => sf_emu_broken_conv2d(
                &launch,
                input.data().as_ptr(),
                c.weights.as_ptr(),
                bias_ptr(c),
                out.data_mut().as_mut_ptr(),
                &p,
            ),
        }
    }
    Ok(out)
}

/// A convolution as the CUDA backend runs it: deep layers through a
/// generated kernel with a GEMM producer ([`params::producer`]), others
/// through [`conv2d`].
fn conv_as_cuda(input: &Tensor, c: &Conv2d) -> Result<Tensor, KernelError> {
    if params::producer(c, (1, 1)) != params::Producer::Tiled {
        let chain = FusedChain {
            conv: Some(c.clone()),
            epilogue: vec![],
            pool: None,
        };
        if let Some(t) = generated_or_error(&chain, input)? {
            return Ok(t);
        }
    }
    conv2d(input, c, Variant::Real)
}

/// [`generated::run`], its errors as [`KernelError`]s.
fn generated_or_error(chain: &FusedChain, input: &Tensor) -> Result<Option<Tensor>, KernelError> {
    generated::run(chain, input).map_err(|e| KernelError::BadParam {
        op: "fused",
        what: e.to_string(),
    })
}

/// Pooling through the kernel the planner picks (`maxpool_f32`,
/// `pool2d_f32` or `pool2d_wide_f32`).
///
/// # Errors
/// [`KernelError`] when the window does not fit.
pub fn pool(input: &Tensor, pool: &Pool2d) -> Result<Tensor, KernelError> {
    let (p, kernel, launch) = params::pool(pool, input.shape())?;
    let which = match kernel {
        PoolKernel::Max => 0,
        PoolKernel::General => 1,
        PoolKernel::Wide => 2,
    };
    let mut out = Tensor::zeros(pool.output_shape(input.shape())?);
    // SAFETY: buffers hold the shapes `p` describes.
    unsafe {
        sf_emu_pool(
            &launch,
            which,
            input.data().as_ptr(),
            out.data_mut().as_mut_ptr(),
            &p,
        )
    };
    Ok(out)
}

/// A per-channel affine in place through `channel_affine_f32`.
///
/// # Errors
/// [`KernelError`] when the affine's channels differ from the tensor's.
pub fn channel_affine(mut t: Tensor, a: &ChannelAffine) -> Result<Tensor, KernelError> {
    let (channels, plane, launch) = params::channel_affine(a, t.shape())?;
    // SAFETY: `channels * plane` values at the data pointer (the planner
    // checked the shape), `channels` values in scale and shift.
    unsafe {
        sf_emu_channel_affine(
            &launch,
            t.data_mut().as_mut_ptr(),
            a.scale.as_ptr(),
            a.shift.as_ptr(),
            channels,
            plane as std::ffi::c_long,
        )
    };
    Ok(t)
}

/// ReLU in place through `relu_f32`.
pub fn relu(mut t: Tensor) -> Tensor {
    let n = t.data().len();
    let launch = params::launch_1d(n);
    // SAFETY: `n` values at the pointer.
    unsafe { sf_emu_relu(&launch, t.data_mut().as_mut_ptr(), n as std::ffi::c_long) };
    t
}

/// Runs an op as the CUDA backend would: fused chains through
/// `fused_conv_pool_f32` or their generated kernel when the planner
/// allows, else member by member.
///
/// # Errors
/// [`KernelError`] when the op cannot take the input.
pub fn run(op: &Op, input: &Tensor) -> Result<Tensor, KernelError> {
    match op {
        Op::Vision(v) => vision(v, input),
        // The CUDA backend runs a vision chain step by step.
        Op::VisionChain(steps) => {
            let mut t = input.clone();
            for s in steps {
                t = match s {
                    Step::Vision(v) => vision(v, &t)?,
                    Step::Pointwise(p) => run(&Op::Pointwise(*p), &t)?,
                };
            }
            Ok(t)
        }
        Op::Conv2d(c) => conv_as_cuda(input, c),
        Op::Pointwise(Pointwise::Relu) => Ok(relu(input.clone())),
        Op::Pointwise(Pointwise::Clip { min, max }) => {
            op.output_shape(input.shape())?;
            let mut t = input.clone();
            let n = t.data().len();
            let launch = params::launch_1d(n);
            // SAFETY: `n` values at the pointer.
            unsafe {
                sf_emu_clip(
                    &launch,
                    t.data_mut().as_mut_ptr(),
                    n as std::ffi::c_long,
                    *min,
                    *max,
                )
            };
            Ok(t)
        }
        Op::Pool(p) => pool(input, p),
        Op::ChannelAffine(a) => channel_affine(input.clone(), a),
        Op::Pointwise(p) => {
            let chain = FusedChain {
                conv: None,
                epilogue: vec![(*p).into()],
                pool: None,
            };
            run(&Op::Fused(chain), input)
        }
        Op::Fused(chain) => {
            if let Some((p, launch)) = params::fused(chain, input.shape())? {
                let mut out = Tensor::zeros(chain.output_shape(input.shape())?);
                let conv = chain.conv.as_ref().ok_or_else(|| KernelError::BadParam {
                    op: "fused",
                    what: "the hand-written fused kernel needs a convolution".into(),
                })?;
                // SAFETY: buffers hold the shapes `p` describes; the kernel
                // never reads `chan`.
                unsafe {
                    sf_emu_fused(
                        &launch,
                        input.data().as_ptr(),
                        conv.weights.as_ptr(),
                        bias_ptr(conv),
                        out.data_mut().as_mut_ptr(),
                        ZERO.as_ptr(),
                        &p,
                    );
                }
                return Ok(out);
            }
            if let Some(t) = generated_or_error(chain, input)? {
                return Ok(t);
            }
            // Does not fit a fused kernel: member by member.
            let mut t = match &chain.conv {
                Some(c) => conv_as_cuda(input, c)?,
                None => input.clone(),
            };
            for e in &chain.epilogue {
                t = run(&EpilogueOp::to_op(e), &t)?;
            }
            match &chain.pool {
                Some(p) => pool(&t, p),
                None => Ok(t),
            }
        }
    }
}
