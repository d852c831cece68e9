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
    let why = nvrtc::library()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
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
    use streamfuse_kernels::{Conv2d, Conv2dParams, FusedChain, Pointwise, Pool2d};
    if !nvrtc_or_skip("a_generated_conv_three_op_pool_chain_compiles_for_every_architecture") {
        return;
    }
    let p = Conv2dParams::square(3, 5, 3, 1, 1);
    let conv = Conv2d::new(p, vec![0.5; p.weight_len()], Some(vec![0.0; 5]))
        .unwrap_or_else(|e| panic!("{e}"));
    let chain = FusedChain {
        conv: Some(conv),
        epilogue: vec![
            Pointwise::Affine {
                scale: 0.75,
                shift: 0.1,
            }
            .into(),
            Pointwise::Relu.into(),
            Pointwise::Clip { min: 0.0, max: 0.8 }.into(),
        ],
        pool: Some(Pool2d::max(2, 2)),
    };
    compiles_everywhere(&chain);
}

/// Chains with batch normalization (a per-channel op reading the launch's
/// channel buffer) and leaky ReLU, after a grouped, dilated convolution and
/// after a load, compile for every architecture.
#[test]
fn generated_chains_with_batchnorm_and_leaky_relu_compile_for_every_architecture() {
    use streamfuse_kernels::{
        ChannelAffine, Conv2d, Conv2dParams, EpilogueOp, FusedChain, Pointwise,
    };
    if !nvrtc_or_skip(
        "generated_chains_with_batchnorm_and_leaky_relu_compile_for_every_architecture",
    ) {
        return;
    }
    let mut p = Conv2dParams::square(4, 8, 3, 2, 1);
    p.groups = 2;
    p.window.dilation = [2, 1];
    let conv = Conv2d::new(p, vec![0.5; p.weight_len()], None).unwrap_or_else(|e| panic!("{e}"));
    let bn = |c: usize| {
        ChannelAffine::new(vec![0.5; c], vec![0.25; c]).unwrap_or_else(|e| panic!("{e}"))
    };
    for (conv, c) in [(Some(conv), 8), (None, 4)] {
        let chain = FusedChain {
            conv,
            epilogue: vec![
                EpilogueOp::Channel(bn(c)),
                Pointwise::LeakyRelu { alpha: 0.1 }.into(),
                EpilogueOp::Channel(bn(c)),
            ],
            pool: None,
        };
        compiles_everywhere(&chain);
    }
}

/// `chain`'s generated kernel compiles for every architecture with its
/// entry point in the PTX.
fn compiles_everywhere(chain: &streamfuse_kernels::FusedChain) {
    let g = streamfuse_kernels::cuda::codegen::generate(chain);
    for &arch in ARCHS {
        let ptx = nvrtc::compile_text(&g.name, g.source.clone(), arch)
            .unwrap_or_else(|e| panic!("{} for {arch}: {e}", chain.label()));
        assert!(ptx.contains(&format!(".entry {}(", g.name)), "{arch}");
    }
}

/// The device path compiles to a cubin for the device's exact
/// architecture (no PTX JIT by the driver): an ELF image with the
/// kernels' names, for Volta and Hopper alike.
#[test]
fn sources_compile_to_cubins_for_exact_architectures() {
    if !nvrtc_or_skip("sources_compile_to_cubins_for_exact_architectures") {
        return;
    }
    let src = &SOURCES[0];
    for sm in [70u32, 90] {
        let capability = (
            i32::try_from(sm / 10).unwrap_or(0),
            i32::try_from(sm % 10).unwrap_or(0),
        );
        let arch = nvrtc::for_device(src.name, &src.standalone(), capability)
            .map(|(_, arch)| arch)
            .unwrap_or_else(|e| panic!("{} for sm_{sm}: {e}", src.name));
        assert_eq!(arch, format!("sm_{sm}"), "a cubin, not PTX");
        let lib =
            streamfuse_kernels::cuda::nvrtc_lib::for_arch(sm).unwrap_or_else(|e| panic!("{e}"));
        let image = lib
            .compile(src.name, &src.standalone(), &arch, &["--std=c++17"])
            .unwrap_or_else(|e| panic!("{} for {arch}: {e}", src.name));
        assert!(image.starts_with(b"\x7fELF"), "{arch}: not an ELF image");
        for k in src.kernels {
            assert!(
                image.windows(k.len()).any(|w| w == k.as_bytes()),
                "{arch}: no kernel {k} in the cubin"
            );
        }
    }
}
