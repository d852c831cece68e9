//! Running ops on a CUDA device through `cudarc` (driver API, loaded at run
//! time). A chain of ops runs with one upload and one download: frames stay
//! on the device between co-located stages.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr,
    LaunchConfig, PinnedHostSlice, PushKernelArg, sys,
};

use super::SOURCES;
use super::codegen;
use super::nvrtc::{self, NvrtcError};
use super::params::{
    self, ConvParams, FusedParams, Launch, PoolParams, Producer, VisionLaunch, VisionParams,
};
use super::pool::Pool;
use crate::error::KernelError;
use crate::op::{Conv2d, EpilogueOp, FusedChain, Op, Pointwise};

mod launch;
use crate::tensor::{Shape, Tensor};
use crate::vision::{Step, Vision};

// SAFETY: #[repr(C)] structs of i32 fields, laid out as in common.cuh.
unsafe impl DeviceRepr for ConvParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for PoolParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for FusedParams {}
// SAFETY: #[repr(C)] struct of i32 and f32 fields, laid out as in common.cuh.
unsafe impl DeviceRepr for VisionParams {}

/// A shared device buffer (uploaded weights).
type DeviceBuf = Arc<CudaSlice<f32>>;

/// The CUDA backend cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    /// No CUDA driver library.
    #[error("no CUDA driver (libcuda.so) could be loaded")]
    NoDriver,
    /// The ordinal does not exist.
    #[error("CUDA device {ordinal} requested, but {count} device(s) found")]
    NoDevice {
        /// Requested.
        ordinal: usize,
        /// Present.
        count: usize,
    },
    /// A driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// NVRTC failed.
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
    /// The op cannot take the input.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// The CUDA kernel(s) an op runs as on a [`CudaDevice`] ([`kernel_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// Hand-written kernels of [`SOURCES`], launched in this order.
    HandWritten(Vec<&'static str>),
    /// The kernel [`codegen`] generates for the chain (`sf_chain_<hash>`).
    Generated(String),
    /// A fused chain that fits no fused kernel: each member's kernel(s) in
    /// turn.
    Members,
    /// A chain of vision steps: each step's kernel(s) in turn.
    Steps,
}

impl std::fmt::Display for KernelChoice {
    /// Kernel names joined by `+`, the generated kernel's name, or what
    /// runs instead of one kernel (`members one by one`, `each step's
    /// kernels in turn`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HandWritten(k) => f.write_str(&k.join("+")),
            Self::Generated(name) => f.write_str(name),
            Self::Members => f.write_str("members one by one"),
            Self::Steps => f.write_str("each step's kernels in turn"),
        }
    }
}

/// The CUDA kernel(s) `op` runs as on an input of shape `input`: the
/// choice [`CudaDevice`]'s launch path makes (it is made by the same
/// functions), so tools can name the kernel of a plan's group without a
/// device. A conv with its optional ReLU and a plain max pool runs as
/// `fused_conv_pool_f32`, other fused chains and pointwise ops without a
/// kernel of their own (leaky ReLU, affine, threshold) as a generated
/// kernel, and a chain no fused kernel fits (e.g. one with an average or
/// padded pool) member by member.
///
/// # Errors
/// [`KernelError`] when the op cannot take `input`.
pub fn kernel_of(op: &Op, input: Shape) -> Result<KernelChoice, KernelError> {
    Ok(match op {
        Op::Pointwise(Pointwise::Relu) => KernelChoice::HandWritten(vec![RELU]),
        Op::Pointwise(Pointwise::Clip { .. }) => KernelChoice::HandWritten(vec![CLIP]),
        Op::Pointwise(p) => fused_choice(&pointwise_chain(*p), input)?,
        Op::Pool(p) => KernelChoice::HandWritten(vec![params::pool(p, input)?.1.name()]),
        Op::ChannelAffine(a) => {
            params::channel_affine(a, input)?;
            KernelChoice::HandWritten(vec![CHANNEL_AFFINE])
        }
        Op::Conv2d(c) if params::producer(c, (1, 1)) != Producer::Tiled => {
            fused_choice(&conv_chain(c), input)?
        }
        Op::Conv2d(c) => KernelChoice::HandWritten(vec![params::conv(c, input)?.1.name()]),
        Op::Vision(v) => KernelChoice::HandWritten(vision_kernels(&params::vision(v, input)?)),
        Op::VisionChain(_) => KernelChoice::Steps,
        Op::Fused(chain) => fused_choice(chain, input)?,
    })
}

