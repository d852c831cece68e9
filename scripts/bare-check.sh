#!/usr/bin/env bash
# Proves the README's first command on a bare machine: a Debian 12 root with
# only gcc (the linker Rust needs) and this machine's Rust toolchain, no
# OpenCV, no clang, no C++ compiler, runs
#   cargo run --release -- run examples/thesis.yaml
# in a container on a fresh clone of HEAD. Needs root, Docker and
# debootstrap (apt-get install debootstrap); takes a few minutes (a release
# build). Not part of the test command, which installs OpenCV.
#
#   scripts/bare-check.sh [FRAMES]
set -euo pipefail
cd "$(dirname "$0")/.."
frames="${1:-300}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

toolchain=$(rustc --print sysroot)
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
image=streamfuse-bare:bookworm
if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "==> bare-check: building a minimal Debian 12 root (gcc, libc6-dev only)"
    debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates bookworm "$work/root" \
        http://deb.debian.org/debian >/dev/null
    tar -C "$work/root" -c . | docker import - "$image" >/dev/null
fi
git clone -q . "$work/src"
echo "==> bare-check: cargo run --release -- run examples/thesis.yaml --frames $frames (in $image)"
docker run --rm --network host \
    -v "$toolchain:$toolchain:ro" -v "$cargo_home/registry:/root/.cargo/registry" \
    -v "$work/src:/src" -w /src -e "PATH=$toolchain/bin:/usr/bin:/bin" -e CARGO_HOME=/root/.cargo \
    "$image" bash -c '
        set -e
        if ls /usr/lib/x86_64-linux-gnu | grep -qiE "opencv|libclang" || command -v clang || command -v c++; then
            echo "the root is not bare" >&2; exit 1
        fi
        cargo run --quiet --release -- run examples/thesis.yaml --frames '"$frames"' --json | tail -1
    ' | tee "$work/out.json"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); n=int(sys.argv[2]); assert j["frames"]==n, j; print("==> bare-check: passed,", j["frames"], "frames,", j["output_digest"])' "$work/out.json" "$frames"
