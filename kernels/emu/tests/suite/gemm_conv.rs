//! The implicit-GEMM producers of `chain.cu` (deep layers), emulated:
//!
//! - f32 (`SF_CHAIN_CONV 2`): the f64 reference within the f32 tolerance,
//!   and the CPU backend's direct algorithms bit for bit (on a CPU with
//!   FMA), over strides, dilations, padding per side, non-square kernels,
//!   groups, partial tiles in both dimensions and many k slices; fused
//!   with batch normalization, ReLU and max pools whose windows do not
//!   overlap;
//! - f16 on tensor cores (`SF_CHAIN_CONV 3`, `precision: f16`): the f64
//!   reference within [`reference::f16_tolerance`], and measurably not the
//!   f32 result (the rounding to f16 happens).
//!
//! The emulator gives every lane of a warp the whole 16×16 matrices of a
//! `wmma` operation (`cuda_emu_kernel.h`); what it checks is the kernels'
//! tiling, gathering, staging and epilogue, the same source NVRTC compiles.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use streamfuse_cuda_emu::run;
use streamfuse_kernels::cuda::device::{kernel_of, producer_of};
use streamfuse_kernels::cuda::params::{self, Producer};
use streamfuse_kernels::reference::{self, RefTensor};
use streamfuse_kernels::{
    Conv2d, Conv2dParams, ConvAlgorithm, EpilogueOp, FusedChain, Op, Pointwise, Pool2d, Precision,
    Shape, Tensor, Window,
};

use crate::corpus_cases::same_bits;
use crate::generated_chains::{bn, one_by_one};
use crate::{compiler_or_skip, seeded};

/// A convolution with seeded weights (and bias).
fn conv(
    (cin, cout, groups): (usize, usize, usize),
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    dilation: [usize; 2],
    bias: bool,
    seed: u64,
) -> Conv2d {
    let p = Conv2dParams {
        in_channels: cin,
        out_channels: cout,
        groups,
        window: Window {
            kernel,
            stride,
            dilation,
            pads,
        },
    };
    Conv2d::new(
        p,
        seeded(p.weight_len(), seed),
        bias.then(|| seeded(cout, seed ^ 9)),
    )
    .unwrap()
}

/// Every value of `got` within `tol(terms, magnitude)` of `want`.
fn within(got: &Tensor, want: &RefTensor, tol: impl Fn(f64) -> f64, what: &str) {
    assert_eq!(got.shape(), want.shape, "{what}");
    for (i, ((&g, &r), &m)) in got
        .data()
        .iter()
        .zip(&want.values)
        .zip(&want.magnitude)
        .enumerate()
    {
        let t = tol(m);
        assert!(
            (f64::from(g) - r).abs() <= t,
            "{what}: value {i}: {g} vs {r} (tolerance {t})"
        );
    }
}

/// The deep geometries: `(conv, input)`.
fn deep_cases() -> Vec<(Conv2d, Shape)> {
    vec![
        // 221 output columns: three full tiles and a partial one.
        (
            conv((32, 64, 1), [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], true, 1),
            Shape::new(32, 13, 17),
        ),
        // 80 output channels: a full and a partial channel tile; 1x1.
        (
            conv((24, 80, 1), [1, 1], [1, 1], [0, 0, 0, 0], [1, 1], true, 2),
            Shape::new(24, 9, 11),
        ),
        // Two groups, stride 2, asymmetric padding.
        (
            conv((32, 64, 2), [3, 3], [2, 2], [1, 0, 2, 1], [1, 1], true, 3),
            Shape::new(32, 15, 14),
        ),
        // A 3x2 kernel, dilated rows, no bias; 40 channels (a partial tile).
        (
            conv((16, 40, 1), [3, 2], [1, 1], [2, 1, 2, 0], [2, 1], false, 4),
            Shape::new(16, 12, 10),
        ),
        // 1600 taps (100 k slices), strides 2 and 3.
        (
            conv((64, 36, 1), [5, 5], [2, 3], [2, 2, 2, 2], [1, 1], true, 5),
            Shape::new(64, 11, 16),
        ),
    ]
}

