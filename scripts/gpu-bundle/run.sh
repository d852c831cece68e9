#!/usr/bin/env bash
# streamfuse GPU bundle: checks and measures the CUDA backend on this
# machine. Needs only bash, coreutils, python3 and an NVIDIA driver (no
# Rust, pip, network, CUDA toolkit or zstd). Written by
# scripts/gpu-bundle.sh from scripts/gpu-bundle/run.sh.
#
#   ./run.sh               the whole check (about 6 minutes at most)
#   ./run.sh --unpack DIR  only unpack the binaries and NVRTC 12.9 into DIR
#
# Two passes, each step under `timeout`, going on after a failed step:
#   A  the bundled NVRTC 12.9 (STREAMFUSE_NVRTC=<unpacked>/libnvrtc.so.12)
#   B  this machine's own NVRTC, found where the runtime looks for it (the
#      loader's cache, LD_LIBRARY_PATH, /usr/local/cuda*/lib64, pip wheels);
#      skipped, saying why, when there is none
# Steps of a pass:
#   1. streamfuse kernels check      NVRTC compiles every kernel
#   2. suite cuda_device             the device tests against the CPU backend
#   3. cuda_bench                    short criterion runs of the CUDA kernels
#   4. streamfuse run thesis (--placement SSSS) and cnn (--placement LLLL),
#      --frames 300 (STREAMFUSE_BUNDLE_FRAMES) --device cuda; the same with
#      --device cpu in pass A
#      (the CPU does not use NVRTC)
# then one table of the runs (spec | device | frames | fps | p50 ms | digest).
#
# Log: logs/run-<UTC>.log beside this script ($STREAMFUSE_BUNDLE_LOGS
# instead when set; a temporary folder when this folder is read-only).
# Environment: STREAMFUSE_CHECK_ARCH (e.g. compute_90) limits `kernels
# check` to those architectures; STREAMFUSE_BUNDLE_FRAMES (default 300)
# sets the frames of each run; STREAMFUSE_BUNDLE_BUDGET_S (default 345)
# bounds the whole run in seconds.
# Exit status: 0 when every step passed; 1 when any failed, "no CUDA
# device" included.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BINARIES=(streamfuse suite cuda_bench)
NVRTC_TAR=nvrtc-12.9.tar.xz

# Copies (or, for NAME.xz, decompresses with python3) the binaries into
# $1/ and unpacks the bundled NVRTC into $1/nvrtc/.
unpack() {
    local dst=$1 b
    mkdir -p "$dst/nvrtc" || return 1
    for b in "${BINARIES[@]}"; do
        if [ -f "$here/$b" ]; then
            cp "$here/$b" "$dst/$b" || return 1
        elif [ -f "$here/$b.xz" ]; then
            python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as s, open(sys.argv[2], "wb") as d:
    shutil.copyfileobj(s, d, 1 << 20)' "$here/$b.xz" "$dst/$b" || return 1
        else
            echo "error: neither $b nor $b.xz is in $here" >&2
            return 1
        fi
        chmod 755 "$dst/$b"
    done
    python3 -c 'import sys, tarfile
kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
with tarfile.open(sys.argv[1], "r:xz") as t:
    t.extractall(sys.argv[2], **kw)' "$here/$NVRTC_TAR" "$dst/nvrtc" || return 1
    [ -f "$dst/nvrtc/libnvrtc.so.12" ] || { echo "error: $NVRTC_TAR holds no libnvrtc.so.12" >&2; return 1; }
}

