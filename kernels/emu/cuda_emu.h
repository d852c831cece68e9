// CUDA-on-CPU emulation for streamfuse's kernel tests.
//
// Included (g++ -include) before the very .cu sources NVRTC compiles. A
// launch runs the grid's blocks one after another on blockDim threads that
// are real std::threads: __syncthreads() is a real barrier across the
// block's threads, so missing or misplaced barriers and halo mistakes show
// up as wrong results. __shared__ variables become function-local statics:
// one copy shared by the threads of the block that is running (blocks never
// overlap), and launches run one at a time. Only what the kernels use is
// mapped.
//
// Kernels that never synchronise (grid-stride elementwise kernels, pools,
// the direct convolution, the vision kernels) may be launched with
// launch_serial instead: every thread of every block in turn on the calling
// thread, a schedule CUDA allows when threads do not synchronise, and much
// cheaper than hundreds of threads meeting at a barrier per block. A
// __syncthreads() in such a launch aborts the process.
#pragma once

#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace sf_emu {
inline thread_local dim3 thread_idx;
inline thread_local dim3 block_idx;
inline dim3 block_dim;
inline dim3 grid_dim;
inline std::barrier<>* block_barrier = nullptr;

// Runs `kernel` over the grid: one std::thread per thread of a block, every
// thread stepping through the blocks in order, a barrier between blocks.
// Launches are serialised: the launch state above and the kernels'
// __shared__ statics are process-wide (tests call in from several threads).
inline std::mutex launch_lock;

inline void launch(dim3 grid, dim3 block, const std::function<void()>& kernel) {
    std::lock_guard<std::mutex> guard(launch_lock);
    const unsigned threads = block.x * block.y * block.z;
    std::barrier<> bar(static_cast<std::ptrdiff_t>(threads));
    block_barrier = &bar;
    grid_dim = grid;
    block_dim = block;
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            thread_idx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        block_idx = dim3{bx, by, bz};
                        kernel();
                        // The next block may reuse __shared__ memory only
                        // after every thread of this one is done with it.
                        bar.arrive_and_wait();
                    }
        });
    }
    for (auto& th : pool) th.join();
    block_barrier = nullptr;
}

// Runs `kernel`, which must not call __syncthreads(), over the grid on the
// calling thread: blocks in order, each block's threads in order.
inline void launch_serial(dim3 grid, dim3 block, const std::function<void()>& kernel) {
    std::lock_guard<std::mutex> guard(launch_lock);
    block_barrier = nullptr;
    grid_dim = grid;
    block_dim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                block_idx = dim3{bx, by, bz};
                for (unsigned tz = 0; tz < block.z; ++tz)
                    for (unsigned ty = 0; ty < block.y; ++ty)
                        for (unsigned tx = 0; tx < block.x; ++tx) {
                            thread_idx = dim3{tx, ty, tz};
                            kernel();
                        }
            }
}

inline void sync_threads() {
    if (block_barrier == nullptr) {
        std::fputs("cuda_emu: __syncthreads() in a kernel launched with launch_serial\n", stderr);
        std::abort();
    }
    block_barrier->arrive_and_wait();
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