/// Hand-written entry points the launch path uses (see [`SOURCES`]).
const RELU: &str = "relu_f32";
const CLIP: &str = "clip_f32";
const CHANNEL_AFFINE: &str = "channel_affine_f32";
const FUSED_CONV_POOL: &str = "fused_conv_pool_f32";
const GRAY: &str = "gray_f32";
const RESIZE: &str = "resize_linear_f32";
const HFILTER: &str = "hfilter_f32";
const VFILTER: &str = "vfilter_f32";
const SOBEL_H: &str = "sobel_h_f32";
const SOBEL_V: &str = "sobel_v_f32";
const NORMALIZE: &str = "normalize_f32";

/// The kernels a vision launch runs, in order.
fn vision_kernels(launch: &VisionLaunch) -> Vec<&'static str> {
    match launch {
        VisionLaunch::Gray(..) => vec![GRAY],
        VisionLaunch::Resize(..) => vec![RESIZE],
        VisionLaunch::Separable(..) => vec![HFILTER, VFILTER],
        VisionLaunch::Sobel(..) => vec![SOBEL_H, SOBEL_V],
        VisionLaunch::Normalize(..) => vec![NORMALIZE],
    }
}

/// How the convolution of `op` (a convolution or a fused chain with one)
/// is computed by the kernel [`kernel_of`] names: a GEMM producer or the
/// tiled one; `None` without a convolution, or when it runs member by
/// member or as a hand-written kernel other than a generated one.
///
/// # Errors
/// [`KernelError`] when the op cannot take `input`.
pub fn producer_of(op: &Op, input: Shape) -> Result<Option<Producer>, KernelError> {
    let chain = match op {
        Op::Conv2d(c) => {
            // The tiled producer is the hand-written conv kernels' role.
            let p = params::producer(c, (1, 1));
            return Ok((p != Producer::Tiled).then_some(p));
        }
        Op::Fused(chain) if chain.conv.is_some() => chain.clone(),
        _ => return Ok(None),
    };
    Ok(match fused_route(&chain, input)? {
        FusedRoute::Generated(..) => codegen::chain_producer(&chain),
        FusedRoute::ConvPool(..) => Some(Producer::Tiled),
        FusedRoute::Members => None,
    })
}

/// A convolution as a one-member chain (run by a generated kernel with a
/// GEMM producer, [`params::producer`]).
pub(crate) fn conv_chain(c: &Conv2d) -> FusedChain {
    FusedChain {
        conv: Some(c.clone()),
        epilogue: vec![],
        pool: None,
    }
}

/// A pointwise op without a kernel of its own as a one-op chain (run by a
/// generated kernel).
fn pointwise_chain(p: Pointwise) -> FusedChain {
    FusedChain {
        conv: None,
        epilogue: vec![p.into()],
        pool: None,
    }
}

/// How a fused chain runs on an input of `shape`.
enum FusedRoute {
    /// `fused_conv_pool_f32`: conv, optional ReLU, pool.
    ConvPool(FusedParams, Launch),
    /// The chain's generated kernel.
    Generated(FusedParams, Launch),
    /// Member by member.
    Members,
}

/// The one place a fused chain's kernel is chosen ([`kernel_of`] and the
/// launch path).
fn fused_route(chain: &FusedChain, shape: Shape) -> Result<FusedRoute, KernelError> {
    if chain.conv.is_some()
        && let Some((p, l)) = params::fused(chain, shape)?
    {
        return Ok(FusedRoute::ConvPool(p, l));
    }
    Ok(match codegen::plan(chain, shape)? {
        Some((p, l)) => FusedRoute::Generated(p, l),
        None => FusedRoute::Members,
    })
}

fn fused_choice(chain: &FusedChain, shape: Shape) -> Result<KernelChoice, KernelError> {
    Ok(match fused_route(chain, shape)? {
        FusedRoute::ConvPool(..) => KernelChoice::HandWritten(vec![FUSED_CONV_POOL]),
        FusedRoute::Generated(..) => KernelChoice::Generated(codegen::generate(chain).name),
        FusedRoute::Members => KernelChoice::Members,
    })
}

fn drv(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Driver(e.to_string())
}

