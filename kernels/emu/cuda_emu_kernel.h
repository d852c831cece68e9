// CUDA-on-CPU emulation, kernel side: what a kernel's source needs to
// compile as C++ (dim3, the thread and block indices, __syncthreads,
// __shared__, the intrinsics the kernels use). Light on purpose: generated
// fused-chain kernels are compiled against this header alone, one shared
// library each, and launched by the test process's launcher (cuda_emu.h),
// which hands each library its barrier (see kernels/emu/src/generated.rs).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace sf_emu {
// The running thread's indices and its launch's shape (thread-local: every
// emulated thread is, or runs on, an OS thread of its own launch).
inline thread_local dim3 thread_idx;
inline thread_local dim3 block_idx;
inline thread_local dim3 block_dim;
inline thread_local dim3 grid_dim;
// Waits at the running block's barrier: set by the launcher, null in a
// serial launch (see cuda_emu.h), where __syncthreads() aborts.
inline void (*barrier_wait)() = nullptr;

inline void sync_threads() {
    if (barrier_wait == nullptr) {
        std::fputs("cuda_emu: __syncthreads() in a kernel launched serially\n", stderr);
        std::abort();
    }
    barrier_wait();
}
}  // namespace sf_emu

#define threadIdx (::sf_emu::thread_idx)
#define blockIdx (::sf_emu::block_idx)
#define blockDim (::sf_emu::block_dim)
#define gridDim (::sf_emu::grid_dim)
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __syncthreads() (::sf_emu::sync_threads())

template <typename T>
inline T __ldg(const T* p) {
    return *p;
}

using std::fmaf;

// Bit reinterpretation and correctly rounded multiply / add that are never
// contracted into an FMA (volatile keeps the rounding steps).
inline float __int_as_float(int x) {
    float f;
    std::memcpy(&f, &x, sizeof f);
    return f;
}
inline float __fmul_rn(float a, float b) {
    volatile float r = a * b;
    return r;
}
inline float __fadd_rn(float a, float b) {
    volatile float r = a + b;
    return r;
}
inline float __fsub_rn(float a, float b) {
    volatile float r = a - b;
    return r;
}
inline float __fdiv_rn(float a, float b) {
    volatile float r = a / b;
    return r;
}
inline float __fsqrt_rn(float a) {
    volatile float r = std::sqrt(a);
    return r;
}
inline float floorf(float x) { return std::floor(x); }
// CUDA's integer min and max.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// Tensor cores (common.cuh's sf_frag_* API): every lane of a warp holds the
// whole 16x16 matrices. A load reads the full tile; the multiply-add
// accumulates each output's 16 exact f16 products in k order in f32 (the
// hardware's order and internal rounding are unspecified: the f16
// producer's tolerance, not bit equality, is what the tests check); the
// store is done by lane 0 of the warp (the kernels synchronise the block
// before reading what was stored, as they must on a GPU).
#define SF_EMU 1
typedef unsigned short sf_half;

inline sf_half sf_f2h(float x) {
    _Float16 h = static_cast<_Float16>(x);
    sf_half bits;
    std::memcpy(&bits, &h, sizeof bits);
    return bits;
}
inline float sf_h2f(sf_half bits) {
    _Float16 h;
    std::memcpy(&h, &bits, sizeof h);
    return static_cast<float>(h);
}

struct SfFragA {
    float v[16][16];
};
typedef SfFragA SfFragB;
typedef SfFragA SfFragC;

inline void sf_frag_zero(SfFragC& c) { std::memset(&c, 0, sizeof c); }
inline void sf_frag_load_a(SfFragA& a, const sf_half* p, int ld) {
    for (int i = 0; i < 16; ++i)
        for (int k = 0; k < 16; ++k) a.v[i][k] = sf_h2f(p[i * ld + k]);
}
inline void sf_frag_load_b(SfFragB& b, const sf_half* p, int ld) { sf_frag_load_a(b, p, ld); }
inline void sf_frag_mma(SfFragC& c, const SfFragA& a, const SfFragB& b) {
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) {
            float acc = c.v[i][j];
            for (int k = 0; k < 16; ++k) acc = std::fmaf(a.v[i][k], b.v[k][j], acc);
            c.v[i][j] = acc;
        }
}
inline void sf_frag_store_c(float* p, const SfFragC& c, int ld) {
    const unsigned lane =
        (sf_emu::thread_idx.x + sf_emu::block_dim.x * (sf_emu::thread_idx.y +
                                                        sf_emu::block_dim.y * sf_emu::thread_idx.z)) %
        32;
    if (lane != 0) return;
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j) p[i * ld + j] = c.v[i][j];
}
