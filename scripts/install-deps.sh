#!/usr/bin/env bash
# Installs the system packages the `opencv` feature needs: OpenCV's headers
# and libraries (the `opencv` feature of the streamfuse crate), and clang
# with libclang, which the `opencv` crate's build script uses to generate
# its bindings. Idempotent: runs apt-get only when a package is missing,
# through sudo when not root. Debian/Ubuntu only; elsewhere it says what
# to install and fails.
#
#   scripts/install-deps.sh            # install what is missing
#   scripts/install-deps.sh --check    # exit 1 (and list them) when some are missing
set -euo pipefail

PACKAGES=(libopencv-dev clang libclang-dev pkg-config)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    echo "missing system packages: ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: no apt-get here; install ${missing[*]} (OpenCV 4 development files, clang, libclang, pkg-config)," >&2
    echo "or build without OpenCV (the default): cargo build -p streamfuse" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-deps: not root and no sudo; install ${missing[*]} as root" >&2
        exit 1
    fi
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
