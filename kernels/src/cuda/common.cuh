// Shared definitions of streamfuse's CUDA kernels.
//
// Compiled two ways: by NVRTC (the runtime prepends this file to each .cu
// source) and by the emulation harness (g++ with kernels/emu/cuda_emu.h).
// Parameter structs mirror `streamfuse_kernels::cuda::params` (#[repr(C)]).
//
// Numerics: every kernel computes each output with the same sequence of
// operations as the CPU backend (bias, then fmaf over taps in (ic, ky, kx)
// order; ReLU as x > 0 ? x : 0; max as b > a ? b : a, columns' vertical
// maxima first, then across columns), so results match the CPU's FMA
// levels to the bit.
#pragma once

struct ConvParams {
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int k_h, k_w, stride, pad;
    int has_bias;
};

struct PoolParams {
    int c, in_h, in_w;
    int out_h, out_w;
    int size, stride;
};

struct FusedParams {
    ConvParams conv;
    int relu;
    // pool_size 0: no pool.
    int pool_size, pool_stride;
    int out_h, out_w;
};

// Vision kernels (vision.cu); SF_MAX_TAPS: most taps of a separable filter.
#define SF_MAX_TAPS 32
struct VisionParams {
    int planes, h, w;
    int out_h, out_w;
    // Filter taps (ksize <= SF_MAX_TAPS), or the luma weights in k[0..3].
    int ksize;
    float k[SF_MAX_TAPS];
    // Sobel: 0 = dx, 1 = dy, 2 = magnitude.
    int mode;
};

// Output tile of one block: SF_TILE_W x SF_TILE_H threads, one output
// position each, SF_OC_BLOCK output channels per thread.
#define SF_TILE_W 32
#define SF_TILE_H 8
#define SF_OC_BLOCK 4
// Shared-memory input tile capacity (floats): 24 KiB.
#define SF_SMEM_FLOATS 6144
// Largest pool window the fused kernel keeps in registers (3x3).
#define SF_MAX_POOL 3

__device__ __forceinline__ float sf_relu(float x) { return x > 0.0f ? x : 0.0f; }
__device__ __forceinline__ float sf_max(float a, float b) { return b > a ? b : a; }

// Cooperative load of one input channel's tile (zero outside the image).
__device__ __forceinline__ void sf_load_tile(const float* __restrict__ plane, float* tile,
                                             int tile_h, int tile_w, int iy0, int ix0,
                                             int h, int w) {
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int nthreads = blockDim.x * blockDim.y;
    const int n = tile_h * tile_w;
    for (int i = tid; i < n; i += nthreads) {
        const int ty = i / tile_w;
        const int tx = i - ty * tile_w;
        const int iy = iy0 + ty;
        const int ix = ix0 + tx;
        tile[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? __ldg(&plane[iy * w + ix]) : 0.0f;
    }
}
