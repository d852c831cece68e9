//! CUDA kernel microbenchmarks (`cuda_conv2d`, `cuda_fused_conv_relu_pool`,
//! and the whole segment with copies, `cuda_segment`) on the thesis and cnn
//! workloads, and deep 3x3 layers through the implicit GEMM in f32 and f16
//! (`cuda_deep_conv`, throughput in FLOPs). Device time per kernel is measured with the device
//! synchronised after each launch; the input's copy on the device is made
//! outside the timed part. A failed upload, launch or synchronisation
//! stops the bench with the error (never timed as a fast no-op). On a
//! machine without a usable CUDA device the bench says so and measures
//! nothing (scripts/gpu-check.sh runs it where there is one).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamfuse_benches::{SIZES, Workload, frame, random_conv};
use streamfuse_kernels::cuda::device::{CudaDevice, device_count};
use streamfuse_kernels::{Conv2dParams, FusedChain, Op, Precision};

fn open() -> Option<CudaDevice> {
    if device_count() == 0 {
        eprintln!("SKIPPED cuda benches: no CUDA device");
        return None;
    }
    match CudaDevice::open(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED cuda benches: {e}");
            None
        }
    }
}

fn bench(c: &mut Criterion) {
    let Some(mut dev) = open() else { return };
    for (group, fused) in [("cuda_conv2d", false), ("cuda_fused_conv_relu_pool", true)] {
        let mut g = c.benchmark_group(group);
        for wl in Workload::ALL {
            for &(w, h) in SIZES {
                let input = frame(wl.in_channels(), w, h);
                let op = if fused {
                    Op::Fused(wl.fused())
                } else {
                    Op::Conv2d(wl.conv())
                };
                let id = format!("{}/{w}x{h}", wl.name());
                let x = dev
                    .upload(&input)
                    .unwrap_or_else(|e| panic!("{group} {id}: upload: {e}"));
                g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
                g.bench_function(BenchmarkId::new(wl.name(), format!("{w}x{h}")), |b| {
                    b.iter_custom(|iters| {
                        let mut spent = std::time::Duration::ZERO;
                        for _ in 0..iters {
                            let xi = x
                                .clone_on_device(&dev)
                                .unwrap_or_else(|e| panic!("{group} {id}: copy on device: {e}"));
                            dev.synchronize()
                                .unwrap_or_else(|e| panic!("{group} {id}: synchronize: {e}"));
                            let t0 = std::time::Instant::now();
                            let y = dev
                                .run(&op, xi)
                                .unwrap_or_else(|e| panic!("{group} {id}: launch: {e}"));
                            dev.synchronize()
                                .unwrap_or_else(|e| panic!("{group} {id}: synchronize: {e}"));
                            spent += t0.elapsed();
                            black_box(y.shape());
                        }
                        spent
                    })
                });
            }
        }
        g.finish();
    }
    // Deep layers (the implicit GEMM), conv 3x3 + ReLU, in f32 and with
    // `precision: f16` (tensor cores); throughput in FLOPs ("elements").
    let mut g = c.benchmark_group("cuda_deep_conv");
    for (ch, side) in [(256usize, 56usize), (512, 14)] {
        for precision in [Precision::F32, Precision::F16] {
            let conv = random_conv(Conv2dParams::square(ch, ch, 3, 1, 1)).with_precision(precision);
            let op = Op::Fused(FusedChain::conv_relu_pool(conv, true, None));
            let input = frame(ch, side, side);
            let id = format!("{ch}x{side}/{}", precision.name());
            let flops = op
                .flops(input.shape())
                .unwrap_or_else(|e| panic!("cuda_deep_conv {id}: {e}"));
            let x = dev
                .upload(&input)
                .unwrap_or_else(|e| panic!("cuda_deep_conv {id}: upload: {e}"));
            g.throughput(Throughput::Elements(flops));
            g.bench_function(BenchmarkId::new("conv3x3_relu", &id), |b| {
                b.iter_custom(|iters| {
                    let mut spent = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        let xi = x
                            .clone_on_device(&dev)
                            .unwrap_or_else(|e| panic!("cuda_deep_conv {id}: copy: {e}"));
                        dev.synchronize()
                            .unwrap_or_else(|e| panic!("cuda_deep_conv {id}: synchronize: {e}"));
                        let t0 = std::time::Instant::now();
                        let y = dev
                            .run(&op, xi)
                            .unwrap_or_else(|e| panic!("cuda_deep_conv {id}: launch: {e}"));
                        dev.synchronize()
                            .unwrap_or_else(|e| panic!("cuda_deep_conv {id}: synchronize: {e}"));
                        spent += t0.elapsed();
                        black_box(y.shape());
                    }
                    spent
                })
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("cuda_segment");
    for wl in Workload::ALL {
        for &(w, h) in SIZES {
            let input = frame(wl.in_channels(), w, h);
            let op = Op::Fused(wl.fused());
            g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
            g.bench_function(BenchmarkId::new(wl.name(), format!("{w}x{h}")), |b| {
                b.iter(|| {
                    dev.run_chain(&[&op], black_box(&input))
                        .map(|t| t.shape())
                        .unwrap_or_else(|e| panic!("cuda_segment {}/{w}x{h}: {e}", wl.name()))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
