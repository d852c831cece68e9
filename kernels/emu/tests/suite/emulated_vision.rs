//! The vision kernels of `vision.cu`, run on CPU threads by the emulation
//! harness, against the CPU backend: bit-identical (both evaluate the same
//! expressions in the same order with explicit rounding), for every op and
//! for chains, over odd sizes and both reflected borders.

use streamfuse_cuda_emu::run;
use streamfuse_kernels::{ColorOrder, Op, Pointwise, Shape, SobelMode, Step, Tensor, Vision};

use crate::compiler_or_skip;

fn image(shape: Shape, seed: u64) -> Tensor {
    let data = (0..shape.len() as u64)
        .map(|i| (255.0 * streamfuse_kernels::random::unit_f32(seed, 11, i)).floor())
        .collect();
    Tensor::from_vec(shape, data).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_same(op: &Op, input: &Tensor) {
    let emu = run(op, input).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    let cpu = op.run_cpu(input).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    assert_eq!(emu.shape(), cpu.shape(), "{op:?}");
    for (i, (a, b)) in emu.data().iter().zip(cpu.data()).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{} on {}: value {i}: emulated CUDA {a}, CPU {b}",
            op.label(),
            input.shape()
        );
    }
}

fn ops() -> Vec<Vision> {
    vec![
        Vision::Gray {
            order: ColorOrder::Bgr,
        },
        Vision::Gray {
            order: ColorOrder::Rgb,
        },
        Vision::Normalize {
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        },
        Vision::GaussianBlur {
            ksize: 5,
            sigma: 0.0,
        },
        Vision::GaussianBlur {
            ksize: 3,
            sigma: 0.8,
        },
        Vision::GaussianBlur {
            ksize: 9,
            sigma: 2.5,
        },
        Vision::Sobel {
            mode: SobelMode::Dx,
        },
        Vision::Sobel {
            mode: SobelMode::Dy,
        },
        Vision::Sobel {
            mode: SobelMode::Magnitude,
        },
        Vision::Resize {
            width: 13,
            height: 7,
        },
        Vision::Resize {
            width: 61,
            height: 45,
        },
    ]
}

#[test]
fn every_vision_kernel_equals_the_cpu_to_the_bit() {
    for (h, w, seed) in [(5, 9, 1u64), (17, 33, 2), (31, 70, 3), (2, 2, 4)] {
        let input = image(Shape::new(3, h, w), seed);
        for v in ops() {
            if v.output_shape(input.shape()).is_err() {
                continue;
            }
            assert_same(&Op::Vision(v), &input);
        }
    }
}

#[test]
fn a_vision_chain_on_the_gpu_path_equals_the_fused_cpu_pass() {
    if !compiler_or_skip("a_vision_chain_on_the_gpu_path_equals_the_fused_cpu_pass") {
        return;
    }
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
        Step::Pointwise(Pointwise::Threshold {
            threshold: 60.0,
            value: 255.0,
        }),
    ];
    for (h, w, seed) in [(9, 11, 5u64), (40, 67, 6)] {
        assert_same(
            &Op::VisionChain(steps.clone()),
            &image(Shape::new(3, h, w), seed),
        );
    }
}
