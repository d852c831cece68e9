#!/usr/bin/env bash
# The GPU bundle (scripts/gpu-bundle.sh) on a machine without a GPU: runs
# it in a bare Debian 12 container (debootstrap minbase + python3: no Rust,
# no pip, no CUDA, no OpenCV, no network) and asserts
#   a. ldd finds every library of streamfuse, suite, cuda_bench and the
#      bundled libnvrtc.so.12 (no "not found");
#   b. with the bundled NVRTC 12.9 (STREAMFUSE_NVRTC, as run.sh sets it)
#      `streamfuse kernels check` compiles every kernel for
#      compute_70/72/87/90 and exits 0;
#   c. run.sh as a whole reaches its report with the clean "no CUDA device"
#      outcome: a non-zero exit, the CPU runs in its table, and no
#      "panicked" anywhere in its output or log.
#
#   tests/bundle/check_bundle.sh [BUNDLE_DIR]    (default: build one)
#   tests/bundle/check_bundle.sh --root-only     only build (or find) the
#                                                bare root image, then exit
#
# The root is imported with `docker import` (no registry) and cached as
# streamfuse-bundle-root:<hash of its recipe>. Needs Docker, and root or
# sudo for debootstrap (installed with apt-get when missing) the first time.
# Without a Docker engine: prints "SKIPPED: no Docker engine" and exits 1,
# or 0 when STREAMFUSE_ALLOW_NO_DOCKER=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '==> bundle check: %s\n' "$*"; }
fails=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; fails=$((fails + 1)); }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if ! docker info >/dev/null 2>&1; then
    echo "SKIPPED: no Docker engine (docker info failed): the GPU bundle was not run in a bare container"
    if [ "${STREAMFUSE_ALLOW_NO_DOCKER:-}" = 1 ]; then
        exit 0
    fi
    echo "FAIL bundle check: no Docker engine here (set STREAMFUSE_ALLOW_NO_DOCKER=1 to accept skipping it)"
    exit 1
fi

work=$(mktemp -d)
cleanup() { [ -n "${cname:-}" ] && docker rm -f "$cname" >/dev/null 2>&1; rm -rf "$work" 2>/dev/null || as_root rm -rf "$work"; }
trap cleanup EXIT

# --- The bare root, cached by its recipe.
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
INCLUDE=python3
recipe="debootstrap --variant=minbase --include=$INCLUDE $SUITE $MIRROR (recipe 1)"
image=streamfuse-bundle-root:$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
if docker image inspect "$image" >/dev/null 2>&1; then
    say "reusing $image ($recipe)"
else
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap with apt-get"
        { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap; } >/dev/null \
            || { echo "FAIL bundle check: cannot install debootstrap (apt-get, as root or with sudo)"; exit 1; }
    fi
    say "building $image: $recipe"
    if ! as_root debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
        tail -n 20 "$work/debootstrap.log"
        echo "FAIL bundle check: debootstrap failed (log above)"
        exit 1
    fi
    as_root tar -C "$work/root" -c . | docker import -m "$recipe" - "$image" >/dev/null
    as_root rm -rf "$work/root"
fi
if [ "${1:-}" = --root-only ]; then
    say "$image is ready"
    exit 0
