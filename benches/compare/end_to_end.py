#!/usr/bin/env python3
"""How close a whole ``streamfuse run`` gets to the kernels alone, on a real
network.

The network is VGG-16's feature extractor at 224x224 (13 conv 3x3 + ReLU,
5 max-pools; the model ``cnn_layers.py`` builds, seeded random weights),
imported with ``streamfuse import``. The script times, side by side:

* kernel time: ``streamfuse kernels bench SPEC --threads T --json``, the
  median per frame of the fused kernels on one in-memory frame;
* the whole run: the same spec with ``source: { npy: { path } }`` reading
  ``--frames`` frames of an ``[N, 3, 224, 224]`` float32 file, and ``sink:
  { stats: {} }``, as ``streamfuse run SPEC --threads T --json``: its
  ``steady_fps`` (the sink's rate between its 10th and 90th percentile
  arrivals) and ``fps`` (all frames over the whole run, start-up and the
  pipeline's fill and drain included).

It prints the rates and the run's share of the kernel rate, and with
``--repeat`` the best of several runs of each (the machine's noise is
larger than the gap being measured).

    python3 benches/compare/end_to_end.py [--binary target/release/streamfuse]
        [--threads 2] [--frames 60] [--repeat 3]

Needs numpy and onnx: re-executes itself in the ONNX Runtime check's
``.venv/onnx`` (same pins). The markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches" / "compare"))
sys.path.insert(0, str(ROOT / "tests" / "onnx"))


def run(binary: Path, args: list[str]) -> dict:
    r = subprocess.run([str(binary), *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"end_to_end: streamfuse {' '.join(args)} failed:\n{r.stderr}")
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "streamfuse"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from check_against_onnxruntime import ensure_venv  # noqa: PLC0415

    ensure_venv(__file__)
    import numpy as np  # noqa: PLC0415

    import cnn_layers  # noqa: PLC0415

    binary = Path(args.binary)
    nodes, shape = cnn_layers.vgg16_layer()
    model = cnn_layers.onnx_model(nodes, shape)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "vgg16.onnx").write_bytes(model.SerializeToString())
        imp = subprocess.run([str(binary), "import", str(d / "vgg16.onnx"), "-o",
                              str(d / "kernel.yaml")], capture_output=True, text=True)
        if imp.returncode != 0:
            raise SystemExit(f"end_to_end: import failed:\n{imp.stderr}")
        frames = np.random.default_rng(3).random((args.frames, *shape), dtype=np.float32)
        np.save(d / "frames.npy", frames)
        spec = (d / "kernel.yaml").read_text().splitlines()
        src = [i for i, ln in enumerate(spec) if ln.startswith("source:")]
        if len(src) != 1:
            raise SystemExit("end_to_end: the imported spec has no one-line source")
        spec[src[0]] = f"source: {{ npy: {{ path: {d / 'frames.npy'} }} }}"
        (d / "run.yaml").write_text("\n".join(spec) + "\n")
        kernel_ms, steady, whole = [], [], []
        for _ in range(args.repeat):
            k = run(binary, ["kernels", "bench", str(d / "kernel.yaml"), "--threads",
                             str(args.threads), "--warmup", "3", "--iters", "20", "--json"])
            kernel_ms.append(float(k["median_ms"]))
            r = run(binary, ["run", str(d / "run.yaml"), "--threads", str(args.threads),
                             "--json"])
            if r["frames"] != args.frames:
                raise SystemExit(f"end_to_end: the run reported {r['frames']} frames")
            steady.append(float(r["steady_fps"]))
            whole.append(float(r["fps"]))
    kernel_fps = 1e3 / min(kernel_ms)
    print(f"VGG-16 features at 224x224, {args.threads} threads, {args.frames} frames from an npy "
          f"file, best of {args.repeat}\n")
    print("| what | frames/s | share of the kernel rate |")
    print("|---|---:|---:|")
    print(f"| kernels alone (`kernels bench`, {min(kernel_ms):.1f} ms) | {kernel_fps:.2f} | 100 % |")
    print(f"| `streamfuse run`, steady_fps | {max(steady):.2f} | "
          f"{100 * max(steady) / kernel_fps:.0f} % |")
    print(f"| `streamfuse run`, fps (start-up included) | {max(whole):.2f} | "
          f"{100 * max(whole) / kernel_fps:.0f} % |")


if __name__ == "__main__":
    main()
