// Convolution and pooling: conv2d_f32 (shared-memory input tile with halo),
// conv2d_direct_f32 (any kernel size or stride, reads global memory),
// maxpool_f32.
#include "common.cuh"

// One block: a SF_TILE_W x SF_TILE_H output tile, SF_OC_BLOCK output
// channels (blockIdx.z). For each input channel the block loads the tile's
// receptive field (halo included) into shared memory once; every thread then
// reads its taps from there. Weights are read through the read-only cache:
// all threads of a warp read the same weight (a broadcast).
// Launch: grid (ceil(out_w/TW), ceil(out_h/TH), ceil(out_c/OCB)), block
// (TW, TH); requires ((TH-1)*stride+k_h) * ((TW-1)*stride+k_w) <= SF_SMEM_FLOATS.
extern "C" __global__ void conv2d_f32(const float* __restrict__ in, const float* __restrict__ w,
                                      const float* __restrict__ bias, float* __restrict__ out,
                                      ConvParams p) {
    __shared__ float tile[SF_SMEM_FLOATS];
    const int ox0 = blockIdx.x * SF_TILE_W;
    const int oy0 = blockIdx.y * SF_TILE_H;
    const int oc0 = blockIdx.z * SF_OC_BLOCK;
    const int ox = ox0 + threadIdx.x;
    const int oy = oy0 + threadIdx.y;
    const int tile_w = (SF_TILE_W - 1) * p.stride + p.k_w;
    const int tile_h = (SF_TILE_H - 1) * p.stride + p.k_h;
    const int flen = p.in_c * p.k_h * p.k_w;
    float acc[SF_OC_BLOCK];
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        acc[j] = (p.has_bias && oc0 + j < p.out_c) ? __ldg(&bias[oc0 + j]) : 0.0f;
    }
    for (int ic = 0; ic < p.in_c; ++ic) {
        __syncthreads();
        sf_load_tile(in + (long)ic * p.in_h * p.in_w, tile, tile_h, tile_w,
                     oy0 * p.stride - p.pad, ox0 * p.stride - p.pad, p.in_h, p.in_w);
        __syncthreads();
        const float* t = tile + threadIdx.y * p.stride * tile_w + threadIdx.x * p.stride;
        for (int ky = 0; ky < p.k_h; ++ky) {
            for (int kx = 0; kx < p.k_w; ++kx) {
                const float x = t[ky * tile_w + kx];
                const int tap = (ic * p.k_h + ky) * p.k_w + kx;
#pragma unroll
                for (int j = 0; j < SF_OC_BLOCK; ++j) {
                    if (oc0 + j < p.out_c) {
                        acc[j] = fmaf(__ldg(&w[(long)(oc0 + j) * flen + tap]), x, acc[j]);
                    }
                }
            }
        }
    }
    if (ox < p.out_w && oy < p.out_h) {
#pragma unroll
        for (int j = 0; j < SF_OC_BLOCK; ++j) {
            if (oc0 + j < p.out_c) {
                out[((long)(oc0 + j) * p.out_h + oy) * p.out_w + ox] = acc[j];
            }
        }
    }
}

// Fallback for receptive fields too large for the shared tile: one thread
// per output position and channel block, inputs read from global memory.
// Launch: as conv2d_f32.
extern "C" __global__ void conv2d_direct_f32(const float* __restrict__ in,
                                             const float* __restrict__ w,
                                             const float* __restrict__ bias,
                                             float* __restrict__ out, ConvParams p) {
    const int ox = blockIdx.x * SF_TILE_W + threadIdx.x;
    const int oy = blockIdx.y * SF_TILE_H + threadIdx.y;
    const int oc0 = blockIdx.z * SF_OC_BLOCK;
    if (ox >= p.out_w || oy >= p.out_h) {
        return;
    }
    const int flen = p.in_c * p.k_h * p.k_w;
    float acc[SF_OC_BLOCK];
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        acc[j] = (p.has_bias && oc0 + j < p.out_c) ? __ldg(&bias[oc0 + j]) : 0.0f;
    }
    for (int ic = 0; ic < p.in_c; ++ic) {
        const float* plane = in + (long)ic * p.in_h * p.in_w;
        for (int ky = 0; ky < p.k_h; ++ky) {
            const int iy = oy * p.stride + ky - p.pad;
            for (int kx = 0; kx < p.k_w; ++kx) {
                const int ix = ox * p.stride + kx - p.pad;
                const float x = (iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w)
                                    ? __ldg(&plane[iy * p.in_w + ix])
                                    : 0.0f;
                const int tap = (ic * p.k_h + ky) * p.k_w + kx;
#pragma unroll
                for (int j = 0; j < SF_OC_BLOCK; ++j) {
                    if (oc0 + j < p.out_c) {
                        acc[j] = fmaf(__ldg(&w[(long)(oc0 + j) * flen + tap]), x, acc[j]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        if (oc0 + j < p.out_c) {
            out[((long)(oc0 + j) * p.out_h + oy) * p.out_w + ox] = acc[j];
        }
    }
}

// Max pooling, floor mode: one thread per output value (grid-stride loop),
// adjacent threads on adjacent output columns.
// Launch: 1-D, any grid.
extern "C" __global__ void maxpool_f32(const float* __restrict__ in, float* __restrict__ out,
                                       PoolParams p) {
    const long n = (long)p.c * p.out_h * p.out_w;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const int ox = (int)(i % p.out_w);
        const long r = i / p.out_w;
        const int oy = (int)(r % p.out_h);
        const int c = (int)(r / p.out_h);
        const float* base = in + ((long)c * p.in_h + (long)oy * p.stride) * p.in_w + (long)ox * p.stride;
        float m = 0.0f;
        for (int dx = 0; dx < p.size; ++dx) {
            float v = __ldg(&base[dx]);
            for (int dy = 1; dy < p.size; ++dy) {
                v = sf_max(v, __ldg(&base[(long)dy * p.in_w + dx]));
            }
            m = dx == 0 ? v : sf_max(m, v);
        }
        out[i] = m;
    }
}
