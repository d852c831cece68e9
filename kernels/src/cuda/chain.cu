// Template of the generated fused-chain kernels (see codegen.rs): a
// producer, the chain's epilogue and a max-pool consumer (a 1x1 window
// with stride 1 stores each value as it is). The generator prepends
// `common.cuh` and a prelude that defines
//   SF_CHAIN_NAME       the kernel's name (sf_chain_<hash>),
//   SF_CHAIN_CONV       1: the producer is a convolution (with bias),
//                       0: the producer loads the input as it is,
//   sf_chain_epilogue   the epilogue: a __device__ float(float v, int c,
//                       const float* chan, const FusedParams&) that applies
//                       each op in order to value v of channel c (fused.cu's
//                       reads the ReLU flag of the params; generated ones
//                       have their ops baked in). Per-channel ops read
//                       their scale and shift from `chan`: the k-th such
//                       op's scales at chan[2k*C ..], shifts at
//                       chan[(2k+1)*C ..], C = f.conv.out_c.
// Numerics follow common.cuh: the convolution as conv.cu (bias, then fmaf
// over taps in (ic, ky, kx) order), each window's columns' vertical maxima
// first, then across columns, so results match the CPU backend bit for
// bit.
//
// Parameters: FusedParams (`relu` unused by generated kernels). For a load
// producer, `conv` describes the input: in_c = out_c = channels, in/out
// sizes equal.

