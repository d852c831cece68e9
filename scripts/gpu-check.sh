#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: checks and measures the CUDA
# backend in one command and prints one table.
#   scripts/gpu-check.sh
#   STREAMFUSE_PREBUILT=DIR scripts/gpu-check.sh
# With STREAMFUSE_PREBUILT the binaries come from DIR (streamfuse,
# kernels_suite: the kernels' test binary `tests/suite`, and cuda_bench,
# built elsewhere with `--profile quick`; the default build of streamfuse
# links no OpenCV) for machines without cargo;
# DIR/nvrtc.tar.zst, when present, holds libnvrtc 12.x to use.
# Runs: NVRTC compile of every kernel for this GPU, the CUDA tests (device
# against the CPU backend, f32 tolerance 1e-5 relative), the cuda_* benches
# when present, and `streamfuse run examples/{thesis,cnn}.yaml --device cuda`
# next to the same run on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-tools.sh
pre="${STREAMFUSE_PREBUILT:-}"
if [ -n "$pre" ] && [ -f "$pre/nvrtc.tar.zst" ] && command -v zstd >/dev/null; then
    mkdir -p /tmp/sf-nvrtc && zstd -dc "$pre/nvrtc.tar.zst" | tar -C /tmp/sf-nvrtc -xf -
    export LD_LIBRARY_PATH="/tmp/sf-nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
elif [ -n "$pre" ]; then
    # No cargo, pip or zstd there: the machine's own CUDA toolkit NVRTC.
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
elif ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc.so.12'; then
    # A CUDA 12 toolkit's NVRTC is used when present; else the PyPI wheel.
    sf_cuda_tools || { echo "$SF_CUDA_WHY" >&2; exit 1; }
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader

if [ -n "$pre" ]; then
    bin=$pre/streamfuse
    $bin kernels check ${STREAMFUSE_CHECK_ARCH:+--arch $STREAMFUSE_CHECK_ARCH}
    STREAMFUSE_REQUIRE_CUDA=1 "$pre/kernels_suite" cuda_device --nocapture
    "$pre/cuda_bench" --bench --noplot
else
    cargo build --locked --release -p streamfuse --bin streamfuse
    bin=target/release/streamfuse
    $bin kernels check ${STREAMFUSE_CHECK_ARCH:+--arch $STREAMFUSE_CHECK_ARCH}
    STREAMFUSE_REQUIRE_CUDA=1 cargo test --locked --release -p streamfuse-kernels --test suite cuda_device -- --nocapture
    cargo bench --locked -p streamfuse-benches --bench cuda -- --noplot
fi

field() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(d[sys.argv[1]] if sys.argv[1] != "p50" else d["latency_ms"]["p50"])' "$1"; }
printf '\n| spec | device | frames | fps | p50 ms | digest |\n|---|---|---:|---:|---:|---|\n'
for spec in thesis cnn; do
    for dev in cuda cpu; do
        j=$($bin run examples/$spec.yaml --frames 300 --placement "$( [ $spec = thesis ] && echo SSSS || echo LLLL )" --device $dev --json)
        printf '| %s | %s | %s | %.1f | %.3f | %s |\n' "$spec" "$(field device <<<"$j")" "$(field frames <<<"$j")" \
            "$(field fps <<<"$j")" "$(field p50 <<<"$j")" "$(field output_digest <<<"$j" | cut -c1-23)"
    done
done
