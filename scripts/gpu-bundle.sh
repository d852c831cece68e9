#!/usr/bin/env bash
# Writes the GPU bundle: one folder that checks and measures the CUDA
# backend on a machine with only an NVIDIA driver, bash, coreutils and
# python3 (no Rust, pip, network, CUDA toolkit or zstd) with `DIR/run.sh`.
#
#   scripts/gpu-bundle.sh DIR
#   scripts/gpu-bundle.sh --build-only   only build the three binaries (the
#                                        test command builds them ahead)
#
# DIR (at most 50 MiB: the script fails, printing the sizes, when larger):
#   streamfuse          the CLI, default features (no OpenCV), stripped
#   suite               the kernels crate's integration tests (`tests/suite`),
#                       run there with the filter `cuda_device`, stripped
#   cuda_bench          the criterion bench `benches/benches/cuda.rs`, stripped
#                       (the three as NAME.xz when the folder would otherwise
#                       exceed 50 MiB; run.sh unpacks them with python3)
#   nvrtc-12.9.tar.xz   libnvrtc.so.12 and libnvrtc-builtins.so.12.9 from the
#                       PyPI wheel nvidia-cuda-nvrtc-cu12 (scripts/cuda-tools.sh)
#   specs/              examples/thesis.yaml and examples/cnn.yaml, with any
#                       files they reference
#   run.sh              from scripts/gpu-bundle/run.sh
#   README.txt, MANIFEST (sha256 of every file), logs/ (run.sh's logs)
# Built with `--profile quick` (release without LTO) when Cargo.toml has that
# profile (or `--profile $STREAMFUSE_BUNDLE_PROFILE`: the test command packs its
# own `ci` build), else `--release`. DIR must be absent, empty, or a bundle written
# before (replaced; its logs/ are kept). The compressed NVRTC is cached in
# target/gpu-bundle-cache/ by the libraries' sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[ $# = 1 ] && [ -n "$1" ] || { echo "usage: $0 DIR | --build-only" >&2; exit 2; }
build_only=
[ "$1" = --build-only ] && build_only=1
out=$1
LIMIT=$((50 * 1024 * 1024))
say() { printf '==> gpu-bundle: %s\n' "$*"; }
die() { printf 'error: gpu-bundle: %s\n' "$*" >&2; exit 1; }

if [ -z "$build_only" ]; then
    if [ -e "$out" ] && [ ! -d "$out" ]; then
        die "$out exists and is not a folder"
    fi
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    if [ -n "$(ls -A "$out")" ]; then
        [ -f "$out/MANIFEST" ] || die "$out is neither empty nor a bundle written before (no MANIFEST): not touching it"
        find "$out" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
    fi
fi

if [ -n "${STREAMFUSE_BUNDLE_PROFILE:-}" ]; then
    # The container check of the test command packs the test command's own
    # `ci` build: it checks the packaging, not the speed.
    profile=(--profile "$STREAMFUSE_BUNDLE_PROFILE")
    profile_name=$STREAMFUSE_BUNDLE_PROFILE
elif grep -q '^\[profile\.quick\]' Cargo.toml; then
    profile=(--profile quick)
    profile_name=quick
else
    profile=(--release)
    profile_name=release
fi
# xz preset of NVRTC and the binaries: 9 (smallest); the test command's
# container check takes 1 (NVRTC in 6 s instead of 37 s at 6, 15 % larger;
# still under the 50 MiB limit, so the preset-9 bundle is too).
xz_level=${STREAMFUSE_BUNDLE_XZ:-9}
case "$xz_level" in [0-9]) ;; *) die "STREAMFUSE_BUNDLE_XZ must be 0-9, not $xz_level" ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# xz_to SRC DST: DST is SRC compressed as .xz, preset $xz_level (xz, else
# python3's lzma; -9e saves 0.1% of NVRTC's size for more time).
xz_to() {
    if command -v xz >/dev/null; then
        xz "-$xz_level" -T0 -c "$1" >"$2"
    else
        python3 -c 'import lzma, shutil, sys
with open(sys.argv[1], "rb") as s, lzma.open(sys.argv[2], "wb", preset=int(sys.argv[3])) as d:
    shutil.copyfileobj(s, d, 1 << 20)' "$1" "$2" "$xz_level"
    fi
}

