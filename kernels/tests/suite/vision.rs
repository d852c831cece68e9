//! Vision ops on the CPU against the f64 reference (direct 2-D sums over
//! reflected neighbourhoods), and fused vision chains bit-identical to
//! their steps run one by one, over random images, sizes and parameters.
//! (The comparison with OpenCV itself is `tests/vision/check_against_opencv.py`.)
//! Each case runs at every SIMD level this machine has.

use proptest::prelude::*;
use streamfuse_kernels::cpu::simd;
use streamfuse_kernels::reference::{self, RefTensor};
use streamfuse_kernels::{ColorOrder, Op, Pointwise, Shape, SobelMode, Step, Tensor, Vision};

use crate::at_each_level;

fn image(shape: Shape, seed: u64) -> Tensor {
    let data = (0..shape.len() as u64)
        .map(|i| (255.0 * streamfuse_kernels::random::unit_f32(seed, 9, i)).floor())
        .collect();
    Tensor::from_vec(shape, data).unwrap_or_else(|e| panic!("{e}"))
}

/// Every value within `terms` roundings of the reference's magnitude.
fn assert_close(got: &Tensor, want: &RefTensor, terms: usize, what: &str) {
    assert_eq!(got.shape(), want.shape, "{what}: shape");
    for (i, (&g, (&v, &m))) in got
        .data()
        .iter()
        .zip(want.values.iter().zip(&want.magnitude))
        .enumerate()
    {
        let tol = reference::tolerance(terms, m.max(1.0));
        assert!(
            (f64::from(g) - v).abs() <= tol,
            "{what}: value {i}: got {g}, reference {v} (tolerance {tol:e})"
        );
    }
}

fn vision_op() -> impl Strategy<Value = Vision> {
    prop_oneof![
        prop_oneof![Just(ColorOrder::Rgb), Just(ColorOrder::Bgr)]
            .prop_map(|order| Vision::Gray { order }),
        (0.001f32..2.0, -100.0f32..100.0, 0.1f32..80.0).prop_map(|(scale, m, s)| {
            Vision::Normalize {
                scale,
                mean: vec![m],
                std: vec![s],
            }
        }),
        (0usize..5, prop_oneof![Just(0.0f32), 0.3f32..4.0]).prop_map(|(k, sigma)| {
            Vision::GaussianBlur {
                ksize: 2 * k + 1,
                sigma,
            }
        }),
        prop_oneof![
            Just(SobelMode::Dx),
            Just(SobelMode::Dy),
            Just(SobelMode::Magnitude)
        ]
        .prop_map(|mode| Vision::Sobel { mode }),
        (1usize..90, 1usize..90).prop_map(|(width, height)| Vision::Resize { width, height }),
    ]
}

