//! The integration tests of `streamfuse-cuda-emu`, in one binary: the CUDA
//! C kernels run on CPU threads against
//!
//! - `corpus`: the shared golden corpus (`kernels/testdata/*.json`, read
//!   by `kernels/tests/suite/corpus_cases.rs`, included here), and a
//!   deliberately broken kernel the corpus must catch;
//! - `emulated_kernels`, `generated_chains`: the f64 references and the
//!   CPU backend (property tests), hand-written and generated kernels;
//! - `emulated_onnx`: convolutions and pools over the ONNX 2-D attributes
//!   (strides, dilations, padding per side, groups, ceil mode, average
//!   pools, global pools) against the CPU backend and the f64 reference;
//! - `emulated_vision`: the CPU backend, bit for bit.
//!
//! Generated fused-chain kernels are compiled at run time by the C++
//! compiler (`$CXX`, else `c++`). Tests that need it print SKIPPED without
//! one, unless `STREAMFUSE_REQUIRE_NVRTC=1` (the test command's "the CUDA
//! tool chain must be there") makes that a failure.

#[path = "../../../tests/suite/corpus_cases.rs"]
mod corpus_cases;

mod corpus;
mod emulated_kernels;
mod emulated_onnx;
mod emulated_vision;
mod gemm_conv;
mod generated_chains;

/// `n` seeded values in [-1, 1], the same on every run.
pub(crate) fn seeded(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| streamfuse_kernels::random::symmetric_f32(seed, 5, i, 1.0))
        .collect()
}

/// Whether the C++ compiler for generated kernels runs; when not, fails
/// the test `test` if `STREAMFUSE_REQUIRE_NVRTC=1`, else says it is
/// skipped.
pub(crate) fn compiler_or_skip(test: &str) -> bool {
    static CHECK: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    let check = CHECK.get_or_init(|| {
        streamfuse_cuda_emu::generated::check_compiler().map_err(|e| e.to_string())
    });
    let Err(why) = check else {
        return true;
    };
    assert!(
        std::env::var("STREAMFUSE_REQUIRE_NVRTC").as_deref() != Ok("1"),
        "{test}: STREAMFUSE_REQUIRE_NVRTC=1 but {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}
