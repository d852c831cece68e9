#!/usr/bin/env python3
"""Writes the shared golden corpus (corpus.json) that every backend's kernels
are checked against: CPU (each SIMD level, x86 and aarch64 under qemu) and,
later, emulated and real CUDA.

Expected values come from this file's own float64 implementations, in plain
Python with no numpy, independent of the Rust code. Inputs and weights are
float32 values (seeded), stored exactly. Each case carries an absolute
tolerance: (terms + 2) * 2^-23 * the largest sum of |term| of any output,
the bound of a float32 accumulation of `terms` products (0 for exact ops).

    python3 kernels/testdata/generate.py     # rewrites corpus.json
"""

import json
import random
import struct
from pathlib import Path

EPS32 = 2.0 ** -23


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def values(rng: random.Random, n: int, lo: float, hi: float) -> list[float]:
    return [f32(rng.uniform(lo, hi)) for _ in range(n)]


def conv(x, shape, w, b, cout, k, stride, pad):
    c, h, wd = shape
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    out, mag = [], []
    for oc in range(cout):
        for oy in range(oh):
            for ox in range(ow):
                s = b[oc] if b else 0.0
                m = abs(s)
                for ic in range(c):
                    for ky in range(k):
                        for kx in range(k):
                            iy, ix = oy * stride + ky - pad, ox * stride + kx - pad
                            if 0 <= iy < h and 0 <= ix < wd:
                                t = w[((oc * c + ic) * k + ky) * k + kx] * x[(ic * h + iy) * wd + ix]
                                s += t
                                m += abs(t)
                out.append(s)
                mag.append(m)
    return out, mag, [cout, oh, ow]


def relu(x):
    return [v if v > 0 else 0.0 for v in x]


def maxpool(x, shape, size, stride):
    c, h, w = shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    out = []
    for ch in range(c):
        for oy in range(oh):
            for ox in range(ow):
                out.append(max(x[(ch * h + oy * stride + dy) * w + ox * stride + dx]
                               for dy in range(size) for dx in range(size)))
    return out, [c, oh, ow]


def conv_case(rng, name, c, h, w, cout, k, stride, pad, bias, relu_, pool):
    x = values(rng, c * h * w, -1.0, 1.0)
    wts = values(rng, cout * c * k * k, -0.5, 0.5)
    b = values(rng, cout, -0.5, 0.5) if bias else None
    y, mag, shape = conv(x, [c, h, w], wts, b, cout, k, stride, pad)
    terms = c * k * k
    tol = (terms + 2) * EPS32 * max(mag)
    if relu_:
        y = relu(y)
    if pool:
        y, shape = maxpool(y, shape, *pool)
    case = {
        "name": name,
        "op": "fused" if (relu_ or pool) else "conv2d",
        "conv": {"in_channels": c, "out_channels": cout, "kernel": k, "stride": stride,
                 "padding": pad, "weights": wts, "bias": b},
        "input": {"shape": [c, h, w], "data": x},
        "expected": {"shape": shape, "data": y},
        "tolerance": tol,
    }
    if case["op"] == "fused":
        case["relu"] = relu_
        case["pool"] = {"size": pool[0], "stride": pool[1]} if pool else None
    return case


def main() -> None:
    rng = random.Random(20261123)
    cases = []
    # conv2d: kernel sizes, strides, paddings, channel counts (1..6 outputs
    # covers the 4-channel blocking and its remainder), widths past one tile.
    for (c, h, w, cout, k, s, p, bias) in [
        (1, 9, 13, 1, 3, 1, 0, False),
        (1, 7, 133, 1, 3, 1, 0, False),
        (3, 6, 31, 16, 3, 1, 1, True),
        (2, 11, 17, 5, 5, 2, 2, True),
        (3, 8, 150, 6, 3, 3, 1, False),
        (1, 5, 5, 2, 5, 1, 0, True),
        (4, 3, 40, 4, 1, 1, 0, True),
        (2, 10, 9, 3, 4, 2, 1, False),
        (1, 1, 1, 1, 1, 1, 0, True),
        (1, 2, 3, 1, 3, 1, 1, False),
    ]:
        cases.append(conv_case(rng, f"conv2d c{c} {h}x{w} -> {cout} k{k} s{s} p{p}{' bias' if bias else ''}",
                               c, h, w, cout, k, s, p, bias, False, None))
    # fused chains: conv (+relu) (+maxpool), odd sizes, overlapping windows.
    for (c, h, w, cout, k, s, p, bias, r, pool) in [
        (1, 12, 20, 1, 3, 1, 0, False, True, (2, 2)),
        (3, 9, 137, 16, 3, 1, 1, True, True, (2, 2)),
        (2, 13, 15, 5, 3, 2, 1, True, True, (3, 2)),
        (1, 8, 9, 2, 3, 1, 1, True, False, (2, 1)),
        (3, 7, 70, 4, 2, 1, 0, False, True, None),
    ]:
        cases.append(conv_case(rng, f"fused c{c} {h}x{w} -> {cout} k{k} s{s} p{p} relu={r} pool={pool}",
                               c, h, w, cout, k, s, p, bias, r, pool))
    # relu: negatives, zeros, negative zero.
    x = values(rng, 2 * 5 * 67, -1.0, 1.0) + [0.0, -0.0, f32(1e-30), f32(-1e-30)]
    cases.append({"name": "relu with zeros", "op": "relu",
                  "input": {"shape": [1, 1, len(x)], "data": x},
                  "expected": {"shape": [1, 1, len(x)], "data": relu(x)}, "tolerance": 0.0})
    # maxpool: floor mode on odd sizes, overlapping and gapped windows.
    for (c, h, w, size, stride) in [(1, 7, 9, 2, 2), (3, 10, 131, 2, 2), (2, 9, 11, 3, 2),
                                    (1, 6, 6, 3, 3), (2, 5, 17, 2, 1), (1, 4, 4, 4, 1)]:
        x = values(rng, c * h * w, -1.0, 1.0)
        y, shape = maxpool(x, [c, h, w], size, stride)
        cases.append({"name": f"maxpool c{c} {h}x{w} size {size} stride {stride}", "op": "maxpool",
                      "pool": {"size": size, "stride": stride},
                      "input": {"shape": [c, h, w], "data": x},
                      "expected": {"shape": shape, "data": y}, "tolerance": 0.0})
    out = Path(__file__).with_name("corpus.json")
    out.write_text(json.dumps({"version": 1, "cases": cases}, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