fi
root_check=$(docker run --rm --network none "$image" bash -c '
    for c in cargo rustc pip pip3 nvidia-smi; do command -v "$c" && echo "has $c"; done
    ls /usr/lib/x86_64-linux-gnu | grep -iE "opencv|libcuda|nvrtc|libgst|libavcodec" | sed "s/^/has /"
    python3 -c "import lzma, tarfile, ctypes, json" || echo "python3 lacks lzma/tarfile/ctypes/json"
    for c in bash timeout ldd ldconfig sha256sum tee mktemp date; do command -v "$c" >/dev/null || echo "lacks $c"; done' 2>&1 || true)
if [ -z "$root_check" ]; then
    pass "the root is bare (no Rust, pip, CUDA, OpenCV) and has bash, coreutils, ldd and python3"
else
    fail "the root is not what run.sh is promised: $root_check"
fi

# --- The bundle.
if [ $# -ge 1 ]; then
    bundle=$(cd "$1" && pwd)
else
    say "building the bundle (scripts/gpu-bundle.sh)"
    scripts/gpu-bundle.sh "$work/bundle"
    bundle=$work/bundle
fi
size=$(find "$bundle" -type f ! -path "$bundle/logs/*" -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
if [ "$size" -le $((50 * 1024 * 1024)) ]; then
    pass "bundle size $size bytes <= 50 MiB"
else
    fail "bundle size $size bytes > 50 MiB"
fi

mkdir -p "$work/logs"
chmod 777 "$work/logs"
crun() {
    docker run --rm --network none --user "$(id -u):$(id -g)" -e HOME=/tmp \
        -v "$bundle:/bundle:ro" "$@"
}

# a. ldd, after unpacking the bundle as run.sh does.
say "a. ldd of the binaries and of the bundled NVRTC in $image"
if crun "$image" bash -c '
        set -e
        /bundle/run.sh --unpack /tmp/u >/dev/null
        for f in /tmp/u/streamfuse /tmp/u/suite /tmp/u/cuda_bench /tmp/u/nvrtc/libnvrtc.so.12 /tmp/u/nvrtc/libnvrtc-builtins.so.*; do
            echo "== $f"
            ldd "$f"
        done' >"$work/ldd.txt" 2>&1; then
    if grep -q 'not found' "$work/ldd.txt"; then
        fail "a. ldd: $(grep -B20 'not found' "$work/ldd.txt" | grep -E '^==|not found' | tr '\n' ' ')"
    elif grep -Eiq 'libopencv|libgst|libavcodec' "$work/ldd.txt"; then
        fail "a. ldd: OpenCV/GStreamer/FFmpeg linked: $(grep -Ei 'libopencv|libgst|libavcodec' "$work/ldd.txt" | head -n 3 | tr '\n' ' ')"
    else
        pass "a. ldd: streamfuse, suite, cuda_bench, libnvrtc.so.12 and its builtins: every library found"
    fi
else
    fail "a. unpacking or ldd failed in the container:"
    tail -n 20 "$work/ldd.txt"
fi

# b. kernels check with the bundled NVRTC 12.9.
say "b. streamfuse kernels check with the bundled NVRTC 12.9 (STREAMFUSE_NVRTC) in $image"
rc=0
crun "$image" bash -c '
        /bundle/run.sh --unpack /tmp/u >/dev/null || exit 90
        export STREAMFUSE_NVRTC=/tmp/u/nvrtc/libnvrtc.so.12 LD_LIBRARY_PATH=/tmp/u/nvrtc STREAMFUSE_CACHE_DIR=/tmp/cache
        /tmp/u/streamfuse kernels check --json' >"$work/check.json" 2>"$work/check.err" || rc=$?
if why=$(python3 - "$work/check.json" "$rc" 2>&1 <<'EOF'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
lines = [l for l in open(path) if l.strip().startswith("{")]
if not lines:
    sys.exit(f"exit {rc}, no JSON report")
r = json.loads(lines[-1])
want = ["compute_70", "compute_72", "compute_87", "compute_90"]
by_source = {}
for row in r["results"]:
    by_source.setdefault(row["source"], set()).add(row["arch"])
errors = []
if rc != 0:
    errors.append(f"exit {rc}")
if not str(r.get("nvrtc", "")).startswith("12.9"):
    errors.append(f"NVRTC {r.get('nvrtc')}, not 12.9")
if r.get("failed") != 0:
    errors.append(f"{r.get('failed')} failed: " + "; ".join(f"{x['source']} {x['arch']}: {x['detail'][:200]}" for x in r["results"] if not x["ok"])[:600])
missing = {s: sorted(set(want) - a) for s, a in by_source.items() if set(want) - a}
if missing:
    errors.append(f"not compiled for every architecture: {missing}")
if r.get("skipped"):
    errors.append(f"skipped {r['skipped']}")
if len(by_source) < 5:
    errors.append(f"only {len(by_source)} sources")
if errors:
    sys.exit("; ".join(errors))
print(f"NVRTC {r['nvrtc']}: {len(by_source)} sources x {len(want)} architectures = {len(r['results'])} compilations, 0 failed, exit 0")
EOF
); then
    pass "b. kernels check: $why"
else
    fail "b. kernels check with the bundled NVRTC: $why"
    tail -n 5 "$work/check.err"
fi

# c. run.sh as a whole: the clean "no CUDA device" outcome.
say "c. run.sh as a whole in $image (no GPU: expect a clean \"no CUDA device\" report)"
cname=streamfuse-bundle-check-$$
rc=0
# b compiled every kernel for the four architectures with the same NVRTC:
# run.sh's own kernels check here compiles for one, and its runs are 30
# frames (the outcome, not the rate, is what this checks).
frames=30
timeout 600 docker run --rm --name "$cname" --network none --user "$(id -u):$(id -g)" -e HOME=/tmp \
    -e STREAMFUSE_BUNDLE_LOGS=/logs -e STREAMFUSE_BUNDLE_FRAMES=$frames -e STREAMFUSE_CHECK_ARCH=compute_70 \
    -v "$work/logs:/logs" -v "$bundle:/bundle:ro" \
    "$image" /bundle/run.sh >"$work/run.out" 2>&1 || rc=$?
docker rm -f "$cname" >/dev/null 2>&1 || true
cname=
sed -n '/^##### report/,$p' "$work/run.out"
log=$(ls "$work/logs"/run-*.log 2>/dev/null | head -n 1 || true)
checks=(
    "exit status non-zero (got $rc)|[ $rc != 0 ] && [ $rc != 124 ]"
    "a log written to logs/run-<UTC>.log|[ -n \"$log\" ] && [ -s \"$log\" ]"
    "the report reached, saying \"no CUDA device\"|grep -q '^RESULT: FAIL: no CUDA device' \"$work/run.out\""
    "the GPU line (nvidia-smi absent)|grep -q '^GPU: *nvidia-smi not found' \"$work/run.out\""
    "pass A's kernels check (bundled NVRTC 12.9) ok|grep -q '^| A: kernels check | ok' \"$work/run.out\" && grep -q '^pass A: *bundled NVRTC: NVRTC 12\\.9' \"$work/run.out\""
    "the CUDA runs fail cleanly (no CUDA driver)|[ \$(grep -c '^| A: run .* --device cuda | FAIL (exit 1' \"$work/run.out\") = 2 ] && grep -q 'no CUDA driver (libcuda.so)' \"$work/run.out\""
    "the CPU runs in the table (thesis and cnn, $frames frames)|[ \$(grep -cE '^\\| (thesis|cnn) \\| cpu \\(pass A\\) \\| $frames \\|' \"$work/run.out\") = 2 ]"
    "pass B skipped (no NVRTC in the root)|grep -q '^pass B: *skipped: no NVRTC' \"$work/run.out\""
    "no \"panicked\" in the output or the log|! grep -qi panicked \"$work/run.out\" ${log:+\"$log\"}"
)
for c in "${checks[@]}"; do
    if bash -c "${c#*|}"; then pass "c. ${c%%|*}"; else fail "c. ${c%%|*}"; fi
done
if [ "$fails" != 0 ]; then
    echo "--- run.sh output (last 60 lines):"
    tail -n 60 "$work/run.out"
fi

if [ "$fails" = 0 ]; then
    echo "PASS bundle check: all assertions held"
else
    echo "FAIL bundle check: $fails assertion(s) failed"
    exit 1
fi
