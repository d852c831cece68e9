//! Property tests: every CPU op against the f64 reference over random
//! shapes, strides, paddings, channel counts and odd sizes; fused and
//! unfused paths bit-identical. Each case runs at every SIMD level this
//! machine has ([`crate::at_each_level`]).

use proptest::prelude::*;
use streamfuse_kernels::cpu::simd;
use streamfuse_kernels::reference::{self, RefTensor};
use streamfuse_kernels::{Conv2d, Conv2dParams, FusedChain, MaxPoolParams, Op, Shape, Tensor};

use crate::at_each_level;

fn seeded(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| lo + (hi - lo) * streamfuse_kernels::random::unit_f32(seed, 3, i))
        .collect()
}

#[derive(Debug, Clone)]
struct ConvCase {
    shape: Shape,
    params: Conv2dParams,
    bias: bool,
    seed: u64,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        1usize..=4,
        1usize..=5,
        1usize..=5,
        1usize..=3,
        0usize..=2,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(cin, cout, k, stride, padding, bias, seed)| {
            // Inputs at least as large as the kernel after padding; odd sizes welcome.
            let min = k.saturating_sub(2 * padding).max(1);
            (min..=40usize, min..=150usize).prop_map(move |(h, w)| ConvCase {
                shape: Shape::new(cin, h, w),
                params: Conv2dParams {
                    in_channels: cin,
                    out_channels: cout,
                    kernel_h: k,
                    kernel_w: k,
                    stride,
                    padding,
                },
                bias,
                seed,
            })
        })
}

fn build(case: &ConvCase) -> (Tensor, Conv2d) {
    let input = Tensor::from_vec(case.shape, seeded(case.shape.len(), case.seed, -1.0, 1.0))
        .unwrap_or_else(|e| panic!("{e}"));
    let weights = seeded(case.params.weight_len(), case.seed ^ 1, -0.5, 0.5);
    let bias = case
        .bias
        .then(|| seeded(case.params.out_channels, case.seed ^ 2, -0.5, 0.5));
    let conv = Conv2d::new(case.params, weights, bias).unwrap_or_else(|e| panic!("{e}"));
    (input, conv)
}

