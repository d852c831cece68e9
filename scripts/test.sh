#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
#   scripts/test.sh            all tests
# Environment: PROPTEST_CASES (default 96) sets property-test cases.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

# Rust toolchain components used by CI (fmt, clippy) and the tests.
if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || say "rustup could not add rustfmt/clippy (offline?); using what is installed"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

say "unit, property, fixture, CLI and multi-process tests"
cargo test --workspace --locked

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

say "aarch64 (Raspberry Pi, Jetson CPU): cross-build, corpus and property tests and a run under qemu"
scripts/aarch64-check.sh

say "benchmarks compile"
cargo bench --locked -p streamfuse-benches --no-run

say "all tests passed"
