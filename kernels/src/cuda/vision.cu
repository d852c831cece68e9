// Vision kernels: luma, normalisation, separable filters (Gaussian blur),
// Sobel and bilinear resize. One thread per output value, grid-stride.
//
// Numerics: every value is the CPU backend's expression in the same order
// (`kernels/src/cpu/vision.rs`), with explicitly rounded operations
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn) so no multiply-add is
// contracted: results equal the CPU's bit for bit. Borders are
// BORDER_REFLECT_101, as on the CPU.
#include "common.cuh"

__device__ __forceinline__ int sf_reflect101(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        else i = 2 * n - 2 - i;
    }
    return i;
}

// out[i] = (a*k0 + b*k1) + c*k2 over one plane of `n` values; the three
// input planes follow each other in `in`.
extern "C" __global__ void gray_f32(const float* __restrict__ in, float* __restrict__ out,
                                    VisionParams p) {
    const long n = (long)p.h * p.w;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const float a = __fmul_rn(in[i], p.k[0]);
        const float b = __fmul_rn(in[n + i], p.k[1]);
        const float c = __fmul_rn(in[2 * n + i], p.k[2]);
        out[i] = __fadd_rn(__fadd_rn(a, b), c);
    }
}

// (x * scale - mean) / std over `n` values of one plane.
extern "C" __global__ void normalize_f32(const float* __restrict__ in, float* __restrict__ out,
                                         long n, float scale, float mean, float std) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        out[i] = __fdiv_rn(__fsub_rn(__fmul_rn(in[i], scale), mean), std);
    }
}

// Horizontal pass: out[x] = sum_j k[j] * in[reflect(x - r + j)], taps in
// order (acc = k0*x0, then acc + kj*xj).
extern "C" __global__ void hfilter_f32(const float* __restrict__ in, float* __restrict__ out,
                                       VisionParams p) {
    const long n = (long)p.planes * p.h * p.w;
    const int r = p.ksize / 2;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const int x = (int)(i % p.w);
        const float* row = in + (i - x);
        float acc = __fmul_rn(p.k[0], row[sf_reflect101(x - r, p.w)]);
        for (int j = 1; j < p.ksize; ++j)
            acc = __fadd_rn(acc, __fmul_rn(p.k[j], row[sf_reflect101(x - r + j, p.w)]));
        out[i] = acc;
    }
}

// Vertical pass: the same down the columns.
extern "C" __global__ void vfilter_f32(const float* __restrict__ in, float* __restrict__ out,
                                       VisionParams p) {
    const long plane = (long)p.h * p.w;
    const long n = (long)p.planes * plane;
    const int r = p.ksize / 2;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const long c = i / plane;
        const int y = (int)((i - c * plane) / p.w);
        const int x = (int)(i % p.w);
        const float* col = in + c * plane + x;
        float acc = __fmul_rn(p.k[0], col[(long)sf_reflect101(y - r, p.h) * p.w]);
        for (int j = 1; j < p.ksize; ++j)
            acc = __fadd_rn(acc,
                            __fmul_rn(p.k[j], col[(long)sf_reflect101(y - r + j, p.h) * p.w]));
        out[i] = acc;
    }
}

// Sobel, horizontal pass: deriv = s[x+1] - s[x-1], smooth = (s[x-1] + 2 s[x]) + s[x+1].
extern "C" __global__ void sobel_h_f32(const float* __restrict__ in, float* __restrict__ deriv,
                                       float* __restrict__ smooth, VisionParams p) {
    const long n = (long)p.planes * p.h * p.w;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const int x = (int)(i % p.w);
        const float* row = in + (i - x);
        const float l = row[sf_reflect101(x - 1, p.w)];
        const float m = row[x];
        const float rr = row[sf_reflect101(x + 1, p.w)];
        deriv[i] = __fsub_rn(rr, l);
        smooth[i] = __fadd_rn(__fadd_rn(l, __fmul_rn(2.0f, m)), rr);
    }
}

// Sobel, vertical pass: dx = (d[y-1] + 2 d[y]) + d[y+1], dy = s[y+1] - s[y-1],
// magnitude = sqrt(dx*dx + dy*dy).
extern "C" __global__ void sobel_v_f32(const float* __restrict__ deriv,
                                       const float* __restrict__ smooth, float* __restrict__ out,
                                       VisionParams p) {
    const long plane = (long)p.h * p.w;
    const long n = (long)p.planes * plane;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const long c = i / plane;
        const int y = (int)((i - c * plane) / p.w);
        const int x = (int)(i % p.w);
        const long up = c * plane + (long)sf_reflect101(y - 1, p.h) * p.w + x;
        const long down = c * plane + (long)sf_reflect101(y + 1, p.h) * p.w + x;
        const float dx = __fadd_rn(__fadd_rn(deriv[up], __fmul_rn(2.0f, deriv[i])), deriv[down]);
        const float dy = __fsub_rn(smooth[down], smooth[up]);
        float v = dy;
        if (p.mode == 0) v = dx;
        else if (p.mode == 2) v = __fsqrt_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)));
        out[i] = v;
    }
}

// INTER_LINEAR source index and weight of output `d` (of `dst`) from `src`
// inputs: f = (float)((d + 0.5) * (1 / (dst / src)) - 0.5), clamped at the
// edges, as on the host.
__device__ __forceinline__ void sf_linear_tap(int d, int src, int dst, int* i, float* w) {
    const double scale = 1.0 / ((double)dst / (double)src);
    const float f = (float)(((double)d + 0.5) * scale - 0.5);
    float fi = floorf(f);
    float fw = __fsub_rn(f, fi);
    if (fi < 0.0f) {
        fi = 0.0f;
        fw = 0.0f;
    }
    int ii = (int)fi;
    if (ii + 1 >= src) {
        ii = src - 1;
        fw = 0.0f;
    }
    *i = ii;
    *w = fw;
}

// Bilinear resize: each of the two source rows interpolated across, then
// blended down (r0 * (1 - fy) + r1 * fy).
extern "C" __global__ void resize_linear_f32(const float* __restrict__ in, float* __restrict__ out,
                                             VisionParams p) {
    const long oplane = (long)p.out_h * p.out_w;
    const long n = (long)p.planes * oplane;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        const long c = i / oplane;
        const int oy = (int)((i - c * oplane) / p.out_w);
        const int ox = (int)(i % p.out_w);
        int sx, sy;
        float fx, fy;
        sf_linear_tap(ox, p.w, p.out_w, &sx, &fx);
        sf_linear_tap(oy, p.h, p.out_h, &sy, &fy);
        const int sx1 = sx + 1 < p.w ? sx + 1 : p.w - 1;
        const int sy1 = sy + 1 < p.h ? sy + 1 : p.h - 1;
        const float* plane = in + c * (long)p.h * p.w;
        const float ax = __fsub_rn(1.0f, fx);
        const float* r0 = plane + (long)sy * p.w;
        const float* r1 = plane + (long)sy1 * p.w;
        const float h0 = __fadd_rn(__fmul_rn(r0[sx], ax), __fmul_rn(r0[sx1], fx));
        const float h1 = __fadd_rn(__fmul_rn(r1[sx], ax), __fmul_rn(r1[sx1], fx));
        out[i] = __fadd_rn(__fmul_rn(h0, __fsub_rn(1.0f, fy)), __fmul_rn(h1, fy));
    }
}