/// Whether a CUDA driver library can be loaded (never panics).
pub fn driver_available() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices (0 without a driver).
pub fn device_count() -> usize {
    if !driver_available() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

/// A tensor in device memory.
#[derive(Debug)]
pub struct DeviceTensor {
    buf: CudaSlice<f32>,
    shape: Shape,
}

impl DeviceTensor {
    /// Its shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// A device-to-device copy (for benchmarks that reuse one input).
    ///
    /// # Errors
    /// [`CudaError::Driver`] when the copy fails.
    pub fn clone_on_device(&self, dev: &CudaDevice) -> Result<Self, CudaError> {
        Ok(Self {
            buf: dev.stream.clone_dtod(&self.buf).map_err(drv)?,
            shape: self.shape,
        })
    }
}

/// A host weight buffer and its device copy.
type CachedWeights = (Arc<[f32]>, Arc<CudaSlice<f32>>);

/// One CUDA device with its compiled kernels and uploaded weights.
#[derive(Debug)]
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    /// Stream the op launches go to (the default one, or a lane's).
    stream: Arc<CudaStream>,
    /// The device's own stream (weights, synchronous calls).
    main: Arc<CudaStream>,
    /// Frames in flight ([`CudaDevice::submit`]).
    lanes: Vec<Option<Lane>>,
    name: String,
    arch: &'static str,
    functions: HashMap<&'static str, CudaFunction>,
    /// Generated fused-chain kernels, by [`codegen::chain_key`].
    generated: HashMap<String, CudaFunction>,
    /// Device copies of weights, keyed by the host `Arc`'s address. The
    /// entry holds that `Arc` too, so the address cannot be freed and reused
    /// by other weights while it is cached.
    weights: HashMap<usize, CachedWeights>,
    /// The per-channel buffers of generated chains
    /// ([`codegen::channel_data`]), keyed by the addresses of the scales
    /// and shifts they pack, which the entry holds (as `weights`).
    channels: HashMap<Vec<usize>, CachedChannels>,
    /// Device buffers of the current stream (a lane swaps its own in while
    /// it queues a frame).
    pool: Pool<CudaSlice<f32>>,
}

/// The host scales and shifts packed into a chain's channel buffer, and
/// its device copy.
type CachedChannels = (Vec<Arc<[f32]>>, Arc<CudaSlice<f32>>);

