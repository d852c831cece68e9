//! The shared golden corpus run against the CPU backend at the SIMD level
//! this process dispatches to. The test command runs it again with
//! `STREAMFUSE_CPU_LEVEL` capped (AVX2, portable) and under qemu for aarch64
//! (NEON).

mod corpus_cases;

#[test]
fn every_corpus_case_matches_its_expected_output() {
    let level = streamfuse_kernels::cpu::simd::level().name();
    let (n, failures) =
        corpus_cases::failures(|op, input| op.run_cpu(input).unwrap_or_else(|e| panic!("{e}")));
    assert!(
        failures.is_empty(),
        "{} of {n} corpus cases fail at level {level}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
