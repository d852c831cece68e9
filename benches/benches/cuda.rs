//! CUDA kernel microbenchmarks (`cuda_conv2d`, `cuda_fused_conv_relu_pool`,
//! and the whole segment with copies, `cuda_segment`) on the thesis and cnn
//! workloads. Device time per kernel is measured with the device
//! synchronised after each launch. On a machine without a usable CUDA
//! device the bench says so and measures nothing (scripts/gpu-check.sh runs
//! it where there is one).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamfuse_benches::{SIZES, Workload, frame};
use streamfuse_kernels::Op;
use streamfuse_kernels::cuda::device::{CudaDevice, device_count};

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
                let Ok(x) = dev.upload(&input) else { continue };
                g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
                g.bench_function(BenchmarkId::new(wl.name(), format!("{w}x{h}")), |b| {
                    b.iter(|| {
                        if let Ok(xi) = x.clone_on_device(&dev) {
                            let _ = dev.run(&op, xi).map(|y| black_box(y.shape()));
                            let _ = dev.synchronize();
                        }
                    })
                });
            }
        }
        g.finish();
    }
    let mut g = c.benchmark_group("cuda_segment");
    for wl in Workload::ALL {
        for &(w, h) in SIZES {
            let input = frame(wl.in_channels(), w, h);
            let op = Op::Fused(wl.fused());
            g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
            g.bench_function(BenchmarkId::new(wl.name(), format!("{w}x{h}")), |b| {
                b.iter(|| dev.run_chain(&[&op], black_box(&input)).map(|t| t.shape()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