/// Roundings an op's output may carry, for the tolerance.
fn terms(op: &Vision) -> usize {
    match op {
        Vision::GaussianBlur { ksize, .. } => 4 * ksize + 4,
        Vision::Sobel { .. } => 16,
        _ => 8,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96)
    ))]

    #[test]
    fn every_vision_op_matches_the_reference(
        op in vision_op(),
        h in 1usize..40,
        w in 1usize..70,
        seed in any::<u64>(),
    ) {
        let c = if matches!(op, Vision::Gray { .. }) { 3 } else { 2 };
        let input = image(Shape::new(c, h, w), seed);
        let want = reference::vision(&reference::from_f32(input.data(), input.shape()), &op);
        at_each_level(|| {
            match (Op::Vision(op.clone()).run_cpu(&input), &want) {
                (Ok(got), Some(want)) => assert_close(&got, want, terms(&op), &format!("{op:?} on {} at {}", input.shape(), simd::level().name())),
                (Err(_), None) => {}
                (got, want) => prop_assert!(false, "{op:?} on {}: kernel {:?}, reference {}", input.shape(), got.map(|t| t.shape()), want.is_some()),
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_fused_chain_equals_its_steps_one_by_one(
        gray in any::<bool>(),
        picks in proptest::collection::vec((0usize..6, 0usize..4, 0.2f32..3.0), 1..5),
        h in 3usize..60,
        w in 3usize..90,
        seed in any::<u64>(),
    ) {
        let mut steps = Vec::new();
        if gray {
            steps.push(Step::Vision(Vision::Gray { order: ColorOrder::Bgr }));
        }
        for (kind, k, x) in picks {
            steps.push(match kind {
                0 => Step::Vision(Vision::GaussianBlur { ksize: 2 * k + 1, sigma: if k % 2 == 0 { 0.0 } else { x } }),
                1 => Step::Vision(Vision::Sobel { mode: [SobelMode::Dx, SobelMode::Dy, SobelMode::Magnitude][k % 3] }),
                2 => Step::Vision(Vision::Normalize { scale: x, mean: vec![10.0 * x], std: vec![x + 1.0] }),
                3 => Step::Pointwise(Pointwise::Threshold { threshold: 50.0 * x, value: 255.0 }),
                4 => Step::Pointwise(Pointwise::Affine { scale: x, shift: -x }),
                _ => Step::Pointwise(Pointwise::Relu),
            });
        }
        let c = if gray { 3 } else { 1 + k_channels(seed) };
        let input = image(Shape::new(c, h, w), seed);
        at_each_level(|| {
            let fused = Op::VisionChain(steps.clone()).run_cpu(&input);
            let mut one = Ok(input.clone());
            for s in &steps {
                let op = match s {
                    Step::Vision(v) => Op::Vision(v.clone()),
                    Step::Pointwise(p) => Op::Pointwise(*p),
                };
                one = one.and_then(|t| op.run_cpu(&t));
            }
            match (fused, one) {
                (Ok(f), Ok(o)) => {
                    prop_assert_eq!(f.shape(), o.shape());
                    let same = f.data().iter().zip(o.data()).all(|(a, b)| a.to_bits() == b.to_bits());
                    prop_assert!(same, "fused and one-by-one differ for {:?} on {}", steps, input.shape());
                }
                (Err(_), Err(_)) => {}
                (f, o) => prop_assert!(false, "{steps:?}: fused {:?}, one by one {:?}", f.map(|t| t.shape()), o.map(|t| t.shape())),
            }
            Ok(())
        })?;
    }
}

fn k_channels(seed: u64) -> usize {
    (seed % 3) as usize
}

#[test]
fn gray_then_blur_then_sobel_on_a_frame_is_one_kernel_with_the_steps_values() {
    let input = image(Shape::new(3, 720, 1280), 7);
    let steps = vec![
        Step::Vision(Vision::Gray {
            order: ColorOrder::Bgr,
        }),
        Step::Vision(Vision::GaussianBlur {
            ksize: 5,
            sigma: 0.0,
        }),
        Step::Vision(Vision::Sobel {
            mode: SobelMode::Magnitude,
        }),
    ];
    let op = Op::VisionChain(steps);
    assert_eq!(op.label(), "fused(gray+gaussian_blur+sobel)");
    let fused = op.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fused.shape(), Shape::new(1, 720, 1280));
    // A vertical edge: left half dark, right half bright. The magnitude
    // peaks along the edge and is zero far from it.
    let mut edge = vec![0.0f32; 3 * 64 * 64];
    for c in 0..3 {
        for y in 0..64 {
            for x in 32..64 {
                edge[(c * 64 + y) * 64 + x] = 200.0;
            }
        }
    }
    let edge = Tensor::from_vec(Shape::new(3, 64, 64), edge).unwrap_or_else(|e| panic!("{e}"));
    let m = op.run_cpu(&edge).unwrap_or_else(|e| panic!("{e}"));
    let row = &m.data()[30 * 64..31 * 64];
    assert_eq!(row[5], 0.0);
    assert_eq!(row[60], 0.0);
    let peak = row.iter().cloned().fold(0.0f32, f32::max);
    assert!(row[31] == peak || row[32] == peak, "{row:?}");
    assert!(peak > 100.0, "{peak}");
}

#[test]
fn bad_parameters_are_refused_with_the_reason() {
    let input = image(Shape::new(1, 8, 8), 1);
    let cases = [
        (
            Vision::GaussianBlur {
                ksize: 4,
                sigma: 0.0,
            },
            "odd",
        ),
        (
            Vision::Gray {
                order: ColorOrder::Rgb,
            },
            "channels",
        ),
        (
            Vision::Normalize {
                scale: 1.0,
                mean: vec![0.0, 1.0],
                std: vec![1.0],
            },
            "mean has 2 values for 1 channels",
        ),
        (
            Vision::Normalize {
                scale: 1.0,
                mean: vec![0.0],
                std: vec![0.0],
            },
            "non-zero",
        ),
        (
            Vision::Resize {
                width: 0,
                height: 3,
            },
            "empty",
        ),
    ];
    for (op, why) in cases {
        let e = Op::Vision(op.clone()).run_cpu(&input);
        let msg = e.map(|_| String::new()).unwrap_or_else(|e| e.to_string());
        assert!(msg.contains(why), "{op:?}: {msg}");
    }
}
