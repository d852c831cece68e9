//! The golden corpus on every engine this crate runs: the CPU backend at
//! every SIMD level this machine has, all in this one process
//! ([`simd::with_level`]), and a real CUDA device when one is usable. The
//! CUDA emulator runs the same cases in `kernels/emu`'s suite.

use streamfuse_kernels::cpu::simd::{self, Level};
use streamfuse_kernels::{Op, Tensor};

use crate::corpus_cases::{self, Case, same_bits};

/// The CPU backend dispatching at `level`.
fn cpu(level: Level) -> impl Fn(&Op, &Tensor) -> Result<Tensor, String> {
    move |op, input| {
        simd::with_level(level, || op.run_cpu(input))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

fn level_names(levels: &[Level]) -> String {
    levels
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn every_case_passes_on_every_cpu_level() {
    let levels = simd::levels();
    let failures: Vec<_> = levels
        .iter()
        .flat_map(|&l| corpus_cases::run_all(&format!("cpu {}", l.name()), cpu(l)))
        .collect();
    eprintln!(
        "corpus: {} cases on the CPU at {}",
        corpus_cases::cases().len(),
        level_names(&levels)
    );
    corpus_cases::assert_none(&failures);
}

/// Whether the case's op has a convolution (the only values that depend on
/// FMA: the CPU's other kernels evaluate the same expression at every level).
fn has_conv(case: &Case) -> bool {
    matches!(
        &case.op,
        Op::Conv2d(_) | Op::Fused(streamfuse_kernels::FusedChain { conv: Some(_), .. })
    )
}

/// Each level runs its own code and the levels agree as documented: levels
/// with FMA give the same bits, and so do all levels on ops without a
/// convolution; a convolution without FMA differs somewhere (which shows
/// the level reached the kernel threads).
#[test]
fn levels_agree_bit_for_bit_except_where_fma_rounds_differently() {
    let levels = simd::levels();
    let runs: Vec<Vec<Tensor>> = levels
        .iter()
        .map(|&l| {
            corpus_cases::cases()
                .iter()
                .map(|c| {
                    cpu(l)(&c.op, &c.input)
                        .unwrap_or_else(|e| panic!("{}: {}: {e}", c.file, c.name))
                })
                .collect()
        })
        .collect();
    let mut conv_differs = false;
    for (i, case) in corpus_cases::cases().iter().enumerate() {
        for (a, la) in levels.iter().enumerate().skip(1) {
            let lb = levels[0];
            let same = same_bits(&runs[a][i], &runs[0][i]);
            if la.fma() == lb.fma() || !has_conv(case) {
                assert!(
                    same,
                    "{}: case `{}`: {} and {} differ",
                    case.file,
                    case.name,
                    la.name(),
                    lb.name()
                );
            } else {
                conv_differs |= !same;
            }
        }
    }
    let mixed = levels.iter().any(|l| l.fma()) && levels.iter().any(|l| !l.fma());
    if mixed {
        assert!(
            conv_differs,
            "no convolution differs between {}: the level did not reach the kernels",
            level_names(&levels)
        );
    } else {
        eprintln!(
            "SKIPPED the FMA/portable difference check: one kind of level here ({})",
            level_names(&levels)
        );
    }
}

#[test]
fn the_corpus_covers_every_op_variant_and_kernel_choice() {
    let gaps = corpus_cases::coverage_gaps();
    assert!(
        gaps.is_empty(),
        "no corpus case exercises {gaps:?}: add cases to kernels/testdata/generate.py"
    );
}

/// A failure names the file, the case, the engine and the worst element.
#[test]
fn a_wrong_value_is_reported_with_its_case_engine_and_element() {
    let case = corpus_cases::cases()
        .iter()
        .find(|c| c.file == "conv.json" && c.shape.c > 1 && c.shape.h > 2 && c.shape.w > 4)
        .unwrap_or_else(|| panic!("no convolution case with a 2x3x5 output"));
    let mut out = cpu(simd::best())(&case.op, &case.input).unwrap_or_else(|e| panic!("{e}"));
    assert!(corpus_cases::check(case, "cpu", Ok(out.clone())).is_none());
    let (h, w) = (case.shape.h, case.shape.w);
    let at = (h + 2) * w + 3; // [1, 2, 3]
    out.data_mut()[at] += 1.0;
    out.data_mut()[at + 1] += 0.5;
    let f = corpus_cases::check(case, "test engine", Ok(out))
        .unwrap_or_else(|| panic!("a value off by 1 passed"));
    let text = f.to_string();
    for part in [case.file, &case.name, "test engine", "2 of", "[1, 2, 3]"] {
        assert!(text.contains(part), "`{part}` missing from: {text}");
    }
    let err = corpus_cases::check(case, "x", Err("boom".into())).map(|f| f.what);
    assert_eq!(err.as_deref(), Some("the engine failed: boom"));
}

#[test]
fn every_case_passes_on_the_cuda_device() {
    let Some(mut dev) = crate::cuda_device::device() else {
        return;
    };
    let engine = format!("cuda {} ({})", dev.name(), dev.arch());
    let failures = corpus_cases::run_all(&engine, |op, input| {
        dev.run_chain(&[op], input).map_err(|e| e.to_string())
    });
    corpus_cases::assert_none(&failures);
}