#if SF_CHAIN_CONV
// One block: a SF_TILE_W x SF_TILE_H tile of outputs, SF_OC_BLOCK output
// channels of one group (blockIdx.z, as conv.cu's conv2d_f32). Each thread
// accumulates the convolution at every position of its pool window (at
// most SF_MAX_POOL^2) for its channels, one input channel at a time from
// the shared tile, then applies the epilogue and the max. Launch: grid
// (ceil(out_w/TW), ceil(out_h/TH), groups*ceil(out_c/groups/OCB)), block
// (TW, TH); pool_size <= SF_MAX_POOL and the input tile
// ((TH-1)*ps + P-1)*stride_h + (k_h-1)*dil_h + 1 by
// ((TW-1)*ps + P-1)*stride_w + (k_w-1)*dil_w + 1 within SF_SMEM_FLOATS.
extern "C" __global__ void SF_CHAIN_NAME(const float* __restrict__ in,
                                         const float* __restrict__ w,
                                         const float* __restrict__ bias,
                                         float* __restrict__ out,
                                         const float* __restrict__ chan, FusedParams f) {
    __shared__ float tile[SF_SMEM_FLOATS];
    const ConvParams p = f.conv;
    const SfConvBlock blk = sf_conv_block(p, blockIdx.z);
    const int ps = f.pool_stride;
    const int pk = f.pool_size;
    const int px0 = blockIdx.x * SF_TILE_W;
    const int py0 = blockIdx.y * SF_TILE_H;
    const int px = px0 + threadIdx.x;
    const int py = py0 + threadIdx.y;
    const int conv_w = (SF_TILE_W - 1) * ps + pk;
    const int conv_h = (SF_TILE_H - 1) * ps + pk;
    const int tile_w = (conv_w - 1) * p.stride_w + (p.k_w - 1) * p.dil_w + 1;
    const int tile_h = (conv_h - 1) * p.stride_h + (p.k_h - 1) * p.dil_h + 1;
    const int flen = blk.icg * p.k_h * p.k_w;
    const float* wb = w + (long)blk.oc0 * flen;

    float acc[SF_OC_BLOCK][SF_MAX_POOL * SF_MAX_POOL];
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        const float b = (p.has_bias && j < blk.n) ? __ldg(&bias[blk.oc0 + j]) : 0.0f;
#pragma unroll
        for (int d = 0; d < SF_MAX_POOL * SF_MAX_POOL; ++d) {
            acc[j][d] = b;
        }
    }
    for (int i = 0; i < blk.icg; ++i) {
        const int ic = blk.g * blk.icg + i;
        __syncthreads();
        sf_load_tile(in + (long)ic * p.in_h * p.in_w, tile, tile_h, tile_w,
                     py0 * ps * p.stride_h - p.pad_top, px0 * ps * p.stride_w - p.pad_left,
                     p.in_h, p.in_w);
        __syncthreads();
        const float* t =
            tile + threadIdx.y * ps * p.stride_h * tile_w + threadIdx.x * ps * p.stride_w;
        for (int ky = 0; ky < p.k_h; ++ky) {
            const float* row = t + ky * p.dil_h * tile_w;
            for (int kx = 0; kx < p.k_w; ++kx) {
                const float* tap_x = row + kx * p.dil_w;
                const int tap = (i * p.k_h + ky) * p.k_w + kx;
                float wj[SF_OC_BLOCK];
#pragma unroll
                for (int j = 0; j < SF_OC_BLOCK; ++j) {
                    wj[j] = j < blk.n ? __ldg(&wb[(long)j * flen + tap]) : 0.0f;
                }
#pragma unroll
                for (int dy = 0; dy < SF_MAX_POOL; ++dy) {
#pragma unroll
                    for (int dx = 0; dx < SF_MAX_POOL; ++dx) {
                        if (dy < pk && dx < pk) {
                            const float x = tap_x[dy * p.stride_h * tile_w + dx * p.stride_w];
#pragma unroll
                            for (int j = 0; j < SF_OC_BLOCK; ++j) {
                                acc[j][dy * SF_MAX_POOL + dx] =
                                    fmaf(wj[j], x, acc[j][dy * SF_MAX_POOL + dx]);
                            }
                        }
                    }
                }
            }
        }
    }
    if (px < f.out_w && py < f.out_h) {
#pragma unroll
        for (int j = 0; j < SF_OC_BLOCK; ++j) {
            if (j < blk.n) {
                const int oc = blk.oc0 + j;
                float m = 0.0f;
#pragma unroll
                for (int dx = 0; dx < SF_MAX_POOL; ++dx) {
                    if (dx < pk) {
                        float v = sf_chain_epilogue(acc[j][dx], oc, chan, f);
#pragma unroll
                        for (int dy = 1; dy < SF_MAX_POOL; ++dy) {
                            if (dy < pk) {
                                v = sf_max(v, sf_chain_epilogue(acc[j][dy * SF_MAX_POOL + dx],
                                                                oc, chan, f));
                            }
                        }
                        m = dx == 0 ? v : sf_max(m, v);
                    }
                }
                out[((long)oc * f.out_h + py) * f.out_w + px] = m;
            }
        }
    }
}
#else
// One thread per output value. Launch: grid (ceil(out_w/32),
// ceil(out_h/8), channels), block (32, 8).
extern "C" __global__ void SF_CHAIN_NAME(const float* __restrict__ in,
                                         const float* __restrict__ w,
                                         const float* __restrict__ bias,
                                         float* __restrict__ out,
                                         const float* __restrict__ chan, FusedParams f) {
    (void)w;
    (void)bias;
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    const int ch = blockIdx.z;
    if (ox >= f.out_w || oy >= f.out_h || ch >= f.conv.in_c) return;
    const int iw = f.conv.in_w;
    const float* plane = in + (long)ch * f.conv.in_h * iw;
    const int x0 = ox * f.pool_stride;
    const int y0 = oy * f.pool_stride;
    float m = 0.0f;
    for (int dx = 0; dx < f.pool_size; ++dx) {
        float v = sf_chain_epilogue(__ldg(&plane[(long)y0 * iw + x0 + dx]), ch, chan, f);
        for (int dy = 1; dy < f.pool_size; ++dy) {
            v = sf_max(v, sf_chain_epilogue(__ldg(&plane[(long)(y0 + dy) * iw + x0 + dx]), ch,
                                            chan, f));
        }
        m = dx == 0 ? v : sf_max(m, v);
    }
    out[((long)ch * f.out_h + oy) * f.out_w + ox] = m;
}
#endif