# The executable of the artifact named $1 of kind $2 in cargo's JSON ($3).
artifact() {
    python3 - "$@" <<'EOF'
import json, sys
name, kind, path = sys.argv[1:4]
exes = []
for line in open(path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == name and kind in m["target"]["kind"]:
        exes.append(m["executable"])
if not exes:
    sys.exit(f"cargo built no {kind} named {name}")
print(exes[-1])
EOF
}

say "building streamfuse, the kernels' test suite and the cuda bench (${profile[*]}, default features: no OpenCV)"
# One cargo invocation: one feature resolution for the three, so their
# dependencies are built once.
cargo build --locked "${profile[@]}" -p streamfuse --bin streamfuse \
    -p streamfuse-kernels --test suite -p streamfuse-benches --bench cuda \
    --message-format=json-render-diagnostics >"$work/build.json"
[ -n "$build_only" ] && exit 0
declare -A exe
exe[streamfuse]=$(artifact streamfuse bin "$work/build.json")
exe[suite]=$(artifact suite test "$work/build.json")
exe[cuda_bench]=$(artifact cuda bench "$work/build.json")

# No OpenCV, GStreamer or FFmpeg, and nothing missing.
for b in streamfuse suite cuda_bench; do
    libs=$(ldd "${exe[$b]}" 2>&1) || die "ldd ${exe[$b]} failed: $libs"
    if grep -Ei 'libopencv|libgst|gstreamer|libav(codec|format|util|device|filter)|libsw(scale|resample)|ffmpeg' <<<"$libs"; then
        die "$b (${exe[$b]}) links the libraries above; the bundle must not"
    fi
    if grep 'not found' <<<"$libs"; then
        die "$b (${exe[$b]}) needs libraries this machine lacks"
    fi
    strip --strip-all -o "$out/$b" "${exe[$b]}"
    chmod 755 "$out/$b"
done
say "binaries: $(for b in streamfuse suite cuda_bench; do printf '%s <- %s  ' "$b" "${exe[$b]#$root/}"; done)"

# NVRTC 12.9 from the PyPI wheel (the venv scripts/cuda-tools.sh keeps).
source scripts/cuda-tools.sh
sf_cuda_tools || die "$SF_CUDA_WHY"
site=$SF_SITE
nvdir=$site/nvidia/cuda_nvrtc/lib
mapfile -t libs < <(cd "$nvdir" && ls | grep -E '^libnvrtc\.so\.12(\.[0-9]+)*$' || true)
mapfile -t builtins < <(cd "$nvdir" && ls | grep -E '^libnvrtc-builtins\.so\.12\.9(\.[0-9]+)*$' || true)
[ "${#libs[@]}" = 1 ] || die "want one libnvrtc.so.12* in $nvdir, found: ${libs[*]:-none}"
[ "${#builtins[@]}" = 1 ] || die "want one libnvrtc-builtins.so.12.9* in $nvdir (is the wheel 12.9?), found: ${builtins[*]:-none}"
key=$(cd "$nvdir" && cat "${libs[0]}" "${builtins[0]}" | sha256sum | cut -c1-16)
cache=$root/target/gpu-bundle-cache/nvrtc-12.9-$key-xz$xz_level.tar.xz
if [ ! -f "$cache" ]; then
    say "packing NVRTC (${libs[0]}, ${builtins[0]}) with xz -$xz_level (-9: about 2 minutes), once (cached in ${cache#$root/})"
    mkdir -p "$(dirname "$cache")"
    # The library as libnvrtc.so.12 (the name STREAMFUSE_NVRTC points at),
    # the builtins under their own name (the one NVRTC loads).
    python3 - "$nvdir/${libs[0]}" "$nvdir/${builtins[0]}" "$work/nvrtc.tar" <<'EOF'
import os, sys, tarfile
lib, builtins, dst = sys.argv[1:4]
with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as t:
    for path, name in ((lib, "libnvrtc.so.12"), (builtins, os.path.basename(builtins))):
        info = t.gettarinfo(os.path.realpath(path), arcname=name)
        info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "root", "root"
        with open(os.path.realpath(path), "rb") as f:
            t.addfile(info, f)
EOF
    xz_to "$work/nvrtc.tar" "$cache.part"
    mv "$cache.part" "$cache"
fi
cp "$cache" "$out/nvrtc-12.9.tar.xz"
python3 - "$out/nvrtc-12.9.tar.xz" "${builtins[0]}" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1], "r:xz") as t:
    names = sorted(t.getnames())
