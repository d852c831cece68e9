#!/usr/bin/env python3
"""Time streamfuse's CPU kernels against CPU peers on the same pipeline.

The pipeline is "conv2d 3x3 -> ReLU -> 2x2 max-pool, stride 2 (floor mode)"
on float32 frames, in two workloads:

* ``thesis``: 1 input channel, conv 1->1, no padding, no bias
  (``examples/thesis.yaml``);
* ``cnn``: 3 input channels, conv 3->16, padding 1, with bias
  (``examples/cnn.yaml``).

Implementations, each timed in one run with the same thread count
(``--threads``, default 2):

1. ``streamfuse kernels bench SPEC --fusion kernel`` (one fused kernel);
2. the same with ``--fusion chain`` (conv, relu and pool as separate kernels);
3. OpenCV: ``cv2.filter2D`` per (output, input) channel pair (zero border),
   bias, ``np.maximum(x, 0)`` and a numpy 2x2 max-pool;
4. PyTorch eager: ``F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=p)), 2, 2)``
   under ``torch.inference_mode()``;
5. ONNX Runtime (CPU execution provider): a Conv -> Relu -> MaxPool model
   built in memory with ``onnx.helper``, graph optimisations on.

Every implementation runs ``--warmup`` untimed calls and then the timed calls
on one pre-generated input frame, a fresh output each call, and reports the
median ms per frame. The median is ``sorted(times)[n // 2]``, as
``streamfuse kernels bench`` computes it. streamfuse times its in-process
kernel calls only (no source, no sink), the same thing the Python side times.
The peers share one set of seeded weights per workload and are cross-checked
against each other (max abs difference <= 1e-4) before anything is timed;
streamfuse draws its own weights from the spec's seed, which does not change
the work a dense conv does.

Usage (from anywhere; paths are relative to the repository root)::

    python3 benches/compare/cpu_peers.py
    python3 benches/compare/cpu_peers.py --sizes 128x128,256x256 --iters 10
    python3 benches/compare/cpu_peers.py --csv bench-out/cpu_peers.csv

The markdown table goes to stdout; progress and installer output to stderr.

Installation
------------
The script installs its own Python packages into ``.venv/peers`` in the
repository root (git-ignored) and re-executes itself there. Versions are
pinned to ones checked to work together on Python 3.11 / x86_64 Linux with
only PyPI reachable. The install is skipped when the venv's stamp file shows
the same pins; ``--reinstall`` starts the venv afresh.

PyTorch needs care. PyPI's only Linux x86_64 ``torch`` wheel is the CUDA
build: the wheel itself (~540 MB) holds the CPU kernels (``libtorch_cpu.so``,
oneDNN and MKL inside) but its shared libraries are linked against CUDA 13
libraries that come as several GB of ``nvidia-*`` / ``cuda-*`` wheels
(cudart, cuBLAS, cuDNN, cuFFT, cuSPARSE, NCCL, NVSHMEM, ...) plus triton.
The CPU-only wheels live on PyTorch's own package index, which is not
reachable here (only PyPI is). What was tried:

* ``pip install --no-deps torch`` plus its pure-Python deps: installs in
  ~20 s, but ``import torch`` fails (``libcudart.so.13: cannot open shared
  object file``), since ``libtorch_global_deps.so``, ``libtorch_cuda.so`` and
  ``libtorch_python.so`` list those libraries as DT_NEEDED.
* An older torch: every torch on PyPI with Python 3.11 wheels (1.13 and
  later) links CUDA libraries shipped as separate ``nvidia-*`` wheels; the
  ones that bundled CUDA inside the wheel (1.12 and earlier) have no
  Python 3.11 wheels, and would be years-old kernels anyway.

What this script does (``--torch-install stub``, which the default
``auto`` picks when ``cc`` and ``readelf`` are on PATH): install
``torch --no-deps`` and its pure-Python deps, then generate tiny stand-in
shared libraries for the CUDA libraries that ``import torch`` needs but does
not find. The generator reads torch's own libraries with ``readelf``: which
SONAMEs are missing, which symbols (and symbol versions) torch imports from
each, and compiles one stub library per SONAME with the system C compiler
into ``.venv/peers/torch-cuda-stubs`` (5-10 s, ~400 KB). Stub
functions do nothing and return an error code ("no device" for the CUDA
runtime: ``cudaGetDeviceCount`` reports 0 devices), so
``torch.cuda.is_available()`` is False; the CUDA runtime's module
registration hooks (``__cudaRegister*``) are no-ops. The CPU operators time
the unmodified ``libtorch_cpu.so`` code, which never calls CUDA. The stub
directory is put on ``LD_LIBRARY_PATH`` for the re-executed Python only (not
for the streamfuse binary). Set ``CPU_PEERS_STUB_TRACE=1`` to log every call
into a stub on stderr: a whole run makes two, ``cudaGetLastError`` at import
and one ``cudaGetDeviceCount``. After installing, the script checks in a
subprocess that ``import torch`` works and ``F.conv2d`` gives the right
answer on a tiny input. A first install downloads ~650 MB and takes about a
minute; the venv is ~1.7 GB.

``--torch-install full`` instead installs ``torch`` with all its real CUDA
dependencies (several GB, minutes); ``auto`` falls back to it when ``cc`` or
``readelf`` is missing. Switching modes rebuilds the venv.

Timing caveat: run on an otherwise idle machine. Peers that use an OpenMP
team (PyTorch above all) stall for a scheduler slice whenever another process
takes one of their cores, which shows up as ~8 ms per call on a busy 2-core
machine. The report prints the load average and the measured busy share of
the CPUs just before the run, and warns when the CPUs were busy.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cuda_stubs import build_cuda_stubs  # this folder

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv" / "peers"
VENV_PY = VENV / "bin" / "python"
STUB_DIR = VENV / "torch-cuda-stubs"
STAMP = VENV / ".cpu_peers-stamp.json"
BOOTSTRAP_ENV = "CPU_PEERS_BOOTSTRAPPED"

# Verified together on CPython 3.11, x86_64 Linux (AVX-512 AMD EPYC).
PEER_PINS = [
    "numpy==2.4.6",
    "opencv-python-headless==5.0.0.93",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "protobuf==7.36.2",
    "flatbuffers==25.12.19",
    "packaging==26.3",
    "ml_dtypes==0.6.0",
]
# torch's own requirements, less the CUDA wheels (and setuptools, which only
# its C++-extension builder uses).
TORCH_PURE_DEPS = [
    "filelock==4.2.11",
    "typing-extensions==4.16.0",
    "sympy==1.14.0",
    "mpmath==1.3.0",
    "networkx==3.6.1",
    "jinja2==3.1.6",
    "MarkupSafe==3.0.4",
    "fsspec==2026.9.0",
]
TORCH_PIN = "torch==2.15.0"

ALL_SIZES = ["128x128", "256x256", "512x512", "1024x1024", "1280x720"]
IMPLS = ["sf-fused", "sf-chain", "opencv", "torch", "onnxruntime"]
IMPL_TITLES = {
    "sf-fused": "streamfuse fused",
    "sf-chain": "streamfuse unfused",
    "opencv": "OpenCV",
    "torch": "PyTorch",
    "onnxruntime": "ONNX Runtime",
}
PEERS = ["opencv", "torch", "onnxruntime"]
CHECK_SIZE = (37, 29)  # W x H for the cross-check: odd, so floor mode matters
CHECK_TOL = 1e-4


@dataclass(frozen=True)
class Workload:
    """One conv -> ReLU -> max-pool configuration."""

    name: str
    spec: str  # streamfuse spec, relative to the repo root
    cin: int
    cout: int
    pad: int
    bias: bool
    seed: int  # seed of the peers' weights and input


WORKLOADS = {
    "thesis": Workload("thesis", "examples/thesis.yaml", 1, 1, 0, False, 1),
    "cnn": Workload("cnn", "examples/cnn.yaml", 3, 16, 1, True, 2),
}


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    mean_ms: float
    iters: int


def log(msg: str) -> None:
    print(f"[cpu_peers] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_size(s: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", s.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r}, want WxH")
    w = int(m.group(1))
    h = int(m.group(2) or w)
    if w < 4 or h < 4:
        raise argparse.ArgumentTypeError(f"size {s!r} too small")
    return w, h


def comma_list(choices: list[str] | None = None):
    def parse(s: str) -> list[str]:
        items = [x.strip() for x in s.split(",") if x.strip()]
        if choices is not None:
            bad = [x for x in items if x not in choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(bad)}; choose from {', '.join(choices)}"
                )
        return items

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Time streamfuse's fused CPU kernel against OpenCV, "
        "PyTorch and ONNX Runtime on conv2d -> ReLU -> 2x2 max-pool.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--sizes", type=comma_list(), default=",".join(ALL_SIZES),
                    help="comma list of frame sizes WxH")
    ap.add_argument("--workloads", type=comma_list(list(WORKLOADS)),
                    default=",".join(WORKLOADS), help="comma list of workloads")
    ap.add_argument("--impls", type=comma_list(IMPLS), default=",".join(IMPLS),
                    help="comma list of implementations to time (sf-fused: "
                    "streamfuse --fusion kernel, sf-chain: --fusion chain)")
    ap.add_argument("--iters", type=int, default=30,
                    help="timed calls per measurement for frames up to "
                    "512x512; larger frames get proportionally fewer, "
                    "never under --min-iters")
    ap.add_argument("--min-iters", type=int, default=20,
                    help="floor of the scaled-down iteration count")
    ap.add_argument("--warmup", type=int, default=5,
                    help="untimed calls before the timed ones")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for every implementation")
    ap.add_argument("--binary", default="target/release/streamfuse",
                    help="streamfuse binary (relative to the repo root)")
    ap.add_argument("--csv", metavar="PATH", help="also write raw results here")
    ap.add_argument("--torch-install", choices=["stub", "full", "auto"],
                    default="auto",
                    help="stub: torch --no-deps plus generated CUDA stub "
                    "libraries; full: torch with its real CUDA wheels "
                    "(several GB); auto: stub when cc and readelf exist")
    ap.add_argument("--reinstall", action="store_true",
                    help="delete and rebuild .venv/peers first")
    args = ap.parse_args(argv)
    try:
        args.sizes = [parse_size(s) for s in args.sizes]
    except argparse.ArgumentTypeError as e:
        ap.error(f"argument --sizes: {e}")
    args.binary = Path(args.binary) if Path(args.binary).is_absolute() \
        else REPO / args.binary
    if any(i.startswith("sf-") for i in args.impls) \
            and not os.access(args.binary, os.X_OK):
        ap.error(f"no streamfuse binary at {args.binary}; build it with "
                 "`cargo build --release`, or pass --binary")
    if args.threads < 1 or args.iters < 1 or args.min_iters < 1 or args.warmup < 0:
        ap.error("--threads, --iters and --min-iters must be >= 1, --warmup >= 0")
    return args


def iters_for(args: argparse.Namespace, w: int, h: int) -> int:
    """--iters up to 512x512 pixels, proportionally fewer above (min floor)."""
    scaled = round(args.iters * (512 * 512) / (w * h))
    return max(min(args.iters, scaled), min(args.min_iters, args.iters))


# --------------------------------------------------------------------------
# Installation and re-exec into .venv/peers
# --------------------------------------------------------------------------


def resolve_torch_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    if shutil.which("cc") and shutil.which("readelf"):
        return "stub"
    log("no C compiler or readelf: installing torch with its real CUDA "
        "wheels (several GB)")
    return "full"


def wanted_stamp(torch_mode: str) -> dict:
    return {
        "python": sys.version.split()[0],
        "peers": PEER_PINS,
        "torch_deps": TORCH_PURE_DEPS,
        "torch": TORCH_PIN,
        "torch_mode": torch_mode,
        # Rebuild the stubs when their generator changes.
        "stub_generator": hashlib.sha256(
            inspect.getsource(build_cuda_stubs).encode()).hexdigest()[:16]
        if torch_mode == "stub" else None,
    }


def read_stamp() -> dict | None:
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None


def pip(*args: str) -> None:
    cmd = [str(VENV_PY), "-m", "pip", "--disable-pip-version-check",
           "install", "--progress-bar", "off", *args]
    log("$ " + " ".join(cmd[2:]))
    subprocess.run(cmd, check=True, stdout=sys.stderr)


def torch_env() -> dict[str, str]:
    """Environment for Python processes that import torch."""
    env = dict(os.environ)
    if STUB_DIR.is_dir():
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = str(STUB_DIR) + (":" + old if old else "")
    return env


def smoke_test_torch() -> None:
    code = (
        "import torch, torch.nn.functional as F\n"
        "x = torch.arange(16.).reshape(1, 1, 4, 4)\n"
        "w = torch.ones(1, 1, 3, 3)\n"
        "y = F.max_pool2d(F.relu(F.conv2d(x, w)), 2, 2)\n"
        "assert y.item() == 90.0, y\n"
        "assert not torch.cuda.is_available()\n"
        "print(torch.__version__)\n"
    )
    r = subprocess.run([str(VENV_PY), "-c", code], env=torch_env(),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(
            "cpu_peers: torch does not work in .venv/peers:\n" + r.stderr
            + "\nTry --reinstall, or --torch-install full.")
    log(f"torch {r.stdout.strip()} imports and runs conv2d on the CPU")


def ensure_venv(torch_mode: str, reinstall: bool) -> None:
    if reinstall and VENV.exists():
        log(f"removing {VENV}")
        shutil.rmtree(VENV)
    want = wanted_stamp(torch_mode)
    old = read_stamp()
    if VENV_PY.exists() and old == want:
        return
    if old and old.get("torch_mode") != torch_mode:
        # Stubs would shadow real CUDA wheels and vice versa: start afresh.
        log(f"torch install mode changed to {torch_mode}; removing {VENV}")
        shutil.rmtree(VENV)
    if not VENV_PY.exists():
        log(f"creating virtualenv {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    STAMP.unlink(missing_ok=True)
    t0 = time.monotonic()
    pip(*PEER_PINS, *TORCH_PURE_DEPS)
    if torch_mode == "stub":
        pip("--no-deps", TORCH_PIN)
        torch_dir = Path(subprocess.run(
            [str(VENV_PY), "-c",
             "import importlib.util as u; "
             "print(u.find_spec('torch').submodule_search_locations[0])"],
            check=True, capture_output=True, text=True).stdout.strip())
        build_cuda_stubs(torch_dir, STUB_DIR)
    else:
        shutil.rmtree(STUB_DIR, ignore_errors=True)
        pip(TORCH_PIN)
    smoke_test_torch()
    STAMP.write_text(json.dumps(want, indent=1) + "\n")
    log(f"install done in {time.monotonic() - t0:.0f} s")


def bootstrap(args: argparse.Namespace, argv: list[str]) -> None:
    """Install the peers if needed, then re-exec this script in the venv."""
    if (os.environ.get(BOOTSTRAP_ENV) == "1"
            and Path(sys.prefix).resolve() == VENV.resolve()):
        return
    ensure_venv(resolve_torch_mode(args.torch_install), args.reinstall)
    env = torch_env()
    env[BOOTSTRAP_ENV] = "1"
    argv = [a for a in argv if a != "--reinstall"]
    os.execve(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *argv],
              env)


# --------------------------------------------------------------------------
# Benchmark (runs inside .venv/peers)
# --------------------------------------------------------------------------


def machine_lines(threads: int) -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()
    busy = cpu_busy_fraction()
    lines = [
        f"- CPU: {model}, {os.cpu_count()} logical cores ({usable} usable)",
        f"- threads per implementation: {threads}",
        "- load average at start: " + " ".join(f"{x:.2f}" for x in load)
        + ("" if busy is None else f"; CPU busy over 1 s before the run: {busy:.0%}"),
    ]
    # The load average counts tasks in uninterruptible sleep too and lags by
    # minutes; the measured busy share of the CPUs is what disturbs timings.
    if busy is not None and busy > 0.25:
        lines.append("- **warning: the machine was busy; timings (OpenMP peers "
                     "above all) are unreliable. Re-run on an idle machine.**")
    return lines


def cpu_busy_fraction(interval: float = 1.0) -> float | None:
    """Share of all CPUs' time spent busy (not idle/iowait) over `interval`."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    a = sample()
    time.sleep(interval)
    b = sample()
    if a is None or b is None or b[0] == a[0]:
        return None
    return 1.0 - (b[1] - a[1]) / (b[0] - a[0])


