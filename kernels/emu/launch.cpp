// C entry points that launch each emulated kernel with a grid and block
// chosen by the Rust launch planner (the same one the CUDA backend uses).
// Kernels with __syncthreads() run on real threads (sf_emu::launch), the
// others serially (sf_emu::launch_serial; see cuda_emu.h).
#include "../src/cuda/common.cuh"

extern "C" void conv2d_f32(const float*, const float*, const float*, float*, ConvParams);
extern "C" void conv2d_direct_f32(const float*, const float*, const float*, float*, ConvParams);
extern "C" void conv2d_depthwise_f32(const float*, const float*, const float*, float*, ConvParams);
extern "C" void maxpool_f32(const float*, float*, PoolParams);
extern "C" void pool2d_f32(const float*, float*, PoolParams);
extern "C" void pool2d_wide_f32(const float*, float*, PoolParams);
extern "C" void relu_f32(float*, long);
extern "C" void clip_f32(float*, long, float, float);
extern "C" void channel_affine_f32(float*, const float*, const float*, int, long);
extern "C" void fused_conv_pool_f32(const float*, const float*, const float*, float*, const float*,
                                    FusedParams);
extern "C" void gray_f32(const float*, float*, VisionParams);
extern "C" void normalize_f32(const float*, float*, long, float, float, float);
extern "C" void hfilter_f32(const float*, float*, VisionParams);
extern "C" void vfilter_f32(const float*, float*, VisionParams);
extern "C" void sobel_h_f32(const float*, float*, float*, VisionParams);
extern "C" void sobel_v_f32(const float*, const float*, float*, VisionParams);
extern "C" void resize_linear_f32(const float*, float*, VisionParams);
extern "C" void broken_conv2d_f32(const float*, const float*, const float*, float*, ConvParams);

struct SfLaunch {
    unsigned grid[3];
    unsigned block[3];
};

static dim3 g(const SfLaunch* l) { return dim3{l->grid[0], l->grid[1], l->grid[2]}; }
static dim3 b(const SfLaunch* l) { return dim3{l->block[0], l->block[1], l->block[2]}; }

// `kernel`: 0 conv2d_f32, 1 conv2d_direct_f32, 2 conv2d_depthwise_f32.
extern "C" void sf_emu_conv2d(const SfLaunch* l, int kernel, const float* in, const float* w,
                              const float* bias, float* out, const ConvParams* p) {
    ConvParams q = *p;
    if (kernel == 1) {
        sf_emu::launch_serial(g(l), b(l), [&] { conv2d_direct_f32(in, w, bias, out, q); });
        return;
    }
    sf_emu::launch(g(l), b(l), [&] {
        if (kernel == 2) conv2d_depthwise_f32(in, w, bias, out, q);
        else conv2d_f32(in, w, bias, out, q);
    });
}

extern "C" void sf_emu_broken_conv2d(const SfLaunch* l, const float* in, const float* w,
                                     const float* bias, float* out, const ConvParams* p) {
    ConvParams q = *p;
    sf_emu::launch(g(l), b(l), [&] { broken_conv2d_f32(in, w, bias, out, q); });
}

// `kernel`: 0 maxpool_f32, 1 pool2d_f32, 2 pool2d_wide_f32.
extern "C" void sf_emu_pool(const SfLaunch* l, int kernel, const float* in, float* out,
                            const PoolParams* p) {
    PoolParams q = *p;
    if (kernel == 2) {
        sf_emu::launch(g(l), b(l), [&] { pool2d_wide_f32(in, out, q); });
        return;
    }
    sf_emu::launch_serial(g(l), b(l), [&] {
        if (kernel == 1) pool2d_f32(in, out, q);
        else maxpool_f32(in, out, q);
    });
}

extern "C" void sf_emu_relu(const SfLaunch* l, float* data, long n) {
    sf_emu::launch_serial(g(l), b(l), [&] { relu_f32(data, n); });
}

extern "C" void sf_emu_clip(const SfLaunch* l, float* data, long n, float lo, float hi) {
    sf_emu::launch_serial(g(l), b(l), [&] { clip_f32(data, n, lo, hi); });
}

extern "C" void sf_emu_channel_affine(const SfLaunch* l, float* data, const float* scale,
                                      const float* shift, int channels, long plane) {
    sf_emu::launch_serial(g(l), b(l),
                          [&] { channel_affine_f32(data, scale, shift, channels, plane); });
}

extern "C" void sf_emu_fused(const SfLaunch* l, const float* in, const float* w, const float* bias,
                             float* out, const float* chan, const FusedParams* p) {
    FusedParams q = *p;
    sf_emu::launch(g(l), b(l), [&] { fused_conv_pool_f32(in, w, bias, out, chan, q); });
}

// Launches a kernel compiled elsewhere (a generated kernel's library):
// `body` runs one emulated thread, setting the library's own indices from
// the ones it is given; `wait` is the library's barrier hook, pointed at
// this launch's barrier (null in a serial launch).
typedef void (*SfThreadBody)(void*, const dim3*, const dim3*, const dim3*, const dim3*);
extern "C" void sf_emu_host_launch(const SfLaunch* l, int serial, SfThreadBody body, void* arg,
                                   void (**wait)()) {
    auto run = [&] {
        body(arg, &sf_emu::thread_idx, &sf_emu::block_idx, &sf_emu::block_dim, &sf_emu::grid_dim);
    };
    if (serial) sf_emu::launch_serial(g(l), b(l), run, wait);
    else sf_emu::launch(g(l), b(l), run, wait);
}

// Vision kernels (vision.cu): `which` picks the entry point of the three
// that share the signature (in, out, params).
extern "C" void sf_emu_vision(const SfLaunch* l, int which, const float* in, float* out,
                              const VisionParams* p) {
    VisionParams q = *p;
    sf_emu::launch_serial(g(l), b(l), [&] {
        switch (which) {
            case 0: gray_f32(in, out, q); break;
            case 1: hfilter_f32(in, out, q); break;
            case 2: vfilter_f32(in, out, q); break;
            default: resize_linear_f32(in, out, q); break;
        }
    });
}

extern "C" void sf_emu_normalize(const SfLaunch* l, const float* in, float* out, long n,
                                 float scale, float mean, float std) {
    sf_emu::launch_serial(g(l), b(l), [&] { normalize_f32(in, out, n, scale, mean, std); });
}

extern "C" void sf_emu_sobel(const SfLaunch* l, const float* in, float* deriv, float* smooth,
                             float* out, const VisionParams* p) {
    VisionParams q = *p;
    sf_emu::launch_serial(g(l), b(l), [&] { sobel_h_f32(in, deriv, smooth, q); });
    sf_emu::launch_serial(g(l), b(l), [&] { sobel_v_f32(deriv, smooth, out, q); });
}