if [ "${1:-}" = --unpack ]; then
    [ $# = 2 ] || { echo "usage: $0 --unpack DIR" >&2; exit 2; }
    unpack "$2" || exit 1
    d=$(cd "$2" && pwd)
    echo "unpacked into $d; to use the bundled NVRTC:"
    echo "  export STREAMFUSE_NVRTC=$d/nvrtc/libnvrtc.so.12 LD_LIBRARY_PATH=$d/nvrtc\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    exit 0
fi
[ $# = 0 ] || { echo "usage: $0 [--unpack DIR]" >&2; exit 2; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
logdir=${STREAMFUSE_BUNDLE_LOGS:-$here/logs}
if ! { mkdir -p "$logdir" && : >"$logdir/run-$stamp.log"; } 2>/dev/null; then
    echo "note: $logdir is not writable; the log goes to a temporary folder"
    logdir=${TMPDIR:-/tmp}/streamfuse-bundle-logs
    mkdir -p "$logdir" && : >"$logdir/run-$stamp.log" || { echo "error: cannot write a log in $logdir" >&2; exit 1; }
fi
log=$logdir/run-$stamp.log

# --- Steps: each under `timeout`, recorded, never stopping the run.
NAMES=()
RESULTS=()
record() { NAMES+=("$1"); RESULTS+=("$2"); printf -- '--- %s: %s\n' "$1" "$2"; }

# step NAME LIMIT_S [--need REGEX] [--refuse REGEX] CMD...
# Runs CMD under `timeout` (LIMIT_S, or less when the run's budget is
# nearly spent), its output to the log and to $work/last.out; the step
# fails on a non-zero exit, on output without REGEX (--need) or with one
# (--refuse).
step() {
    local name=$1 limit=$2 need='' refuse='' left t rc t0
    shift 2
    while :; do
        case "${1:-}" in
            --need) need=$2; shift 2 ;;
            --refuse) refuse=$2; shift 2 ;;
            *) break ;;
        esac
    done
    left=$((deadline - SECONDS))
    t=$((limit < left ? limit : left))
    printf '\n=== %s\n$ %s\n' "$name" "$*"
    if [ "$t" -lt 5 ]; then
        : >"$work/last.out"
        record "$name" "FAIL (not run: the run's ${BUDGET_S} s are spent)"
        return 1
    fi
    t0=$SECONDS
    timeout -k 5 "$t" "$@" </dev/null 2>&1 | tee "$work/last.out"
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        record "$name" "FAIL (timed out after ${t} s)"
        return 1
    elif [ "$rc" != 0 ]; then
        record "$name" "FAIL (exit $rc, $((SECONDS - t0)) s)"
        return 1
    elif [ -n "$need" ] && ! grep -Eq -- "$need" "$work/last.out"; then
        record "$name" "FAIL (exit 0 but no output matching /$need/)"
        return 1
    elif [ -n "$refuse" ] && grep -Eq -- "$refuse" "$work/last.out"; then
        record "$name" "FAIL (exit 0 but: $(grep -Em1 -- "$refuse" "$work/last.out" | cut -c1-100))"
        return 1
    fi
    record "$name" "ok ($((SECONDS - t0)) s)"
}

# A CUDA device through the driver API (python3 ctypes): prints
# `api=MAJOR.MINOR` (the driver's CUDA version) when libcuda loads, then
# `ok=N device(s)` or `no=REASON`.
PROBE_CUDA_PY='
import ctypes, sys
lib = None
for name in ("libcuda.so.1", "libcuda.so"):
    try:
        lib = ctypes.CDLL(name)
        break
    except OSError:
        pass
if lib is None:
    print("no=no CUDA driver (libcuda.so) on this machine")
    sys.exit(0)
v = ctypes.c_int(0)
if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
    print(f"api={v.value // 1000}.{v.value % 1000 // 10}")
r = lib.cuInit(0)
if r != 0:
    print(f"no=cuInit failed (CUresult {r}; 100: no device)")
    sys.exit(0)
n = ctypes.c_int(0)
r = lib.cuDeviceGetCount(ctypes.byref(n))
if r != 0 or n.value == 0:
    print(f"no=the driver reports no device (CUresult {r}, count {n.value})")
else:
    print(f"ok={n.value} device(s)")
'

# This machine's NVRTC libraries, where the runtime looks for them: prints
# one line per library (path and whether its builtins lie beside it);
# exits 1 when there is none.
find_nvrtc() {
    python3 - <<'EOF'
import glob, os, re, subprocess, sys
pat = re.compile(r"^libnvrtc\.so\.\d+(\.\d+)*$")
dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
for cuda in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*")) + ["/opt/cuda"]:
    dirs.append(cuda + "/lib64")
    dirs += sorted(glob.glob(cuda + "/targets/*/lib"))
dirs += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"]
roots = []
if os.environ.get("VIRTUAL_ENV"):
    roots.append(os.environ["VIRTUAL_ENV"] + "/lib")
if os.environ.get("HOME"):
    roots.append(os.environ["HOME"] + "/.local/lib")
roots += ["/usr/local/lib", "/usr/lib"]
for r in roots:
    for py in sorted(glob.glob(r + "/python3*")):
        for site in ("site-packages", "dist-packages"):
            for sub in ("cuda_nvrtc", "cu13", "cu12"):
                dirs.append(f"{py}/{site}/nvidia/{sub}/lib")
paths = []
for d in dirs:
    try:
        names = sorted(os.listdir(d))
    except OSError:
        continue
    paths += [os.path.join(d, n) for n in names if pat.match(n)]
try:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
except OSError:
    out = ""
for line in out.splitlines():
    if "libnvrtc.so." in line and "=>" in line:
        paths.append(line.split("=>", 1)[1].strip())
seen = set()
for p in paths:
    real = os.path.realpath(p)
    if real in seen or not os.path.isfile(real):
        continue
    seen.add(real)
    d = os.path.dirname(p)
    builtins = sorted(n for n in os.listdir(d) if n.startswith("libnvrtc-builtins.so."))
    print(f"  {p}" + (f" -> {real}" if real != p else "") + f"   (builtins beside it: {', '.join(builtins) or 'none'})")
sys.exit(0 if seen else 1)
EOF
}

