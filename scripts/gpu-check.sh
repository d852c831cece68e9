#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and driver: checks and measures the CUDA
# backend in one command and prints one table.
#   scripts/gpu-check.sh
# Runs: NVRTC compile of every kernel for this GPU, the CUDA tests (device
# against the CPU backend, f32 tolerance 1e-5 relative), the cuda_* benches
# when present, and `streamfuse run examples/{thesis,cnn}.yaml --device cuda`
# next to the same run on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-tools.sh
# A CUDA toolkit's NVRTC is used when present; else the PyPI wheel.
if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc.so.12'; then
    sf_cuda_tools || { echo "$SF_CUDA_WHY" >&2; exit 1; }
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader

cargo build --locked --release -p streamfuse --bin streamfuse
bin=target/release/streamfuse
$bin kernels check
STREAMFUSE_REQUIRE_CUDA=1 cargo test --locked --release -p streamfuse-kernels --test cuda_device -- --nocapture
if cargo bench --locked -p streamfuse-benches --bench cuda --no-run >/dev/null 2>&1; then
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
