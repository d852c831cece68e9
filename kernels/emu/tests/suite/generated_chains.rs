//! Generated fused-chain kernels (producer, pointwise epilogue, pool),
//! emulated on the CPU, against the f64 reference and against the CPU
//! backend's fused and one-by-one paths.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use proptest::prelude::*;
use streamfuse_cuda_emu::run;
use streamfuse_kernels::cuda::params;
use streamfuse_kernels::reference::{self, RefTensor};
use streamfuse_kernels::{
    Conv2d, Conv2dParams, FusedChain, MaxPoolParams, Op, Pointwise, Shape, Tensor,
};

use crate::corpus_cases::same_bits;
use crate::{compiler_or_skip, seeded};

/// The chain's members run one by one on the CPU (`fusion: chain`).
fn one_by_one(chain: &FusedChain, input: &Tensor) -> Tensor {
    let mut t = match &chain.conv {
        Some(c) => Op::Conv2d(c.clone()).run_cpu(input).unwrap(),
        None => input.clone(),
    };
    for &p in &chain.epilogue {
        t = Op::from(p).run_cpu(&t).unwrap();
    }
    match &chain.pool {
        Some(p) => Op::MaxPool(*p).run_cpu(&t).unwrap(),
        None => t,
    }
}

/// The pointwise ops on reference values, written out here (in f64 for
/// the continuous ops; their f32 roundings are within the tolerance).
fn reference_pointwise(t: &RefTensor, ops: &[Pointwise]) -> RefTensor {
    let mut out = t.clone();
    for op in ops {
        for v in &mut out.values {
            *v = match *op {
                Pointwise::Relu => v.max(0.0),
                Pointwise::Clip { min, max } => v.max(f64::from(min)).min(f64::from(max)),
                Pointwise::Affine { scale, shift } => *v * f64::from(scale) + f64::from(shift),
                Pointwise::Threshold { .. } => unreachable!("not in reference checks"),
            };
        }
        if let Pointwise::Affine { scale, .. } = *op {
            for m in &mut out.magnitude {
                *m = *m * f64::from(scale.abs()) + 1.0;
            }
        }
    }
    out
}

/// A conv2d with three pointwise ops and a max pool: no hand-written kernel
/// covers it, so the CUDA backend runs the generated kernel, which the
/// emulator runs here from the very source NVRTC compiles.
#[test]
fn conv_with_three_pointwise_ops_and_a_pool_matches_the_reference() {
    if !compiler_or_skip("conv_with_three_pointwise_ops_and_a_pool_matches_the_reference") {
        return;
    }
    let shape = Shape::new(3, 37, 75);
    let p = Conv2dParams {
        in_channels: 3,
        out_channels: 5,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
    };
    let conv = Conv2d::new(p, seeded(p.weight_len(), 11), Some(seeded(5, 12))).unwrap();
    let pool = MaxPoolParams { size: 2, stride: 2 };
    let chain = FusedChain {
        conv: Some(conv.clone()),
        epilogue: vec![
            Pointwise::Affine {
                scale: 0.75,
                shift: 0.1,
            },
            Pointwise::Relu,
            Pointwise::Clip { min: 0.0, max: 0.8 },
        ],
        pool: Some(pool),
    };
    assert!(
        params::fused(&chain, shape).unwrap().is_none(),
        "the hand-written kernel must not cover this chain"
    );
    let input = Tensor::from_vec(shape, seeded(shape.len(), 13)).unwrap();
    let emu = run(&Op::Fused(chain.clone()), &input).unwrap();

    let conv_ref = reference::conv2d(input.data(), shape, &conv).unwrap();
    let want = reference::maxpool(&reference_pointwise(&conv_ref, &chain.epilogue), &pool).unwrap();
    assert_eq!(emu.shape(), want.shape);
    for (i, ((&g, &r), &m)) in emu
        .data()
        .iter()
        .zip(&want.values)
        .zip(&want.magnitude)
        .enumerate()
    {
        let tol = reference::tolerance(p.filter_len(), m) + 4.0 * f64::from(f32::EPSILON);
        assert!(
            (f64::from(g) - r).abs() <= tol,
            "value {i}: {g} vs {r} (tol {tol})"
        );
    }
    let cpu_fused = Op::Fused(chain.clone()).run_cpu(&input).unwrap();
    let cpu_chain = one_by_one(&chain, &input);
    assert!(same_bits(&cpu_fused, &cpu_chain), "CPU fused vs one by one");
    if streamfuse_kernels::cpu::simd::level().fma() {
        assert!(same_bits(&emu, &cpu_chain), "emulated CUDA vs CPU");
    }
}

