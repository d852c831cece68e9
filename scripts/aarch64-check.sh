#!/usr/bin/env bash
# Proves the aarch64 CPU paths (Raspberry Pi 4, Jetson CPU cores) on an x86
# machine: cross-builds the kernels' tests and the streamfuse binary for
# aarch64-unknown-linux-gnu and runs them under qemu user-mode emulation.
#
#   scripts/aarch64-check.sh               build, then run under qemu
#   scripts/aarch64-check.sh --build-only  install what is missing and build
#                                          (the test command builds in the
#                                          background while other checks run)
#
# What runs under qemu (NEON dispatch level):
#   - the kernels' shared golden corpus and property tests (fewer cases);
#   - `streamfuse run examples/thesis.yaml --frames 20 --device cpu --json`,
#     whose output_digest must equal the x86 run's: both use fused
#     multiply-adds in the same order, so outputs are bit-identical. (On an
#     x86 CPU without FMA the kernels use separate multiply and add and the
#     digests differ; then the corpus and property tests, which compare with
#     the reference within tolerance, are the check, and the script says so.)
# The aarch64 binary is the default build, without the `opencv` feature
# (no arm64 OpenCV libraries here): it needs no C or C++ libraries, and the
# thesis run uses none of what that feature adds. It also proves the build
# without OpenCV: a video spec is refused with a located error. qemu times are not performance
# figures.
#
# Where the target or a tool cannot be installed, prints one line saying what
# was skipped and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
say() { printf '==> aarch64: %s\n' "$*"; }
skip() { printf 'SKIPPED aarch64 check: %s; not run: aarch64 build, corpus and property tests under qemu, thesis digest comparison\n' "$*"; exit 0; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if [ "$(uname -m)" = aarch64 ]; then
    skip "this machine is aarch64: the ordinary test run already covers the NEON paths"
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    say "installing the $TARGET standard library"
    rustup target add "$TARGET" >/dev/null 2>&1 || skip "rustup cannot install $TARGET"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
    say "installing gcc-aarch64-linux-gnu and qemu-user-static"
    { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; } >/dev/null 2>&1 \
        || skip "cannot install gcc-aarch64-linux-gnu/qemu-user-static with apt-get"
fi
command -v aarch64-linux-gnu-gcc >/dev/null || skip "aarch64-linux-gnu-gcc not found after install"
command -v qemu-aarch64-static >/dev/null || skip "qemu-aarch64-static not found after install"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"

# The NVRTC wheel is x86-64: under qemu the NVRTC test skips (saying so).
unset STREAMFUSE_REQUIRE_NVRTC

say "building the kernels' tests and streamfuse for $TARGET (profile ci, the default build: no OpenCV)"
cargo test --locked --profile ci --target "$TARGET" -p streamfuse-kernels --no-run
cargo build --locked --profile ci --target "$TARGET" -p streamfuse --bin streamfuse
[ "${1:-}" = --build-only ] && exit 0

say "kernel corpus and property tests under qemu"
PROPTEST_CASES="${PROPTEST_CASES:-24}" cargo test --locked --profile ci --target "$TARGET" -p streamfuse-kernels
# The x86 binary: the one the test command built (STREAMFUSE_BIN), else build it.
x86_bin="${STREAMFUSE_BIN:-}"
if [ -z "$x86_bin" ]; then
    cargo build --locked --profile ci -p streamfuse --bin streamfuse
    x86_bin=target/ci/streamfuse
fi
arm_bin="target/$TARGET/ci/streamfuse"

json_field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }
run_args=(run examples/thesis.yaml --frames 20 --device cpu --json)
x86_json=$("$x86_bin" "${run_args[@]}")
arm_json=$(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$arm_bin" "${run_args[@]}")
x86_digest=$(json_field output_digest <<<"$x86_json")
arm_digest=$(json_field output_digest <<<"$arm_json")
x86_features=$(json_field cpu_features <<<"$x86_json")
arm_features=$(json_field cpu_features <<<"$arm_json")
arm_frames=$(json_field frames <<<"$arm_json")
say "x86 run: cpu_features $x86_features, digest $x86_digest"
say "qemu run: cpu_features $arm_features, frames $arm_frames, digest $arm_digest"
[ "$arm_frames" = 20 ] || { echo "aarch64 run processed $arm_frames frames, expected 20" >&2; exit 1; }
[ "$arm_features" = neon ] || { echo "aarch64 run used $arm_features, expected neon" >&2; exit 1; }
if [ "$x86_features" = portable ]; then
    say "this x86 CPU has no FMA, so digests differ by design; the corpus and property tests under qemu compared NEON outputs with the reference"
elif [ "$x86_digest" != "$arm_digest" ]; then
    echo "aarch64 and x86 outputs differ: $arm_digest vs $x86_digest" >&2
    exit 1
else
    say "outputs bit-identical to x86"
fi
# The default build has no OpenCV: a spec with a video source is refused
# with a located error that says how to turn it on.
video_spec=$(mktemp --suffix=.yaml)
trap 'rm -f "$video_spec"' EXIT
printf 'name: v\nsource: { video: { path: in.mkv } }\nstages: [ { id: gray, op: gray } ]\nsink: { stats: {} }\n' >"$video_spec"
if msg=$(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$arm_bin" plan "$video_spec" 2>&1); then
    echo "the build without OpenCV accepted a video source: $msg" >&2
    exit 1
fi
case "$msg" in
    *"$video_spec:2:26: source.video.path: this streamfuse was built without OpenCV"*"--features opencv"*)
        say "the build without OpenCV refuses a video source: ${msg##*error: }" ;;
    *) echo "unexpected error from the build without OpenCV: $msg" >&2; exit 1 ;;
esac
say "passed"
