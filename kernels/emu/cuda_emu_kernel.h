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
