// CUDA-on-CPU emulation for streamfuse's kernel tests: the launcher.
//
// Included (g++ -include) before the very .cu sources NVRTC compiles; the
// kernel side (indices, intrinsics) is cuda_emu_kernel.h. A launch runs
// the grid's blocks one after another on blockDim threads that are real
// std::threads: __syncthreads() is a real barrier across the block's
// threads, so missing or misplaced barriers and halo mistakes show up as
// wrong results. __shared__ variables become function-local statics: one
// copy shared by the threads of the block that is running (blocks never
// overlap), and launches run one at a time. Only what the kernels use is
// mapped.
//
// Kernels that never synchronise (grid-stride elementwise kernels, pools,
// the direct convolution, the vision kernels, the load producer of the
// generated chains) are launched with launch_serial instead: every thread
// of every block in turn on the calling thread, a schedule CUDA allows when
// threads do not synchronise, and much cheaper than hundreds of threads
// meeting at a barrier per block. A __syncthreads() in such a launch
// aborts the process.
#pragma once

#include "cuda_emu_kernel.h"

#include <barrier>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sf_emu {
inline std::barrier<>* block_barrier = nullptr;

inline void wait_block_barrier() { block_barrier->arrive_and_wait(); }

// Launches are serialised: the launch state above and the kernels'
// __shared__ statics are process-wide (tests call in from several threads).
inline std::mutex launch_lock;

// Runs `kernel` over the grid: one std::thread per thread of a block, every
// thread stepping through the blocks in order, a barrier between blocks.
// `wait` is where kernels compiled elsewhere (a generated kernel's library)
// keep their barrier hook: it is pointed at this launch's barrier too.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& kernel,
                   void (**wait)() = nullptr) {
    std::lock_guard<std::mutex> guard(launch_lock);
    const unsigned threads = block.x * block.y * block.z;
    std::barrier<> bar(static_cast<std::ptrdiff_t>(threads));
    block_barrier = &bar;
    barrier_wait = wait_block_barrier;
    if (wait != nullptr) *wait = wait_block_barrier;
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            grid_dim = grid;
            block_dim = block;
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
    barrier_wait = nullptr;
    if (wait != nullptr) *wait = nullptr;
}

// Runs `kernel`, which must not call __syncthreads(), over the grid on the
// calling thread: blocks in order, each block's threads in order.
inline void launch_serial(dim3 grid, dim3 block, const std::function<void()>& kernel,
                          void (**wait)() = nullptr) {
    std::lock_guard<std::mutex> guard(launch_lock);
    barrier_wait = nullptr;
    if (wait != nullptr) *wait = nullptr;
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
}  // namespace sf_emu