fn pointwise() -> impl Strategy<Value = Pointwise> {
    // Constants from small sets, so generated sources (one per distinct
    // chain) repeat and the emulator compiles each once.
    prop_oneof![
        Just(Pointwise::Relu),
        prop_oneof![
            Just((0.0f32, 0.5f32)),
            Just((-0.25, 0.25)),
            Just((f32::NEG_INFINITY, 0.1))
        ]
        .prop_map(|(min, max)| Pointwise::Clip { min, max }),
        prop_oneof![
            Just((0.5f32, -0.125f32)),
            Just((-1.5, 0.3)),
            Just((3.0, 0.0))
        ]
        .prop_map(|(scale, shift)| Pointwise::Affine { scale, shift }),
        prop_oneof![Just((0.0f32, 1.0f32)), Just((0.2, 0.7))]
            .prop_map(|(threshold, value)| Pointwise::Threshold { threshold, value }),
    ]
}

/// Random chains of the supported ops on random shapes: fused on the
/// CPU (`fusion: kernel`), one by one (`chain` and `off` run the same
/// kernels, in one task or several), and the generated CUDA kernel in
/// the emulator all give the same bits (the emulated convolution on a
/// CPU with FMA, like the CPU kernels; load chains everywhere).
#[test]
fn random_chains_agree_across_fusion_modes_and_engines() {
    if compiler_or_skip("random_chains_agree_across_fusion_modes_and_engines") {
        random_chains_agree_across_fusion_modes_and_engines_property();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24).min(24)
    ))]

    fn random_chains_agree_across_fusion_modes_and_engines_property(
        conv in proptest::option::of((1usize..=3, 1usize..=5, 1usize..=3, 0usize..=1, any::<bool>())),
        cin in 1usize..=3, h in 2usize..=19, w in 2usize..=67,
        epilogue in proptest::collection::vec(pointwise(), 0..=4),
        pool in proptest::option::of((1usize..=3, 1usize..=2)), seed in any::<u64>()
    ) {
        let shape = Shape::new(cin, h, w);
        let conv = conv.map(|(cout, k, stride, padding, bias)| {
            let p = Conv2dParams { in_channels: cin, out_channels: cout, kernel_h: k, kernel_w: k, stride, padding };
            Conv2d::new(p, seeded(p.weight_len(), seed), bias.then(|| seeded(cout, seed ^ 1))).unwrap()
        });
        let chain = FusedChain {
            conv,
            epilogue,
            pool: pool.map(|(size, stride)| MaxPoolParams { size, stride }),
        };
        prop_assume!(chain.output_shape(shape).is_ok());
        let input = Tensor::from_vec(shape, seeded(shape.len(), seed ^ 2)).unwrap();
        let chained = one_by_one(&chain, &input);
        let fused = Op::Fused(chain.clone()).run_cpu(&input).unwrap();
        prop_assert!(same_bits(&fused, &chained), "CPU fused vs one by one: {}", chain.label());
        if chain.conv.is_none() || streamfuse_kernels::cpu::simd::level().fma() {
            let emu = run(&Op::Fused(chain.clone()), &input).unwrap();
            prop_assert!(same_bits(&emu, &chained), "emulated CUDA vs CPU: {}", chain.label());
        }
    }
}
