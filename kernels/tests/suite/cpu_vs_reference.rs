//! Property tests: every CPU op against the f64 reference over random
//! shapes, strides, paddings, channel counts and odd sizes; fused and
//! unfused paths bit-identical. Each case runs at every SIMD level this
//! machine has ([`crate::at_each_level`]).

use proptest::prelude::*;
use streamfuse_kernels::cpu::simd;
use streamfuse_kernels::reference::{self, RefTensor};
use streamfuse_kernels::{
    ChannelAffine, Conv2d, Conv2dParams, ConvAlgorithm, EpilogueOp, FusedChain, Op, Pointwise,
    Pool2d, PoolKind, Shape, Tensor, Window,
};

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
        (1usize..=3, 1usize..=3, 1usize..=3),
        (1usize..=5, 1usize..=5),
        // Stride 4 takes the strip's split by halving (a power of two
        // above 2).
        (1usize..=4, 1usize..=4),
        (1usize..=2, 1usize..=2),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(
            |((g, icg, ocg), (kh, kw), (sh, sw), (dh, dw), bias, seed)| {
                let ext = [(kh - 1) * dh + 1, (kw - 1) * dw + 1];
                // Each padding up to the extent on its axis.
                (
                    [0..=ext[0], 0..=ext[1], 0..=ext[0], 0..=ext[1]],
                    Just((g, icg, ocg, kh, kw, sh, sw, dh, dw, bias, seed, ext)),
                )
            },
        )
        .prop_flat_map(
            |(pads, (g, icg, ocg, kh, kw, sh, sw, dh, dw, bias, seed, ext))| {
                let params = Conv2dParams {
                    in_channels: g * icg,
                    out_channels: g * ocg,
                    groups: g,
                    window: Window {
                        kernel: [kh, kw],
                        stride: [sh, sw],
                        dilation: [dh, dw],
                        pads,
                    },
                };
                // Inputs at least as large as the kernel after padding
                // (down to a 1x1 output); odd sizes welcome.
                let min_h = ext[0].saturating_sub(pads[0] + pads[2]).max(1);
                let min_w = ext[1].saturating_sub(pads[1] + pads[3]).max(1);
                (min_h..=30usize, min_w..=140usize).prop_map(move |(h, w)| ConvCase {
                    shape: Shape::new(params.in_channels, h, w),
                    params,
                    bias,
                    seed,
                })
            },
        )
}

#[derive(Debug, Clone)]
struct PoolCase {
    shape: Shape,
    pool: Pool2d,
    seed: u64,
}

fn pool_params() -> impl Strategy<Value = (PoolKind, [usize; 2], [usize; 2], [usize; 2], bool)> {
    (
        prop_oneof![
            Just(PoolKind::Max),
            any::<bool>().prop_map(|c| PoolKind::Avg {
                count_include_pad: c
            })
        ],
        (1usize..=4, 1usize..=4),
        (1usize..=3, 1usize..=3),
        (1usize..=2, 1usize..=2),
        any::<bool>(),
    )
        .prop_map(|(kind, (kh, kw), (sh, sw), (dh, dw), ceil)| {
            (kind, [kh, kw], [sh, sw], [dh, dw], ceil)
        })
}

fn pool_of(
    (kind, kernel, stride, dilation, ceil): (PoolKind, [usize; 2], [usize; 2], [usize; 2], bool),
) -> impl Strategy<Value = Pool2d> {
    let ext = [
        (kernel[0] - 1) * dilation[0] + 1,
        (kernel[1] - 1) * dilation[1] + 1,
    ];
    [0..ext[0], 0..ext[1], 0..ext[0], 0..ext[1]].prop_map(move |pads| Pool2d {
        kind,
        window: Window {
            kernel,
            stride,
            dilation,
            pads,
        },
        ceil_mode: ceil,
    })
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    (
        pool_params().prop_flat_map(pool_of),
        1usize..=3,
        any::<u64>(),
    )
        .prop_flat_map(|(pool, c, seed)| {
            let w = pool.window;
            let ext = w.extent();
            let min_h = ext[0].saturating_sub(w.pads[0] + w.pads[2]).max(1);
            let min_w = ext[1].saturating_sub(w.pads[1] + w.pads[3]).max(1);
            (min_h..=30usize, min_w..=100usize).prop_map(move |(h, w)| PoolCase {
                shape: Shape::new(c, h, w),
                pool,
                seed,
            })
        })
}

