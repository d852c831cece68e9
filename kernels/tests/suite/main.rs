//! The integration tests of `streamfuse-kernels`, in one binary (one link,
//! one process; the modules run in parallel as usual):
//!
//! - `corpus`: the shared golden corpus (`kernels/testdata/*.json`) on the
//!   CPU backend at every SIMD level this machine has, all in this process,
//!   and on a real CUDA device when one is usable;
//! - `cpu_vs_reference`, `vision`: property tests of the CPU kernels
//!   against the f64 references, fused against unfused, at every SIMD
//!   level;
//! - `cuda_device`: the CUDA backend on a real device against the CPU;
//! - `nvrtc`: every CUDA source compiles with NVRTC for every architecture.
//!
//! `corpus_cases` reads the corpus; `kernels/emu`'s suite includes it too,
//! to run the same cases on the CUDA emulator.
//!
//! Environment: `PROPTEST_CASES` (property-test cases),
//! `STREAMFUSE_CPU_LEVEL` (caps the SIMD levels run),
//! `STREAMFUSE_REQUIRE_NVRTC=1` (a missing NVRTC fails instead of
//! skipping), `STREAMFUSE_REQUIRE_CUDA=1` (a missing CUDA device fails).

use proptest::test_runner::TestCaseError;
use streamfuse_kernels::cpu::simd;

mod corpus;
mod corpus_cases;
mod cpu_vs_reference;
mod cuda_device;
mod nvrtc;
mod vision;

/// Runs `check` at every SIMD level this machine has
/// ([`simd::levels`], through [`simd::with_level`]): the property tests
/// check every dispatch path in one process. A failure names its level.
pub(crate) fn at_each_level<F>(check: F) -> Result<(), TestCaseError>
where
    F: Fn() -> Result<(), TestCaseError> + Sync,
{
    for level in simd::levels() {
        simd::with_level(level, &check)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .map_err(|e| TestCaseError::fail(format!("at {}: {e}", level.name())))?;
    }
    Ok(())
}
