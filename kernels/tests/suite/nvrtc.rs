//! Every CUDA source compiles with NVRTC for every target architecture.
//! Without NVRTC each test prints SKIPPED and passes, unless
//! `STREAMFUSE_REQUIRE_NVRTC=1` (set by the test command, which installs
//! NVRTC from PyPI) makes a missing NVRTC a failure.

use streamfuse_kernels::cuda::{ARCHS, SOURCES, nvrtc};

/// Whether NVRTC can be loaded; when not, fails the test `test` if
/// `STREAMFUSE_REQUIRE_NVRTC=1`, else says it is skipped.
pub(crate) fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc::available() {
        return true;
    }
    let why = nvrtc::NvrtcError::Missing;
    assert!(
        std::env::var("STREAMFUSE_REQUIRE_NVRTC").as_deref() != Ok("1"),
        "{test}: STREAMFUSE_REQUIRE_NVRTC=1 but {why} (LD_LIBRARY_PATH={})",
        std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
    );
    eprintln!("SKIPPED {test}: {why}; scripts/test.sh installs it");
    false
}

#[test]
fn every_source_compiles_for_every_architecture() {
    if !nvrtc_or_skip("every_source_compiles_for_every_architecture") {
        return;
    }
    let mut failures = Vec::new();
    for src in SOURCES {
        for &arch in ARCHS {
            match nvrtc::compile(src, arch) {
                Ok(ptx) => {
                    for k in src.kernels {
                        assert!(
                            ptx.contains(&format!(".entry {k}(")),
                            "{} for {arch}: no entry {k} in the PTX",
                            src.name
                        );
                    }
                    let target = format!(".target sm_{}", arch.trim_start_matches("compute_"));
                    assert!(
                        ptx.contains(&target),
                        "{} for {arch}: PTX lacks `{target}`",
                        src.name
                    );
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_kernel_with_a_syntax_error_is_reported_with_the_compiler_log() {
    if !nvrtc_or_skip("a_kernel_with_a_syntax_error_is_reported_with_the_compiler_log") {
        return;
    }
    let bad = streamfuse_kernels::cuda::Source {
        name: "bad.cu",
        text: "#include \"common.cuh\"\nextern \"C\" __global__ void bad_f32(float* x) { x[0] = undefined_name; }\n",
        kernels: &["bad_f32"],
    };
    let err = nvrtc::compile(&bad, "compute_70")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("bad.cu") && err.contains("undefined_name"),
        "{err}"
    );
}

/// The chain of the emulator's generated-kernel test (conv2d → affine →
/// ReLU → clip → max-pool, which no hand-written kernel covers) compiles
/// for every architecture, with its entry point in the PTX.
#[test]
fn a_generated_conv_three_op_pool_chain_compiles_for_every_architecture() {
    use streamfuse_kernels::cuda::codegen::generate;
    use streamfuse_kernels::{Conv2d, Conv2dParams, FusedChain, MaxPoolParams, Pointwise};
    if !nvrtc_or_skip("a_generated_conv_three_op_pool_chain_compiles_for_every_architecture") {
        return;
    }
    let p = Conv2dParams {
        in_channels: 3,
        out_channels: 5,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
    };
    let conv = Conv2d::new(p, vec![0.5; p.weight_len()], Some(vec![0.0; 5]))
        .unwrap_or_else(|e| panic!("{e}"));
    let chain = FusedChain {
        conv: Some(conv),
        epilogue: vec![
            Pointwise::Affine {
                scale: 0.75,
                shift: 0.1,
            },
            Pointwise::Relu,
            Pointwise::Clip { min: 0.0, max: 0.8 },
        ],
        pool: Some(MaxPoolParams { size: 2, stride: 2 }),
    };
    let g = generate(&chain);
    for &arch in ARCHS {
        let ptx = nvrtc::compile_text(&g.name, g.source.clone(), arch)
            .unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert!(ptx.contains(&format!(".entry {}(", g.name)), "{arch}");
    }
}
