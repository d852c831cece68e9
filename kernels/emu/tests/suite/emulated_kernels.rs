//! The CUDA kernels, run on CPU threads by the emulation harness, against
//! the CPU backend (clip, bit for bit) and the f64 reference (property
//! tests). The corpus runs in `corpus.rs`.

use proptest::prelude::*;
use streamfuse_cuda_emu::run;
use streamfuse_kernels::reference;
use streamfuse_kernels::{Conv2d, Conv2dParams, FusedChain, MaxPoolParams, Op, Shape, Tensor};

use crate::corpus_cases::same_bits;
use crate::{compiler_or_skip, seeded};

#[test]
fn emulated_clip_is_bit_identical_to_the_cpu() {
    let shape = Shape::new(3, 7, 301);
    let input = Tensor::from_vec(shape, seeded(shape.len(), 77)).unwrap_or_else(|e| panic!("{e}"));
    for (lo, hi) in [(0.0, 6.0), (-0.25, 0.25), (f32::NEG_INFINITY, 0.5)] {
        let op = Op::Pointwise(streamfuse_kernels::Pointwise::Clip { min: lo, max: hi });
        let emu = run(&op, &input).unwrap_or_else(|e| panic!("{e}"));
        let cpu = op.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
        assert!(same_bits(&emu, &cpu), "clip({lo}, {hi}) differs");
    }
}

/// Sizes off the block grid (1x1, 2x2, odd), channel counts, padding and
/// stride variants; conv alone and fused with ReLU and pool. The CUDA
/// kernels apply the CPU's operation order, so on a CPU with FMA the
/// results are bit-identical; everywhere they match the reference.
#[test]
fn emulated_kernels_match_the_reference() {
    if compiler_or_skip("emulated_kernels_match_the_reference") {
        emulated_kernels_match_the_reference_property();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
    ))]

    fn emulated_kernels_match_the_reference_property(
        cin in 1usize..=3, cout in 1usize..=6, k in 1usize..=4, stride in 1usize..=2,
        padding in 0usize..=2, h in 1usize..=21, w in 1usize..=70, bias in any::<bool>(),
        pool in proptest::option::of((1usize..=3, 1usize..=3)), relu in any::<bool>(), seed in any::<u64>()
    ) {
        prop_assume!(k <= h + 2 * padding && k <= w + 2 * padding);
        let shape = Shape::new(cin, h, w);
        let params = Conv2dParams { in_channels: cin, out_channels: cout, kernel_h: k, kernel_w: k, stride, padding };
        let conv = Conv2d::new(params, seeded(params.weight_len(), seed), bias.then(|| seeded(cout, seed ^ 9)))
            .unwrap_or_else(|e| panic!("{e}"));
        let input = Tensor::from_vec(shape, seeded(shape.len(), seed ^ 3)).unwrap_or_else(|e| panic!("{e}"));
        let conv_shape = params.output_shape(shape).unwrap_or_else(|e| panic!("{e}"));
        let pool = pool.map(|(size, stride)| MaxPoolParams { size, stride });
        if let Some(p) = pool {
            prop_assume!(p.size <= conv_shape.h && p.size <= conv_shape.w);
        }
        let chain = Op::Fused(FusedChain::conv_relu_pool(conv.clone(), relu, pool));
        let emu = run(&chain, &input).unwrap_or_else(|e| panic!("{e}"));

        let mut want = reference::conv2d(input.data(), shape, &conv).unwrap_or_else(|| panic!("reference"));
        if relu { want = reference::relu(&want); }
        if let Some(p) = &pool { want = reference::maxpool(&want, p).unwrap_or_else(|| panic!("reference")); }
        prop_assert_eq!(emu.shape(), want.shape);
        for (i, ((&g, &r), &m)) in emu.data().iter().zip(&want.values).zip(&want.magnitude).enumerate() {
            let tol = reference::tolerance(params.filter_len(), m);
            prop_assert!((f64::from(g) - r).abs() <= tol, "value {}: {} vs {} (tol {})", i, g, r, tol);
        }
        if streamfuse_kernels::cpu::simd::level().fma() {
            let cpu = chain.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            prop_assert!(same_bits(&emu, &cpu), "emulated CUDA and CPU differ");
        }
    }
}
