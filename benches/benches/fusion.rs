//! Fusion on the CPU: each chain run as one fused pass (`fusion: kernel`)
//! next to its members run one after another on the same frame (what
//! `fusion: chain` runs, and `off` runs in separate tasks), thesis workload
//! (1 channel, 3×3 conv) at the study's sizes. Chains: conv → ReLU →
//! max-pool, conv → ReLU, ReLU → max-pool read from the input (the server
//! half of the EESS split), and conv → affine → ReLU → clip → max-pool (a
//! generated chain). Throughput is the frame's input bytes.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use streamfuse_benches::{SIZES, Workload, frame};
use streamfuse_kernels::{FusedChain, Op, Pointwise, Tensor};

fn chains() -> Vec<(&'static str, FusedChain)> {
    let wl = Workload::Thesis;
    vec![
        ("conv_relu_pool", wl.fused()),
        (
            "conv_relu",
            FusedChain::conv_relu_pool(wl.conv(), true, None),
        ),
        (
            "relu_pool",
            FusedChain {
                conv: None,
                epilogue: vec![Pointwise::Relu.into()],
                pool: Some(Workload::pool()),
            },
        ),
        (
            "conv_affine_relu_clip_pool",
            FusedChain {
                conv: Some(wl.conv()),
                epilogue: vec![
                    Pointwise::Affine {
                        scale: 0.5,
                        shift: 0.05,
                    }
                    .into(),
                    Pointwise::Relu.into(),
                    Pointwise::Clip { min: 0.0, max: 1.0 }.into(),
                ],
                pool: Some(Workload::pool()),
            },
        ),
    ]
}

/// The members one by one, as the executor runs a `chain` segment on the
/// frame it owns (elementwise ops in place on the previous output).
fn one_by_one(chain: &FusedChain, input: Tensor) -> Tensor {
    let mut t = match &chain.conv {
        Some(c) => Op::Conv2d(c.clone())
            .run_cpu(&input)
            .unwrap_or_else(|e| panic!("{e}")),
        None => input,
    };
    for p in &chain.epilogue {
        t = p.to_op().run_cpu_owned(t).unwrap_or_else(|e| panic!("{e}"));
    }
    match &chain.pool {
        Some(p) => Op::Pool(*p).run_cpu(&t).unwrap_or_else(|e| panic!("{e}")),
        None => t,
    }
}

fn bench_fusion(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_fusion");
    for (name, chain) in chains() {
        for &(w, h) in SIZES {
            let input = frame(1, w, h);
            let fused = Op::Fused(chain.clone());
            g.throughput(Throughput::Bytes(input.shape().bytes() as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{name}/kernel"), format!("{w}x{h}")),
                &input,
                |b, x| b.iter(|| fused.run_cpu(black_box(x))),
            );
            // The frame is cloned outside the timed part: the executor hands
            // each frame over, it does not copy it.
            g.bench_with_input(
                BenchmarkId::new(format!("{name}/chain"), format!("{w}x{h}")),
                &input,
                |b, x| {
                    b.iter_batched(
                        || x.clone(),
                        |t| one_by_one(&chain, black_box(t)),
                        BatchSize::LargeInput,
                    )
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench_fusion);
criterion_main!(benches);
