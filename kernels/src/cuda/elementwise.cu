// Elementwise kernels.
#include "common.cuh"

// ReLU in place on n values. Launch: 1-D, any grid.
extern "C" __global__ void relu_f32(float* data, long n) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        data[i] = sf_relu(data[i]);
    }
}