impl CudaDevice {
    /// Opens device `ordinal` and compiles every kernel for its
    /// architecture (PTX cached on disk).
    ///
    /// # Errors
    /// [`CudaError`] when there is no driver, no such device, no NVRTC, or
    /// a kernel fails to compile or load.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        if !driver_available() {
            return Err(CudaError::NoDriver);
        }
        let count = device_count();
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(drv)?;
        let capability = ctx.compute_capability().map_err(drv)?;
        let name = ctx.name().map_err(drv)?;
        let stream = ctx.new_stream().map_err(drv)?;
        let mut functions = HashMap::new();
        let mut arch = String::new();
        for src in SOURCES {
            let (code, code_arch) = nvrtc::for_device(src.name, &src.standalone(), capability)?;
            let module: Arc<CudaModule> = ctx.load_module(code).map_err(|e| {
                CudaError::Driver(format!("loading {} ({code_arch}) on {name}: {e}", src.name))
            })?;
            for &k in src.kernels {
                functions.insert(k, module.load_function(k).map_err(drv)?);
            }
            arch = code_arch;
        }
        let arch: &'static str = Box::leak(arch.into_boxed_str());
        tracing::info!(device = %name, arch, "CUDA device ready");
        Ok(Self {
            ctx,
            main: stream.clone(),
            stream,
            lanes: Vec::new(),
            name,
            arch,
            functions,
            generated: HashMap::new(),
            weights: HashMap::new(),
            channels: HashMap::new(),
            pool: Pool::default(),
        })
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the kernels were compiled to: `sm_XX` (a cubin for this
    /// device) or `compute_XX` (PTX the driver JIT-compiles).
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    fn function(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.functions
            .get(name)
            .ok_or_else(|| CudaError::Driver(format!("kernel {name} not loaded")))
    }

    /// The generated kernel for `chain`, compiled (PTX cached on disk) and
    /// loaded on first use.
    fn generated_kernel(&mut self, chain: &FusedChain) -> Result<CudaFunction, CudaError> {
        // Keyed by the chain's own part of the source (small), so a frame
        // does not rebuild and hash the whole kernel source.
        let key = codegen::chain_key(chain);
        if let Some(f) = self.generated.get(&key) {
            return Ok(f.clone());
        }
        let g = codegen::generate(chain);
        let capability = self.ctx.compute_capability().map_err(drv)?;
        let (code, _) = nvrtc::for_device(&g.name, &g.source, capability)?;
        let module: Arc<CudaModule> = self.ctx.load_module(code).map_err(drv)?;
        let f = module.load_function(&g.name).map_err(drv)?;
        tracing::debug!(kernel = %g.name, chain = %chain.label(), "generated kernel loaded");
        self.generated.insert(key, f.clone());
        Ok(f)
    }

    fn upload_weights(&mut self, v: &Arc<[f32]>) -> Result<Arc<CudaSlice<f32>>, CudaError> {
        let key = Arc::as_ptr(v).cast::<f32>() as usize;
        if let Some((_, s)) = self.weights.get(&key) {
            return Ok(s.clone());
        }
        // Drop device copies of weights nobody else holds any more (replaced
        // weights, finished ops) before adding one.
        self.weights
            .retain(|_, (host, _)| Arc::strong_count(host) > 1);
        let s = Arc::new(self.main.clone_htod(&v[..]).map_err(drv)?);
        // Weights are used from the lanes' streams too: wait for the copy.
        self.main.synchronize().map_err(drv)?;
        self.weights.insert(key, (v.clone(), s.clone()));
        Ok(s)
    }

    fn conv_weights(&mut self, c: &Conv2d) -> Result<(DeviceBuf, DeviceBuf), CudaError> {
        let w = self.upload_weights(&c.weights)?;
        let b = match &c.bias {
            Some(b) => self.upload_weights(b)?,
            None => self.upload_weights(&ZERO.with(Clone::clone))?,
        };
        Ok((w, b))
    }

    /// Copies a host tensor to the device.
    ///
    /// # Errors
    /// [`CudaError::Driver`] when the copy fails.
    pub fn upload(&self, t: &Tensor) -> Result<DeviceTensor, CudaError> {
        Ok(DeviceTensor {
            buf: self.stream.clone_htod(t.data()).map_err(drv)?,
            shape: t.shape(),
        })
    }

    /// Copies a device tensor back to the host.
    ///
    /// # Errors
    /// [`CudaError::Driver`] when the copy fails.
    pub fn download(&self, t: &DeviceTensor) -> Result<Tensor, CudaError> {
        let host = self.stream.clone_dtoh(&t.buf).map_err(drv)?;
        Ok(Tensor::from_vec(t.shape, host)?)
    }

    /// Runs one op on a device tensor (queued on the device's stream).
    ///
    /// # Errors
    /// [`CudaError`] when the op cannot take the input or a launch fails.
    pub fn run(&mut self, op: &Op, mut x: DeviceTensor) -> Result<DeviceTensor, CudaError> {
        let (next, shape) = self.run_on_device(op, &mut x.buf, x.shape)?;
        if let Some(n) = next {
            let old = std::mem::replace(&mut x.buf, n);
            self.recycle(old);
        }
        Ok(DeviceTensor { buf: x.buf, shape })
    }

    /// A buffer of `n` values on the current stream, from its pool (its
    /// contents are stale: every kernel writes each value of its output
    /// before anything reads it).
    pub(super) fn out_buf(&mut self, n: usize) -> Result<CudaSlice<f32>, CudaError> {
        let stream = self.stream.clone();
        // SAFETY: the buffer is written by the kernel it is made for before
        // it is read (see above).
        self.pool
            .take(n, |n| unsafe { stream.alloc::<f32>(n) }.map_err(drv))
    }

    /// Gives a buffer of the current stream back to its pool.
    pub(super) fn recycle(&mut self, b: CudaSlice<f32>) {
        let n = b.len();
        self.pool.give(n, b);
    }

    /// Device and pinned host buffers allocated so far (every pool's count):
    /// in steady state neither grows from one frame to the next.
    pub fn allocations(&self) -> (u64, u64) {
        let lanes = self.lanes.iter().flatten();
        let device = self.pool.allocated + lanes.clone().map(|l| l.pool.allocated).sum::<u64>();
        let pinned = lanes.map(|l| l.pinned.allocated).sum();
        (device, pinned)
    }

    /// Runs `ops` in order on `input`: one upload, the kernels, one download.
    ///
    /// # Errors
    /// [`CudaError`] when an op cannot take its input or a driver call fails.
    pub fn run_chain(&mut self, ops: &[&Op], input: &Tensor) -> Result<Tensor, CudaError> {
        let mut x = self.upload(input)?;
        for op in ops {
            x = self.run(op, x)?;
        }
        self.download(&x)
    }

    /// Runs one op on device data; returns the new buffer (or `None` when it
    /// worked in place) and the output shape.
    fn run_on_device(
        &mut self,
        op: &Op,
        cur: &mut CudaSlice<f32>,
        shape: Shape,
    ) -> Result<(Option<CudaSlice<f32>>, Shape), CudaError> {
        match op {
            Op::Pointwise(Pointwise::Relu) => {
                self.relu(cur, shape.len())?;
                Ok((None, shape))
            }
            Op::Pointwise(Pointwise::Clip { min, max }) => {
                let f = self.function(CLIP)?.clone();
                let n = shape.len();
                let n64 =
                    i64::try_from(n).map_err(|_| CudaError::Driver("tensor too large".into()))?;
                let mut b = self.stream.launch_builder(&f);
                b.arg(&mut *cur).arg(&n64).arg(min).arg(max);
                // SAFETY: clip_f32(data, n, lo, hi) rewrites n values of `cur` in place.
                unsafe { b.launch(cfg(params::launch_1d(n))) }.map_err(drv)?;
                Ok((None, shape))
            }
            Op::ChannelAffine(a) => {
                self.channel_affine(a, cur, shape)?;
                Ok((None, shape))
            }
            Op::Pool(p) => {
                let out = self.pool(p, cur, shape)?;
                Ok((Some(out), p.output_shape(shape)?))
            }
            Op::Conv2d(c) => {
                let out = self.conv(c, cur, shape)?;
                Ok((Some(out), c.params.output_shape(shape)?))
            }
            Op::Pointwise(p) => {
                // The others through a generated one-op kernel.
                self.run_on_device(&Op::Fused(pointwise_chain(*p)), cur, shape)
            }
            Op::Vision(v) => {
                let out = self.vision(v, cur, shape)?;
                Ok((Some(out), v.output_shape(shape)?))
            }
            Op::VisionChain(steps) => {
                // Step by step, each its own kernel(s); the frame stays on
                // the device.
                let mut own: Option<CudaSlice<f32>> = None;
                let mut s = shape;
                for st in steps {
                    let op = match st {
                        Step::Vision(v) => Op::Vision(v.clone()),
                        Step::Pointwise(p) => Op::Pointwise(*p),
                    };
                    let buf = match own.as_mut() {
                        Some(b) => b,
                        None => &mut *cur,
                    };
                    let (next, ns) = self.run_on_device(&op, buf, s)?;
                    if let Some(n) = next
                        && let Some(old) = own.replace(n)
                    {
                        self.recycle(old);
                    }
                    s = ns;
                }
                Ok((own, s))
            }
            Op::Fused(chain) => {
                let route = fused_route(chain, shape)?;
                if let Some(out) = self.fused(chain, route, cur, shape)? {
                    return Ok((Some(out), chain.output_shape(shape)?));
                }
                // Does not fit a fused kernel: member by member.
                let mut shape = shape;
                let mut owned: Option<CudaSlice<f32>> = None;
                if let Some(c) = &chain.conv {
                    owned = Some(self.conv(c, cur, shape)?);
                    shape = c.params.output_shape(shape)?;
                }
                let members = chain
                    .epilogue
                    .iter()
                    .map(EpilogueOp::to_op)
                    .chain(chain.pool.map(Op::Pool));
                for m in members {
                    let buf = match owned.as_mut() {
                        Some(b) => b,
                        None => &mut *cur,
                    };
                    let (next, s) = self.run_on_device(&m, buf, shape)?;
                    if let Some(n) = next
                        && let Some(old) = owned.replace(n)
                    {
                        self.recycle(old);
                    }
                    shape = s;
                }
                Ok((owned, shape))
            }
        }
    }

    /// A vision op through the kernels of `vision.cu` into a new buffer.
    fn vision(
        &mut self,
        v: &Vision,
        cur: &CudaSlice<f32>,
        shape: Shape,
    ) -> Result<CudaSlice<f32>, CudaError> {
        let out_shape = v.output_shape(shape)?;
        let mut out = self.out_buf(out_shape.len())?;
        match params::vision(v, shape)? {
            VisionLaunch::Gray(p, l) => self.resample(GRAY, cur, &mut out, &p, l)?,
            VisionLaunch::Resize(p, l) => self.resample(RESIZE, cur, &mut out, &p, l)?,
            VisionLaunch::Separable(p, l) => {
                let mut tmp = self.out_buf(shape.len())?;
                let h = self.function(HFILTER)?.clone();
                let mut b = self.stream.launch_builder(&h);
                b.arg(cur).arg(&mut tmp).arg(&p);
                // SAFETY: as above; `tmp` has the input's size.
                unsafe { b.launch(cfg(l)) }.map_err(drv)?;
                let vf = self.function(VFILTER)?.clone();
                let mut b = self.stream.launch_builder(&vf);
                b.arg(&tmp).arg(&mut out).arg(&p);
                // SAFETY: as above.
                unsafe { b.launch(cfg(l)) }.map_err(drv)?;
                self.recycle(tmp);
            }
            VisionLaunch::Sobel(p, l) => {
                let mut d = self.out_buf(shape.len())?;
                let mut sm = self.out_buf(shape.len())?;
                let h = self.function(SOBEL_H)?.clone();
                let mut b = self.stream.launch_builder(&h);
                b.arg(cur).arg(&mut d).arg(&mut sm).arg(&p);
                // SAFETY: as above; `d` and `sm` have the input's size.
                unsafe { b.launch(cfg(l)) }.map_err(drv)?;
                let vf = self.function(SOBEL_V)?.clone();
                let mut b = self.stream.launch_builder(&vf);
                b.arg(&d).arg(&sm).arg(&mut out).arg(&p);
                // SAFETY: as above.
                unsafe { b.launch(cfg(l)) }.map_err(drv)?;
                self.recycle(d);
                self.recycle(sm);
            }
            VisionLaunch::Normalize(per, plane, l) => {
                let f = self.function(NORMALIZE)?.clone();
                let n64 = i64::try_from(plane)
                    .map_err(|_| CudaError::Driver("tensor too large".into()))?;
                for (c, (scale, mean, std)) in per.into_iter().enumerate() {
                    let src = cur.slice(c * plane..(c + 1) * plane);
                    let mut dst = out.slice_mut(c * plane..(c + 1) * plane);
                    let mut b = self.stream.launch_builder(&f);
                    b.arg(&src)
                        .arg(&mut dst)
                        .arg(&n64)
                        .arg(&scale)
                        .arg(&mean)
                        .arg(&std);
                    // SAFETY: normalize_f32(in, out, n, scale, mean, std)
                    // on one plane of `plane` values of each buffer.
                    unsafe { b.launch(cfg(l)) }.map_err(drv)?;
                }
            }
        }
        Ok(out)
    }

    /// `gray_f32` or `resize_linear_f32`: `(in, out, params)`.
    fn resample(
        &self,
        name: &str,
        cur: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        p: &VisionParams,
        l: Launch,
    ) -> Result<(), CudaError> {
        let f = self.function(name)?.clone();
        let mut b = self.stream.launch_builder(&f);
        b.arg(cur).arg(out).arg(p);
        // SAFETY: (in, out, params) as the kernel declares; buffers hold the
        // shapes `p` describes.
        unsafe { b.launch(cfg(l)) }.map_err(drv)?;
        Ok(())
    }

    fn relu(&mut self, buf: &mut CudaSlice<f32>, n: usize) -> Result<(), CudaError> {
        let f = self.function(RELU)?.clone();
        let n64 = i64::try_from(n).map_err(|_| CudaError::Driver("tensor too large".into()))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut *buf).arg(&n64);
        // SAFETY: relu_f32(data, n) rewrites n values of `buf` in place.
        unsafe { b.launch(cfg(params::launch_1d(n))) }.map_err(drv)?;
        Ok(())
    }

    /// Queues `ops` on `input` on lane `lane` (its own stream and pinned
    /// host buffers) and returns at once: copy into pinned memory, upload,
    /// kernels, download into pinned memory, all asynchronous. With two
    /// lanes, one frame's copies overlap the other's kernels. The lane must
    /// be idle ([`CudaDevice::complete`] its previous frame first).
    ///
    /// # Errors
    /// [`CudaError`] when the lane is busy, an op cannot take its input or a
    /// driver call fails.
    pub fn submit(&mut self, lane: usize, ops: &[&Op], input: &Tensor) -> Result<(), CudaError> {
        if self.lanes.len() <= lane {
            self.lanes.resize_with(lane + 1, || None);
        }
        let mut l = match self.lanes[lane].take() {
            Some(l) => l,
            None => Lane::new(&self.ctx)?,
        };
        if l.pending.is_some() {
            self.lanes[lane] = Some(l);
            return Err(CudaError::Driver(format!(
                "lane {lane} still has a frame in flight"
            )));
        }
        // The lane's stream and its buffers for this frame.
        std::mem::swap(&mut self.pool, &mut l.pool);
        let result = self.submit_on(&mut l, ops, input);
        std::mem::swap(&mut self.pool, &mut l.pool);
        self.stream = self.main.clone();
        self.lanes[lane] = Some(l);
        result
    }

    fn submit_on(&mut self, l: &mut Lane, ops: &[&Op], input: &Tensor) -> Result<(), CudaError> {
        let n = input.data().len();
        if l.host_in.as_ref().is_none_or(|h| h.len() != n) {
            let fresh = l.pinned.take(n, |n| pinned(&self.ctx, n))?;
            if let Some(old) = l.host_in.replace(fresh) {
                l.pinned.give(old.len(), old);
            }
        }
        let Some(host_in) = l.host_in.as_mut() else {
            return Err(CudaError::Driver("pinned input buffer missing".into()));
        };
        // as_mut_slice waits until the lane's previous upload has read it.
        host_in
            .as_mut_slice()
            .map_err(drv)?
            .copy_from_slice(input.data());
        self.stream = l.stream.clone();
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        l.events.clear();
        l.events.push(l.stream.record_event(timing).map_err(drv)?);
        let mut buf = self.out_buf(n)?;
        let Some(host_in) = l.host_in.as_ref() else {
            return Err(CudaError::Driver("pinned input buffer missing".into()));
        };
        l.stream.memcpy_htod(host_in, &mut buf).map_err(drv)?;
        let mut x = DeviceTensor {
            buf,
            shape: input.shape(),
        };
        for op in ops {
            x = self.run(op, x)?;
            l.events.push(l.stream.record_event(timing).map_err(drv)?);
        }
        let out_len = x.shape.len();
        if l.host_out.as_ref().is_none_or(|h| h.len() != out_len) {
            let fresh = l.pinned.take(out_len, |n| pinned(&self.ctx, n))?;
            if let Some(old) = l.host_out.replace(fresh) {
                l.pinned.give(old.len(), old);
            }
        }
        let Some(host_out) = l.host_out.as_mut() else {
            return Err(CudaError::Driver("pinned output buffer missing".into()));
        };
        l.stream.memcpy_dtoh(&x.buf, host_out).map_err(drv)?;
        l.events.push(l.stream.record_event(timing).map_err(drv)?);
        l.pending = Some(x);
        Ok(())
    }

    /// Waits for lane `lane`'s frame and returns it with the device time of
    /// each op in ms (the upload counted with the first, the download with
    /// the last).
    ///
    /// # Errors
    /// [`CudaError`] when the lane has no frame or the device failed.
    pub fn complete(&mut self, lane: usize) -> Result<(Tensor, Vec<f32>), CudaError> {
        let l = self
            .lanes
            .get_mut(lane)
            .and_then(Option::as_mut)
            .ok_or_else(|| CudaError::Driver(format!("lane {lane} has no frame in flight")))?;
        let x = l
            .pending
            .take()
            .ok_or_else(|| CudaError::Driver(format!("lane {lane} has no frame in flight")))?;
        l.stream.synchronize().map_err(drv)?;
        let Some(host_out) = l.host_out.as_ref() else {
            return Err(CudaError::Driver("pinned output buffer missing".into()));
        };
        let data = host_out.as_slice().map_err(drv)?.to_vec();
        // The frame's device buffer serves the lane's next frame.
        let shape = x.shape;
        l.pool.give(x.buf.len(), x.buf);
        let mut ms: Vec<f32> = Vec::with_capacity(l.events.len().saturating_sub(2));
        for w in l.events.windows(2) {
            ms.push(w[0].elapsed_ms(&w[1]).map_err(drv)?);
        }
        // Fold the download (last interval) into the last op.
        if ms.len() >= 2
            && let Some(d) = ms.pop()
            && let Some(last) = ms.last_mut()
        {
            *last += d;
        }
        Ok((Tensor::from_vec(shape, data)?, ms))
    }

    /// Whether lane `lane` has a frame in flight.
    pub fn lane_busy(&self, lane: usize) -> bool {
        self.lanes
            .get(lane)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.pending.is_some())
    }

    /// Whether lane `lane`'s frame has finished on the device, so that
    /// [`CudaDevice::complete`] returns without waiting.
    pub fn lane_done(&self, lane: usize) -> bool {
        self.lanes
            .get(lane)
            .and_then(Option::as_ref)
            .is_some_and(|l| {
                l.pending.is_some() && l.events.last().is_some_and(|e| e.is_complete())
            })
    }

    /// Waits for all queued work.
    ///
    /// # Errors
    /// [`CudaError::Driver`] when the device reports an error.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.ctx.synchronize().map_err(drv)
    }
}

