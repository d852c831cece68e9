//! The ONNX 2-D semantics on the emulated CUDA kernels: convolutions with
//! separate strides, dilations, padding per side, non-square kernels and
//! groups (depthwise, with and without a channel multiplier), and max and
//! average pools with padding, dilation, `ceil_mode`, `count_include_pad`
//! and global windows. Property tests over random attribute combinations
//! (corner cases included: 1×1 outputs, a kernel as large as the padded
//! input, strides above the kernel, odd sizes in ceil mode), against the
//! CPU backend bit for bit (convolutions on a CPU with FMA, whose order
//! the kernels share; pools everywhere) and the f64 reference.

use proptest::prelude::*;
use streamfuse_cuda_emu::run;
use streamfuse_kernels::cuda::params::{self, ConvKernel, PoolKernel};
use streamfuse_kernels::reference::{self, RefTensor};
use streamfuse_kernels::{Conv2d, Conv2dParams, Op, Pool2d, PoolKind, Shape, Tensor, Window};

use crate::seeded;

/// Whether `a` and `b` agree: the same bits, or both NaN (a NaN's payload
/// is the CPU's, which the GPU does not keep).
fn same(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape() != b.shape() {
        return Err(format!("shapes {} and {}", a.shape(), b.shape()));
    }
    for (i, (x, y)) in a.data().iter().zip(b.data()).enumerate() {
        if x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()) {
            return Err(format!("value {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

/// Whether `got` is within the reference's tolerance for `terms` terms.
fn near(got: &Tensor, want: &RefTensor, terms: usize) -> Result<(), String> {
    if got.shape() != want.shape {
        return Err(format!("shapes {} and {}", got.shape(), want.shape));
    }
    for (i, ((&g, &r), &m)) in got
        .data()
        .iter()
        .zip(&want.values)
        .zip(&want.magnitude)
        .enumerate()
    {
        let ok = if r.is_nan() {
            g.is_nan()
        } else {
            (f64::from(g) - r).abs() <= reference::tolerance(terms, m)
        };
        if !ok {
            return Err(format!("value {i}: {g} vs reference {r}"));
        }
    }
    Ok(())
}

/// A window from drawn sizes: kernel, strides, dilations, padding as
/// fractions of the extent (always smaller than it), and an input just
/// large enough for the padded window plus `extra` rows and columns.
fn window_and_input(
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad_frac: [f64; 4],
    extra: [usize; 2],
) -> (Window, [usize; 2]) {
    let mut win = Window {
        kernel,
        stride,
        dilation,
        pads: [0; 4],
    };
    let ext = win.extent();
    for (i, f) in pad_frac.iter().enumerate() {
        win.pads[i] = ((ext[i % 2] as f64) * f) as usize;
    }
    let [t, l, b, r] = win.pads;
    let h = ext[0].saturating_sub(t + b).max(1) + extra[0];
    let w = ext[1].saturating_sub(l + r).max(1) + extra[1];
    (win, [h, w])
}

/// The convolution `p` on a seeded input of `h`×`w`: emulated CUDA
/// against the f64 reference, and against the CPU bit for bit on a CPU
/// with FMA. Returns the kernel the planner chose.
fn check_conv(
    p: Conv2dParams,
    h: usize,
    w: usize,
    bias: bool,
    seed: u64,
) -> Result<ConvKernel, String> {
    let shape = Shape::new(p.in_channels, h, w);
    let conv = Conv2d::new(
        p,
        seeded(p.weight_len(), seed),
        bias.then(|| seeded(p.out_channels, seed ^ 9)),
    )
    .map_err(|e| e.to_string())?;
    let input =
        Tensor::from_vec(shape, seeded(shape.len(), seed ^ 3)).map_err(|e| e.to_string())?;
    let (_, kernel, _) = params::conv(&conv, shape).map_err(|e| e.to_string())?;
    let op = Op::Conv2d(conv.clone());
    let emu = run(&op, &input).map_err(|e| e.to_string())?;
    let want = reference::conv2d(input.data(), shape, &conv).ok_or("reference refused")?;
    near(&emu, &want, p.filter_len())
        .map_err(|e| format!("{} vs reference: {e}", kernel.name()))?;
    if streamfuse_kernels::cpu::simd::level().fma() {
        let cpu = op.run_cpu(&input).map_err(|e| e.to_string())?;
        same(&emu, &cpu).map_err(|e| format!("{} vs CPU: {e}", kernel.name()))?;
    }
    Ok(kernel)
}

/// The pool `p` on a seeded input: emulated CUDA against the CPU bit for
/// bit and the f64 reference. Returns the kernel the planner chose.
fn check_pool(p: Pool2d, shape: Shape, seed: u64) -> Result<PoolKernel, String> {
    let input = Tensor::from_vec(shape, seeded(shape.len(), seed)).map_err(|e| e.to_string())?;
    let (_, kernel, _) = params::pool(&p, shape).map_err(|e| e.to_string())?;
    let op = Op::Pool(p);
    let emu = run(&op, &input).map_err(|e| e.to_string())?;
    let cpu = op.run_cpu(&input).map_err(|e| e.to_string())?;
    same(&emu, &cpu).map_err(|e| format!("{} vs CPU: {e}", kernel.name()))?;
    let want = reference::pool(&reference::from_f32(input.data(), shape), &p)
        .ok_or("reference refused")?;
    near(&emu, &want, p.taps()).map_err(|e| format!("{} vs reference: {e}", kernel.name()))?;
    Ok(kernel)
}

fn dense(cin: usize, cout: usize, k: [usize; 2]) -> Conv2dParams {
    let mut p = Conv2dParams::square(cin, cout, 1, 1, 0);
    p.window.kernel = k;
    p
}

/// Named corner cases, each on the kernel it is meant to exercise.
#[test]
fn convolution_corner_cases_on_every_conv_kernel() {
    let mut cases: Vec<(&str, Conv2dParams, [usize; 2], ConvKernel)> = Vec::new();
    // 1×1 output: the kernel as large as the padded input.
    let mut p = dense(2, 3, [5, 4]);
    p.window.pads = [1, 0, 1, 1];
    cases.push((
        "kernel as large as the padded input",
        p,
        [3, 3],
        ConvKernel::Tiled,
    ));
    // Stride above the kernel, separate strides, asymmetric padding.
    let mut p = dense(3, 5, [2, 3]);
    p.window.stride = [4, 5];
    p.window.pads = [1, 2, 0, 1];
    cases.push(("strides above the kernel", p, [17, 41], ConvKernel::Tiled));
    // Dilation, non-square kernel, output channels not a multiple of 4 per group.
    let mut p = dense(4, 6, [3, 2]);
    p.groups = 2;
    p.window.dilation = [2, 3];
    p.window.pads = [2, 0, 1, 3];
    cases.push(("grouped, dilated", p, [19, 45], ConvKernel::Tiled));
    // Depthwise, with and without a channel multiplier.
    let mut p = dense(3, 3, [3, 3]);
    p.groups = 3;
    p.window.pads = [1; 4];
    cases.push(("depthwise", p, [9, 37], ConvKernel::Depthwise));
    let mut p = dense(2, 6, [5, 3]);
    p.groups = 2;
    p.window.stride = [2, 1];
    p.window.dilation = [1, 2];
    p.window.pads = [2, 1, 2, 3];
    cases.push((
        "depthwise, multiplier 3",
        p,
        [13, 40],
        ConvKernel::Depthwise,
    ));
    // Receptive fields over the shared tile: the direct kernel, grouped
    // and depthwise.
    let mut p = dense(4, 6, [3, 3]);
    p.groups = 2;
    p.window.stride = [3, 3];
    p.window.dilation = [20, 20];
    p.window.pads = [20, 19, 20, 21];
    cases.push(("direct, grouped", p, [7, 9], ConvKernel::Direct));
    let mut p = dense(2, 4, [2, 4]);
    p.groups = 2;
    p.window.dilation = [40, 40];
    p.window.pads = [39, 0, 0, 30];
    cases.push(("direct, depthwise", p, [9, 100], ConvKernel::Direct));
    // Many groups of several channels (blocks of 4 within each group).
    let mut p = dense(6, 15, [1, 1]);
    p.groups = 3;
    cases.push(("groups of 5 output channels", p, [3, 70], ConvKernel::Tiled));
    for (name, p, [h, w], expected) in cases {
        match check_conv(p, h, w, true, 41) {
            Ok(k) => assert_eq!(k, expected, "{name}: planned for {}", k.name()),
            Err(e) => panic!("{name} ({}): {e}", p.window),
        }
    }
}

#[test]
fn random_convolutions_match_the_cpu_and_the_reference() {
    random_convolutions_property();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40)
    ))]

    fn random_convolutions_property(
        groups in 1usize..=3, icg in 1usize..=2, ocg in 1usize..=5,
        kernel in [1usize..=4, 1usize..=4], stride in [1usize..=3, 1usize..=3],
        dilation in prop_oneof![4 => [1usize..=3, 1usize..=3], 1 => [12usize..=20, 12usize..=20]],
        pad_frac in [0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0],
        extra in [0usize..=10, 0usize..=40], bias in any::<bool>(), seed in any::<u64>()
    ) {
        let (window, [h, w]) = window_and_input(kernel, stride, dilation, pad_frac, extra);
        let p = Conv2dParams {
            in_channels: groups * icg,
            out_channels: groups * ocg,
            groups,
            window,
        };
        if let Err(e) = check_conv(p, h, w, bias, seed) {
            prop_assert!(false, "groups {} in {} out {} window {} input {}x{}: {}",
                groups, p.in_channels, p.out_channels, window, h, w, e);
        }
    }
}

