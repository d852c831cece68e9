//! `cpu_conv_algorithm`: every CPU convolution algorithm on the layer shapes
//! of real CNNs (conv + ReLU, fused, as the planner runs it), one benchmark
//! per algorithm and shape. Throughput is the direct convolution's FLOPs
//! (multiply-adds × 2), so criterion's elements/s read as FLOP/s and
//! Winograd's as the direct rate it matches.
//!
//! ```sh
//! cargo bench -p streamfuse-benches --bench conv_algorithms
//! ```

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use streamfuse_benches::{frame, random_conv};
use streamfuse_kernels::cpu::winograd_applies;
use streamfuse_kernels::{Conv2dParams, ConvAlgorithm, FusedChain, Op};

/// A layer: name, in and out channels, kernel, stride, padding, width,
/// height.
type Layer = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const LAYERS: &[Layer] = &[
    ("cnn_3to16_720p", 3, 16, 3, 1, 1, 1280, 720),
    ("stem_7x7s2_720p", 3, 64, 7, 2, 3, 1280, 720),
    ("vgg_64to64_112", 64, 64, 3, 1, 1, 112, 112),
    ("vgg_256to256_56", 256, 256, 3, 1, 1, 56, 56),
    ("vgg_512to512_14", 512, 512, 3, 1, 1, 14, 14),
    ("pointwise_144to32_28", 144, 32, 1, 1, 0, 28, 28),
];

/// Every algorithm of `algos` that applies, on one layer of `params` over
/// a `w` x `h` frame: conv + ReLU, fused.
fn bench_layer(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    params: Conv2dParams,
    (w, h): (usize, usize),
    algos: &[ConvAlgorithm],
) {
    let input = frame(params.in_channels, w, h);
    let out = match params.output_shape(input.shape()) {
        Ok(o) => o,
        Err(e) => panic!("bench layer is consistent by construction: {e}"),
    };
    g.throughput(Throughput::Elements(
        (2 * params.filter_len() * out.len()) as u64,
    ));
    let conv = random_conv(params);
    for &algo in algos {
        if algo == ConvAlgorithm::Winograd && !winograd_applies(&params) {
            continue;
        }
        let op = Op::Fused(FusedChain::conv_relu_pool(
            conv.clone().with_algorithm(Some(algo)),
            true,
            None,
        ));
        g.bench_with_input(BenchmarkId::new(algo.name(), name), &input, |b, x| {
            b.iter(|| op.run_cpu(black_box(x)))
        });
    }
}

fn bench_algorithms(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_conv_algorithm");
    g.sample_size(10);
    for &(name, cin, cout, k, s, p, w, h) in LAYERS {
        let dense = [
            ConvAlgorithm::Rows,
            ConvAlgorithm::Panel,
            ConvAlgorithm::Winograd,
        ];
        bench_layer(
            &mut g,
            name,
            Conv2dParams::square(cin, cout, k, s, p),
            (w, h),
            &dense,
        );
    }
    // Depthwise 3x3 layers (MobileNet): the depthwise path and the general
    // row engine, with a ReLU (the bound applied in registers).
    for &(name, ch, s, w, h) in &[
        ("depthwise_64_112", 64, 1, 112, 112),
        ("depthwise_144s2_56", 144, 2, 56, 56),
    ] {
        let mut params = Conv2dParams::square(ch, ch, 3, s, 1);
        params.groups = ch;
        let algos = [ConvAlgorithm::Depthwise, ConvAlgorithm::Rows];
        bench_layer(&mut g, name, params, (w, h), &algos);
    }
    g.finish();
}

criterion_group!(benches, bench_algorithms);
criterion_main!(benches);