def time_calls(fn, x, warmup: int, iters: int) -> Timing:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    return Timing(times[len(times) // 2], times[0], sum(times) / len(times), iters)


def run_streamfuse(binary: Path, wl: Workload, w: int, h: int, fusion: str,
                   threads: int, warmup: int, iters: int) -> tuple[Timing, dict]:
    cmd = [str(binary), "kernels", "bench", wl.spec, "--size", f"{w}x{h}",
           "--fusion", fusion, "--threads", str(threads), "--warmup",
           str(warmup), "--iters", str(iters), "--json"]
    env = dict(os.environ)
    # The CUDA stubs are for torch only.
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in env.get("LD_LIBRARY_PATH", "").split(":")
        if p and Path(p) != STUB_DIR)
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"cpu_peers: {' '.join(cmd)} failed:\n{r.stderr}")
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
    j = json.loads(line)
    if j.get("size") != f"{w}x{h}" or j.get("channels") != wl.cin:
        raise SystemExit(f"cpu_peers: streamfuse benched {j.get('size')} x "
                         f"{j.get('channels')} channels, wanted {w}x{h} x {wl.cin}")
    if j.get("threads") != threads:
        log(f"warning: streamfuse ran {j.get('threads')} threads, asked {threads}")
    return Timing(j["median_ms"], j["min_ms"], j["mean_ms"], j["iters"]), j


