// Fused conv -> bias -> (ReLU) -> max-pool: one read of the input tile, the
// pool windows' convolution values kept in registers, one write of the
// pooled output. The convolution output never reaches memory.
#include "common.cuh"

// One block: a SF_TILE_W x SF_TILE_H tile of pooled outputs, SF_OC_BLOCK
// output channels (blockIdx.z). Each thread accumulates the convolution at
// every position of its pool window (at most SF_MAX_POOL^2) for its channels,
// one input channel at a time from the shared tile, then applies ReLU and
// the max. Launch: grid (ceil(out_w/TW), ceil(out_h/TH), ceil(out_c/OCB)),
// block (TW, TH); requires pool_size <= SF_MAX_POOL and the input tile
// ((TH-1)*ps+P-1)*s+k_h by ((TW-1)*ps+P-1)*s+k_w within SF_SMEM_FLOATS.
extern "C" __global__ void fused_conv_pool_f32(const float* __restrict__ in,
                                               const float* __restrict__ w,
                                               const float* __restrict__ bias,
                                               float* __restrict__ out, FusedParams f) {
    __shared__ float tile[SF_SMEM_FLOATS];
    const ConvParams p = f.conv;
    const int ps = f.pool_stride;
    const int pk = f.pool_size;
    const int px0 = blockIdx.x * SF_TILE_W;
    const int py0 = blockIdx.y * SF_TILE_H;
    const int oc0 = blockIdx.z * SF_OC_BLOCK;
    const int px = px0 + threadIdx.x;
    const int py = py0 + threadIdx.y;
    // Convolution rows/columns the block needs, then their input tile.
    const int conv_w = (SF_TILE_W - 1) * ps + pk;
    const int conv_h = (SF_TILE_H - 1) * ps + pk;
    const int tile_w = (conv_w - 1) * p.stride + p.k_w;
    const int tile_h = (conv_h - 1) * p.stride + p.k_h;
    const int flen = p.in_c * p.k_h * p.k_w;

    float acc[SF_OC_BLOCK][SF_MAX_POOL * SF_MAX_POOL];
#pragma unroll
    for (int j = 0; j < SF_OC_BLOCK; ++j) {
        const float b = (p.has_bias && oc0 + j < p.out_c) ? __ldg(&bias[oc0 + j]) : 0.0f;
#pragma unroll
        for (int d = 0; d < SF_MAX_POOL * SF_MAX_POOL; ++d) {
            acc[j][d] = b;
        }
    }
    for (int ic = 0; ic < p.in_c; ++ic) {
        __syncthreads();
        sf_load_tile(in + (long)ic * p.in_h * p.in_w, tile, tile_h, tile_w,
                     py0 * ps * p.stride - p.pad, px0 * ps * p.stride - p.pad, p.in_h, p.in_w);
        __syncthreads();
        // Top-left of this thread's window in the tile.
        const float* t = tile + threadIdx.y * ps * p.stride * tile_w + threadIdx.x * ps * p.stride;
        for (int ky = 0; ky < p.k_h; ++ky) {
            for (int kx = 0; kx < p.k_w; ++kx) {
                const int tap = (ic * p.k_h + ky) * p.k_w + kx;
                float wj[SF_OC_BLOCK];
#pragma unroll
                for (int j = 0; j < SF_OC_BLOCK; ++j) {
                    wj[j] = oc0 + j < p.out_c ? __ldg(&w[(long)(oc0 + j) * flen + tap]) : 0.0f;
                }
#pragma unroll
                for (int dy = 0; dy < SF_MAX_POOL; ++dy) {
#pragma unroll
                    for (int dx = 0; dx < SF_MAX_POOL; ++dx) {
                        if (dy < pk && dx < pk) {
                            const float x = t[(dy * p.stride + ky) * tile_w + dx * p.stride + kx];
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
            if (oc0 + j < p.out_c) {
                float m = 0.0f;
#pragma unroll
                for (int dx = 0; dx < SF_MAX_POOL; ++dx) {
                    if (dx < pk) {
                        float v = acc[j][dx];
                        if (f.relu) v = sf_relu(v);
#pragma unroll
                        for (int dy = 1; dy < SF_MAX_POOL; ++dy) {
                            if (dy < pk) {
                                float u = acc[j][dy * SF_MAX_POOL + dx];
                                if (f.relu) u = sf_relu(u);
                                v = sf_max(v, u);
                            }
                        }
                        m = dx == 0 ? v : sf_max(m, v);
                    }
                }
                out[((long)(oc0 + j) * f.out_h + py) * f.out_w + px] = m;
            }
        }
    }
}