fn assert_close(fast: &Tensor, want: &RefTensor, terms: usize) {
    assert_eq!(fast.shape(), want.shape, "shape");
    for (i, ((&f, &r), &m)) in fast
        .data()
        .iter()
        .zip(&want.values)
        .zip(&want.magnitude)
        .enumerate()
    {
        let tol = reference::tolerance(terms, m);
        assert!(
            (f64::from(f) - r).abs() <= tol,
            "value {i}: fast {f} reference {r} (tolerance {tol}) at {}",
            simd::level().name()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
    ))]

    #[test]
    fn conv2d_matches_reference(case in conv_case()) {
        let (input, conv) = build(&case);
        let want = reference::conv2d(input.data(), input.shape(), &conv)
            .unwrap_or_else(|| panic!("reference rejected {case:?}"));
        at_each_level(|| {
            let fast = Op::Conv2d(conv.clone()).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            assert_close(&fast, &want, case.params.filter_len());
            Ok(())
        })?;
    }

    #[test]
    fn relu_matches_reference(case in conv_case()) {
        let (input, _) = build(&case);
        let want = reference::relu(&reference::from_f32(input.data(), input.shape()));
        at_each_level(|| {
            let op = Op::Pointwise(streamfuse_kernels::Pointwise::Relu);
            let fast = op.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            assert_close(&fast, &want, 0);
            let in_place = op.run_cpu_owned(input.clone()).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(in_place, fast);
            Ok(())
        })?;
    }

    #[test]
    fn clip_matches_reference(case in conv_case(), lo in -0.5f32..0.2, span in 0.0f32..1.0) {
        let (input, _) = build(&case);
        let hi = lo + span;
        let op = Op::Pointwise(streamfuse_kernels::Pointwise::Clip { min: lo, max: hi });
        let want = reference::clip(&reference::from_f32(input.data(), input.shape()), f64::from(lo), f64::from(hi));
        at_each_level(|| {
            let fast = op.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            assert_close(&fast, &want, 0);
            let in_place = op.run_cpu_owned(input.clone()).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(in_place, fast);
            Ok(())
        })?;
    }

    #[test]
    fn maxpool_matches_reference(
        c in 1usize..=3, h in 1usize..=41, w in 1usize..=131,
        size in 1usize..=4, stride in 1usize..=3, seed in any::<u64>()
    ) {
        prop_assume!(size <= h && size <= w);
        let shape = Shape::new(c, h, w);
        let input = Tensor::from_vec(shape, seeded(shape.len(), seed, -1.0, 1.0))
            .unwrap_or_else(|e| panic!("{e}"));
        let p = MaxPoolParams { size, stride };
        let want = reference::maxpool(&reference::from_f32(input.data(), shape), &p)
            .unwrap_or_else(|| panic!("reference rejected"));
        at_each_level(|| {
            let fast = Op::MaxPool(p).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            assert_close(&fast, &want, 0);
            Ok(())
        })?;
    }

    #[test]
    fn fused_chain_matches_reference_and_is_bit_identical_to_unfused(
        case in conv_case(), relu in any::<bool>(), pool in proptest::option::of((1usize..=3, 1usize..=3))
    ) {
        let (input, conv) = build(&case);
        let conv_shape = case.params.output_shape(case.shape).unwrap_or_else(|e| panic!("{e}"));
        let pool = pool.map(|(size, stride)| MaxPoolParams { size, stride });
        if let Some(p) = pool {
            prop_assume!(p.size <= conv_shape.h && p.size <= conv_shape.w);
        }
        let chain = FusedChain::conv_relu_pool(conv.clone(), relu, pool);
        let mut want = reference::conv2d(input.data(), input.shape(), &conv)
            .unwrap_or_else(|| panic!("reference rejected"));
        if relu {
            want = reference::relu(&want);
        }
        if let Some(p) = pool {
            want = reference::maxpool(&want, &p).unwrap_or_else(|| panic!("reference rejected"));
        }
        at_each_level(|| {
            let fused = Op::Fused(chain.clone()).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            let mut unfused = Op::Conv2d(conv.clone()).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            if relu {
                unfused = Op::Pointwise(streamfuse_kernels::Pointwise::Relu).run_cpu(&unfused).unwrap_or_else(|e| panic!("{e}"));
            }
            if let Some(p) = pool {
                unfused = Op::MaxPool(p).run_cpu(&unfused).unwrap_or_else(|e| panic!("{e}"));
            }
            assert_close(&fused, &want, case.params.filter_len());
            let same = fused.data().iter().zip(unfused.data()).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same && fused.shape() == unfused.shape(), "fused and unfused differ");
            Ok(())
        })?;
    }
}

#[test]
fn full_hd_frames_match_reference_on_every_row_band() {
    // A frame tall enough to be split into many bands across threads.
    let case = ConvCase {
        shape: Shape::new(3, 181, 257),
        params: Conv2dParams {
            in_channels: 3,
            out_channels: 16,
            kernel_h: 3,
            kernel_w: 3,
            stride: 1,
            padding: 1,
        },
        bias: true,
        seed: 42,
    };
    let (input, conv) = build(&case);
    let chain = FusedChain::conv_relu_pool(
        conv.clone(),
        true,
        Some(MaxPoolParams { size: 2, stride: 2 }),
    );
    let want = reference::conv2d(input.data(), input.shape(), &conv)
        .map(|t| reference::relu(&t))
        .and_then(|t| reference::maxpool(&t, &MaxPoolParams { size: 2, stride: 2 }))
        .unwrap_or_else(|| panic!("reference rejected"));
    at_each_level(|| {
        let fused = Op::Fused(chain.clone())
            .run_cpu(&input)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_close(&fused, &want, 27);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn kernel_larger_than_padded_input_is_an_error() {
    let params = Conv2dParams {
        in_channels: 1,
        out_channels: 1,
        kernel_h: 5,
        kernel_w: 5,
        stride: 1,
        padding: 0,
    };
    let err = params
        .output_shape(Shape::new(1, 4, 10))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("conv2d: window 5x5 does not fit input [1, 4, 10] (padded 4x10)")
    );
}
