# Sourced by the test scripts: makes NVRTC 12.9 and ptxas (PyPI wheels
# nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvcc-cu12) available without any
# CUDA installation, in .venv/cuda. Sets:
#   LD_LIBRARY_PATH  with the wheel's libnvrtc.so.12 (cudarc loads it at run time)
#   PTXAS            the wheel's ptxas
# Returns non-zero, with the reason in SF_CUDA_WHY, when they cannot be
# installed. Call it directly (not in $(...): the exports must reach the caller).
# CUDA 13 dropped sm_70/sm_72 (Titan V, Xavier): stay on 12.x.

SF_CUDA_VENV="${SF_CUDA_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/cuda}"
SF_CUDA_PINS="nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86"

# sf_venv DIR PINS: a venv at DIR with PINS installed (made again when the
# pins change); sets SF_SITE to its site-packages. Returns non-zero, with the
# reason in SF_CUDA_WHY.
sf_venv() {
    local dir=$1 pins=$2
    if [ ! -f "$dir/.pins" ] || [ "$(cat "$dir/.pins")" != "$pins" ]; then
        rm -rf "$dir"
        python3 -m venv "$dir" >/dev/null 2>&1 \
            && "$dir/bin/pip" install -q $pins >/dev/null 2>&1 \
            && echo "$pins" >"$dir/.pins" \
            || { SF_CUDA_WHY="cannot install $pins from PyPI"; return 1; }
    fi
    SF_SITE=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
        || { SF_CUDA_WHY="the venv $dir is broken"; return 1; }
}

sf_cuda_tools() {
    sf_venv "$SF_CUDA_VENV" "$SF_CUDA_PINS" || return 1
    export LD_LIBRARY_PATH="$SF_SITE/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PTXAS="$SF_SITE/nvidia/cuda_nvcc/bin/ptxas"
    [ -x "$PTXAS" ] || { SF_CUDA_WHY="ptxas not found in $SF_SITE/nvidia/cuda_nvcc/bin"; return 1; }
}

# NVRTC 13 (PyPI wheel nvidia-cuda-nvrtc 13.x) in .venv/nvrtc13, for the
# check that the runtime finds and uses it by path: sets SF_NVRTC13 to its
# libnvrtc.so.13. Returns non-zero, with the reason in SF_CUDA_WHY.
SF_NVRTC13_VENV="${SF_NVRTC13_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/nvrtc13}"
SF_NVRTC13_PINS="nvidia-cuda-nvrtc==13.0.88"

sf_nvrtc13() {
    sf_venv "$SF_NVRTC13_VENV" "$SF_NVRTC13_PINS" || return 1
    SF_NVRTC13="$SF_SITE/nvidia/cu13/lib/libnvrtc.so.13"
    [ -f "$SF_NVRTC13" ] || { SF_CUDA_WHY="libnvrtc.so.13 not found in $SF_SITE/nvidia/cu13/lib"; return 1; }
}
