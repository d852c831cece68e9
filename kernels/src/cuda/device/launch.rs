//! Launches of the convolution, pooling, per-channel affine and fused-chain
//! kernels on a [`CudaDevice`].

use std::sync::Arc;

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{
    CHANNEL_AFFINE, CudaDevice, CudaError, DeviceBuf, FUSED_CONV_POOL, FusedRoute, ZERO, cfg,
    conv_chain, drv, fused_route,
};
use crate::cuda::{codegen, params};
use crate::op::{ChannelAffine, Conv2d, FusedChain, Pool2d};
use crate::tensor::Shape;

impl CudaDevice {
    /// A convolution into a new buffer: deep layers through a generated
    /// kernel with a GEMM producer ([`params::producer`]), the others
    /// through the hand-written kernel [`params::conv`] picks.
    pub(super) fn conv(
        &mut self,
        c: &Conv2d,
        cur: &CudaSlice<f32>,
        shape: Shape,
    ) -> Result<CudaSlice<f32>, CudaError> {
        if params::producer(c, (1, 1)) != params::Producer::Tiled {
            let chain = conv_chain(c);
            let route = fused_route(&chain, shape)?;
            if let Some(out) = self.fused(&chain, route, cur, shape)? {
                return Ok(out);
            }
        }
        let (params, kernel, launch) = params::conv(c, shape)?;
        let out_shape = c.params.output_shape(shape)?;
        let (w, bias) = self.conv_weights(c)?;
        let mut out = self.out_buf(out_shape.len())?;
        let f = self.function(kernel.name())?.clone();
        let mut b = self.stream.launch_builder(&f);
        b.arg(cur).arg(&*w).arg(&*bias).arg(&mut out).arg(&params);
        // SAFETY: the conv kernels all take (in, w, bias, out, ConvParams);
        // `cur` holds the input shape, `w`/`bias` the weights the params
        // describe (bias read only when has_bias), `out` the output shape.
        unsafe { b.launch(cfg(launch)) }.map_err(drv)?;
        Ok(out)
    }

    /// A pool into a new buffer (the kernel [`params::pool`] picks).
    pub(super) fn pool(
        &mut self,
        p: &Pool2d,
        cur: &CudaSlice<f32>,
        shape: Shape,
    ) -> Result<CudaSlice<f32>, CudaError> {
        let (params, kernel, launch) = params::pool(p, shape)?;
        let out_shape = p.output_shape(shape)?;
        let mut out = self.out_buf(out_shape.len())?;
        let f = self.function(kernel.name())?.clone();
        let mut b = self.stream.launch_builder(&f);
        b.arg(cur).arg(&mut out).arg(&params);
        // SAFETY: the pool kernels all take (in, out, PoolParams); buffers
        // hold the shapes the params describe.
        unsafe { b.launch(cfg(launch)) }.map_err(drv)?;
        Ok(out)
    }

    /// A per-channel affine in place.
    pub(super) fn channel_affine(
        &mut self,
        a: &ChannelAffine,
        cur: &mut CudaSlice<f32>,
        shape: Shape,
    ) -> Result<(), CudaError> {
        let (channels, plane, launch) = params::channel_affine(a, shape)?;
        let scale = self.upload_weights(&a.scale)?;
        let shift = self.upload_weights(&a.shift)?;
        let f = self.function(CHANNEL_AFFINE)?.clone();
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut *cur)
            .arg(&*scale)
            .arg(&*shift)
            .arg(&channels)
            .arg(&plane);
        // SAFETY: channel_affine_f32(data, scale, shift, channels, plane)
        // rewrites channels * plane values of `cur` (the shape checked by
        // the planner) and reads `channels` values of each of scale, shift.
        unsafe { b.launch(cfg(launch)) }.map_err(drv)?;
        Ok(())
    }

    /// The device copy of `chain`'s channel buffer
    /// ([`codegen::channel_data`]), uploaded once per set of scales and
    /// shifts; the zero buffer when the chain has no per-channel op.
    fn channel_buffer(&mut self, chain: &FusedChain) -> Result<DeviceBuf, CudaError> {
        let ops = codegen::channel_ops(chain);
        if ops.is_empty() {
            return self.upload_weights(&ZERO.with(Clone::clone));
        }
        let host: Vec<Arc<[f32]>> = ops
            .iter()
            .flat_map(|a| [a.scale.clone(), a.shift.clone()])
            .collect();
        let key: Vec<usize> = host
            .iter()
            .map(|v| Arc::as_ptr(v).cast::<f32>() as usize)
            .collect();
        if let Some((_, buf)) = self.channels.get(&key) {
            return Ok(buf.clone());
        }
        self.channels
            .retain(|_, (held, _)| held.iter().all(|v| Arc::strong_count(v) > 1));
        let data = codegen::channel_data(chain);
        let buf = Arc::new(self.main.clone_htod(&data).map_err(drv)?);
        // Used from the lanes' streams too: wait for the copy.
        self.main.synchronize().map_err(drv)?;
        self.channels.insert(key, (host, buf.clone()));
        Ok(buf)
    }

    /// A fused chain through its fused or generated kernel into a new
    /// buffer; `None` when `route` runs it member by member.
    pub(super) fn fused(
        &mut self,
        chain: &FusedChain,
        route: FusedRoute,
        cur: &CudaSlice<f32>,
        shape: Shape,
    ) -> Result<Option<CudaSlice<f32>>, CudaError> {
        let (f, params, launch) = match route {
            FusedRoute::ConvPool(p, l) => (self.function(FUSED_CONV_POOL)?.clone(), p, l),
            FusedRoute::Generated(p, l) => (self.generated_kernel(chain)?, p, l),
            FusedRoute::Members => return Ok(None),
        };
        let out_shape = chain.output_shape(shape)?;
        let mut out = self.out_buf(out_shape.len())?;
        let (w, bias) = match &chain.conv {
            Some(c) => self.conv_weights(c)?,
            None => {
                let z = self.upload_weights(&ZERO.with(Clone::clone))?;
                (z.clone(), z)
            }
        };
        let chan = self.channel_buffer(chain)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(cur)
            .arg(&*w)
            .arg(&*bias)
            .arg(&mut out)
            .arg(&*chan)
            .arg(&params);
        // SAFETY: fused_conv_pool_f32 and the generated kernels take (in, w,
        // bias, out, chan, FusedParams); `cur` holds the input shape the
        // params describe, `w`/`bias` the conv weights (read only with a
        // conv producer, bias only when has_bias), `chan` the chain's
        // per-channel values (read only by its per-channel ops, C =
        // conv.out_c values per scale or shift), `out` the output shape.
        unsafe { b.launch(cfg(launch)) }.map_err(drv)?;
        Ok(Some(out))
    }
}