/// Named pool corner cases, each on the kernel it is meant to exercise.
#[test]
fn pool_corner_cases_on_every_pool_kernel() {
    let avg = |cip| PoolKind::Avg {
        count_include_pad: cip,
    };
    let pool = |kind, kernel, stride, pads, dilation, ceil_mode| Pool2d {
        kind,
        window: Window {
            kernel,
            stride,
            dilation,
            pads,
        },
        ceil_mode,
    };
    let cases: Vec<(&str, Pool2d, Shape, PoolKernel)> = vec![
        (
            "plain max",
            Pool2d::max(2, 2),
            Shape::new(2, 9, 37),
            PoolKernel::Max,
        ),
        (
            "max 3/2, padded, ceil",
            pool(PoolKind::Max, [3, 3], [2, 2], [1; 4], [1, 1], true),
            Shape::new(2, 10, 11),
            PoolKernel::General,
        ),
        (
            "avg 3x2 with padding",
            pool(avg(false), [3, 2], [1, 2], [1, 0, 2, 1], [1, 1], false),
            Shape::new(3, 7, 9),
            PoolKernel::General,
        ),
        (
            "avg counting padding, ceil",
            pool(avg(true), [3, 3], [2, 2], [1, 1, 1, 1], [1, 1], true),
            Shape::new(1, 8, 7),
            PoolKernel::General,
        ),
        (
            "dilated, windows in the padding only",
            pool(PoolKind::Max, [2, 2], [1, 1], [2, 2, 2, 2], [3, 3], false),
            Shape::new(1, 1, 2),
            PoolKernel::General,
        ),
        (
            "dilated avg, windows in the padding only",
            pool(avg(false), [2, 2], [1, 1], [2, 2, 2, 2], [3, 3], false),
            Shape::new(1, 1, 2),
            PoolKernel::General,
        ),
        (
            "dilated avg counting padding, windows in the padding only",
            pool(avg(true), [2, 2], [1, 1], [2, 2, 2, 2], [3, 3], false),
            Shape::new(1, 1, 2),
            PoolKernel::General,
        ),
        (
            "stride above the window",
            pool(PoolKind::Max, [2, 1], [3, 4], [0; 4], [1, 1], true),
            Shape::new(2, 11, 14),
            PoolKernel::General,
        ),
        (
            "global max, small",
            Pool2d::global(PoolKind::Max, 7, 5),
            Shape::new(3, 7, 5),
            PoolKernel::General,
        ),
        (
            "global avg, small",
            Pool2d::global(avg(false), 7, 5),
            Shape::new(3, 7, 5),
            PoolKernel::General,
        ),
        (
            "global max, wide",
            Pool2d::global(PoolKind::Max, 33, 40),
            Shape::new(3, 33, 40),
            PoolKernel::Wide,
        ),
        (
            "global avg, wide",
            Pool2d::global(avg(false), 40, 300),
            Shape::new(2, 40, 300),
            PoolKernel::Wide,
        ),
        (
            "wide window, padded and strided",
            pool(avg(true), [32, 40], [5, 7], [3, 10, 3, 12], [1, 1], true),
            Shape::new(2, 45, 70),
            PoolKernel::Wide,
        ),
        (
            "wide window, dilated",
            pool(PoolKind::Max, [20, 64], [9, 9], [0; 4], [2, 1], false),
            Shape::new(1, 48, 90),
            PoolKernel::Wide,
        ),
    ];
    for (name, p, shape, expected) in cases {
        match check_pool(p, shape, 7) {
            Ok(k) => assert_eq!(k, expected, "{name}: planned for {}", k.name()),
            Err(e) => panic!("{name} ({} {}): {e}", p.name(), p.window),
        }
    }
}

#[test]
fn random_pools_match_the_cpu_and_the_reference() {
    random_pools_property();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    fn random_pools_property(
        kind in prop_oneof![
            Just(PoolKind::Max),
            any::<bool>().prop_map(|count_include_pad| PoolKind::Avg { count_include_pad }),
        ],
        kernel in [1usize..=4, 1usize..=4], stride in [1usize..=4, 1usize..=4],
        dilation in [1usize..=3, 1usize..=3],
        pad_frac in [0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0],
        ceil_mode in any::<bool>(), extra in [0usize..=9, 0usize..=30],
        c in 1usize..=3, seed in any::<u64>()
    ) {
        let (window, [h, w]) = window_and_input(kernel, stride, dilation, pad_frac, extra);
        let p = Pool2d { kind, window, ceil_mode };
        if let Err(e) = check_pool(p, Shape::new(c, h, w), seed) {
            prop_assert!(false, "{} {} ceil {} input {}x{}: {}", p.name(), window, ceil_mode, h, w, e);
        }
    }
}