class Peers:
    """The Python peers; heavy imports happen here, inside the venv."""

    def __init__(self, threads: int) -> None:
        import cv2
        import numpy as np
        import onnx
        import onnxruntime as ort
        import torch
        import torch.nn.functional as F

        self.np, self.cv2, self.torch, self.F = np, cv2, torch, F
        self.onnx, self.ort = onnx, ort
        self.threads = threads
        cv2.setNumThreads(threads)
        torch.set_num_threads(threads)

    def versions(self) -> list[str]:
        np, cv2, torch, onnx, ort = self.np, self.cv2, self.torch, self.onnx, self.ort
        dnn = re.search(r"MKL-DNN v([\w.]+)", torch.__config__.show())
        torch_note = f"oneDNN {dnn.group(1)}, " if dnn else ""
        torch_note += ("CUDA libraries stubbed" if STUB_DIR.is_dir()
                       else "CPU execution")
        return [
            f"- Python {sys.version.split()[0]}, numpy {np.__version__}",
            f"- OpenCV {cv2.__version__} (opencv-python-headless), "
            f"cv2.getNumThreads() = {cv2.getNumThreads()}",
            f"- PyTorch {torch.__version__} ({torch_note}), "
            f"torch.get_num_threads() = {torch.get_num_threads()}",
            f"- ONNX Runtime {ort.__version__} (CPUExecutionProvider), onnx {onnx.__version__}",
        ]

    # -- data ---------------------------------------------------------------

    def params(self, wl: Workload):
        """Seeded weights [cout, cin, 3, 3] and bias [cout] (or None)."""
        np = self.np
        rng = np.random.default_rng(wl.seed)
        scale = 1.0 / np.sqrt(wl.cin * 9)
        w = rng.uniform(-scale, scale, (wl.cout, wl.cin, 3, 3)).astype(np.float32)
        b = rng.uniform(-0.1, 0.1, wl.cout).astype(np.float32) if wl.bias else None
        return w, b

    def frame(self, wl: Workload, w: int, h: int):
        """Seeded input [cin, h, w] in [0, 1)."""
        rng = self.np.random.default_rng(wl.seed * 1_000_003 + w * 7919 + h)
        return rng.random((wl.cin, h, w), dtype=self.np.float32)

    # -- implementations: each returns fn(x[cin, h, w]) -> [cout, h', w'] ----

    def pool2x2(self, a):
        """2x2 max-pool, stride 2, floor mode, over the last two axes.

        Rows then columns with strided ``np.maximum``: the same result as
        ``a[..., :h, :w].reshape(..., h//2, 2, w//2, 2).max(axis=(-3, -1))``,
        which numpy runs 15-40x slower (it would time numpy's reduction
        machinery rather than pooling).
        """
        np = self.np
        h, w = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
        rows = np.maximum(a[..., 0:h:2, :w], a[..., 1:h:2, :w])
        return np.maximum(rows[..., 0::2], rows[..., 1::2])

    def opencv_fn(self, wl: Workload, wts, bias):
        np, cv2 = self.np, self.cv2
        kernels = [[np.ascontiguousarray(wts[o, i]) for i in range(wl.cin)]
                   for o in range(wl.cout)]
        border = cv2.BORDER_CONSTANT  # zero border == zero padding 1
        crop = 1 - wl.pad  # a no-padding conv is the zero-border one, cropped

        def run(x):
            cin, h, w = x.shape
            acc = np.empty((wl.cout, h, w), np.float32)
            for o in range(wl.cout):
                cv2.filter2D(x[0], -1, kernels[o][0], dst=acc[o], borderType=border)
                for i in range(1, cin):
                    acc[o] += cv2.filter2D(x[i], -1, kernels[o][i], borderType=border)
                if bias is not None:
                    acc[o] += bias[o]
            if crop:
                acc = acc[:, crop:h - crop, crop:w - crop]
            return self.pool2x2(np.maximum(acc, 0))

        return run

    def torch_fn(self, wl: Workload, wts, bias):
        torch, F = self.torch, self.F
        tw = torch.from_numpy(wts)
        tb = torch.from_numpy(bias) if bias is not None else None

        def run(x):
            with torch.inference_mode():
                t = torch.from_numpy(x).unsqueeze(0)
                return F.max_pool2d(F.relu(F.conv2d(t, tw, tb, padding=wl.pad)),
                                    2, 2)[0]

        return run

    def onnxruntime_fn(self, wl: Workload, wts, bias, w: int, h: int):
        onnx, ort = self.onnx, self.ort
        from onnx import TensorProto, helper, numpy_helper

        inits = [numpy_helper.from_array(wts, "w")]
        conv_in = ["x", "w"]
        if bias is not None:
            inits.append(numpy_helper.from_array(bias, "b"))
            conv_in.append("b")
        nodes = [
            helper.make_node("Conv", conv_in, ["c"], kernel_shape=[3, 3],
                             pads=[wl.pad] * 4),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2],
                             strides=[2, 2]),
        ]
        graph = helper.make_graph(
            nodes, f"{wl.name}_conv_relu_pool",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, wl.cin, h, w])],
            [helper.make_tensor_value_info(
                "y", TensorProto.FLOAT,
                [1, wl.cout, (h + 2 * wl.pad - 2) // 2, (w + 2 * wl.pad - 2) // 2])],
            initializer=inits)
        model = helper.make_model(graph, producer_name="streamfuse-cpu-peers",
                                  opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # the IR version of opset 17
        onnx.checker.check_model(model)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])

        def run(x):
            return sess.run(None, {"x": x[None]})[0][0]

        return run

    def make(self, impl: str, wl: Workload, w: int, h: int):
        wts, bias = self.params(wl)
        if impl == "opencv":
            return self.opencv_fn(wl, wts, bias)
        if impl == "torch":
            return self.torch_fn(wl, wts, bias)
        if impl == "onnxruntime":
            return self.onnxruntime_fn(wl, wts, bias, w, h)
        raise ValueError(impl)

    def cross_check(self, wl: Workload, impls: list[str]) -> str:
        """Peers agree on a small odd-sized frame, or SystemExit."""
        np = self.np
        w, h = CHECK_SIZE
        x = self.frame(wl, w, h)
        oh, ow = (h + 2 * wl.pad - 2) // 2, (w + 2 * wl.pad - 2) // 2
        outs = {}
        for impl in impls:
            y = self.make(impl, wl, w, h)(x)
            y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
            if y.shape != (wl.cout, oh, ow):
                raise SystemExit(f"cpu_peers: {wl.name}: {impl} output shape "
                                 f"{y.shape}, want {(wl.cout, oh, ow)}")
            outs[impl] = y
        ref = impls[0]
        worst = 0.0
        for impl in impls[1:]:
            diff = float(np.max(np.abs(outs[impl] - outs[ref])))
            worst = max(worst, diff)
            if not diff <= CHECK_TOL:
                raise SystemExit(
                    f"cpu_peers: CROSS-CHECK FAILED for {wl.name} at {w}x{h}: "
                    f"{impl} vs {ref} max abs diff {diff:.3g} > {CHECK_TOL}")
        return (f"{wl.name}: {', '.join(impls)} agree at {w}x{h} "
                f"(max abs diff {worst:.2g}, tolerance {CHECK_TOL})")


def fmt_ms(t: Timing | None) -> str:
    return "—" if t is None else f"{t.median_ms:.3f}"


def fmt_ratio(peer: Timing | None, fused: Timing | None) -> str:
    if peer is None or fused is None or fused.median_ms <= 0:
        return "—"
    return f"{peer.median_ms / fused.median_ms:.2f}x"


def benchmark(args: argparse.Namespace) -> None:
    threads = args.threads
    impls = [i for i in IMPLS if i in args.impls]
    peers_on = [i for i in PEERS if i in impls]
    binary = args.binary

    t_start = time.monotonic()
    peers = Peers(threads) if peers_on else None
    sf_version = ""
    if any(i.startswith("sf-") for i in impls):
        sf_version = subprocess.run([str(binary), "--version"], capture_output=True,
                                    text=True).stdout.strip()

    checks = []
    if peers and len(peers_on) >= 2:
        for name in args.workloads:
            checks.append(peers.cross_check(WORKLOADS[name], peers_on))
            log("cross-check: " + checks[-1])

    results: dict[tuple[str, str, str], Timing] = {}
    cpu_features = ""
    for name in args.workloads:
        wl = WORKLOADS[name]
        for w, h in args.sizes:
            size = f"{w}x{h}"
            n = iters_for(args, w, h)
            log(f"{name} {size}: {n} timed calls each")
            for impl in impls:
                if impl.startswith("sf-"):
                    fusion = "kernel" if impl == "sf-fused" else "chain"
                    t, j = run_streamfuse(binary, wl, w, h, fusion, threads,
                                          args.warmup, n)
                    cpu_features = j.get("cpu_features", cpu_features)
                else:
                    x = peers.frame(wl, w, h)
                    fn = peers.make(impl, wl, w, h)
                    t = time_calls(fn, x, args.warmup, n)
                    del fn
                    time.sleep(0.05)  # let spinning worker threads go idle
                results[(name, size, impl)] = t
                log(f"  {IMPL_TITLES[impl]:<18} {t.median_ms:9.3f} ms")

    # -- report ---------------------------------------------------------------
    out = ["# streamfuse vs CPU peers: conv2d 3x3 -> ReLU -> 2x2 max-pool (float32)",
           "", *machine_lines(threads)]
    if sf_version:
        out.append(f"- {sf_version} ({binary.relative_to(REPO) if REPO in binary.parents else binary})"
                   + (f", cpu_features {cpu_features}" if cpu_features else ""))
    if peers:
        out += peers.versions()
    out.append(f"- warm-up {args.warmup} calls, then median of the timed calls "
               f"(--iters {args.iters}, fewer above 512x512, at least "
               f"{min(args.min_iters, args.iters)})")
    out += [f"- cross-check: {c}" for c in checks]
    out += ["", "ms per frame (median); speed-up = peer ms / streamfuse fused ms", ""]
    cols = ["workload", "size"] + [IMPL_TITLES[i] for i in impls]
    ratio_peers = [p for p in PEERS if p in impls] if "sf-fused" in impls else []
    cols += [f"fused vs {IMPL_TITLES[p]}" for p in ratio_peers]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|")
    for name in args.workloads:
        for w, h in args.sizes:
            size = f"{w}x{h}"
            row = [name, size] + [fmt_ms(results.get((name, size, i))) for i in impls]
            fused = results.get((name, size, "sf-fused"))
            row += [fmt_ratio(results.get((name, size, p)), fused) for p in ratio_peers]
            out.append("| " + " | ".join(row) + " |")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out += ["", f"Run took {time.monotonic() - t_start:.0f} s; load average at end: {load}."]
    print("\n".join(out), flush=True)

    if args.csv:
        path = Path(args.csv)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["workload", "size", "impl", "median_ms", "min_ms",
                         "mean_ms", "iters", "warmup", "threads"])
            for (name, size, impl), t in results.items():
                wr.writerow([name, size, impl, f"{t.median_ms:.6f}",
                             f"{t.min_ms:.6f}", f"{t.mean_ms:.6f}", t.iters,
                             args.warmup, threads])
        log(f"wrote {path}")


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    bootstrap(args, argv)  # returns only inside the venv
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before torch/cv2/ort load
    benchmark(args)


if __name__ == "__main__":
    main()
