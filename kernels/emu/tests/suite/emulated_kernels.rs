//! The CUDA kernels, run on CPU threads by the emulation harness, against
//! the CPU backend (clip, batch normalization, leaky ReLU: bit for bit) and
//! the f64 reference (property tests of the classic conv → ReLU → max-pool
//! chain). The ONNX 2-D attributes are in `emulated_onnx.rs`, the corpus in
//! `corpus.rs`.

use proptest::prelude::*;
use streamfuse_cuda_emu::run;
use streamfuse_kernels::reference;
use streamfuse_kernels::{
    ChannelAffine, Conv2d, Conv2dParams, FusedChain, Op, Pointwise, Pool2d, Shape, Tensor,
};

use crate::corpus_cases::same_bits;
use crate::{compiler_or_skip, seeded};

fn assert_same_as_cpu(op: &Op, input: &Tensor) {
    let emu = run(op, input).unwrap_or_else(|e| panic!("{}: {e}", op.label()));
    let cpu = op
        .run_cpu(input)
        .unwrap_or_else(|e| panic!("{}: {e}", op.label()));
    assert_eq!(emu.shape(), cpu.shape(), "{}", op.label());
    for (i, (a, b)) in emu.data().iter().zip(cpu.data()).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{} on {}: value {i}: emulated CUDA {a}, CPU {b}",
            op.label(),
            input.shape()
        );
    }
}

#[test]
fn emulated_clip_is_bit_identical_to_the_cpu() {
    let shape = Shape::new(3, 7, 301);
    let input = Tensor::from_vec(shape, seeded(shape.len(), 77)).unwrap_or_else(|e| panic!("{e}"));
    for (lo, hi) in [(0.0, 6.0), (-0.25, 0.25), (f32::NEG_INFINITY, 0.5)] {
        let op = Op::Pointwise(Pointwise::Clip { min: lo, max: hi });
        let emu = run(&op, &input).unwrap_or_else(|e| panic!("{e}"));
        let cpu = op.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
        assert!(same_bits(&emu, &cpu), "clip({lo}, {hi}) differs");
    }
}

/// `channel_affine_f32` (each channel's own scale and shift, rounded after
/// the multiply and the add) on planes of odd sizes, and more channels
/// than one grid row covers in one step; and a folded batch norm against
/// the f64 reference from its statistics.
#[test]
fn emulated_batchnorm_is_bit_identical_to_the_cpu() {
    for (c, h, w) in [(1, 1, 1), (3, 7, 301), (5, 1, 257), (2, 17, 16)] {
        let shape = Shape::new(c, h, w);
        let input = Tensor::from_vec(shape, seeded(shape.len(), 5 + c as u64))
            .unwrap_or_else(|e| panic!("{e}"));
        let a = ChannelAffine::new(seeded(c, 1), seeded(c, 2)).unwrap_or_else(|e| panic!("{e}"));
        assert_same_as_cpu(&Op::ChannelAffine(a), &input);
    }
    let shape = Shape::new(3, 9, 13);
    let input = Tensor::from_vec(shape, seeded(shape.len(), 8)).unwrap_or_else(|e| panic!("{e}"));
    let (gamma, beta, mean) = (seeded(3, 11), seeded(3, 12), seeded(3, 13));
    let var: Vec<f32> = seeded(3, 14).iter().map(|v| v.abs() + 0.1).collect();
    let a = ChannelAffine::batch_norm(&gamma, &beta, &mean, &var, 1e-5)
        .unwrap_or_else(|e| panic!("{e}"));
    let emu = run(&Op::ChannelAffine(a), &input).unwrap_or_else(|e| panic!("{e}"));
    let want = reference::batch_norm(
        &reference::from_f32(input.data(), shape),
        &gamma,
        &beta,
        &mean,
        &var,
        1e-5,
    );
    for (i, ((&g, &r), &m)) in emu
        .data()
        .iter()
        .zip(&want.values)
        .zip(&want.magnitude)
        .enumerate()
    {
        let tol = reference::tolerance(4, m);
        assert!(
            (f64::from(g) - r).abs() <= tol,
            "value {i}: {g} vs {r} (tol {tol})"
        );
    }
}

/// Leaky ReLU (a generated one-op kernel: `__fmul_rn` below zero) over
/// values around zero, infinities and NaN, for slopes that round.
#[test]
fn emulated_leaky_relu_is_bit_identical_to_the_cpu() {
    if !compiler_or_skip("emulated_leaky_relu_is_bit_identical_to_the_cpu") {
        return;
    }
    let shape = Shape::new(2, 5, 67);
    let mut data = seeded(shape.len(), 21);
    data[..6].copy_from_slice(&[
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -1e-40,
    ]);
    let input = Tensor::from_vec(shape, data).unwrap_or_else(|e| panic!("{e}"));
    for alpha in [0.1f32, 0.01, 1.0 / 3.0, -2.5] {
        assert_same_as_cpu(&Op::Pointwise(Pointwise::LeakyRelu { alpha }), &input);
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
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32)
    ))]

    fn emulated_kernels_match_the_reference_property(
        cin in 1usize..=3, cout in 1usize..=6, k in 1usize..=4, stride in 1usize..=2,
        padding in 0usize..=2, h in 1usize..=21, w in 1usize..=70, bias in any::<bool>(),
        pool in proptest::option::of((1usize..=3, 1usize..=3)), relu in any::<bool>(), seed in any::<u64>()
    ) {
        prop_assume!(padding < k && k <= h + 2 * padding && k <= w + 2 * padding);
        let shape = Shape::new(cin, h, w);
        let params = Conv2dParams::square(cin, cout, k, stride, padding);
        let conv = Conv2d::new(params, seeded(params.weight_len(), seed), bias.then(|| seeded(cout, seed ^ 9)))
            .unwrap_or_else(|e| panic!("{e}"));
        let input = Tensor::from_vec(shape, seeded(shape.len(), seed ^ 3)).unwrap_or_else(|e| panic!("{e}"));
        let conv_shape = params.output_shape(shape).unwrap_or_else(|e| panic!("{e}"));
        let pool = pool.map(|(size, stride)| Pool2d::max(size, stride));
        if let Some(p) = pool {
            prop_assume!(p.size() <= conv_shape.h && p.size() <= conv_shape.w);
        }
        let chain = Op::Fused(FusedChain::conv_relu_pool(conv.clone(), relu, pool));
        let emu = run(&chain, &input).unwrap_or_else(|e| panic!("{e}"));

        let mut want = reference::conv2d(input.data(), shape, &conv).unwrap_or_else(|| panic!("reference"));
        if relu { want = reference::relu(&want); }
        if let Some(p) = &pool { want = reference::pool(&want, p).unwrap_or_else(|| panic!("reference")); }
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