# One pass: the kernels check, the device tests, the benches and the runs.
# $1: the pass's letter; $2: 1 to add the CPU runs.
run_pass() {
    local p=$1 with_cpu=$2 spec dev placement
    step "$p: kernels check" 120 "$bin/streamfuse" kernels check ${STREAMFUSE_CHECK_ARCH:+--arch "$STREAMFUSE_CHECK_ARCH"}
    NVRTC_LINE[$p]=$(head -n 1 "$work/last.out")
    if [ -n "$cuda_ok" ]; then
        step "$p: cuda_device tests" 120 --need 'test result: ok\. [1-9]' \
            env STREAMFUSE_REQUIRE_CUDA=1 "$bin/suite" cuda_device --nocapture
        step "$p: cuda bench" 150 --refuse 'SKIPPED' \
            "$bin/cuda_bench" --bench --noplot --warm-up-time 0.3 --measurement-time 1 --sample-size 10
    else
        record "$p: cuda_device tests" "FAIL (not run: no CUDA device)"
        record "$p: cuda bench" "FAIL (not run: no CUDA device)"
    fi
    for spec in thesis cnn; do
        placement=SSSS
        [ "$spec" = cnn ] && placement=LLLL
        for dev in cuda cpu; do
            [ "$dev" = cpu ] && [ "$with_cpu" != 1 ] && continue
            step "$p: run $spec --device $dev" 90 --need '^\{' \
                "$bin/streamfuse" run "$here/specs/$spec.yaml" --frames "${STREAMFUSE_BUNDLE_FRAMES:-300}" --placement "$placement" --device "$dev" --json
            cp "$work/last.out" "$work/runs/$p-$spec-$dev.out"
        done
    done
}

main() {
    BUDGET_S=${STREAMFUSE_BUNDLE_BUDGET_S:-345}
    local start=$SECONDS
    deadline=$((start + BUDGET_S))
    work=$(mktemp -d "${TMPDIR:-/tmp}/streamfuse-bundle.XXXXXX") || exit 1
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/runs"
    bin=$work/bin
    declare -gA NVRTC_LINE=()
    local orig_ld=${LD_LIBRARY_PATH-} had_ld=${LD_LIBRARY_PATH+1} kv gpu driver api='' why='' failed=0 i

    echo "== streamfuse GPU bundle, $stamp (UTC)"
    echo "bundle: $here ($(head -n 1 "$here/README.txt" 2>/dev/null))"
    echo "log:    $log"
    echo "host:   $(uname -srm); $(python3 --version 2>&1)"
    if command -v nvidia-smi >/dev/null; then
        gpu=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>&1)
        echo "GPU:    ${gpu//$'\n'/; }"
        driver=$(timeout 30 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
    else
        echo "GPU:    nvidia-smi not found"
        driver=''
    fi
    if [ -z "$driver" ] && [ -r /proc/driver/nvidia/version ]; then
        driver=$(head -n 1 /proc/driver/nvidia/version)
    fi
    while IFS= read -r kv; do
        case "$kv" in
            api=*) api=${kv#api=} ;;
            ok=*) cuda_ok=${kv#ok=} ;;
            no=*) why=${kv#no=} ;;
        esac
    done < <(timeout 60 python3 -c "$PROBE_CUDA_PY" 2>&1)
    echo "driver: ${driver:-none}${api:+ (CUDA $api driver API)}"
    if [ -n "${cuda_ok:-}" ]; then
        echo "CUDA:   $cuda_ok"
    else
        cuda_ok=''
        echo "CUDA:   no CUDA device: ${why:-the driver probe failed}"
    fi

    step "bundle: MANIFEST sha256" 60 bash -c 'cd "$1" && sha256sum --quiet -c MANIFEST' _ "$here"
    if ! step "bundle: unpack binaries and NVRTC 12.9" 120 bash "$here/run.sh" --unpack "$bin"; then
        echo "the bundle cannot be unpacked: nothing else can run"
    else
        # Pass A: the bundled NVRTC 12.9, also on LD_LIBRARY_PATH (harmless
        # where the runtime loads STREAMFUSE_NVRTC alone).
        printf '\n##### pass A: the bundled NVRTC 12.9 (%s)\n' "$bin/nvrtc/libnvrtc.so.12"
        export STREAMFUSE_NVRTC=$bin/nvrtc/libnvrtc.so.12
        export LD_LIBRARY_PATH=$bin/nvrtc${orig_ld:+:$orig_ld}
        export STREAMFUSE_CACHE_DIR=$work/cache-A
        # Pass B keeps at least a third of the budget.
        local final=$deadline
        deadline=$((start + BUDGET_S * 2 / 3))
        run_pass A 1
        deadline=$final

        # Pass B: this machine's NVRTC, found by the runtime itself.
        unset STREAMFUSE_NVRTC
        if [ -n "$had_ld" ]; then export LD_LIBRARY_PATH=$orig_ld; else unset LD_LIBRARY_PATH; fi
        export STREAMFUSE_CACHE_DIR=$work/cache-B
        printf '\n##### pass B: this machine'\''s own NVRTC\n'
        if find_nvrtc; then
            run_pass B 0
        else
            PASS_B_SKIPPED="no NVRTC on this machine (looked in: ldconfig -p, LD_LIBRARY_PATH, /usr/local/cuda*/lib64 and targets/*/lib, /opt/cuda, the system library folders, pip wheels nvidia/{cuda_nvrtc,cu13,cu12}/lib)"
            echo "pass B skipped: $PASS_B_SKIPPED"
        fi
    fi

    printf '\n##### report\n\n'
    echo "GPU:     ${gpu:-nvidia-smi not found}"
    echo "driver:  ${driver:-none}${api:+ (CUDA $api driver API)}"
    echo "pass A:  bundled NVRTC: ${NVRTC_LINE[A]:-not run}"
    if [ -n "${PASS_B_SKIPPED:-}" ]; then
        echo "pass B:  skipped: $PASS_B_SKIPPED"
    else
        echo "pass B:  this machine's NVRTC: ${NVRTC_LINE[B]:-not run}"
    fi
    printf '\n| step | result |\n|---|---|\n'
    for i in "${!NAMES[@]}"; do
        printf '| %s | %s |\n' "${NAMES[$i]}" "${RESULTS[$i]}"
        case "${RESULTS[$i]}" in ok*) ;; *) failed=$((failed + 1)) ;; esac
    done
    echo
    python3 - "$work/runs" <<'EOF'