/// An epilogue op: relu, leaky relu, clip or a batch norm (per channel).
fn epilogue_op(channels: usize, seed: u64, k: u8) -> EpilogueOp {
    match k % 4 {
        0 => EpilogueOp::Pointwise(Pointwise::Relu),
        1 => EpilogueOp::Pointwise(Pointwise::LeakyRelu { alpha: 0.125 }),
        2 => EpilogueOp::Pointwise(Pointwise::Clip {
            min: -0.25,
            max: 0.5,
        }),
        _ => EpilogueOp::Channel(
            ChannelAffine::new(
                seeded(channels, seed ^ 7, 0.5, 2.0),
                seeded(channels, seed ^ 8, -0.5, 0.5),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        ),
    }
}

/// The f64 reference of an epilogue op.
fn reference_epilogue(t: &RefTensor, e: &EpilogueOp) -> RefTensor {
    match e {
        EpilogueOp::Pointwise(Pointwise::Relu) => reference::relu(t),
        EpilogueOp::Pointwise(Pointwise::LeakyRelu { alpha }) => {
            reference::leaky_relu(t, f64::from(*alpha))
        }
        EpilogueOp::Pointwise(Pointwise::Clip { min, max }) => {
            reference::clip(t, f64::from(*min), f64::from(*max))
        }
        EpilogueOp::Channel(a) => {
            let n = a.channels();
            let (zero, one) = (vec![0.0f32; n], vec![1.0f32; n]);
            // scale * (x - 0) / sqrt(1 - eps + eps) + shift, with eps 0.
            reference::batch_norm(t, &a.scale, &a.shift, &zero, &one, 0.0)
        }
        EpilogueOp::Pointwise(other) => panic!("no reference for {other:?} here"),
    }
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

/// A random conv → epilogue → pool chain with its f64 reference.
struct ChainCase {
    input: Tensor,
    conv: Conv2d,
    epilogue: Vec<EpilogueOp>,
    want: RefTensor,
    /// Rounding terms per output: the taps, each epilogue op (which may
    /// round once more: twice the count), the pool's taps.
    terms: usize,
}

/// The chain of `case`'s convolution, an epilogue op per byte of `ops` and
/// `pool`; `None` when the pool does not fit the convolution's output.
fn chain_case(case: &ConvCase, ops: &[u8], pool: Option<Pool2d>) -> Option<ChainCase> {
    let (input, conv) = build(case);
    let conv_shape = case
        .params
        .output_shape(case.shape)
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(p) = pool {
        p.output_shape(conv_shape).ok()?;
    }
    let epilogue: Vec<EpilogueOp> = ops
        .iter()
        .map(|&k| epilogue_op(conv_shape.c, case.seed, k))
        .collect();
    let mut want = reference::conv2d(input.data(), input.shape(), &conv)
        .unwrap_or_else(|| panic!("reference rejected"));
    for e in &epilogue {
        want = reference_epilogue(&want, e);
    }
    if let Some(p) = &pool {
        want = reference::pool(&want, p).unwrap_or_else(|| panic!("reference rejected"));
    }
    let terms = case.params.filter_len() + 2 * epilogue.len() + pool.map_or(0, |p| p.taps());
    Some(ChainCase {
        input,
        conv,
        epilogue,
        want,
        terms,
    })
}

/// `chain` run one member at a time.
fn unfused_chain(chain: &FusedChain, input: &Tensor) -> Tensor {
    let mut t = input.clone();
    for m in chain.members() {
        t = m.run_cpu(&t).unwrap_or_else(|e| panic!("{e}"));
    }
    t
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
        if f.is_nan() && r.is_nan() {
            // An average over no value (a window in the padding and between
            // dilated taps): 0 / 0 in both.
            continue;
        }
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
    fn pool_matches_reference(case in pool_case()) {
        let input = Tensor::from_vec(case.shape, seeded(case.shape.len(), case.seed, -1.0, 1.0))
            .unwrap_or_else(|e| panic!("{e}"));
        let want = reference::pool(&reference::from_f32(input.data(), case.shape), &case.pool)
            .unwrap_or_else(|| panic!("reference rejected {case:?}"));
        let taps = case.pool.taps();
        at_each_level(|| {
            let fast = Op::Pool(case.pool).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            assert_close(&fast, &want, taps);
            Ok(())
        })?;
    }

    #[test]
    fn fused_chain_matches_reference_and_is_bit_identical_to_unfused(
        case in conv_case(),
        ops in proptest::collection::vec(any::<u8>(), 0..=3),
        pool in proptest::option::of(pool_params().prop_flat_map(pool_of)),
    ) {
        let chain_case = chain_case(&case, &ops, pool);
        prop_assume!(chain_case.is_some(), "the pool does not fit the convolution's output");
        let Some(ChainCase { input, conv, epilogue, want, terms }) = chain_case else {
            return Ok(());
        };
        let chain = FusedChain { conv: Some(conv.clone()), epilogue: epilogue.clone(), pool };
        at_each_level(|| {
            let fused = Op::Fused(chain.clone()).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            let unfused = unfused_chain(&chain, &input);
            assert_close(&fused, &want, terms);
            let same = fused.data().iter().zip(unfused.data()).all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(same && fused.shape() == unfused.shape(), "fused and unfused differ");
            Ok(())
        })?;
    }

    /// Every CPU convolution algorithm gives the same bits as every other
    /// (same accumulation order), alone and fused with any epilogue and
    /// pool, so the cost model's choice never changes a result.
    #[test]
    fn conv_algorithms_give_the_same_bits(
        case in conv_case(),
        ops in proptest::collection::vec(any::<u8>(), 0..=2),
        pool in proptest::option::of(pool_params().prop_flat_map(pool_of)),
    ) {
        let chain_case = chain_case(&case, &ops, pool);
        prop_assume!(chain_case.is_some(), "the pool does not fit the convolution's output");
        let Some(ChainCase { input, conv, epilogue, want, terms }) = chain_case else {
            return Ok(());
        };
        at_each_level(|| {
            let run = |algo: ConvAlgorithm| {
                let chain = FusedChain {
                    conv: Some(conv.clone().with_algorithm(Some(algo))),
                    epilogue: epilogue.clone(),
                    pool,
                };
                let alone = Op::Conv2d(conv.clone().with_algorithm(Some(algo)))
                    .run_cpu(&input)
                    .unwrap_or_else(|e| panic!("{e}"));
                let fused = Op::Fused(chain).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
                (alone, fused)
            };
            let (rows_alone, rows_fused) = run(ConvAlgorithm::Rows);
            let (panel_alone, panel_fused) = run(ConvAlgorithm::Panel);
            assert_close(&panel_fused, &want, terms);
            let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(panel_alone.shape(), rows_alone.shape());
            prop_assert!(bits(&panel_alone) == bits(&rows_alone), "conv: panel and rows differ");
            prop_assert_eq!(panel_fused.shape(), rows_fused.shape());
            prop_assert!(bits(&panel_fused) == bits(&rows_fused), "fused: panel and rows differ");
            Ok(())
        })?;
    }
}

#[test]
fn full_hd_frames_match_reference_on_every_row_band() {
    // A frame tall enough to be split into many bands across threads.
    let case = ConvCase {
        shape: Shape::new(3, 181, 257),
        params: Conv2dParams::square(3, 16, 3, 1, 1),
        bias: true,
        seed: 42,
    };
    let (input, conv) = build(&case);
    let chain = FusedChain::conv_relu_pool(conv.clone(), true, Some(Pool2d::max(2, 2)));
    let want = reference::conv2d(input.data(), input.shape(), &conv)
        .map(|t| reference::relu(&t))
        .and_then(|t| reference::maxpool(&t, 2, 2))
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
    let params = Conv2dParams::square(1, 1, 5, 1, 0);
    let err = params
        .output_shape(Shape::new(1, 4, 10))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("conv2d: window 5x5 does not fit input [1, 4, 10] (padded 4x10)")
    );
}

#[test]
fn depthwise_rows_and_the_general_engine_give_the_same_bits() {
    // Unfused, a depthwise conv with column stride 1 runs row by row from
    // the planes; fused with a plain max pool it runs on the general row
    // engine. Both must give the same bits at every level, edges included
    // (padding on every side, a dilated row).
    let mut params = Conv2dParams::square(6, 6, 3, 1, 1);
    params.groups = 6;
    params.window.dilation = [2, 1];
    params.window.pads = [2, 1, 2, 1];
    let case = ConvCase {
        shape: Shape::new(6, 19, 71),
        params,
        bias: true,
        seed: 9,
    };
    let (input, conv) = build(&case);
    let pool = Pool2d::max(2, 2);
    let chain = FusedChain::conv_relu_pool(conv.clone(), false, Some(pool));
    at_each_level(|| {
        let fused = Op::Fused(chain.clone())
            .run_cpu(&input)
            .unwrap_or_else(|e| panic!("{e}"));
        let conv_out = Op::Conv2d(conv.clone())
            .run_cpu(&input)
            .unwrap_or_else(|e| panic!("{e}"));
        let unfused = Op::Pool(pool)
            .run_cpu(&conv_out)
            .unwrap_or_else(|e| panic!("{e}"));
        let same = fused
            .data()
            .iter()
            .zip(unfused.data())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        prop_assert!(same && fused.shape() == unfused.shape(), "engines differ");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn depthwise_bounds_in_registers_equal_the_unfused_ops_on_special_values() {
    // ReLU and clip applied to the depthwise vectors before the store must
    // give the bits of the unfused ops, NaN, infinities and -0.0 included.
    let mut params = Conv2dParams::square(4, 4, 3, 1, 1);
    params.groups = 4;
    let case = ConvCase {
        shape: Shape::new(4, 9, 53),
        params,
        bias: false,
        seed: 11,
    };
    let (input, conv) = build(&case);
    let mut data = input.data().to_vec();
    let n = data.len();
    for (i, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0]
        .iter()
        .cycle()
        .take(60)
        .enumerate()
    {
        data[(i * 37) % n] = *v;
    }
    let input = Tensor::from_vec(case.shape, data).unwrap_or_else(|e| panic!("{e}"));
    for epilogue in [
        vec![EpilogueOp::Pointwise(Pointwise::Relu)],
        vec![EpilogueOp::Pointwise(Pointwise::Clip {
            min: -0.0,
            max: 0.5,
        })],
        vec![
            EpilogueOp::Pointwise(Pointwise::Clip { min: 0.0, max: 6.0 }),
            EpilogueOp::Pointwise(Pointwise::Relu),
        ],
    ] {
        let chain = FusedChain {
            conv: Some(conv.clone()),
            epilogue,
            pool: None,
        };
        at_each_level(|| {
            let fused = Op::Fused(chain.clone())
                .run_cpu(&input)
                .unwrap_or_else(|e| panic!("{e}"));
            let unfused = unfused_chain(&chain, &input);
            let same = fused
                .data()
                .iter()
                .zip(unfused.data())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(
                same,
                "fused {:?} differs from the unfused ops",
                chain.label()
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A Winograd-shaped case: no dilation, one group, and either 3×3 at
/// stride 1 (F(2×2, 3×3); up to 40 channels each way) or 5 to 8 taps per
/// axis at stride 2 (F(4×4, 4×4) on stride phases; up to 12 input and 20
/// output channels); odd sizes, any padding below the kernel.
fn winograd_case() -> impl Strategy<Value = ConvCase> {
    let f2x3 = (
        (1usize..=40, 1usize..=40),
        [0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3],
    )
        .prop_map(|((ic, oc), pads)| (ic, oc, [3, 3], [1, 1], pads));
    let s2 = ((1usize..=12, 1usize..=20), [5usize..=8, 5usize..=8]).prop_flat_map(
        |((ic, oc), kernel)| {
            let pad = |k: usize| 0..k;
            [
                pad(kernel[0]),
                pad(kernel[1]),
                pad(kernel[0]),
                pad(kernel[1]),
            ]
            .prop_map(move |pads| (ic, oc, kernel, [2, 2], pads))
        },
    );
    (prop_oneof![f2x3, s2], any::<bool>(), any::<u64>()).prop_flat_map(
        |((ic, oc, kernel, stride, pads), bias, seed)| {
            let params = Conv2dParams {
                in_channels: ic,
                out_channels: oc,
                groups: 1,
                window: Window {
                    kernel,
                    stride,
                    dilation: [1, 1],
                    pads,
                },
            };
            let min_h = kernel[0].saturating_sub(pads[0] + pads[2]).max(1);
            let min_w = kernel[1].saturating_sub(pads[1] + pads[3]).max(1);
            (min_h..=21 + 12 * (stride[0] - 1), min_w..=37).prop_map(move |(h, w)| ConvCase {
                shape: Shape::new(ic, h, w),
                params,
                bias,
                seed,
            })
        },
    )
}

/// [`reference::winograd_bounds`] of every output of `conv` on `input`,
/// in the form the CPU takes for it.
fn winograd_tolerances(input: &Tensor, conv: &Conv2d) -> Vec<f64> {
    let out = conv
        .params
        .output_shape(input.shape())
        .unwrap_or_else(|e| panic!("{e}"));
    let tile = streamfuse_kernels::cpu::winograd_tile(&conv.params, out)
        .unwrap_or_else(|| panic!("no Winograd form for {:?}", conv.params));
    reference::winograd_bounds(input.data(), input.shape(), conv, tile)
        .unwrap_or_else(|| panic!("no Winograd bound for {:?}", conv.params))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
    ))]

    /// Winograd, F(2×2, 3×3) and F(4×4, 4×4) on stride phases, agrees with
    /// the f64 reference within its stated bound at every level, gives the same bits fused (any
    /// epilogue, any pool) as its unfused chain, and the same bits as a
    /// second run (the per-thread scratch carries nothing over).
    #[test]
    fn winograd_matches_reference_within_its_bound(
        case in winograd_case(),
        ops in proptest::collection::vec(any::<u8>(), 0..=2),
        pool in proptest::option::of(pool_params().prop_flat_map(pool_of)),
    ) {
        let (input, conv) = build(&case);
        let conv = conv.with_algorithm(Some(ConvAlgorithm::Winograd));
        let want = reference::conv2d(input.data(), input.shape(), &conv)
            .unwrap_or_else(|| panic!("reference rejected {case:?}"));
        let tol = winograd_tolerances(&input, &conv);
        let out_shape = case.params.output_shape(case.shape).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(
            streamfuse_kernels::cpu::conv::algorithm(&conv, case.shape, false),
            ConvAlgorithm::Winograd
        );
        let epilogue: Vec<EpilogueOp> =
            ops.iter().map(|&k| epilogue_op(out_shape.c, case.seed, k)).collect();
        let pool = pool.filter(|p| p.output_shape(out_shape).is_ok());
        let chain = FusedChain { conv: Some(conv.clone()), epilogue, pool };
        at_each_level(|| {
            let fast = Op::Conv2d(conv.clone()).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(fast.shape(), want.shape);
            for (i, ((&f, &r), &t)) in fast.data().iter().zip(&want.values).zip(&tol).enumerate() {
                prop_assert!(
                    (f64::from(f) - r).abs() <= t,
                    "value {}: winograd {} reference {} (bound {}) at {}", i, f, r, t, simd::level().name()
                );
            }
            let again = Op::Conv2d(conv.clone()).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            prop_assert!(again == fast, "a second run differs");
            let fused = Op::Fused(chain.clone()).run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
            let unfused = unfused_chain(&chain, &input);
            let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(fused.shape(), unfused.shape());
            prop_assert!(bits(&fused) == bits(&unfused), "fused and unfused differ");
            Ok(())
        })?;
    }
}

/// A fused pool whose windows overlap, on layers wide and deep enough that
/// the pool's driver computes the convolution rows in several steps (and
/// carries the shared rows from one step to the next): every algorithm
/// gives the unfused chain's bits and matches the reference.
#[test]
fn fused_overlapping_pool_over_many_row_steps_equals_the_unfused_chain() {
    let layers = [
        // The ResNet stem's shape: 7x7/2 pad 3, then max-pool 3x3/2 pad 1.
        (
            Conv2dParams::square(3, 64, 7, 2, 3),
            Shape::new(3, 122, 210),
            ConvAlgorithm::Panel,
        ),
        (
            Conv2dParams::square(3, 64, 7, 2, 3),
            Shape::new(3, 122, 210),
            ConvAlgorithm::Rows,
        ),
        (
            Conv2dParams::square(3, 64, 7, 2, 3),
            Shape::new(3, 122, 210),
            ConvAlgorithm::Winograd,
        ),
        // A 3x3 layer, where a step may start at an odd row.
        (
            Conv2dParams::square(32, 64, 3, 1, 1),
            Shape::new(32, 61, 100),
            ConvAlgorithm::Winograd,
        ),
        (
            Conv2dParams::square(32, 64, 3, 1, 1),
            Shape::new(32, 61, 100),
            ConvAlgorithm::Panel,
        ),
    ];
    let pool = Pool2d {
        kind: PoolKind::Max,
        window: Window::square(3, 2, 1),
        ceil_mode: false,
    };
    for (params, shape, algo) in layers {
        let case = ConvCase {
            shape,
            params,
            bias: true,
            seed: 7,
        };
        let Some(ChainCase {
            input,
            conv,
            epilogue,
            want,
            terms,
        }) = chain_case(&case, &[0], Some(pool))
        else {
            panic!("the pool fits");
        };
        let conv = conv.with_algorithm(Some(algo));
        let chain = FusedChain {
            conv: Some(conv),
            epilogue,
            pool: Some(pool),
        };
        let fused = Op::Fused(chain.clone())
            .run_cpu(&input)
            .unwrap_or_else(|e| panic!("{e}"));
        let unfused = unfused_chain(&chain, &input);
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&fused) == bits(&unfused),
            "{}: fused and unfused differ",
            algo.name()
        );
        if algo == ConvAlgorithm::Winograd {
            // Several chunks of output channels and blocks of tile rows:
            // the convolution alone within the bound.
            let conv = chain.conv.as_ref().unwrap_or_else(|| panic!("a conv"));
            let alone = Op::Conv2d(conv.clone())
                .run_cpu(&input)
                .unwrap_or_else(|e| panic!("{e}"));
            let exact = reference::conv2d(input.data(), input.shape(), conv)
                .unwrap_or_else(|| panic!("reference rejected"));
            let tol = winograd_tolerances(&input, conv);
            for (i, ((&f, &r), &t)) in alone.data().iter().zip(&exact.values).zip(&tol).enumerate()
            {
                assert!(
                    (f64::from(f) - r).abs() <= t,
                    "value {i}: {f} vs {r} (bound {t})"
                );
            }
        } else {
            assert_close(&fused, &want, terms);
        }
    }
}

#[test]
fn depthwise_3x3_strips_match_the_row_engine_and_the_reference_on_every_width() {
    // The 3x3 depthwise path computes two output rows at a time in strips
    // of four, two or one vectors, the last strip overlapping the one
    // before it: every row count (odd and even), every width from under
    // one vector to several, row and column strides 1 and 2 (column
    // stride 2 from even and odd phase rows), with a ReLU6 bound in
    // registers, must give the row engine's bits and the reference's
    // values at every level; with 5 channels in row bands, and with 4 per
    // kernel thread and more in whole planes, the channels split among the
    // threads.
    let threads = rayon::current_num_threads();
    for (stride, channels) in [[1, 1], [2, 1], [2, 2], [1, 2]]
        .into_iter()
        .flat_map(|s| [(s, 5), (s, 4 * threads + 3)])
    {
        for (h, w) in [
            (1, 3),
            (2, 16),
            (3, 17),
            (5, 31),
            (7, 33),
            (4, 64),
            (9, 70),
            (6, 112),
            (8, 65),
        ] {
            let mut params = Conv2dParams::square(channels, channels, 3, 1, 1);
            params.groups = channels;
            params.window.stride = stride;
            let case = ConvCase {
                shape: Shape::new(channels, h, w),
                params,
                bias: true,
                seed: (h * 131 + w) as u64,
            };
            let (input, conv) = build(&case);
            let epilogue = vec![EpilogueOp::Pointwise(Pointwise::Clip {
                min: 0.0,
                max: 0.4,
            })];
            let mut want = reference::conv2d(input.data(), input.shape(), &conv)
                .unwrap_or_else(|| panic!("reference rejected"));
            for e in &epilogue {
                want = reference_epilogue(&want, e);
            }
            at_each_level(|| {
                let run = |algo: ConvAlgorithm| {
                    let chain = FusedChain {
                        conv: Some(conv.clone().with_algorithm(Some(algo))),
                        epilogue: epilogue.clone(),
                        pool: None,
                    };
                    Op::Fused(chain)
                        .run_cpu(&input)
                        .unwrap_or_else(|e| panic!("{e}"))
                };
                let dw = run(ConvAlgorithm::Depthwise);
                let rows = run(ConvAlgorithm::Rows);
                assert_close(&dw, &want, 9 + 2);
                let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                prop_assert!(
                    bits(&dw) == bits(&rows),
                    "stride {stride:?}, {channels} channels, {h}x{w}: depthwise and rows differ"
                );
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn fused_conv_and_square_max_pool_equal_the_unfused_ops_on_every_width() {
    // With a ReLU or clip epilogue, the fused convolution and square max
    // pool reduce each pooled row's convolution rows into a row of maxima
    // as they are stored, and stride-2 pools pick their windows with a
    // permute: both must give the unfused ops' bits, and the reference's
    // values, for 2x2/2, 3x3/2 and 3x3/3 pools on rows from under one
    // vector to several, at every level.
    for (size, stride) in [(2, 2), (3, 2), (3, 3)] {
        for (h, w) in [(4, 9), (6, 33), (7, 64), (9, 70), (8, 130)] {
            for relu in [true, false] {
                let case = ConvCase {
                    shape: Shape::new(3, h, w),
                    params: Conv2dParams::square(3, 5, 3, 1, 1),
                    bias: true,
                    seed: (h * 977 + w * 7 + size) as u64,
                };
                let (input, conv) = build(&case);
                let epilogue = vec![if relu {
                    EpilogueOp::Pointwise(Pointwise::Relu)
                } else {
                    EpilogueOp::Pointwise(Pointwise::Clip {
                        min: -0.2,
                        max: 0.3,
                    })
                }];
                let pool = Pool2d {
                    kind: PoolKind::Max,
                    window: Window {
                        kernel: [size, size],
                        stride: [stride, stride],
                        dilation: [1, 1],
                        pads: [0; 4],
                    },
                    ceil_mode: false,
                };
                assert!(pool.is_simple_max());
                let mut want = reference::conv2d(input.data(), input.shape(), &conv)
                    .unwrap_or_else(|| panic!("reference rejected"));
                for e in &epilogue {
                    want = reference_epilogue(&want, e);
                }
                let want =
                    reference::pool(&want, &pool).unwrap_or_else(|| panic!("reference rejected"));
                let chain = FusedChain {
                    conv: Some(conv.clone().with_algorithm(Some(ConvAlgorithm::Rows))),
                    epilogue,
                    pool: Some(pool),
                };
                at_each_level(|| {
                    let fused = Op::Fused(chain.clone())
                        .run_cpu(&input)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let unfused = unfused_chain(&chain, &input);
                    assert_close(&fused, &want, 27 + 2 + size * size);
                    let same = fused
                        .data()
                        .iter()
                        .zip(unfused.data())
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    prop_assert!(
                        same && fused.shape() == unfused.shape(),
                        "{size}x{size}/{stride} on {h}x{w} (relu {relu}): fused and unfused differ"
                    );
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

/// Pointwise convolutions, which the panel algorithm computes straight
/// into the output rows: tall enough for several blocks and a band per
/// thread, widths that are and are not whole vectors (a block that is not
/// goes through the block buffer), grouped and dense, alone and with an
/// epilogue: the row engine's bits, and the reference.
#[test]
fn pointwise_convolutions_computed_in_place_equal_the_row_engine() {
    let layers = [
        // MobileNetV2's expand and project layers (fewer rows: several
        // blocks each, and quick under qemu).
        (24, 144, 1, Shape::new(24, 24, 56)),
        (144, 32, 1, Shape::new(144, 12, 28)),
        (5, 7, 1, Shape::new(5, 97, 13)),
        (8, 12, 2, Shape::new(8, 40, 9)),
        (64, 64, 1, Shape::new(64, 15, 17)),
        // Planes of fewer pixels than a vector (a network's last maps):
        // all of them through the padded tail tile.
        (16, 24, 1, Shape::new(16, 3, 3)),
        (32, 10, 2, Shape::new(32, 1, 1)),
    ];
    for (cin, cout, groups, shape) in layers {
        let mut params = Conv2dParams::square(cin, cout, 1, 1, 0);
        params.groups = groups;
        let case = ConvCase {
            shape,
            params,
            bias: true,
            seed: 3,
        };
        for ops in [&[][..], &[0, 2][..], &[1, 2][..]] {
            let Some(ChainCase {
                input,
                conv,
                epilogue,
                want,
                terms,
            }) = chain_case(&case, ops, None)
            else {
                panic!("no pool to fit");
            };
            at_each_level(|| {
                let run = |algo: ConvAlgorithm| {
                    let conv = conv.clone().with_algorithm(Some(algo));
                    let chain = FusedChain {
                        conv: Some(conv.clone()),
                        epilogue: epilogue.clone(),
                        pool: None,
                    };
                    let alone = Op::Conv2d(conv)
                        .run_cpu(&input)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let fused = Op::Fused(chain)
                        .run_cpu(&input)
                        .unwrap_or_else(|e| panic!("{e}"));
                    (alone, fused)
                };
                let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let (rows_alone, rows_fused) = run(ConvAlgorithm::Rows);
                let (panel_alone, panel_fused) = run(ConvAlgorithm::Panel);
                assert_close(&panel_fused, &want, terms);
                let at = format!("{cin}->{cout} /{groups} {shape:?} ops {ops:?}");
                prop_assert!(bits(&panel_alone) == bits(&rows_alone), "conv {at}");
                prop_assert!(bits(&panel_fused) == bits(&rows_fused), "fused {at}");
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