#[test]
fn the_planner_gives_deep_layers_to_the_gemm_producers() {
    let deep = conv((32, 64, 1), [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], true, 1);
    assert_eq!(params::producer(&deep, (1, 1)), Producer::Gemm);
    assert_eq!(params::producer(&deep, (2, 2)), Producer::Gemm);
    // Overlapping windows would compute values twice: the tiled producer.
    assert_eq!(params::producer(&deep, (3, 2)), Producer::Tiled);
    // Few channels (thesis-shaped layers) and depthwise: tiled.
    let thin = conv((3, 16, 1), [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], true, 2);
    assert_eq!(params::producer(&thin, (1, 1)), Producer::Tiled);
    let dw = conv((32, 32, 32), [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], true, 3);
    assert_eq!(params::producer(&dw, (1, 1)), Producer::Tiled);
    // f16 asks for the tensor cores whatever the size, but not depthwise.
    let thin16 = thin.clone().with_precision(Precision::F16);
    assert_eq!(params::producer(&thin16, (1, 1)), Producer::GemmF16);
    let dw16 = dw.with_precision(Precision::F16);
    assert_eq!(params::producer(&dw16, (1, 1)), Producer::Tiled);
    // What `plan` reports for a CUDA node.
    let s = Shape::new(32, 13, 17);
    assert_eq!(
        producer_of(&Op::Conv2d(deep.clone()), s).unwrap(),
        Some(Producer::Gemm)
    );
    assert!(
        kernel_of(&Op::Conv2d(deep), s)
            .unwrap()
            .to_string()
            .starts_with("sf_chain_")
    );
    assert_eq!(
        producer_of(&Op::Conv2d(thin), Shape::new(3, 8, 8)).unwrap(),
        None
    );
}

#[test]
fn deep_convolutions_run_as_an_implicit_gemm_with_the_cpus_bits() {
    if !compiler_or_skip("deep_convolutions_run_as_an_implicit_gemm_with_the_cpus_bits") {
        return;
    }
    for (k, (c, shape)) in deep_cases().into_iter().enumerate() {
        let what = format!("case {k}: {}", Op::Conv2d(c.clone()).label());
        assert_eq!(params::producer(&c, (1, 1)), Producer::Gemm, "{what}");
        let input = Tensor::from_vec(shape, seeded(shape.len(), 40 + k as u64)).unwrap();
        let emu = run(&Op::Conv2d(c.clone()), &input).unwrap();
        let want = reference::conv2d(input.data(), shape, &c).unwrap();
        let taps = c.params.filter_len();
        within(&emu, &want, |m| reference::tolerance(taps, m), &what);
        if streamfuse_kernels::cpu::simd::level().fma() {
            for alg in [ConvAlgorithm::Rows, ConvAlgorithm::Panel] {
                let cpu = Op::Conv2d(c.clone().with_algorithm(Some(alg)))
                    .run_cpu(&input)
                    .unwrap();
                assert!(
                    same_bits(&emu, &cpu),
                    "{what}: emulated GEMM vs CPU {alg:?}"
                );
            }
        }
    }
}

