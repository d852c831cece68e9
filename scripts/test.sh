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

# OpenCV (the `opencv` feature: video, camera and image files) and
# clang/libclang for its bindings, from apt when missing: the test command
# tests the OpenCV build; the aarch64 check tests the default one.
scripts/install-deps.sh

# NVRTC and ptxas from PyPI wheels (no CUDA install). The tests that need
# them must run here, so a failed install fails the test command.
source scripts/cuda-tools.sh
if ! sf_cuda_tools; then
    echo "error: cannot provide NVRTC and ptxas ($SF_CUDA_WHY); the NVRTC, emulator and ptxas checks need them" >&2
    exit 1
fi
export STREAMFUSE_REQUIRE_NVRTC=1

# One build: every test and the `streamfuse` binary they start, at
# `--profile ci` with the `opencv` feature; the ONNX Runtime, OpenCV,
# manifest, NVRTC and aarch64 checks below run that same binary.
# The GPU bundle step's bare Debian root (debootstrap: mostly downloads
# and unpacking, about a minute on a fresh machine) is built in the
# background while the workspace compiles; that step then reuses it.
root_log=$(mktemp)
tests/bundle/check_bundle.sh --root-only >"$root_log" 2>&1 &
rootbuild=$!
# The Python environments of the checks after the Rust tests (pinned pip
# installs: mostly downloads) are made meanwhile too; each check makes its
# own again if this failed, and fails there if it must.
envs_log=$(mktemp)
(
    python3 tests/onnx/check_against_onnxruntime.py --setup-only
    python3 tests/vision/check_against_opencv.py --setup-only
    python3 tests/protocol/check_stream_protocol.py --setup-only
    scripts/validate-manifests.sh --setup-only
    sf_nvrtc13
) >"$envs_log" 2>&1 &
envs=$!
trap 'kill "$rootbuild" "$envs" 2>/dev/null || true' EXIT

say "build: the workspace's tests and the streamfuse binary (profile ci, --features opencv)"
cargo test --workspace --locked --profile ci --features streamfuse/opencv --no-run
export STREAMFUSE_BIN="$PWD/target/ci/streamfuse"
# Before the tests (some time themselves): the root's build is done, or
# failed and the bundle step builds it again (and fails there if it must).
if ! wait "$rootbuild"; then
    say "the bundle root's background build failed; the bundle step retries it:"
    tail -n 20 "$root_log"
fi
if ! wait "$envs"; then
    say "making the Python environments in the background failed; each check retries its own:"
    tail -n 20 "$envs_log"
fi

say "unit, property, corpus (every CPU dispatch level, emulated CUDA), fixture, CLI and multi-process tests"
# Three tests at a time on two CPUs: the multi-process tests spend most of
# their time waiting on their children (a 30 s outage, paced sources), and
# those that load the machine or assert timings take one lock
# (runtime/tests/it/support.rs `heavy` and `quiet`): a timing test runs
# beside no heavy one and no other timing test.
cargo test --workspace --locked --profile ci --features streamfuse/opencv -- --test-threads "${STREAMFUSE_TEST_THREADS:-3}"

# The last two steps build for aarch64 and, for the GPU bundle, without
# OpenCV: those builds run in the background while the fuzzing (which runs
# for a set time, so it only makes fewer runs beside them) and the checks
# below (one thread each, on the binary built above) run. The bundle's build replaces
# target/ci/streamfuse with the build without OpenCV, so the checks use a
# copy of the OpenCV one.
cp "$STREAMFUSE_BIN" target/ci/streamfuse-opencv
export STREAMFUSE_BIN="$PWD/target/ci/streamfuse-opencv"
prebuild_log=$(mktemp)
say "building for the aarch64 and GPU-bundle steps in the background (log: $prebuild_log)"
( scripts/aarch64-check.sh --build-only && STREAMFUSE_BUNDLE_PROFILE=ci scripts/gpu-bundle.sh --build-only ) >"$prebuild_log" 2>&1 &
prebuild=$!
trap 'kill "$prebuild" 2>/dev/null || true' EXIT
# wait_prebuild: the background builds' outcome (their log when they failed).
wait_prebuild() {
    if ! wait "$prebuild"; then
        tail -n 60 "$prebuild_log"
        echo "error: the background builds for the aarch64 and GPU-bundle steps failed (log above)" >&2
        exit 1
    fi
}

say "fuzzing: every fuzz target on its corpus, then on mutated inputs, 10 s each (2 at a time)"
# The coverage-guided libFuzzer runs are scripts/fuzz.sh (their sanitizer
# build takes longer than this whole command).
target/ci/examples/fuzz_smoke --seconds-per-target "${STREAMFUSE_FUZZ_SECONDS:-10}" --out "${TMPDIR:-/tmp}"

say "ONNX Runtime comparison: an imported ONNX model and safetensors weights on a real photograph"
python3 tests/onnx/check_against_onnxruntime.py --binary "$STREAMFUSE_BIN"

say "vision ops against OpenCV: gray, normalize, resize, Gaussian blur, Sobel, threshold and the fused chain"
python3 tests/vision/check_against_opencv.py --binary "$STREAMFUSE_BIN"

say "stream protocol: a client written from stage.proto alone (grpcio), good and bad frames against a segment server"
python3 tests/protocol/check_stream_protocol.py --binary "$STREAMFUSE_BIN"

say "mutual TLS: a grpcio client with openssl-made certificates against a TLS segment server (plaintext, unknown CA, non-admin, admin, health port)"
python3 tests/protocol/check_tls.py --binary "$STREAMFUSE_BIN"

say "k3s manifests: every thesis placement, validated offline with kubernetes-validate --strict"
rc=0
scripts/validate-manifests.sh "$STREAMFUSE_BIN" || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 2 ] || exit "$rc"

say "CUDA kernels: NVRTC for compute_70/72/87/90, ptxas registers and spills for sm_70/72"
"$STREAMFUSE_BIN" kernels check
scripts/ptxas-report.sh --check

say "CUDA kernels under NVRTC 13 (found by path): compute_87/90 compiled, compute_70/72 skipped and said so"
sf_nvrtc13 || { echo "error: $SF_CUDA_WHY" >&2; exit 1; }
STREAMFUSE_NVRTC="$SF_NVRTC13" "$STREAMFUSE_BIN" kernels check --json | python3 -c '
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
archs = sorted({row["arch"] for row in r["results"]})
assert r["nvrtc"].startswith("13."), r["nvrtc"]
assert r["failed"] == 0, [row for row in r["results"] if not row["ok"]]
assert archs == ["compute_87", "compute_90"], archs
assert [s.split(":")[0] for s in r["skipped"]] == ["compute_70", "compute_72"], r["skipped"]
print("NVRTC %s: %d compiled for %s, skipped %s" % (r["nvrtc"], len(r["results"]), archs, r["skipped"]))
'

wait_prebuild
say "aarch64 (Raspberry Pi, Jetson CPU): cross-build without OpenCV, corpus and property tests and a run under qemu"
scripts/aarch64-check.sh

say "GPU bundle: built (the ci profile here, no OpenCV, NVRTC 12.9, <= 50 MiB) and run in a bare Debian 12 container without a GPU: ldd, kernels check with the bundled NVRTC, run.sh's clean no-CUDA report"
STREAMFUSE_BUNDLE_PROFILE=ci STREAMFUSE_BUNDLE_XZ=1 tests/bundle/check_bundle.sh

# The benchmarks compile: `cargo clippy --workspace --all-targets` (in
# .ci/run) checks them; an optimised bench build here cost CI minutes.

say "all tests passed"
