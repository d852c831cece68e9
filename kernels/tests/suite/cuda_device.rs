//! The CUDA backend on a real device against the CPU backend (f32, 1e-5
//! relative; bit for bit for the vision kernels). The corpus runs on the
//! device in `corpus.rs`. Skips, saying so, where there is no device —
//! unless `STREAMFUSE_REQUIRE_CUDA=1` (set by scripts/gpu-check.sh).

use streamfuse_kernels::cuda::device::{CudaDevice, device_count};
use streamfuse_kernels::{Op, Tensor};

use crate::corpus_cases;

/// Device 0, or `None` (having said SKIPPED) when there is none and
/// `STREAMFUSE_REQUIRE_CUDA=1` is not set.
pub(crate) fn device() -> Option<CudaDevice> {
    let required = std::env::var("STREAMFUSE_REQUIRE_CUDA").as_deref() == Ok("1");
    if device_count() == 0 {
        assert!(
            !required,
            "STREAMFUSE_REQUIRE_CUDA=1 but no CUDA device is usable"
        );
        eprintln!("SKIPPED: no CUDA device");
        return None;
    }
    match CudaDevice::open(0) {
        Ok(d) => Some(d),
        Err(e) => panic!("CUDA device 0 present but unusable: {e}"),
    }
}

#[test]
fn cuda_matches_the_cpu_backend_on_full_frames() {
    let Some(mut dev) = device() else { return };
    for case in corpus_cases::cases() {
        let cpu = case
            .op
            .run_cpu(&case.input)
            .unwrap_or_else(|e| panic!("{e}"));
        let gpu = dev
            .run_chain(&[&case.op], &case.input)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cpu.shape(), gpu.shape(), "{}", case.name);
        for (i, (&a, &b)) in cpu.data().iter().zip(gpu.data()).enumerate() {
            let tol = 1e-5 * a.abs().max(1.0);
            assert!(
                a == b || (a - b).abs() <= tol || (a.is_nan() && b.is_nan()),
                "{}: case `{}` value {i}: cpu {a} cuda {b}",
                case.file,
                case.name
            );
        }
    }
}