/// One frame in flight: a stream, pinned host buffers in and out, the
/// device output and timing events.
#[derive(Debug)]
struct Lane {
    stream: Arc<CudaStream>,
    host_in: Option<PinnedHostSlice<f32>>,
    host_out: Option<PinnedHostSlice<f32>>,
    pending: Option<DeviceTensor>,
    events: Vec<CudaEvent>,
    /// Device buffers of this lane's stream.
    pool: Pool<CudaSlice<f32>>,
    /// Pinned host buffers, by length.
    pinned: Pool<PinnedHostSlice<f32>>,
}

impl Lane {
    fn new(ctx: &Arc<CudaContext>) -> Result<Self, CudaError> {
        Ok(Self {
            stream: ctx.new_stream().map_err(drv)?,
            host_in: None,
            host_out: None,
            pending: None,
            events: Vec::new(),
            pool: Pool::default(),
            pinned: Pool::default(),
        })
    }
}

/// Page-locked host memory for `n` values (not write-combined: the CPU
/// reads the output back).
fn pinned(ctx: &Arc<CudaContext>, n: usize) -> Result<PinnedHostSlice<f32>, CudaError> {
    // SAFETY: the memory is uninitialised until written; every use writes
    // it (copy_from_slice, or a device-to-host copy) before reading it.
    unsafe { ctx.alloc_pinned_with_flags::<f32>(n, 0) }.map_err(drv)
}

