// Elementwise kernels.
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
