// Elementwise kernels: relu_f32, clip_f32, channel_affine_f32.
#include "common.cuh"

// Clamp in place to [lo, hi] on n values (x > lo ? x : lo, then
// v < hi ? v : hi, as the CPU). Launch: 1-D, any grid.
extern "C" __global__ void clip_f32(float* data, long n, float lo, float hi) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const float x = data[i] > lo ? data[i] : lo;
        data[i] = x < hi ? x : hi;
    }
}

// ReLU in place on n values. Launch: 1-D, any grid.
extern "C" __global__ void relu_f32(float* data, long n) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        data[i] = sf_relu(data[i]);
    }
}

// Per-channel affine in place (batch normalization at inference):
// x * scale[c] + shift[c] on each of `channels` planes of `plane` values,
// rounded after the multiply and after the add (as the CPU; never an FMA).
// Launch: grid (any, any), block (256): x steps through a plane, y through
// the channels, so scale and shift are read once per thread and channel.
extern "C" __global__ void channel_affine_f32(float* data, const float* __restrict__ scale,
                                              const float* __restrict__ shift, int channels,
                                              long plane) {
    for (int c = blockIdx.y; c < channels; c += gridDim.y) {
        const float s = __ldg(&scale[c]);
        const float b = __ldg(&shift[c]);
        float* d = data + (long)c * plane;
        for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < plane;
             i += (long)gridDim.x * blockDim.x) {
            d[i] = __fadd_rn(__fmul_rn(d[i], s), b);
        }
    }
}
