// Shared definitions of streamfuse's CUDA kernels.
//
// Compiled two ways: by NVRTC (the runtime prepends this file to each .cu
// source) and by the emulation harness (g++ with kernels/emu/cuda_emu.h).
// Parameter structs mirror `streamfuse_kernels::cuda::params` (#[repr(C)]).
//
// Numerics: every kernel computes each output with the same sequence of
// operations as the CPU backend, so results match the CPU's FMA levels to
// the bit:
// - convolution: bias, then fmaf(w, x, acc) over the group's taps in
//   (ic, ky, kx) order, padded taps included with x = 0;
// - ReLU as x > 0 ? x : 0; max as b > a ? b : a;
// - pooling: for each output, each valid window column's vertical
//   reduction over the valid rows in row order first, then across the
//   valid columns in column order; an average divides the sum once
//   (__fdiv_rn) by its count; a max with no valid tap is -FLT_MAX;
// - affine ops as __fadd_rn(__fmul_rn(x, scale), shift) (never an FMA).
#pragma once

// A 2-D convolution (ONNX Conv): padding bottom/right only shape the
// output (out_h, out_w are computed on the host).
struct ConvParams {
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int k_h, k_w;
    int stride_h, stride_w;
    int pad_top, pad_left;
    int dil_h, dil_w;
    // Output channels of group g read input channels g*in_c/groups ...
    int groups;
    int has_bias;
};

