//! The golden corpus on the CUDA emulator: every case through the kernels
//! a GPU would run, launched as the CUDA backend launches them; and a
//! convolution kernel with an off-by-one halo that the corpus must catch.

use std::collections::BTreeSet;

use streamfuse_cuda_emu::{Variant, conv2d, run};
use streamfuse_kernels::cuda::params::{self, ConvKernel};
use streamfuse_kernels::{Conv2d, Op, Shape};

use crate::compiler_or_skip;
use crate::corpus_cases;

#[test]
fn every_case_passes_on_the_cuda_emulator() {
    if !compiler_or_skip("every_case_passes_on_the_cuda_emulator") {
        return;
    }
    let failures = corpus_cases::run_all("cuda-emu", |op, input| {
        run(op, input).map_err(|e| e.to_string())
    });
    eprintln!(
        "corpus: {} cases on the CUDA emulator",
        corpus_cases::cases().len()
    );
    corpus_cases::assert_none(&failures);
}

/// Whether the broken kernel's one wrong read changes `conv`'s output on
/// an input of `input`: the thread at the right edge of a full 32-wide tile
/// (output column `32 b + 31`) reads, for its last tap column, the first
/// column of the tile's next row instead. That differs (on the corpus's
/// random data) unless both are zero padding.
fn exposed(conv: &Conv2d, input: Shape) -> bool {
    let Ok((p, ConvKernel::Tiled, _)) = params::conv(conv, input) else {
        return false;
    };
    let (s, pad) = (p.stride_w as isize, p.pad_left as isize);
    let span = ((p.k_w - 1) * p.dil_w) as isize;
    (0..p.out_w as isize / 32).any(|b| {
        let ox = 32 * b + 31;
        let right = ox * s - pad + span; // the column it should read
        let wrapped = 32 * b * s - pad; // the column it reads
        right < input.w as isize || wrapped >= 0
    })
}

#[test]
fn a_kernel_with_an_off_by_one_halo_fails_the_corpus() {
    if !compiler_or_skip("a_kernel_with_an_off_by_one_halo_fails_the_corpus") {
        return;
    }
    let failures = corpus_cases::run_all("cuda-emu, broken halo", |op, input| {
        let tiled = |c: &Conv2d| {
            params::conv(c, input.shape()).is_ok_and(|(_, k, _)| k == ConvKernel::Tiled)
        };
        match op {
            Op::Conv2d(c) if tiled(c) => {
                conv2d(input, c, Variant::BrokenHalo).map_err(|e| e.to_string())
            }
            other => run(other, input).map_err(|e| e.to_string()),
        }
    });
    // Exactly the convolutions the wrong read reaches must fail; nothing
    // else may change.
    let caught: BTreeSet<(&str, &str)> =
        failures.iter().map(|f| (f.file, f.case.as_str())).collect();
    let expected: BTreeSet<(&str, &str)> = corpus_cases::cases()
        .iter()
        .filter(|c| matches!(&c.op, Op::Conv2d(conv) if exposed(conv, c.input.shape())))
        .map(|c| (c.file, c.name.as_str()))
        .collect();
    assert!(
        expected.len() >= 5,
        "only {} corpus convolutions expose the broken halo",
        expected.len()
    );
    assert_eq!(
        caught, expected,
        "the broken halo must fail exactly the convolutions it reaches"
    );
}