/// Generated fused-chain kernels on the device: every representative chain
/// `kernels check` compiles, with real weights, against the CPU backend
/// (the values are the CPU's to the bit where no convolution rounds
/// differently; 1e-5 relative otherwise, since a threshold after a
/// convolution can flip on a last-bit difference it is left out of
/// conv chains here).
#[test]
fn generated_chain_kernels_match_the_cpu_backend() {
    use streamfuse_kernels::cuda::codegen::representative_chains;
    use streamfuse_kernels::{Conv2d, EpilogueOp, Pointwise, Shape};
    use streamfuse_kernels::{ConvAlgorithm, Precision};
    let Some(mut dev) = device() else { return };
    let input_of = |channels: usize| {
        let shape = Shape::new(channels, 45, 70);
        Tensor::from_vec(
            shape,
            (0..shape.len() as u64)
                .map(|i| streamfuse_kernels::random::symmetric_f32(3, 1, i, 1.0))
                .collect(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    for mut chain in representative_chains() {
        // f16 chains (tensor cores): within reference::f16_tolerance of the
        // CPU's f32 values, bounded with every |w x| at its largest (0.3 x
        // 1 per tap, plus the bias); the epilogues here scale by at most 1.
        let mut f16_tol = None;
        if let Some(c) = &chain.conv {
            let w = (0..c.params.weight_len() as u64)
                .map(|i| streamfuse_kernels::random::symmetric_f32(9, 2, i, 0.3))
                .collect();
            let b = c.bias.as_ref().map(|b| vec![0.125; b.len()]);
            let taps = c.params.filter_len();
            if c.precision == Precision::F16 {
                f16_tol = Some(streamfuse_kernels::reference::f16_tolerance(
                    taps,
                    0.3 * taps as f64 + 0.125,
                ));
            }
            chain.conv = Some(
                Conv2d::new(c.params, w, b)
                    // The CPU side in the direct algorithms' order (not
                    // Winograd's), which is the GEMM's.
                    .map(|n| {
                        n.with_precision(c.precision)
                            .with_algorithm(Some(ConvAlgorithm::Panel))
                    })
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            if chain
                .epilogue
                .iter()
                .any(|p| matches!(p, EpilogueOp::Pointwise(Pointwise::Threshold { .. })))
            {
                continue;
            }
        }
        let input = input_of(chain.conv.as_ref().map_or(3, |c| c.params.in_channels));
        let op = Op::Fused(chain.clone());
        let cpu = op.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
        let gpu = dev
            .run_chain(&[&op], &input)
            .unwrap_or_else(|e| panic!("{}: {e}", chain.label()));
        assert_eq!(cpu.shape(), gpu.shape(), "{}", chain.label());
        for (i, (&a, &b)) in cpu.data().iter().zip(gpu.data()).enumerate() {
            let tol = f16_tol.map_or(1e-5 * a.abs().max(1.0), |t| t as f32);
            assert!(
                (a - b).abs() <= tol,
                "{} value {i}: cpu {a} cuda {b}",
                chain.label()
            );
        }
    }
}

/// The kernels of the ONNX 2-D semantics on the device against the CPU
/// backend: grouped, depthwise (with a channel multiplier), dilated and
/// asymmetric convolutions (1e-5 relative: the device's FMA against the
/// CPU's level), pools of every kind incl. a global one on a full frame
/// (`pool2d_wide_f32`), batch normalization and leaky ReLU, alone and in
/// fused chains (bit for bit where no convolution is involved).
#[test]
fn onnx_2d_kernels_match_the_cpu_backend() {
    use streamfuse_kernels::{
        ChannelAffine, Conv2d, Conv2dParams, EpilogueOp, FusedChain, Pointwise, Pool2d, PoolKind,
        Shape,
    };
    let Some(mut dev) = device() else { return };
    let shape = Shape::new(8, 181, 333);
    let values = |n: usize, seed: u64, scale: f32| -> Vec<f32> {
        (0..n as u64)
            .map(|i| streamfuse_kernels::random::symmetric_f32(seed, 7, i, scale))
            .collect()
    };
    let input =
        Tensor::from_vec(shape, values(shape.len(), 1, 1.0)).unwrap_or_else(|e| panic!("{e}"));
    let conv = |p: Conv2dParams, seed: u64| {
        Conv2d::new(
            p,
            values(p.weight_len(), seed, 0.3),
            Some(values(p.out_channels, seed + 1, 0.1)),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut grouped = Conv2dParams::square(8, 12, 3, 1, 1);
    grouped.groups = 2;
    grouped.window.dilation = [2, 1];
    grouped.window.pads = [2, 1, 0, 2];
    let mut depthwise = Conv2dParams::square(8, 16, 5, 2, 2);
    depthwise.groups = 8;
    depthwise.window.stride = [2, 1];
    let mut wide = Conv2dParams::square(8, 4, 3, 1, 0);
    wide.window.dilation = [30, 30];
    wide.window.kernel = [3, 5];
    let mut avg = Pool2d::max(3, 2);
    avg.kind = PoolKind::Avg {
        count_include_pad: false,
    };
    avg.window.pads = [1, 1, 1, 1];
    avg.ceil_mode = true;
    let mut max = Pool2d::max(3, 2);
    max.window.pads = [1, 0, 1, 2];
    max.window.dilation = [1, 2];
    let bn =
        ChannelAffine::new(values(8, 5, 1.0), values(8, 6, 0.5)).unwrap_or_else(|e| panic!("{e}"));
    let bn12 = ChannelAffine::new(values(12, 7, 1.0), values(12, 8, 0.5))
        .unwrap_or_else(|e| panic!("{e}"));
    let convs = [
        Op::Conv2d(conv(grouped, 10)),
        Op::Conv2d(conv(depthwise, 20)),
        Op::Conv2d(conv(wide, 30)),
        Op::Fused(FusedChain {
            conv: Some(conv(grouped, 40)),
            epilogue: vec![
                EpilogueOp::Channel(bn12),
                Pointwise::LeakyRelu { alpha: 0.1 }.into(),
            ],
            pool: Some(Pool2d::max(2, 2)),
        }),
    ];
    let exact = [
        Op::Pool(avg),
        Op::Pool(max),
        Op::Pool(Pool2d::global(PoolKind::Max, shape.h, shape.w)),
        Op::Pool(Pool2d::global(
            PoolKind::Avg {
                count_include_pad: false,
            },
            shape.h,
            shape.w,
        )),
        Op::ChannelAffine(bn.clone()),
        Op::Pointwise(Pointwise::LeakyRelu { alpha: 0.2 }),
        Op::Fused(FusedChain {
            conv: None,
            epilogue: vec![
                EpilogueOp::Channel(bn),
                Pointwise::LeakyRelu { alpha: 0.1 }.into(),
            ],
            pool: Some(avg),
        }),
    ];
    for (op, bits) in convs
        .iter()
        .map(|o| (o, false))
        .chain(exact.iter().map(|o| (o, true)))
    {
        let cpu = op.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
        let gpu = dev
            .run_chain(&[op], &input)
            .unwrap_or_else(|e| panic!("{}: {e}", op.label()));
        assert_eq!(cpu.shape(), gpu.shape(), "{}", op.label());
        for (i, (&a, &b)) in cpu.data().iter().zip(gpu.data()).enumerate() {
            let ok = if bits {
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
            } else {
                (a - b).abs() <= 1e-5 * a.abs().max(1.0)
            };
            assert!(ok, "{} value {i}: cpu {a} cuda {b}", op.label());
        }
    }
}

#[test]
fn vision_kernels_match_the_cpu_backend_to_the_bit() {
    use streamfuse_kernels::{ColorOrder, Shape, SobelMode, Step, Vision};
    let Some(mut dev) = device() else { return };
    let shape = Shape::new(3, 721, 1283);
    let data = (0..shape.len() as u64)
        .map(|i| (255.0 * streamfuse_kernels::random::unit_f32(4, 11, i)).floor())
        .collect();
    let input = Tensor::from_vec(shape, data).unwrap_or_else(|e| panic!("{e}"));
    let ops = [
        Op::Vision(Vision::Gray {
            order: ColorOrder::Bgr,
        }),
        Op::Vision(Vision::Normalize {
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }),
        Op::Vision(Vision::GaussianBlur {
            ksize: 7,
            sigma: 1.5,
        }),
        Op::Vision(Vision::Sobel {
            mode: SobelMode::Magnitude,
        }),
        Op::Vision(Vision::Resize {
            width: 640,
            height: 360,
        }),
        Op::VisionChain(vec![
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
        ]),
    ];
    for op in &ops {
        let cpu = op.run_cpu(&input).unwrap_or_else(|e| panic!("{e}"));
        let gpu = dev
            .run_chain(&[op], &input)
            .unwrap_or_else(|e| panic!("{}: {e}", op.label()));
        assert_eq!(gpu.shape(), cpu.shape(), "{}", op.label());
        let differ = gpu
            .data()
            .iter()
            .zip(cpu.data())
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{}: {differ} values differ from the CPU",
            op.label()
        );
    }
}

/// The lanes in steady state: after the first frames, frames allocate no
/// device buffer and no pinned host buffer, and the outputs stay the CPU's
/// (frames of alternating sizes: `cuda::pool`'s tests).
#[test]
fn steady_frames_allocate_nothing_on_the_device() {
    let Some(mut dev) = device() else { return };
    let case = corpus_cases::cases()
        .iter()
        .find(|c| matches!(c.op, Op::Conv2d(_)))
        .unwrap_or_else(|| panic!("the corpus has a convolution"));
    let small = case.input.clone();
    let want = case.op.run_cpu(&small).unwrap_or_else(|e| panic!("{e}"));
    let frame = |dev: &mut CudaDevice, lane: usize, t: &Tensor| -> Tensor {
        dev.submit(lane, &[&case.op], t)
            .unwrap_or_else(|e| panic!("{e}"));
        dev.complete(lane).unwrap_or_else(|e| panic!("{e}")).0
    };
    for k in 0..4 {
        frame(&mut dev, k % 2, &small);
    }
    let warm = dev.allocations();
    for k in 0..50 {
        let got = frame(&mut dev, k % 2, &small);
        assert_eq!(got.shape(), want.shape());
        for (&a, &b) in want.data().iter().zip(got.data()) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "cpu {a} cuda {b}");
        }
    }
    assert_eq!(
        dev.allocations(),
        warm,
        "allocations in steady state (device, pinned)"
    );
    eprintln!("steady state: {warm:?} (device, pinned) buffers allocated in warm-up, none after");
}
