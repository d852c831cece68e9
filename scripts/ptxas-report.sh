#!/usr/bin/env bash
# Assembles every kernel's PTX with `ptxas -v` for sm_70 (Titan V) and sm_72
# (Jetson Xavier) and writes registers, shared memory and spills per kernel
# into KERNELS.md (between the ptxas markers). Fails when any kernel spills.
#   scripts/ptxas-report.sh [--check]   --check: verify only, leave KERNELS.md as it is
# STREAMFUSE_BIN names a streamfuse binary to use (the test command passes
# the one it built); otherwise it is built with `--profile ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
check_only=false
[ "${1:-}" = --check ] && check_only=true

source scripts/cuda-tools.sh
sf_cuda_tools || { echo "$SF_CUDA_WHY" >&2; exit 1; }

bin="${STREAMFUSE_BIN:-}"
if [ -z "$bin" ]; then
    cargo build --locked --quiet --profile ci -p streamfuse --bin streamfuse
    bin=target/ci/streamfuse
fi
ptx_dir=$(mktemp -d)
trap 'rm -rf "$ptx_dir"' EXIT
"$bin" kernels check --arch compute_70,compute_72 --emit-ptx "$ptx_dir" >/dev/null

table=$(
    echo "| kernel | arch | registers | shared memory | stack | spill stores | spill loads |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for ptx in "$ptx_dir"/*.ptx; do
        arch=${ptx##*-compute_}
        arch=sm_${arch%.ptx}
        unit=$(basename "${ptx%-compute_*}")
        "$PTXAS" -v -arch="$arch" "$ptx" -o /dev/null 2>&1 | awk -v arch="$arch" -v unit="$unit" '
            /Compiling entry function/ {
                match($0, /'"'"'[^'"'"']+'"'"'/); k = "`" substr($0, RSTART + 1, RLENGTH - 2) "`"
                # Generated kernels are named by hash: add the chain they run.
                if (k ~ /sf_chain_/) k = k " " unit
            }
            /bytes stack frame/ { stack = $1; ss = $5; sl = $9 }
            /Used [0-9]+ registers/ {
                regs = $5; smem = 0
                if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
                printf "| %s | %s | %s | %s B | %s B | %s B | %s B |\n", k, arch, regs, smem, stack, ss, sl
            }'
    done | sort
)
echo "$table"
spills=$(echo "$table" | awk -F'|' 'NR > 2 { gsub(/[ B]/, "", $7); gsub(/[ B]/, "", $8); if ($7 + $8 > 0) n++ } END { print n + 0 }')
rows=$(echo "$table" | tail -n +3 | wc -l)
# 17 hand-written kernels (kernels/src/cuda/mod.rs's SOURCES) and the
# generated chains, each for 2 architectures.
[ "$rows" -ge 34 ] || { echo "ptxas report has $rows rows; expected at least 17 hand-written kernels x 2 architectures" >&2; exit 1; }
[ "$spills" -eq 0 ] || { echo "$spills kernel(s) spill registers to local memory" >&2; exit 1; }
if ! $check_only; then
    python3 - "$table" <<'PY'
import sys, pathlib
p = pathlib.Path("KERNELS.md")
text = p.read_text()
begin, end = "<!-- ptxas:begin -->", "<!-- ptxas:end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
p.write_text(head + begin + "\n" + sys.argv[1] + "\n" + end + tail)
PY
    echo "KERNELS.md updated"
fi
echo "no spills"
