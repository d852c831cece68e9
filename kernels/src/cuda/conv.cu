// Convolution and pooling: conv2d_f32 (shared-memory input tile with halo),
// conv2d_direct_f32 (any receptive field, reads global memory),
// conv2d_depthwise_f32 (groups == in_c, any channel multiplier),
// maxpool_f32 (square, unpadded, floor mode), pool2d_f32 (max and average,
// any window) and pool2d_wide_f32 (one block per output, for large windows
// such as global pools).
//
// Conv geometry (ONNX Conv): output (oy, ox), tap (ky, kx) reads input row
// oy*stride_h - pad_top + ky*dil_h, column ox*stride_w - pad_left + kx*dil_w
// (zero outside the input); output channel oc of group g = oc / (out_c /
// groups) reads input channels g*in_c/groups .. (g+1)*in_c/groups, with
// weights [out_c, in_c/groups, k_h, k_w].
#include "common.cuh"

// One block: a SF_TILE_W x SF_TILE_H output tile, SF_OC_BLOCK output
// channels of one group (blockIdx.z: see sf_conv_block). For each input
// channel of the group the block loads the tile's receptive field (halo
// included) into shared memory once; every thread then reads its taps from
// there. Weights are read through the read-only cache: all threads of a
// warp read the same weight (a broadcast).
// Launch: grid (ceil(out_w/TW), ceil(out_h/TH), groups*ceil(out_c/groups/OCB)),
// block (TW, TH); requires ((TH-1)*stride_h + (k_h-1)*dil_h + 1) *
// ((TW-1)*stride_w + (k_w-1)*dil_w + 1) <= SF_SMEM_FLOATS.
extern "C" __global__ void conv2d_f32(const float* __restrict__ in, const float* __restrict__ w,
                                      const float* __restrict__ bias, float* __restrict__ out,
                                      ConvParams p) {
    __shared__ float tile[SF_SMEM_FLOATS];
    const SfConvBlock blk = sf_conv_block(p, blockIdx.z);
    const int ox0 = blockIdx.x * SF_TILE_W;
    const int oy0 = blockIdx.y * SF_TILE_H;
    const int ox = ox0 + threadIdx.x;
    const int oy = oy0 + threadIdx.y;
    const int tile_w = (SF_TILE_W - 1) * p.stride_w + (p.k_w - 1) * p.dil_w + 1;
    const int tile_h = (SF_TILE_H - 1) * p.stride_h + (p.k_h - 1) * p.dil_h + 1;
    const int flen = blk.icg * p.k_h * p.k_w;
    const float* wb = w + (long)blk.oc0 * flen;
    float acc[SF_OC_BLOCK];
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        acc[j] = (p.has_bias && j < blk.n) ? __ldg(&bias[blk.oc0 + j]) : 0.0f;
    }
    for (int i = 0; i < blk.icg; ++i) {
        const int ic = blk.g * blk.icg + i;
        __syncthreads();
        sf_load_tile(in + (long)ic * p.in_h * p.in_w, tile, tile_h, tile_w,
                     oy0 * p.stride_h - p.pad_top, ox0 * p.stride_w - p.pad_left, p.in_h,
                     p.in_w);
        __syncthreads();
        const float* t = tile + threadIdx.y * p.stride_h * tile_w + threadIdx.x * p.stride_w;
        for (int ky = 0; ky < p.k_h; ++ky) {
            const float* row = t + ky * p.dil_h * tile_w;
            for (int kx = 0; kx < p.k_w; ++kx) {
                const float x = row[kx * p.dil_w];
                const int tap = (i * p.k_h + ky) * p.k_w + kx;
#pragma unroll
                for (int j = 0; j < SF_OC_BLOCK; ++j) {
                    if (j < blk.n) {
                        acc[j] = fmaf(__ldg(&wb[(long)j * flen + tap]), x, acc[j]);
                    }
                }
            }
        }
    }
    if (ox < p.out_w && oy < p.out_h) {
#pragma unroll
        for (int j = 0; j < SF_OC_BLOCK; ++j) {
            if (j < blk.n) {
                out[((long)(blk.oc0 + j) * p.out_h + oy) * p.out_w + ox] = acc[j];
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
    const SfConvBlock blk = sf_conv_block(p, blockIdx.z);
    const int ox = blockIdx.x * SF_TILE_W + threadIdx.x;
    const int oy = blockIdx.y * SF_TILE_H + threadIdx.y;
    if (ox >= p.out_w || oy >= p.out_h) {
        return;
    }
    const int flen = blk.icg * p.k_h * p.k_w;
    const float* wb = w + (long)blk.oc0 * flen;
    const int iy0 = oy * p.stride_h - p.pad_top;
    const int ix0 = ox * p.stride_w - p.pad_left;
    float acc[SF_OC_BLOCK];
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        acc[j] = (p.has_bias && j < blk.n) ? __ldg(&bias[blk.oc0 + j]) : 0.0f;
    }
    for (int i = 0; i < blk.icg; ++i) {
        const float* plane = in + (long)(blk.g * blk.icg + i) * p.in_h * p.in_w;
        for (int ky = 0; ky < p.k_h; ++ky) {
            const int iy = iy0 + ky * p.dil_h;
            const bool row_in = iy >= 0 && iy < p.in_h;
            for (int kx = 0; kx < p.k_w; ++kx) {
                const int ix = ix0 + kx * p.dil_w;
                const float x = (row_in && ix >= 0 && ix < p.in_w)
                                    ? __ldg(&plane[(long)iy * p.in_w + ix])
                                    : 0.0f;
                const int tap = (i * p.k_h + ky) * p.k_w + kx;
#pragma unroll
                for (int j = 0; j < SF_OC_BLOCK; ++j) {
                    if (j < blk.n) {
                        acc[j] = fmaf(__ldg(&wb[(long)j * flen + tap]), x, acc[j]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        if (j < blk.n) {
            out[((long)(blk.oc0 + j) * p.out_h + oy) * p.out_w + ox] = acc[j];
        }
    }
}

// Depthwise convolution (groups == in_c; out_c = in_c * m, output channel
// oc reads input channel oc / m). One block: a SF_TILE_W x SF_TILE_H output
// tile of the m output channels of input channel blockIdx.z; the input
// tile is loaded into shared memory once and serves all m of them.
// Launch: grid (ceil(out_w/TW), ceil(out_h/TH), in_c), block (TW, TH); the
// tile limit of conv2d_f32.
extern "C" __global__ void conv2d_depthwise_f32(const float* __restrict__ in,
                                                const float* __restrict__ w,
                                                const float* __restrict__ bias,
                                                float* __restrict__ out, ConvParams p) {
    __shared__ float tile[SF_SMEM_FLOATS];
    const int ic = blockIdx.z;
    const int m = p.out_c / p.in_c;
    const int ox0 = blockIdx.x * SF_TILE_W;
    const int oy0 = blockIdx.y * SF_TILE_H;
    const int ox = ox0 + threadIdx.x;
    const int oy = oy0 + threadIdx.y;
    const int tile_w = (SF_TILE_W - 1) * p.stride_w + (p.k_w - 1) * p.dil_w + 1;
    const int tile_h = (SF_TILE_H - 1) * p.stride_h + (p.k_h - 1) * p.dil_h + 1;
    const int taps = p.k_h * p.k_w;
    sf_load_tile(in + (long)ic * p.in_h * p.in_w, tile, tile_h, tile_w,
                 oy0 * p.stride_h - p.pad_top, ox0 * p.stride_w - p.pad_left, p.in_h, p.in_w);
    __syncthreads();
    const float* t = tile + threadIdx.y * p.stride_h * tile_w + threadIdx.x * p.stride_w;
    const bool inside = ox < p.out_w && oy < p.out_h;
    for (int j = 0; j < m; ++j) {
        const int oc = ic * m + j;
        const float* wo = w + (long)oc * taps;
        float acc = p.has_bias ? __ldg(&bias[oc]) : 0.0f;
        for (int ky = 0; ky < p.k_h; ++ky) {
            const float* row = t + ky * p.dil_h * tile_w;
            for (int kx = 0; kx < p.k_w; ++kx) {
                acc = fmaf(__ldg(&wo[ky * p.k_w + kx]), row[kx * p.dil_w], acc);
            }
        }
        if (inside) {
            out[((long)oc * p.out_h + oy) * p.out_w + ox] = acc;
        }
    }
}

// Max pooling, square unpadded window k_h (== k_w), stride stride_h, floor
// mode: one thread per output value (grid-stride loop), adjacent threads on
// adjacent output columns.
// Launch: 1-D, any grid.
extern "C" __global__ void maxpool_f32(const float* __restrict__ in, float* __restrict__ out,
                                       PoolParams p) {
    const long n = (long)p.c * p.out_h * p.out_w;
    const int size = p.k_h;
    const int stride = p.stride_h;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const int ox = (int)(i % p.out_w);
        const long r = i / p.out_w;
        const int oy = (int)(r % p.out_h);
        const int c = (int)(r / p.out_h);
        const float* base = in + ((long)c * p.in_h + (long)oy * stride) * p.in_w + (long)ox * stride;
        float m = 0.0f;
        for (int dx = 0; dx < size; ++dx) {
            float v = __ldg(&base[dx]);
            for (int dy = 1; dy < size; ++dy) {
                v = sf_max(v, __ldg(&base[(long)dy * p.in_w + dx]));
            }
            m = dx == 0 ? v : sf_max(m, v);
        }
        out[i] = m;
    }
}

// The value of a window with no valid row or column: -FLT_MAX for a max,
// 0 / count for an average (as the CPU: NaN unless it counts padding).
__device__ __forceinline__ float sf_pool_empty(const PoolParams& p, SfTaps r, SfTaps c) {
    return p.avg ? __fdiv_rn(0.0f, sf_pool_count(p, r, c)) : SF_LOWEST;
}

// Any max or average pool: one thread per output value (grid-stride loop),
// adjacent threads on adjacent output columns. Each valid column's vertical
// reduction, then across the columns (common.cuh's order).
// Launch: 1-D, any grid.
extern "C" __global__ void pool2d_f32(const float* __restrict__ in, float* __restrict__ out,
                                      PoolParams p) {
    const long n = (long)p.c * p.out_h * p.out_w;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const int ox = (int)(i % p.out_w);
        const long r = i / p.out_w;
        const int oy = (int)(r % p.out_h);
        const int c = (int)(r / p.out_h);
        const SfTaps rows =
            sf_axis_taps(oy, p.in_h, p.k_h, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
        const SfTaps cols =
            sf_axis_taps(ox, p.in_w, p.k_w, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
        if (rows.n == 0 || cols.n == 0) {
            out[i] = sf_pool_empty(p, rows, cols);
            continue;
        }
        const float* base = in + ((long)c * p.in_h + rows.first) * p.in_w + cols.first;
        const long row_step = (long)p.dil_h * p.in_w;
        float acc = 0.0f;
        for (int kx = 0; kx < cols.n; ++kx) {
            const float* col = base + kx * p.dil_w;
            float v = __ldg(col);
            for (int ky = 1; ky < rows.n; ++ky) {
                const float x = __ldg(&col[ky * row_step]);
                v = p.avg ? v + x : sf_max(v, x);
            }
            acc = kx == 0 ? v : (p.avg ? acc + v : sf_max(acc, v));
        }
        out[i] = p.avg ? __fdiv_rn(acc, sf_pool_count(p, rows, cols)) : acc;
    }
}

// Pools with large windows (global pools): one block per output value. The
// block's threads reduce the valid columns vertically in parallel (column
// t by thread t % blockDim.x) into shared memory, then thread 0 reduces
// across them in column order: the same operations, in the same order, as
// pool2d_f32. Launch: grid (out_w, out_h, c), block (256); the window's
// valid columns (at most k_w) within SF_SMEM_FLOATS.
extern "C" __global__ void pool2d_wide_f32(const float* __restrict__ in, float* __restrict__ out,
                                           PoolParams p) {
    __shared__ float colv[SF_SMEM_FLOATS];
    const int ox = blockIdx.x;
    const int oy = blockIdx.y;
    const int c = blockIdx.z;
    const SfTaps rows =
        sf_axis_taps(oy, p.in_h, p.k_h, p.stride_h, p.dil_h, p.pad_top, p.pad_bottom);
    const SfTaps cols =
        sf_axis_taps(ox, p.in_w, p.k_w, p.stride_w, p.dil_w, p.pad_left, p.pad_right);
    const long o = ((long)c * p.out_h + oy) * p.out_w + ox;
    if (rows.n == 0 || cols.n == 0) {
        if (threadIdx.x == 0) {
            out[o] = sf_pool_empty(p, rows, cols);
        }
        return;
    }
    const float* base = in + ((long)c * p.in_h + rows.first) * p.in_w + cols.first;
    const long row_step = (long)p.dil_h * p.in_w;
    for (int t = threadIdx.x; t < cols.n; t += blockDim.x) {
        const float* col = base + t * p.dil_w;
        float v = __ldg(col);
        for (int ky = 1; ky < rows.n; ++ky) {
            const float x = __ldg(&col[ky * row_step]);
            v = p.avg ? v + x : sf_max(v, x);
        }
        colv[t] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float acc = colv[0];
        for (int t = 1; t < cols.n; ++t) {
            acc = p.avg ? acc + colv[t] : sf_max(acc, colv[t]);
        }
        out[o] = p.avg ? __fdiv_rn(acc, sf_pool_count(p, rows, cols)) : acc;
    }
}
