#!/usr/bin/env python3
"""Time every CPU convolution algorithm on real CNN layer shapes, side by
side, against the measured roofline.

For each layer (conv + ReLU, + max-pool 2x2/2 where VGG-16 has one), the
script writes a spec with a synthetic source of the layer's input shape and
``algorithm: rows``, ``panel`` or (3x3 stride-1 layers, and stride-2 layers
of 5 to 8 taps) ``winograd`` on the conv, times it with ``streamfuse kernels bench SPEC --threads T --json``
(kernel time, median), and reports GFLOP/s and the share of ``streamfuse
kernels roofline``'s peak at the same thread count, plus the algorithm
``auto`` picks (``streamfuse plan --json``'s ``cpu_algorithm``). Winograd's
GFLOP/s are the direct convolution's FLOPs over its time (the rate a direct
algorithm would need to match it), so it can pass the peak.

    python3 benches/compare/conv_algorithms.py [--binary target/release/streamfuse]
        [--threads 2] [--iters 20] [--only SUBSTRING]

Needs only the binary; the markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (name, in channels, out channels, kernel, stride, padding, size (H=W or (W, H)), pool)
LAYERS = [
    ("cnn 3->16 720p", 3, 16, 3, 1, 1, (1280, 720), True),
    ("stem 3->64 7x7/2 720p", 3, 64, 7, 2, 3, (1280, 720), False),
    ("stem 3->64 7x7/2 224", 3, 64, 7, 2, 3, 224, False),
    ("7x7/2 3->16 720p", 3, 16, 7, 2, 3, (1280, 720), False),
    ("5x5/2 32->64 112", 32, 64, 5, 2, 2, 112, False),
    ("5x5/2 256->256 56", 256, 256, 5, 2, 2, 56, False),
    ("7x7/2 64->128 112", 64, 128, 7, 2, 3, 112, False),
    ("vgg1_1 3->64 224", 3, 64, 3, 1, 1, 224, False),
    ("vgg1_2 64->64 224 +pool", 64, 64, 3, 1, 1, 224, True),
    ("vgg2_2 128->128 112 +pool", 128, 128, 3, 1, 1, 112, True),
    ("vgg3_2 256->256 56", 256, 256, 3, 1, 1, 56, False),
    ("vgg4_2 512->512 28", 512, 512, 3, 1, 1, 28, False),
    ("vgg5_1 512->512 14", 512, 512, 3, 1, 1, 14, False),
    ("1x1 24->144 56", 24, 144, 1, 1, 0, 56, False),
    ("1x1 144->32 28", 144, 32, 1, 1, 0, 28, False),
]


def spec(name, cin, cout, k, s, p, size, pool, algorithm):
    w, h = size if isinstance(size, tuple) else (size, size)
    stages = [
        f"  - {{ id: conv, op: conv2d, kernel: {k}, stride: {s}, padding: {p}, "
        f"out_channels: {cout}, bias: true, weights: {{ random: {{ seed: 2 }} }}, "
        f"algorithm: {algorithm} }}",
        "  - { id: relu, op: relu }",
    ]
    if pool:
        stages.append("  - { id: pool, op: maxpool, size: 2, stride: 2 }")
    return "\n".join([
        f"name: l{abs(hash(name)) % 10_000}",
        f"source: {{ synthetic: {{ width: {w}, height: {h}, channels: {cin}, frames: 10, seed: 1 }} }}",
        "stages:",
        *stages,
        "sink: { stats: {} }",
        "fusion: kernel",
        "",
    ])


def flops(cin, cout, k, s, p, size):
    w, h = size if isinstance(size, tuple) else (size, size)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return 2 * cin * k * k * cout * oh * ow


def run(binary: Path, args: list[str]) -> str:
    r = subprocess.run([str(binary), *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"conv_algorithms: streamfuse {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "streamfuse"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--only", default="", help="time only the layers whose name contains this")
    args = ap.parse_args()
    binary = Path(args.binary)
    roof = run(binary, ["kernels", "roofline", "--threads", str(args.threads)])
    peak = float(roof.split("peak ")[1].split(" GFLOP/s")[0])
    print(f"`streamfuse kernels roofline --threads {args.threads}`: {roof.strip().splitlines()[-1]}\n")
    algs = ("rows", "panel", "winograd")
    print("| layer | " + " | ".join(f"{a} ms" for a in algs) + " | "
          + " | ".join(f"{a} GFLOP/s (% peak)" for a in algs) + " | auto picks |")
    print("|---|" + "---:|" * (2 * len(algs)) + "---|")
    with tempfile.TemporaryDirectory() as d:
        for (name, cin, cout, k, s, p, size, pool) in LAYERS:
            if args.only not in name:
                continue
            ms, auto = {}, None
            for alg in (*algs, "auto"):
                if alg == "winograd" and not ((k, s) == (3, 1) or (s == 2 and 5 <= k <= 8)):
                    continue
                path = Path(d) / f"{alg}.yaml"
                path.write_text(spec(name, cin, cout, k, s, p, size, pool, alg))
                if alg == "auto":
                    plan = json.loads(run(binary, ["plan", "--json", str(path)]))
                    auto = plan["segments"][0]["groups"][0].get("cpu_algorithm")
                    continue
                out = run(binary, ["kernels", "bench", str(path), "--threads", str(args.threads),
                                   "--warmup", "3", "--iters", str(args.iters), "--json"])
                j = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
                ms[alg] = float(j["median_ms"])
            f = flops(cin, cout, k, s, p, size)
            times = [f"{ms[a]:.2f}" if a in ms else "-" for a in algs]
            cells = [f"{f / ms[a] / 1e6:.0f} ({100 * f / ms[a] / 1e6 / peak:.0f} %)" if a in ms else "-"
                     for a in algs]
            print(f"| {name} | " + " | ".join(times) + " | " + " | ".join(cells) + f" | {auto} |",
                  flush=True)


if __name__ == "__main__":
    main()
