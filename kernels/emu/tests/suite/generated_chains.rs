//! Generated fused-chain kernels (producer, epilogue, pool), emulated on
//! the CPU, against the f64 reference and against the CPU backend's fused
//! and one-by-one paths: pointwise ops, batch normalization (per-channel
//! values from the launch's channel buffer), grouped and dilated
//! convolution producers, and chains whose pool no fused kernel takes
//! (member by member).

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use proptest::prelude::*;
use streamfuse_cuda_emu::run;
use streamfuse_kernels::cuda::{codegen, params};
use streamfuse_kernels::reference::{self, RefTensor};
use streamfuse_kernels::{
    ChannelAffine, Conv2d, Conv2dParams, EpilogueOp, FusedChain, Op, Pointwise, Pool2d, PoolKind,
    Shape, Tensor, Window,
};

use crate::corpus_cases::same_bits;
use crate::{compiler_or_skip, seeded};

/// The chain's members run one by one on the CPU (`fusion: chain`).
pub(crate) fn one_by_one(chain: &FusedChain, input: &Tensor) -> Tensor {
    let mut t = input.clone();
    for op in chain.members() {
        t = op.run_cpu(&t).unwrap();
    }
    t
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
                Pointwise::LeakyRelu { alpha } => {
                    if *v > 0.0 {
                        *v
                    } else {
                        *v * f64::from(alpha)
                    }
                }
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
    let p = Conv2dParams::square(3, 5, 3, 1, 1);
    let conv = Conv2d::new(p, seeded(p.weight_len(), 11), Some(seeded(5, 12))).unwrap();
    let pool = Pool2d::max(2, 2);
    let ops = [
        Pointwise::Affine {
            scale: 0.75,
            shift: 0.1,
        },
        Pointwise::Relu,
        Pointwise::Clip { min: 0.0, max: 0.8 },
    ];
    let chain = FusedChain {
        conv: Some(conv.clone()),
        epilogue: ops.iter().map(|&o| o.into()).collect(),
        pool: Some(pool),
    };
    assert!(
        params::fused(&chain, shape).unwrap().is_none(),
        "the hand-written kernel must not cover this chain"
    );
    let input = Tensor::from_vec(shape, seeded(shape.len(), 13)).unwrap();
    let emu = run(&Op::Fused(chain.clone()), &input).unwrap();

    let conv_ref = reference::conv2d(input.data(), shape, &conv).unwrap();
    let want = reference::pool(&reference_pointwise(&conv_ref, &ops), &pool).unwrap();
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
        prop_oneof![Just(0.1f32), Just(-0.75)].prop_map(|alpha| Pointwise::LeakyRelu { alpha }),
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
        conv in proptest::option::of((1usize..=3, 1usize..=5, 1usize..=3, 0usize..=2, any::<bool>())),
        cin in 1usize..=3, h in 2usize..=19, w in 2usize..=67,
        epilogue in proptest::collection::vec(pointwise(), 0..=4),
        pool in proptest::option::of((1usize..=3, 1usize..=2)), seed in any::<u64>()
    ) {
        let shape = Shape::new(cin, h, w);
        let conv = conv.map(|(cout, k, stride, padding, bias)| {
            let p = Conv2dParams::square(cin, cout, k, stride, padding.min(k - 1));
            Conv2d::new(p, seeded(p.weight_len(), seed), bias.then(|| seeded(cout, seed ^ 1))).unwrap()
        });
        let chain = FusedChain {
            conv,
            epilogue: epilogue.into_iter().map(EpilogueOp::from).collect(),
            pool: pool.map(|(size, stride)| Pool2d::max(size, stride)),
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

/// A batch normalization with `c` seeded channels.
pub(crate) fn bn(c: usize, seed: u64) -> ChannelAffine {
    ChannelAffine::new(seeded(c, seed), seeded(c, seed ^ 5)).unwrap()
}

/// The epilogues of the ONNX chains (few, so the emulator compiles few
/// kernels): per-channel ops read values from the launch, not the source.
fn onnx_epilogue(which: usize, c: usize, seed: u64) -> Vec<EpilogueOp> {
    let leaky = |alpha| EpilogueOp::Pointwise(Pointwise::LeakyRelu { alpha });
    match which {
        0 => vec![],
        1 => vec![EpilogueOp::Channel(bn(c, seed))],
        2 => vec![EpilogueOp::Channel(bn(c, seed)), leaky(0.1)],
        3 => vec![
            leaky(0.2),
            EpilogueOp::Channel(bn(c, seed)),
            Pointwise::Relu.into(),
            EpilogueOp::Channel(bn(c, seed ^ 7)),
        ],
        _ => vec![Pointwise::Relu.into()],
    }
}

/// The pools of the ONNX chains: none, plain max pools (fused), and pools
/// no fused kernel takes (the members run one by one).
fn onnx_pool(which: usize, h: usize, w: usize) -> Option<Pool2d> {
    let mut avg = Pool2d::max(3, 2);
    avg.kind = PoolKind::Avg {
        count_include_pad: false,
    };
    avg.window.pads = [1, 0, 1, 2];
    avg.ceil_mode = true;
    match which {
        0 => None,
        1 => Some(Pool2d::max(2, 2)),
        2 => Some(Pool2d::max(3, 1)),
        3 => Some(avg),
        _ => Some(Pool2d::global(PoolKind::Max, h, w)),
    }
}

/// A depthwise convolution with a channel multiplier, dilated, with
/// asymmetric padding and separate strides, then batch normalization,
/// leaky ReLU and a max pool: one generated kernel, the CPU's bits.
#[test]
fn a_depthwise_batchnorm_leaky_relu_pool_chain_is_one_generated_kernel() {
    if !compiler_or_skip("a_depthwise_batchnorm_leaky_relu_pool_chain_is_one_generated_kernel") {
        return;
    }
    let shape = Shape::new(3, 23, 71);
    let mut p = Conv2dParams::square(3, 6, 3, 1, 1);
    p.groups = 3;
    p.window = Window {
        kernel: [3, 2],
        stride: [1, 2],
        dilation: [2, 1],
        pads: [2, 1, 1, 0],
    };
    let conv = Conv2d::new(p, seeded(p.weight_len(), 31), Some(seeded(6, 32))).unwrap();
    let chain = FusedChain {
        conv: Some(conv),
        epilogue: onnx_epilogue(2, 6, 33),
        pool: Some(Pool2d::max(2, 2)),
    };
    assert!(params::fused(&chain, shape).unwrap().is_none());
    assert!(
        codegen::plan(&chain, shape).unwrap().is_some(),
        "the chain must fit the generated kernel"
    );
    let input = Tensor::from_vec(shape, seeded(shape.len(), 34)).unwrap();
    let emu = run(&Op::Fused(chain.clone()), &input).unwrap();
    let cpu = one_by_one(&chain, &input);
    assert!(same_bits(
        &Op::Fused(chain.clone()).run_cpu(&input).unwrap(),
        &cpu
    ));
    if streamfuse_kernels::cpu::simd::level().fma() {
        assert!(same_bits(&emu, &cpu), "emulated CUDA vs CPU");
    }
    // Against the f64 reference: the convolution, the folded affine, the
    // slope, the pool.
    let conv_ref = reference::conv2d(input.data(), shape, chain.conv.as_ref().unwrap()).unwrap();
    let EpilogueOp::Channel(a) = &chain.epilogue[0] else {
        unreachable!()
    };
    let mut t = conv_ref;
    let plane = t.shape.h * t.shape.w;
    for (i, (v, m)) in t.values.iter_mut().zip(t.magnitude.iter_mut()).enumerate() {
        let c = i / plane;
        let (s, b) = (f64::from(a.scale[c]), f64::from(a.shift[c]));
        *v = *v * s + b;
        *m = *m * s.abs() + b.abs() + v.abs();
    }
    let want = reference::pool(&reference::leaky_relu(&t, 0.1), &Pool2d::max(2, 2)).unwrap();
    assert_eq!(emu.shape(), want.shape);
    for (i, ((&g, &r), &m)) in emu
        .data()
        .iter()
        .zip(&want.values)
        .zip(&want.magnitude)
        .enumerate()
    {
        let tol = reference::tolerance(p.filter_len() + 4, m);
        assert!(
            (f64::from(g) - r).abs() <= tol,
            "value {i}: {g} vs {r} (tol {tol})"
        );
    }
}

/// Random chains over the ONNX 2-D attributes: grouped (depthwise incl.)
/// and dilated convolution producers with asymmetric padding, or a load;
/// epilogues with batch normalization and leaky ReLU; plain, overlapping,
/// padded average and global pools. The emulated CUDA path (a generated
/// kernel, or member by member where the pool fits no fused kernel) gives
/// the CPU's bits, fused and one by one.
#[test]
fn random_onnx_chains_agree_with_the_cpu() {
    if compiler_or_skip("random_onnx_chains_agree_with_the_cpu") {
        random_onnx_chains_property();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32).min(32)
    ))]

    fn random_onnx_chains_property(
        conv in proptest::option::of((
            1usize..=2, 1usize..=2, 1usize..=3,
            [1usize..=3, 1usize..=3], [1usize..=2, 1usize..=2], [1usize..=2, 1usize..=2],
            [0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0], any::<bool>(),
        )),
        load_c in 1usize..=3, h in 2usize..=17, w in 2usize..=45,
        epilogue in 0usize..=4, pool in 0usize..=4, seed in any::<u64>()
    ) {
        let conv = conv.map(|(groups, icg, ocg, kernel, stride, dilation, pad_frac, bias)| {
            let mut window = Window { kernel, stride, dilation, pads: [0; 4] };
            let ext = window.extent();
            for (i, f) in pad_frac.iter().enumerate() {
                window.pads[i] = ((ext[i % 2] as f64) * f) as usize;
            }
            let p = Conv2dParams {
                in_channels: groups * icg,
                out_channels: groups * ocg,
                groups,
                window,
            };
            Conv2d::new(p, seeded(p.weight_len(), seed), bias.then(|| seeded(p.out_channels, seed ^ 1))).unwrap()
        });
        let cin = conv.as_ref().map_or(load_c, |c| c.params.in_channels);
        let shape = Shape::new(cin, h, w);
        let mid = match &conv {
            Some(c) => c.params.output_shape(shape),
            None => Ok(shape),
        };
        prop_assume!(mid.is_ok());
        let mid = mid.unwrap();
        let chain = FusedChain {
            conv,
            epilogue: onnx_epilogue(epilogue, mid.c, seed ^ 2),
            pool: onnx_pool(pool, mid.h, mid.w),
        };
        prop_assume!(chain.output_shape(shape).is_ok());
        let input = Tensor::from_vec(shape, seeded(shape.len(), seed ^ 3)).unwrap();
        let chained = one_by_one(&chain, &input);
        let fused = Op::Fused(chain.clone()).run_cpu(&input).unwrap();
        prop_assert!(same_bits(&fused, &chained), "CPU fused vs one by one: {}", chain.label());
        if chain.conv.is_none() || streamfuse_kernels::cpu::simd::level().fma() {
            let emu = run(&Op::Fused(chain.clone()), &input).unwrap();
            prop_assert!(same_bits(&emu, &chained), "emulated CUDA vs CPU: {}", chain.label());
        }
    }
}