import json, os, sys
d = sys.argv[1]
rows = []
for name in os.listdir(d):
    p, spec, dev = name[: -len(".out")].split("-")
    lines = [l.strip() for l in open(os.path.join(d, name), errors="replace") if l.strip()]
    j = None
    for l in reversed(lines):
        if l.startswith("{"):
            try:
                j = json.loads(l)
                break
            except ValueError:
                pass
    order = ["thesis", "cnn"].index(spec) if spec in ("thesis", "cnn") else 9
    rows.append(((order, dev != "cuda", p), spec, dev, p, j, lines))
print("| spec | device | frames | fps | p50 ms | digest |")
print("|---|---|---:|---:|---:|---|")
digests = {}
for _, spec, dev, p, j, lines in sorted(rows, key=lambda r: r[0]):
    if j is None:
        why = lines[-1][:120].replace("|", "/") if lines else "not run"
        print(f"| {spec} | {dev} (pass {p}) | - | - | - | failed: {why} |")
        continue
    dg = j.get("output_digest") or "-"
    digests.setdefault(spec, []).append((dev, p, dg))
    p50 = (j.get("latency_ms") or {}).get("p50")
    print(f"| {spec} | {j.get('device', dev)} (pass {p}) | {j.get('frames')} | {j.get('fps', 0):.1f} "
          f"| {'-' if p50 is None else format(p50, '.3f')} | {dg[:23]} |")
notes = []
for spec, runs in digests.items():
    cpu = [dg for dev, _, dg in runs if dev == "cpu"]
    for dev, p, dg in runs:
        if dev == "cuda" and cpu:
            notes.append(f"{spec}: the CUDA run of pass {p} {'matches' if dg == cpu[0] else 'differs from'} the CPU run's digest")
if notes:
    print("\n" + "\n".join(notes))
EOF
    echo
    if [ -z "$cuda_ok" ]; then
        echo "RESULT: FAIL: no CUDA device (${why:-the driver probe failed}); $failed of ${#NAMES[@]} steps failed"
    elif [ "$failed" -gt 0 ]; then
        echo "RESULT: FAIL: $failed of ${#NAMES[@]} steps failed"
    else
        echo "RESULT: PASS: all ${#NAMES[@]} steps passed"
    fi
    echo "log: $log"
    [ "$failed" = 0 ] && [ -n "$cuda_ok" ]
}

main 2>&1 | tee -a "$log"
exit "${PIPESTATUS[0]}"
