#!/usr/bin/env python3
"""Time streamfuse's fused edge-map chain (gray -> 5x5 Gaussian blur ->
Sobel magnitude, `examples/edges.yaml`) against OpenCV's calls for the same
chain, same thread count, in one run.

- streamfuse: `streamfuse kernels bench examples/edges.yaml` with `--fusion
  kernel` (one pass over row bands) and `--fusion chain` (the three kernels
  one after another), on a 3-plane float32 frame.
- OpenCV, on the same frame as 8-bit BGR (what a camera gives it, and its
  fastest path: fixed-point SIMD): `cvtColor(BGR2GRAY)` -> `GaussianBlur(5x5)`
  -> `Sobel(CV_32F, 1, 0)` and `Sobel(CV_32F, 0, 1)` -> `magnitude`.
- OpenCV on the float32 frame (the arithmetic streamfuse does).

Prints a Markdown table (median ms per frame, frames/s, and each one's
speed relative to OpenCV 8-bit). Installs numpy and opencv-python-headless
into .venv/vision (pinned, shared with tests/vision) and re-executes there.

    python3 benches/compare/vision_peers.py [--binary target/quick/streamfuse]
        [--size 1280x720] [--threads 2] [--iters 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "vision"
PINS = ["numpy==2.4.6", "opencv-python-headless==5.0.0.93"]


def ensure_venv() -> None:
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    stamp = VENV / ".pins"
    python = VENV / "bin" / "python"
    if not stamp.exists() or stamp.read_text() != "\n".join(PINS):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
        stamp.write_text("\n".join(PINS))
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def streamfuse(binary: Path, size: str, fusion: str, threads: int, iters: int) -> float:
    cmd = [str(binary), "kernels", "bench", "examples/edges.yaml", "--size", size,
           "--fusion", fusion, "--threads", str(threads), "--warmup", "10",
           "--iters", str(iters), "--json"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    j = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    if j.get("threads") != threads:
        sys.exit(f"streamfuse ran {j.get('threads')} threads, asked {threads}")
    return float(j["median_ms"])


def median_ms(fn, x, iters: int) -> float:
    for _ in range(10):
        fn(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "quick" / "streamfuse")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ensure_venv()
    import cv2
    import numpy as np

    cv2.setNumThreads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    f32 = u8.astype(np.float32)

    def opencv(img):
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        b = cv2.GaussianBlur(g, (5, 5), 0)
        dx = cv2.Sobel(b, cv2.CV_32F, 1, 0, ksize=3)
        dy = cv2.Sobel(b, cv2.CV_32F, 0, 1, ksize=3)
        return cv2.magnitude(dx, dy)

    rows = {"streamfuse fused (kernel)": [], "streamfuse chain": [],
            "OpenCV 8-bit": [], "OpenCV float32": []}
    for _ in range(args.rounds):
        rows["streamfuse fused (kernel)"].append(
            streamfuse(args.binary, args.size, "kernel", args.threads, args.iters))
        rows["streamfuse chain"].append(
            streamfuse(args.binary, args.size, "chain", args.threads, args.iters))
        rows["OpenCV 8-bit"].append(median_ms(opencv, u8, args.iters))
        rows["OpenCV float32"].append(median_ms(opencv, f32, args.iters))
    base = sorted(rows["OpenCV 8-bit"])[len(rows["OpenCV 8-bit"]) // 2]
    print(f"gray -> GaussianBlur 5x5 -> Sobel magnitude, {args.size}, "
          f"{args.threads} threads, OpenCV {cv2.__version__} "
          f"(cv2.getNumThreads() = {cv2.getNumThreads()}), {args.rounds} rounds "
          f"of {args.iters} frames, median ms per frame\n")
    print("| implementation | ms per round | median ms | frames/s | vs OpenCV 8-bit |")
    print("|---|---|---:|---:|---:|")
    for name, v in rows.items():
        m = sorted(v)[len(v) // 2]
        print(f"| {name} | {' / '.join(f'{x:.2f}' for x in v)} | {m:.2f} | "
              f"{1000 / m:.0f} | {base / m:.2f}x |")


if __name__ == "__main__":
    main()
