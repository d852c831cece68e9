#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver (and Rust, to build): checks and
# measures the CUDA backend in one command. A thin wrapper: writes the GPU
# bundle (scripts/gpu-bundle.sh) into a temporary folder and runs its
# run.sh, which prints the GPU, compiles every kernel with NVRTC, runs the
# CUDA device tests and short CUDA benches and the thesis/cnn runs on CUDA
# and the CPU, with the bundled NVRTC 12.9 and then the machine's own, and
# prints one table.
#   scripts/gpu-check.sh
# For a GPU machine without Rust: `scripts/gpu-bundle.sh DIR` here, copy
# DIR there and run DIR/run.sh. STREAMFUSE_CHECK_ARCH (e.g. compute_90)
# limits the kernels check to those architectures. The log is kept in
# target/gpu-check-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
scripts/gpu-bundle.sh "$tmp"
mkdir -p target/gpu-check-logs
STREAMFUSE_BUNDLE_LOGS="$PWD/target/gpu-check-logs" "$tmp/run.sh"