#[test]
fn gemm_chains_fuse_batch_norm_relu_and_pools_with_the_cpus_bits() {
    if !compiler_or_skip("gemm_chains_fuse_batch_norm_relu_and_pools_with_the_cpus_bits") {
        return;
    }
    let c = conv((32, 40, 1), [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], true, 7)
        .with_algorithm(Some(ConvAlgorithm::Panel));
    // Odd sizes: windows cut at the bottom and right edges.
    let shape = Shape::new(32, 13, 19);
    let input = Tensor::from_vec(shape, seeded(shape.len(), 70)).unwrap();
    for (size, epilogue) in [
        (
            2,
            vec![EpilogueOp::Channel(bn(40, 8)), Pointwise::Relu.into()],
        ),
        (3, vec![Pointwise::LeakyRelu { alpha: 0.1 }.into()]),
        (1, vec![Pointwise::Clip { min: 0.0, max: 6.0 }.into()]),
    ] {
        let chain = FusedChain {
            conv: Some(c.clone()),
            epilogue,
            pool: (size > 1).then(|| Pool2d::max(size, size)),
        };
        let what = chain.label();
        assert_eq!(
            producer_of(&Op::Fused(chain.clone()), shape).unwrap(),
            Some(Producer::Gemm),
            "{what}"
        );
        let emu = run(&Op::Fused(chain.clone()), &input).unwrap();
        let cpu = one_by_one(&chain, &input);
        assert_eq!(emu.shape(), cpu.shape(), "{what}");
        if streamfuse_kernels::cpu::simd::level().fma() {
            assert!(same_bits(&emu, &cpu), "{what}: emulated GEMM chain vs CPU");
        } else {
            let scale = cpu.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (g, w) in emu.data().iter().zip(cpu.data()) {
                assert!((g - w).abs() <= 1e-4 * scale, "{what}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn f16_convolutions_on_tensor_cores_stay_within_their_tolerance() {
    if !compiler_or_skip("f16_convolutions_on_tensor_cores_stay_within_their_tolerance") {
        return;
    }
    let c32 = conv((32, 48, 1), [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], true, 11);
    let c16 = c32.clone().with_precision(Precision::F16);
    let shape = Shape::new(32, 11, 13);
    // Inputs as an image network sees them after normalisation: [-2, 2].
    let data: Vec<f32> = seeded(shape.len(), 90).iter().map(|v| 2.0 * v).collect();
    let input = Tensor::from_vec(shape, data).unwrap();
    assert_eq!(params::producer(&c16, (1, 1)), Producer::GemmF16);
    let f16 = run(&Op::Conv2d(c16.clone()), &input).unwrap();
    let f32_ = run(&Op::Conv2d(c32.clone()), &input).unwrap();
    let want = reference::conv2d(input.data(), shape, &c32).unwrap();
    let taps = c32.params.filter_len();
    within(
        &f16,
        &want,
        |m| reference::f16_tolerance(taps, m),
        "f16 conv",
    );
    // The f16 rounding really happens: its largest error, relative to the
    // sum of the terms' magnitudes, is many times the f32 path's.
    let worst = |t: &Tensor| {
        t.data()
            .iter()
            .zip(&want.values)
            .zip(&want.magnitude)
            .map(|((g, r), m)| (f64::from(*g) - r).abs() / m.max(1e-30))
            .fold(0.0f64, f64::max)
    };
    let (e16, e32) = (worst(&f16), worst(&f32_));
    assert!(
        e16 >= 2f64.powi(-14) && e16 >= 16.0 * e32,
        "f16 relative error {e16:e}, f32 {e32:e}: is the f16 path rounding?"
    );
    assert_ne!(f16.data(), f32_.data());

    // Fused with ReLU and a 2x2 pool: the window's largest magnitude bounds it.
    let chain = FusedChain {
        conv: Some(c16),
        epilogue: vec![Pointwise::Relu.into()],
        pool: Some(Pool2d::max(2, 2)),
    };
    assert_eq!(
        producer_of(&Op::Fused(chain.clone()), shape).unwrap(),
        Some(Producer::GemmF16)
    );
    let fused = run(&Op::Fused(chain.clone()), &input).unwrap();
    let want = reference::pool(&reference::relu(&want), &Pool2d::max(2, 2)).unwrap();
    within(
        &fused,
        &want,
        |m| reference::f16_tolerance(taps, m),
        "f16 conv+relu+pool",
    );
}