want = sorted(["libnvrtc.so.12", sys.argv[2]])
if names != want:
    sys.exit(f"nvrtc-12.9.tar.xz holds {names}, not {want}")
EOF

# The specs run.sh runs, with any files they name next to them.
mkdir -p "$out/specs"
for spec in thesis cnn; do
    cp "examples/$spec.yaml" "$out/specs/"
    python3 - "examples/$spec.yaml" "$out/specs" <<'EOF'
import os, re, shutil, sys
spec, dst = sys.argv[1:3]
base = os.path.dirname(spec)
for tok in set(re.findall(r"[\w./-]+\.[A-Za-z0-9]{2,12}\b", open(spec).read())):
    src = os.path.normpath(os.path.join(base, tok))
    if os.path.isfile(src) and not tok.startswith(("/", "..")) and src != os.path.normpath(spec):
        os.makedirs(os.path.dirname(os.path.join(dst, tok)) or dst, exist_ok=True)
        shutil.copy2(src, os.path.join(dst, tok))
        print(f"  {spec} references {tok}: copied")
EOF
done

cp scripts/gpu-bundle/run.sh "$out/run.sh"
chmod 755 "$out/run.sh"
mkdir -p "$out/logs"
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
cat >"$out/README.txt" <<EOF
streamfuse GPU bundle, $commit, --profile $profile_name, $(date -u +%Y-%m-%dT%H:%MZ)
On a machine with an NVIDIA GPU and driver (needs only bash, coreutils and python3):
    ./run.sh
It prints the GPU and driver, then, with the bundled NVRTC 12.9 and again with the machine's own
NVRTC (when it has one): NVRTC compiles every kernel, the CUDA device tests, short CUDA benches and
thesis/cnn runs on CUDA and the CPU, and a table. Log: logs/run-<UTC>.log. Exit 0: every step passed.
Files: streamfuse, suite, cuda_bench (or NAME.xz), nvrtc-12.9.tar.xz, specs/, run.sh, MANIFEST (sha256).
EOF

# Within 50 MiB: the binaries as .xz when the plain ones do not fit.
total() { find "$out" -type f ! -path "$out/logs/*" -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
if [ "$(total)" -gt "$LIMIT" ]; then
    say "$(total) bytes > 50 MiB with plain binaries: packing them as .xz"
    for b in streamfuse suite cuda_bench; do
        xz_to "$out/$b" "$out/$b.xz"
        rm "$out/$b"
    done
fi

(cd "$out" && find . -type f ! -name MANIFEST ! -path './logs/*' | sed 's|^\./||' | LC_ALL=C sort \
    | while IFS= read -r f; do sha256sum "$f"; done >MANIFEST)

size=$(total)
printf '%12s  %s\n' "bytes" "file"
(cd "$out" && find . -type f ! -path './logs/*' | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
    printf '%12s  %s\n' "$(stat -c %s "$f")" "$f"
done)
printf '%12s  %s\n' "$size" "total ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB of at most 50)"
if [ "$size" -gt "$LIMIT" ]; then
    die "the bundle is $size bytes, over 50 MiB ($LIMIT bytes)"
fi
say "bundle in $out: run $out/run.sh on the GPU machine"