thread_local! {
    /// A one-value zero buffer passed as the bias of bias-less convolutions
    /// (never read: `has_bias` is 0).
    static ZERO: Arc<[f32]> = Arc::from(vec![0.0f32]);
}

fn cfg(l: Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (l.grid[0], l.grid[1], l.grid[2]),
        block_dim: (l.block[0], l.block[1], l.block[2]),
        shared_mem_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ChannelAffine, Conv2dParams, Pool2d, PoolKind};

    #[test]
    fn kernel_of_names_what_the_launch_path_runs() {
        let s = Shape { c: 1, h: 8, w: 8 };
        let name = |op: &Op| kernel_of(op, s).map(|k| k.to_string()).unwrap_or_default();
        assert_eq!(name(&Op::Pointwise(Pointwise::Relu)), RELU);
        assert_eq!(name(&Op::Pool(Pool2d::max(2, 2))), "maxpool_f32");
        let mut padded = Pool2d::max(3, 2);
        padded.window.pads = [1; 4];
        assert_eq!(name(&Op::Pool(padded)), "pool2d_f32");
        let global = Pool2d::global(
            PoolKind::Avg {
                count_include_pad: false,
            },
            64,
            64,
        );
        assert_eq!(
            kernel_of(&Op::Pool(global), Shape::new(2, 64, 64))
                .map(|k| k.to_string())
                .ok(),
            Some("pool2d_wide_f32".into())
        );
        let bn = ChannelAffine::new(vec![1.0], vec![0.5]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(name(&Op::ChannelAffine(bn.clone())), CHANNEL_AFFINE);
        // Depthwise, grouped and dilated convolutions.
        let mut dw = Conv2dParams::square(1, 2, 3, 1, 1);
        dw.groups = 1;
        let conv = |p: Conv2dParams, s: Shape| {
            let c =
                Conv2d::new(p, vec![0.0; p.weight_len()], None).unwrap_or_else(|e| panic!("{e}"));
            kernel_of(&Op::Conv2d(c), s)
                .map(|k| k.to_string())
                .unwrap_or_default()
        };
        assert_eq!(conv(dw, s), "conv2d_f32");
        let mut dw = Conv2dParams::square(4, 8, 3, 1, 1);
        dw.groups = 4;
        assert_eq!(conv(dw, Shape::new(4, 8, 8)), "conv2d_depthwise_f32");
        dw.groups = 2;
        dw.window.dilation = [2, 3];
        assert_eq!(conv(dw, Shape::new(4, 8, 8)), "conv2d_f32");
        dw.window.dilation = [40, 40];
        dw.window.pads = [39, 39, 39, 39];
        assert_eq!(conv(dw, Shape::new(4, 8, 8)), "conv2d_direct_f32");
        // A chain with batch normalization: a generated kernel.
        let chain = FusedChain {
            conv: None,
            epilogue: vec![EpilogueOp::Channel(bn), Pointwise::Relu.into()],
            pool: None,
        };
        assert!(name(&Op::Fused(chain)).starts_with("sf_chain_"));
        // A pointwise op without a kernel of its own: a generated one.
        let t = Op::Pointwise(Pointwise::Threshold {
            threshold: 0.5,
            value: 1.0,
        });
        assert_eq!(
            kernel_of(&t, s).ok(),
            Some(KernelChoice::Generated(
                codegen::generate(&pointwise_chain(Pointwise::Threshold {
                    threshold: 0.5,
                    value: 1.0,
                }))
                .name
            ))
        );
        assert!(name(&t).starts_with("sf_chain_"));
        assert_eq!(
            KernelChoice::HandWritten(vec![HFILTER, VFILTER]).to_string(),
            "hfilter_f32+vfilter_f32"
        );
        assert_eq!(KernelChoice::Members.to_string(), "members one by one");
    }
}