// A 2-D pool (ONNX MaxPool / AveragePool); out_h, out_w (ceil_mode
// included) are computed on the host.
struct PoolParams {
    int c, in_h, in_w;
    int out_h, out_w;
    int k_h, k_w;
    int stride_h, stride_w;
    int pad_top, pad_left, pad_bottom, pad_right;
    int dil_h, dil_w;
    // 0: max, 1: average.
    int avg;
    // Average: divide by the taps inside the padded input (1) or inside
    // the input (0).
    int count_include_pad;
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
// The lowest finite float (-FLT_MAX, Rust's f32::MIN): a max pool's value
// when no tap of its window lies inside the input.
#define SF_LOWEST __int_as_float(0xff7fffff)

// Implicit-GEMM convolution (the SF_CHAIN_CONV 2 and 3 producers of
// chain.cu): a block computes an SF_GEMM_BM x SF_GEMM_BN tile of the
// product C[m][n] = sum_k A[m][k] B[k][n] (m an output channel of a group,
// n a convolution output position, k a tap (ic, ky, kx) of the group) in
// SF_GEMM_BK-deep slices of k, on SF_GEMM_THREADS threads (8 warps).
#define SF_GEMM_BM 64
#define SF_GEMM_BN 64
#define SF_GEMM_BK 16
#define SF_GEMM_THREADS 256

__device__ __forceinline__ float sf_relu(float x) { return x > 0.0f ? x : 0.0f; }
__device__ __forceinline__ float sf_max(float a, float b) { return b > a ? b : a; }

// The output channels of one block of the conv kernels: blockIdx.z counts
// SF_OC_BLOCK-channel blocks group by group, so a block never straddles
// two groups (all its channels read the same input channels).
struct SfConvBlock {
    int g;      // group
    int oc0;    // first output channel
    int n;      // channels of the block that exist (1..SF_OC_BLOCK)
    int icg;    // input channels per group
};

__device__ __forceinline__ SfConvBlock sf_conv_block(const ConvParams& p, int z) {
    const int ocg = p.out_c / p.groups;
    const int nb = (ocg + SF_OC_BLOCK - 1) / SF_OC_BLOCK;
    SfConvBlock b;
    b.g = z / nb;
    const int ob = (z - b.g * nb) * SF_OC_BLOCK;
    b.oc0 = b.g * ocg + ob;
    b.n = min(SF_OC_BLOCK, ocg - ob);
    b.icg = p.in_c / p.groups;
    return b;
}

// The taps of one axis of a pool window (crate::op::AxisTaps): output
// position o, input length len, kernel k, stride s, dilation d, padding
// pad before and pad_end after. first: input index of the first valid tap
// (valid taps: first, first + d, ...), n: valid taps, padded: taps inside
// the padded input.
struct SfTaps {
    int first, n, padded;
};

__device__ __forceinline__ SfTaps sf_axis_taps(int o, int len, int k, int s, int d, int pad,
                                               int pad_end) {
    const int start = o * s - pad;
    const int k0 = start >= 0 ? 0 : (d - 1 - start) / d;
    const int k1 = start < len ? min(k, (len - 1 - start) / d + 1) : 0;
    const int kp = start < len + pad_end ? min(k, (len + pad_end - 1 - start) / d + 1) : 0;
    SfTaps t;
    t.first = start + k0 * d;
    t.n = max(k1 - k0, 0);
    t.padded = kp;
    return t;
}

// An average's divisor, as the CPU counts it.
__device__ __forceinline__ float sf_pool_count(const PoolParams& p, SfTaps r, SfTaps c) {
    return (float)(p.count_include_pad ? r.padded * c.padded : r.n * c.n);
}

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

// Tensor cores (the f16 producer of chain.cu): one warp's 16x16x16 matrix
// multiply-accumulate with f16 inputs and f32 accumulators, written as
// PTX `wmma` instructions (sm_70 and later), so NVRTC needs no CUDA
// headers. Operands live in shared memory: A row-major (16 x 16 halves,
// leading dimension lda, a multiple of 8), B row-major (ldb, a multiple of
// 8), the accumulator stored row-major as floats (ldc, a multiple of 4);
// every address 32-byte aligned. Every lane of the warp calls each
// function (warp-collective, like the wmma API). The emulator
// (cuda_emu_kernel.h, SF_EMU) gives each lane the whole matrices instead
// of the hardware's register slices.
#ifndef SF_EMU
typedef unsigned short sf_half;

// f32 to f16, rounded to nearest even (overflow to infinity).
__device__ __forceinline__ sf_half sf_f2h(float x) {
    sf_half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}

struct SfFragA {
    unsigned r[8];
};
struct SfFragB {
    unsigned r[8];
};
struct SfFragC {
    float r[8];
};

__device__ __forceinline__ void sf_frag_zero(SfFragC& c) {
#pragma unroll
    for (int i = 0; i < 8; ++i) c.r[i] = 0.0f;
}

__device__ __forceinline__ void sf_frag_load_a(SfFragA& a, const sf_half* p, int lda) {
    asm volatile(
        "wmma.load.a.sync.aligned.row.m16n16k16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, [%8], %9;"
        : "=r"(a.r[0]), "=r"(a.r[1]), "=r"(a.r[2]), "=r"(a.r[3]), "=r"(a.r[4]), "=r"(a.r[5]),
          "=r"(a.r[6]), "=r"(a.r[7])
        : "l"(p), "r"(lda));
}

__device__ __forceinline__ void sf_frag_load_b(SfFragB& b, const sf_half* p, int ldb) {
    asm volatile(
        "wmma.load.b.sync.aligned.row.m16n16k16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, [%8], %9;"
        : "=r"(b.r[0]), "=r"(b.r[1]), "=r"(b.r[2]), "=r"(b.r[3]), "=r"(b.r[4]), "=r"(b.r[5]),
          "=r"(b.r[6]), "=r"(b.r[7])
        : "l"(p), "r"(ldb));
}

// c += a * b.
__device__ __forceinline__ void sf_frag_mma(SfFragC& c, const SfFragA& a, const SfFragB& b) {
    asm volatile(
        "wmma.mma.sync.aligned.row.row.m16n16k16.f32.f32 {%0,%1,%2,%3,%4,%5,%6,%7}, "
        "{%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19,%20,%21,%22,%23}, "
        "{%0,%1,%2,%3,%4,%5,%6,%7};"
        : "+f"(c.r[0]), "+f"(c.r[1]), "+f"(c.r[2]), "+f"(c.r[3]), "+f"(c.r[4]), "+f"(c.r[5]),
          "+f"(c.r[6]), "+f"(c.r[7])
        : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(a.r[4]), "r"(a.r[5]),
          "r"(a.r[6]), "r"(a.r[7]), "r"(b.r[0]), "r"(b.r[1]), "r"(b.r[2]), "r"(b.r[3]),
          "r"(b.r[4]), "r"(b.r[5]), "r"(b.r[6]), "r"(b.r[7]));
}

__device__ __forceinline__ void sf_frag_store_c(float* p, const SfFragC& c, int ldc) {
    asm volatile(
        "wmma.store.d.sync.aligned.row.m16n16k16.f32 [%0], {%1,%2,%3,%4,%5,%6,%7,%8}, %9;"
        :
        : "l"(p), "f"(c.r[0]), "f"(c.r[1]), "f"(c.r[2]), "f"(c.r[3]), "f"(c.r[4]),
          "f"(c.r[5]), "f"(c.r[6]), "f"(c.r[7]), "r"(ldc)
        : "memory");
}
#endif
