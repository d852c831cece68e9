//! CPU kernel microbenchmarks: `cpu_conv2d`, `cpu_relu`, `cpu_maxpool` and
//! `cpu_fused_conv_relu_pool` on the thesis (1 channel, 3x3 conv) and cnn
//! (3 channels, 3x3 conv to 16 with bias, padding 1) workloads at the sizes
//! of the study. Throughput is the frame's input bytes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamfuse_benches::{SIZES, Workload, frame};
use streamfuse_kernels::{Op, cpu};

fn bench_conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_conv2d");
    for wl in Workload::ALL {
        for &(w, h) in SIZES {
            let input = frame(wl.in_channels(), w, h);
            let conv = wl.conv();
            g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
            g.bench_with_input(
                BenchmarkId::new(wl.name(), format!("{w}x{h}")),
                &input,
                |b, x| b.iter(|| cpu::conv::conv2d(black_box(x), &conv)),
            );
        }
    }
    g.finish();
}

fn bench_relu(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_relu");
    for wl in Workload::ALL {
        for &(w, h) in SIZES {
            let input = frame(wl.out_channels(), w, h);
            g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
            g.bench_with_input(
                BenchmarkId::new(wl.name(), format!("{w}x{h}")),
                &input,
                |b, x| b.iter(|| cpu::elementwise::relu(black_box(x))),
            );
        }
    }
    g.finish();
}

fn bench_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_maxpool");
    for wl in Workload::ALL {
        for &(w, h) in SIZES {
            let input = frame(wl.out_channels(), w, h);
            let pool = Workload::pool();
            g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
            g.bench_with_input(
                BenchmarkId::new(wl.name(), format!("{w}x{h}")),
                &input,
                |b, x| b.iter(|| cpu::pool::pool(black_box(x), &pool)),
            );
        }
    }
    g.finish();
}

fn bench_fused(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_fused_conv_relu_pool");
    for wl in Workload::ALL {
        for &(w, h) in SIZES {
            let input = frame(wl.in_channels(), w, h);
            let op = Op::Fused(wl.fused());
            g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
            g.bench_with_input(
                BenchmarkId::new(wl.name(), format!("{w}x{h}")),
                &input,
                |b, x| b.iter(|| op.run_cpu(black_box(x))),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench_conv, bench_relu, bench_pool, bench_fused);
criterion_main!(benches);
