#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
#   scripts/test.sh            all tests
# Environment: PROPTEST_CASES (default 96) sets property-test cases.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step is stamped with the seconds since the start (where CI time goes).
say() { printf '==> [%ss] %s\n' "$SECONDS" "$*"; }

# Rust toolchain components used by CI (fmt, clippy) and the tests.
if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || say "rustup could not add rustfmt/clippy (offline?); using what is installed"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# OpenCV (the default `opencv` feature: video, camera and image files) and
# clang/libclang for its bindings, from apt when missing.
scripts/install-deps.sh

# NVRTC and ptxas from PyPI wheels (no CUDA install): the NVRTC test must
# then pass, not skip.
source scripts/cuda-tools.sh
if sf_cuda_tools; then
    export STREAMFUSE_REQUIRE_NVRTC=1
    cuda_tools=1
else
    echo "SKIPPED CUDA compile checks: $SF_CUDA_WHY; not run: NVRTC compile test, kernels check, ptxas report"
    cuda_tools=0
fi

say "unit, property, corpus, emulated-CUDA, fixture, CLI and multi-process tests"
cargo test --workspace --locked

say "the runtime without OpenCV (--no-default-features): builds, and its spec and npy tests pass"
cargo test --locked -p streamfuse --no-default-features --test spec_fixtures --test npy_io

# The CPU kernels pick an instruction set at run time; run the shared
# corpus and the property tests again on each lower level this machine can
# run, so every dispatch path is checked against the reference.
case "$(uname -m)" in
    x86_64)
        for level in avx2 portable; do
            say "kernel corpus and property tests with STREAMFUSE_CPU_LEVEL=$level"
            STREAMFUSE_CPU_LEVEL=$level cargo test --locked -p streamfuse-kernels --test corpus --test cpu_vs_reference
        done
        ;;
esac

say "ONNX Runtime comparison: an imported ONNX model and safetensors weights on a real photograph"
cargo build --locked --quiet --profile ci -p streamfuse --bin streamfuse
python3 tests/onnx/check_against_onnxruntime.py --binary target/ci/streamfuse

say "vision ops against OpenCV: gray, normalize, resize, Gaussian blur, Sobel, threshold and the fused chain"
python3 tests/vision/check_against_opencv.py --binary target/ci/streamfuse

say "k3s manifests: every thesis placement, validated offline with kubernetes-validate --strict"
rc=0
scripts/validate-manifests.sh target/ci/streamfuse || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 2 ] || exit "$rc"

if [ "$cuda_tools" = 1 ]; then
    say "CUDA kernels: NVRTC for compute_70/72/87/90, ptxas registers and spills for sm_70/72"
    target/ci/streamfuse kernels check
    scripts/ptxas-report.sh --check
fi

say "aarch64 (Raspberry Pi, Jetson CPU): cross-build, corpus and property tests and a run under qemu"
scripts/aarch64-check.sh

# The benchmarks compile: `cargo clippy --workspace --all-targets` (in
# .ci/run) checks them; an optimised bench build here cost CI minutes.

say "all tests passed"
