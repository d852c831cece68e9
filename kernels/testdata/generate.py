#!/usr/bin/env python3
"""Writes the shared golden corpus that every engine's kernels are checked
against (CPU at each SIMD level, the CUDA emulator, a real GPU): one file per
topic, conv.json, pool.json, pointwise.json, vision.json and chains.json.
README.md next to this file describes the format.

Expected values come from this file's own implementations, in plain Python
(float64, no numpy), written from the ops' definitions and independent of
the Rust code. Inputs and weights are float32 values: small tensors are
stored in the files, large ones as a seed that the generator and the test
harness both expand (`fill` below; the expected values are still computed
here and stored in full).

Each case states an absolute tolerance: the largest, over its output values,
of a bound on how far a float32 implementation may be from the exact value,
tracked through the ops (a sum of n products: (n + 2) * 2^-23 * the sum of
|terms|; each further rounding: 2^-23 of the magnitudes involved; errors of
inputs propagate through each op's Lipschitz constant). A tolerance of 0
means the op is exactly defined on float32 (ReLU, clip, threshold, max pool,
and affine, whose rounding after the multiply and after the add this file
emulates): the harness then requires identical bits.

    python3 kernels/testdata/generate.py     # rewrites the five files
"""

import json
import math
import random
import struct
from pathlib import Path

from reference64 import *  # noqa: F401,F403 (the float64 references)

def conv(rng, cin, cout, k, stride=1, padding=0, bias=False, dilation=1, groups=1):
    kh, kw = (k, k) if isinstance(k, int) else k
    return {
        "op": "conv2d", "in_channels": cin, "out_channels": cout, "kernel": [kh, kw],
        "stride": list(pair(stride)), "padding": list(pads4(padding)),
        "dilation": list(pair(dilation)), "groups": groups,
        "weights": uniform(rng, cout * (cin // groups) * kh * kw, 0.5),
        "bias": uniform(rng, cout, 0.5) if bias else None,
    }


def relu():
    return {"op": "relu"}


def clip(lo, hi):
    return {"op": "clip", "min": f32(lo), "max": f32(hi)}


def affine(scale, shift):
    return {"op": "affine", "scale": f32(scale), "shift": f32(shift)}


def threshold(th, value):
    return {"op": "threshold", "threshold": f32(th), "value": f32(value)}


def pool(size, stride):
    return pool2("max", size, stride)


def pool2(kind, kernel, stride=None, padding=0, dilation=1, ceil_mode=False,
          count_include_pad=False):
    kh, kw = pair(kernel)
    return {"op": "pool", "kind": kind, "kernel": [kh, kw],
            "stride": list(pair(stride if stride is not None else kernel)),
            "padding": list(pads4(padding)), "dilation": list(pair(dilation)),
            "ceil_mode": ceil_mode, "count_include_pad": count_include_pad, "global": False}


def global_pool(kind):
    return {"op": "pool", "kind": kind, "global": True}


def leaky(alpha):
    return {"op": "leaky_relu", "alpha": f32(alpha)}


def batchnorm(rng, c):
    return {"op": "batchnorm", "scale": uniform(rng, c, 2.0), "shift": uniform(rng, c, 1.0)}


def fused(conv_=None, epilogue=(), pool_=None):
    return {"op": "fused", "conv": conv_, "epilogue": list(epilogue), "pool": pool_}


def gray_op(order):
    return {"op": "gray", "order": order}


def normalize_op(scale, mean, std):
    return {"op": "normalize", "scale": f32(scale), "mean": [f32(m) for m in mean],
            "std": [f32(s) for s in std]}


def resize_op(width, height):
    return {"op": "resize", "width": width, "height": height}


def blur(ksize, sigma=0.0):
    return {"op": "gaussian_blur", "ksize": ksize, "sigma": f32(sigma)}


def sobel_op(mode):
    return {"op": "sobel", "mode": mode}


def chain(*steps):
    return {"op": "vision_chain", "steps": list(steps)}


def nested(values, shape):
    """values (flat) as nested lists of `shape`, innermost = last axis."""
    if len(shape) == 1:
        return values
    step = len(values) // shape[0]
    return [nested(values[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def tensor_json(values, shape, seed=None):
    if seed is not None:
        return {"shape": list(shape), **seed}
    return {"shape": list(shape), "values": nested([num32(x) for x in values], list(shape))}


def op_json(op: dict):
    kind = op["op"]
    if kind == "conv2d":
        kh, kw = op["kernel"]
        body = {k: op[k] for k in ("in_channels", "out_channels", "kernel", "stride", "padding",
                                   "dilation", "groups")}
        body["weights"] = tensor_json(
            op["weights"], [op["out_channels"], op["in_channels"] // op["groups"], kh, kw])
        body["bias"] = tensor_json(op["bias"], [op["out_channels"]]) if op["bias"] else None
        return {"conv2d": body}
    if kind == "relu":
        return "relu"
    if kind in ("clip", "affine", "threshold"):
        return {kind: {k: num32(v) for k, v in op.items() if k != "op"}}
    if kind == "leaky_relu":
        return {"leaky_relu": {"alpha": num32(op["alpha"])}}
    if kind == "batchnorm":
        return {"batchnorm": {"scale": [num32(v) for v in op["scale"]],
                              "shift": [num32(v) for v in op["shift"]]}}
    if kind == "pool":
        return {"pool": {k: v for k, v in op.items() if k != "op"}}
    if kind == "fused":
        return {"fused": {
            "conv": op_json(op["conv"])["conv2d"] if op["conv"] else None,
            "epilogue": [op_json(p) for p in op["epilogue"]],
            "pool": op_json(op["pool"])["pool"] if op["pool"] else None,
        }}
    if kind == "gray":
        return {"gray": {"order": op["order"]}}
    if kind == "normalize":
        return {"normalize": {"scale": num32(op["scale"]), "mean": [num32(m) for m in op["mean"]],
                              "std": [num32(s) for s in op["std"]]}}
    if kind == "resize":
        return {"resize": {"width": op["width"], "height": op["height"]}}
    if kind == "gaussian_blur":
        return {"gaussian_blur": {"ksize": op["ksize"], "sigma": num32(op["sigma"])}}
    if kind == "sobel":
        return {"sobel": {"mode": op["mode"]}}
    if kind == "vision_chain":
        return {"vision_chain": [op_json(s) for s in op["steps"]]}
    raise ValueError(kind)


# --------------------------------------------------------------------------
# Inputs


def uniform(rng: random.Random, n: int, bound: float) -> list[float]:
    return [f32(rng.uniform(-bound, bound)) for _ in range(n)]


class Input:
    """An input tensor: stored values, or a seed the harness expands."""

    def __init__(self, shape, values, seed=None):
        self.shape, self.values, self.seed = tuple(shape), values, seed


def inline(rng, shape, bound=1.0):
    c, h, w = shape
    return Input(shape, uniform(rng, c * h * w, bound))


def pixels(rng, shape):
    c, h, w = shape
    return Input(shape, [float(rng.randrange(256)) for _ in range(c * h * w)])


def seeded(seed, shape, kind="uniform", bound=1.0):
    c, h, w = shape
    spec = {"seed": seed, "fill": kind}
    if kind == "uniform":
        spec["bound"] = bound
    return Input(shape, fill(seed, c * h * w, kind, bound), spec)


def given(shape, values):
    return Input(shape, [f32(v) for v in values])


# --------------------------------------------------------------------------
# Cases


def case(name: str, op: dict, inp: Input) -> dict:
    for x in inp.values:
        assert is_f32(x), (name, x)
    out = apply(T(inp.shape, inp.values), op)
    tol = max(out.b) if out.b else 0.0
    if tol > 0:
        tol = float("%.3g" % (tol * 1.01))
        assert not any(math.isnan(x) for x in out.v), name
    values = []
    for x, b in zip(out.v, out.b):
        values.append(num32(x) if (b == 0 and is_f32(x)) else num64(x, tol))
    if tol == 0:
        assert all(is_f32(x) for x in out.v), f"{name}: exact case with inexact values"
    return {
        "name": name,
        "op": op_json(op),
        "input": tensor_json(inp.values, inp.shape, inp.seed),
        "expected": {"shape": list(out.shape), "values": nested(values, list(out.shape))},
        "tolerance": tol,
    }


def pick_threshold(t: T, target: float, step: float) -> float:
    """A float32 level near `target` that no value reaches within twice its
    error bound (so every engine agrees on which side each value lies)."""
    for k in range(1000):
        for sign in (1, -1):
            th = f32(target + sign * k * step)
            if all(abs(v - th) > 2 * b + 1e-30 for v, b in zip(t.v, t.b)):
                return th
    raise AssertionError("no safe threshold")


def conv_cases(rng):
    cases = []

    def add(name, cv, inp):
        cases.append(case(name, cv, inp))

    # Kernel sizes, strides, paddings, bias; 1..16 output channels (the CPU's
    # blocks of 4 and their remainder); widths below, at and past a SIMD
    # vector (8 or 16 lanes) and past the CPU's 128-column tile.
    add("k3 s1 p0, 1 -> 1, 9x13", conv(rng, 1, 1, 3), inline(rng, (1, 9, 13)))
    add("k3 s1 p0, 1 -> 1, 7x133 (two 128-column tiles)", conv(rng, 1, 1, 3), inline(rng, (1, 7, 133)))
    add("k3 s1 p1 bias, 3 -> 9, 5x31", conv(rng, 3, 9, 3, 1, 1, True), inline(rng, (3, 5, 31)))
    add("k5 s2 p2 bias, 2 -> 5, 11x17", conv(rng, 2, 5, 5, 2, 2, True), inline(rng, (2, 11, 17)))
    add("k3 s3 p1, 3 -> 6, 8x150 (seeded input)", conv(rng, 3, 6, 3, 3, 1),
        seeded(101, (3, 8, 150)))
    add("k5 s1 p0 bias, 1 -> 2, 5x5 (1x1 output)", conv(rng, 1, 2, 5, 1, 0, True), inline(rng, (1, 5, 5)))
    add("k1 s1 p0 bias, 4 -> 4, 3x40", conv(rng, 4, 4, 1, 1, 0, True), inline(rng, (4, 3, 40)))
    add("k4 s2 p1, 2 -> 3, 10x9 (even kernel)", conv(rng, 2, 3, 4, 2, 1), inline(rng, (2, 10, 9)))
    add("k1 s1 p0 bias, 1 -> 1, 1x1 image", conv(rng, 1, 1, 1, 1, 0, True), inline(rng, (1, 1, 1)))
    add("k3 s1 p1, 1 -> 1, 2x3 (kernel larger than the image)", conv(rng, 1, 1, 3, 1, 1),
        inline(rng, (1, 2, 3)))
    add("k3 s1 p2, 1 -> 2, 5x6 (output larger than the input)", conv(rng, 1, 2, 3, 1, 2),
        inline(rng, (1, 5, 6)))
    add("k1x3 s1 p1 bias, 2 -> 3, 6x20 (non-square kernel)", conv(rng, 2, 3, (1, 3), 1, 1, True),
        inline(rng, (2, 6, 20)))
    add("k3x1 s2 p0, 1 -> 2, 9x8 (non-square kernel)", conv(rng, 1, 2, (3, 1), 2, 0),
        inline(rng, (1, 9, 8)))
    add("k2x5 s1 p2 bias, 2 -> 7, 5x17", conv(rng, 2, 7, (2, 5), 1, 2, True), inline(rng, (2, 5, 17)))
    add("k7 s1 p3 bias, 1 -> 1, 8x37", conv(rng, 1, 1, 7, 1, 3, True), inline(rng, (1, 8, 37)))
    add("k2 s3 p0, 2 -> 2, 10x31 (stride past the kernel)", conv(rng, 2, 2, 2, 3, 0),
        inline(rng, (2, 10, 31)))
    add("k3 s2 p1 bias, 4 -> 8, 16x48", conv(rng, 4, 8, 3, 2, 1, True), seeded(102, (4, 16, 48)))
    add("k3 s1 p0, 3 -> 1, 40x9 (many row bands)", conv(rng, 3, 1, 3), inline(rng, (3, 40, 9)))
    # The CUDA backend's direct kernel (the receptive field of a tile exceeds
    # its shared memory).
    add("k5 s5 p2 bias, 2 -> 3, 12x64 (CUDA direct kernel)", conv(rng, 2, 3, 5, 5, 2, True),
        seeded(103, (2, 12, 64)))
    add("k2 s6 p0, 1 -> 2, 13x200 (CUDA direct kernel)", conv(rng, 1, 2, 2, 6, 0),
        seeded(104, (1, 13, 200)))
    # SIMD tails: output widths around 8, 16, 32, 64 and 128 lanes/columns.
    for w in (1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65, 127, 128, 129):
        add(f"k3 s1 p1, 1 -> 1, 2x{w} (output width {w})", conv(rng, 1, 1, 3, 1, 1),
            inline(rng, (1, 2, w)))
    # ONNX Conv attributes: dilations, pads per side, strides per axis,
    # groups (grouped, depthwise, depthwise with a channel multiplier).
    add("k3 d2 p2, 2 -> 3, 9x14 (dilated)", conv(rng, 2, 3, 3, 1, 2, dilation=2),
        inline(rng, (2, 9, 14)))
    add("k3 d[2,1] s[2,1] pads [1,0,2,1] bias, 3 -> 4, 10x19",
        conv(rng, 3, 4, 3, (2, 1), (1, 0, 2, 1), True, dilation=(2, 1)), inline(rng, (3, 10, 19)))
    add("k3 s[1,2] p1, 2 -> 2, 6x23 (strides per axis)", conv(rng, 2, 2, 3, (1, 2), 1),
        inline(rng, (2, 6, 23)))
    add("k3 p1 bias groups 2, 4 -> 6, 7x20", conv(rng, 4, 6, 3, 1, 1, True, groups=2),
        inline(rng, (4, 7, 20)))
    add("k3 p1 bias groups 2, 8 -> 12, 5x18 (6 channels per group)",
        conv(rng, 8, 12, 3, 1, 1, True, groups=2), inline(rng, (8, 5, 18)))
    add("k3 p1 bias depthwise, 5 -> 5, 9x37", conv(rng, 5, 5, 3, 1, 1, True, groups=5),
        inline(rng, (5, 9, 37)))
    add("k3 s2 p1 depthwise x2 multiplier, 3 -> 6, 11x30", conv(rng, 3, 6, 3, 2, 1, groups=3),
        inline(rng, (3, 11, 30)))
    add("k3 s2 pads [0,0,1,1] depthwise (SAME_UPPER), 8 -> 8, 12x40 (seeded)",
        conv(rng, 8, 8, 3, 2, (0, 0, 1, 1), groups=8), seeded(105, (8, 12, 40)))
    add("k7 s2 p3 bias, 3 -> 8, 20x45 (a ResNet stem)", conv(rng, 3, 8, 7, 2, 3, True),
        seeded(106, (3, 20, 45)))
    add("k5 p1, 1 -> 2, 3x3 (kernel as large as the padded input: 1x1 output)",
        conv(rng, 1, 2, 5, 1, 1), inline(rng, (1, 3, 3)))
    add("k2 d2 s5, 2 -> 1, 12x31 (stride above the dilated kernel)",
        conv(rng, 2, 1, 2, 5, 0, dilation=2), inline(rng, (2, 12, 31)))
    add("k3 d3 p3, 1 -> 1, 4x140 (dilated, two tiles)", conv(rng, 1, 1, 3, 1, 3, dilation=3),
        inline(rng, (1, 4, 140)))
    add("k1x3 s[1,3] pads [0,2,0,1] groups 3, 3 -> 3, 5x16", conv(rng, 3, 3, (1, 3), (1, 3),
        (0, 2, 0, 1), groups=3), inline(rng, (3, 5, 16)))
    return cases


def pool_cases(rng):
    cases = []

    def add(name, size, stride, inp):
        cases.append(case(name, pool(size, stride), inp))

    add("2/2, 1x7x9 (floor mode drops the last row and column)", 2, 2, inline(rng, (1, 7, 9)))
    add("2/2, 3x10x131 (seeded)", 2, 2, seeded(201, (3, 10, 131)))
    add("3/2 overlapping, 2x9x11", 3, 2, inline(rng, (2, 9, 11)))
    add("3/3, 1x6x6", 3, 3, inline(rng, (1, 6, 6)))
    add("2/1, 2x5x17", 2, 1, inline(rng, (2, 5, 17)))
    add("4/1, 1x4x4 (window is the image)", 4, 1, inline(rng, (1, 4, 4)))
    add("1/1, 1x1x1", 1, 1, inline(rng, (1, 1, 1)))
    add("1/2 (subsampling), 1x9x17", 1, 2, inline(rng, (1, 9, 17)))
    add("4/4, 1x12x40", 4, 4, inline(rng, (1, 12, 40)))
    add("5/3, 2x11x19", 5, 3, inline(rng, (2, 11, 19)))
    add("2/2, 1x3x33 (odd width past two vectors)", 2, 2, inline(rng, (1, 3, 33)))
    add("2/2, 1x40x70 (many row bands, seeded)", 2, 2, seeded(202, (1, 40, 70)))
    quant = [0.25 * rng.randrange(-4, 5) for _ in range(6 * 20)]
    add("2/2, ties: values on a 0.25 grid, 1x6x20", 2, 2, given((1, 6, 20), quant))
    add("3/1, ties: values on a 0.25 grid, 1x6x20", 3, 1, given((1, 6, 20), quant))
    inf = [math.inf, -math.inf]
    vals = uniform(rng, 36, 1.0)
    for i in (0, 5, 13, 22, 30):
        vals[i] = inf[i % 2]
    for i in (18, 19, 27, 28):
        vals[i] = -math.inf
    add("2/2, infinities (a window of -inf only), 1x4x9", 2, 2, given((1, 4, 9), vals))

    def add2(name, op, inp):
        cases.append(case(name, op, inp))

    # ONNX MaxPool / AveragePool attributes.
    add2("max 3/2 p1, 2x9x13 (a ResNet stem pool)", pool2("max", 3, 2, 1), inline(rng, (2, 9, 13)))
    add2("max 3/2 p1 ceil_mode, 1x8x10", pool2("max", 3, 2, 1, ceil_mode=True),
         inline(rng, (1, 8, 10)))
    add2("max 2/2 ceil_mode, 1x7x9 (odd sizes)", pool2("max", 2, 2, ceil_mode=True),
         inline(rng, (1, 7, 9)))
    add2("max k[3,2] s[2,1] pads [1,0,0,1], 2x7x9", pool2("max", (3, 2), (2, 1), (1, 0, 0, 1)),
         inline(rng, (2, 7, 9)))
    add2("max 2/1 d2, 1x6x8 (dilated)", pool2("max", 2, 1, dilation=2), inline(rng, (1, 6, 8)))
    add2("max 2/1 d3 p2, 1x2x3 (windows with no value inside: -FLT_MAX)",
         pool2("max", 2, 1, 2, dilation=3), inline(rng, (1, 2, 3)))
    add2("max 4/1 p1, 1x2x2 (kernel as large as the padded input)", pool2("max", 4, 1, 1),
         inline(rng, (1, 2, 2)))
    add2("max 2/5, 1x11x21 (stride above the kernel)", pool2("max", 2, 5), inline(rng, (1, 11, 21)))
    add2("avg 3/2 p1, 2x9x13", pool2("avg", 3, 2, 1), inline(rng, (2, 9, 13)))
    add2("avg 3/2 p1 count_include_pad, 2x9x13", pool2("avg", 3, 2, 1, count_include_pad=True),
         inline(rng, (2, 9, 13)))
    add2("avg 2/2 ceil_mode, 1x7x9 (partial windows)", pool2("avg", 2, 2, ceil_mode=True),
         inline(rng, (1, 7, 9)))
    add2("avg 3/2 p1 ceil_mode count_include_pad, 1x8x11",
         pool2("avg", 3, 2, 1, ceil_mode=True, count_include_pad=True), inline(rng, (1, 8, 11)))
    add2("avg k[2,3] s[1,2] pads [0,1,1,0], 2x6x17", pool2("avg", (2, 3), (1, 2), (0, 1, 1, 0)),
         inline(rng, (2, 6, 17)))
    add2("avg 2/1 d2, 1x5x9 (dilated)", pool2("avg", 2, 1, dilation=2), inline(rng, (1, 5, 9)))
    add2("avg 2/2, 3x12x140 (seeded)", pool2("avg", 2, 2), seeded(203, (3, 12, 140)))
    add2("global max, 3x7x9", global_pool("max"), inline(rng, (3, 7, 9)))
    add2("global avg, 3x7x9", global_pool("avg"), inline(rng, (3, 7, 9)))
    add2("global avg, 2x1x1", global_pool("avg"), inline(rng, (2, 1, 1)))
    add2("global avg, 4x14x14 (seeded)", global_pool("avg"), seeded(204, (4, 14, 14)))
    return cases


SPECIALS = [0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40, math.inf, -math.inf, math.nan,
            1e30, -1e30, 0.5, -0.5, 6.0, 0.25, -0.25]


def pointwise_cases(rng):
    cases = []

    def add(name, op, inp):
        cases.append(case(name, op, inp))

    def specials_and(n, bound=1.0):
        vals = [f32(x) for x in SPECIALS] + uniform(rng, n - len(SPECIALS), bound)
        return given((1, 1, n), vals)

    for n in (1, 7, 17):
        add(f"relu, {n} values", relu(), inline(rng, (1, 1, n)))
    add("relu: zeros, -0.0, tiny, subnormal, infinities, NaN, 2x5x67", relu(),
        given((2, 5, 67), [f32(x) for x in SPECIALS] + uniform(rng, 2 * 5 * 67 - len(SPECIALS), 1.0)))
    add("clip 0..6 (ReLU6), specials", clip(0.0, 6.0), specials_and(53, 8.0))
    add("clip -0.25..0.25, 3x7x19", clip(-0.25, 0.25), inline(rng, (3, 7, 19)))
    add("clip -inf..0.5 (an upper bound only), 1x5x33", clip(-math.inf, 0.5), inline(rng, (1, 5, 33)))
    add("clip 0.5..inf (a lower bound only), specials", clip(0.5, math.inf), specials_and(40))
    add("clip 0.125..0.125 (min equals max), 1x2x9", clip(0.125, 0.125), inline(rng, (1, 2, 9)))
    add("affine 0.5, -0.125, specials", affine(0.5, -0.125), specials_and(45))
    add("affine -1.5, 0.3 (both roundings matter), 2x9x31", affine(-1.5, 0.3), inline(rng, (2, 9, 31)))
    add("affine 1/255, 0 (pixels to 0..1), 1x4x65", affine(1 / 255, 0.0),
        given((1, 4, 65), [float(rng.randrange(256)) for _ in range(4 * 65)]))
    add("affine 3, 0, 1x1x16", affine(3.0, 0.0), inline(rng, (1, 1, 16)))
    add("affine 1e30, 1 (overflow to inf), 1x1x9", affine(1e30, 1.0),
        given((1, 1, 9), [1e10, -1e10, 1e8, 0.5, -0.5, 0.0, 1e-30, 3.5e8, -3.5e8]))
    add("affine 0.1, 0.7, 1x64x130 (past one 8192-value chunk, seeded)", affine(0.1, 0.7),
        seeded(302, (1, 64, 130)))
    add("threshold 0.5 -> 1, specials and values at the level", threshold(0.5, 1.0),
        specials_and(41))
    add("threshold 0 -> 255, 2x6x17", threshold(0.0, 255.0), inline(rng, (2, 6, 17)))
    add("threshold -0.25 -> -2 (negative level and value), 1x3x15", threshold(-0.25, -2.0),
        inline(rng, (1, 3, 15)))
    add("threshold 100 -> 255 on pixels, 1x8x129", threshold(100.0, 255.0),
        given((1, 8, 129), [float(rng.randrange(256)) for _ in range(8 * 129)]))
    add("leaky_relu 0.1, specials", leaky(0.1), specials_and(47))
    add("leaky_relu 0.01, 2x5x37", leaky(0.01), inline(rng, (2, 5, 37)))
    add("batchnorm (per-channel scale and shift), 3x4x21", batchnorm(rng, 3), inline(rng, (3, 4, 21)))
    add("batchnorm, 16x3x40 (seeded)", batchnorm(rng, 16), seeded(303, (16, 3, 40)))
    return cases


def vision_cases(rng):
    cases = []

    def add(name, op, inp):
        cases.append(case(name, op, inp))

    # Frames are 0..255 pixel values as float32.
    add("gray rgb, 3x5x9", gray_op("rgb"), pixels(rng, (3, 5, 9)))
    add("gray bgr, 3x4x17", gray_op("bgr"), pixels(rng, (3, 4, 17)))
    add("gray bgr, 3x24x67 (seeded)", gray_op("bgr"), seeded(401, (3, 24, 67), "pixels"))
    add("normalize 1/255, mean 0.5, std 0.25 (one value for all), 2x4x19",
        normalize_op(1 / 255, [0.5], [0.25]), pixels(rng, (2, 4, 19)))
    add("normalize 1/255, ImageNet mean and std per channel, 3x5x33",
        normalize_op(1 / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), pixels(rng, (3, 5, 33)))
    add("normalize 1, mean 127.5, std -64 (negative std), 1x3x7",
        normalize_op(1.0, [127.5], [-64.0]), pixels(rng, (1, 3, 7)))
    add("normalize 2, per-channel, 2 channels, 2x3x17", normalize_op(2.0, [10.0, -3.0], [7.0, 0.5]),
        pixels(rng, (2, 3, 17)))
    add("resize 16x20 -> 10x8 (halving)", resize_op(10, 8), pixels(rng, (1, 16, 20)))
    add("resize 5x7 -> 13x9 (up both ways)", resize_op(13, 9), pixels(rng, (2, 5, 7)))
    add("resize 17x33 -> 13x7 (non-integer ratios)", resize_op(13, 7), pixels(rng, (1, 17, 33)))
    add("resize 6x9 -> 4x12 (up across, down the rows)", resize_op(12, 4), pixels(rng, (3, 6, 9)))
    add("resize 4x6 -> 6x4 (same size: identity)", resize_op(6, 4), pixels(rng, (1, 4, 6)))
    add("resize 5x8 -> 1x1", resize_op(1, 1), pixels(rng, (1, 5, 8)))
    add("resize 1x9 -> 5x3 (one input row)", resize_op(5, 3), pixels(rng, (1, 1, 9)))
    add("resize 2x24x67 -> 29x41 (seeded)", resize_op(41, 29), seeded(402, (2, 24, 67), "pixels"))
    add("gaussian blur 1 (identity)", blur(1), pixels(rng, (1, 3, 5)))
    add("gaussian blur 3, table, 1x6x17", blur(3), pixels(rng, (1, 6, 17)))
    add("gaussian blur 5, table, 2x9x33", blur(5), pixels(rng, (2, 9, 33)))
    add("gaussian blur 7, table, 1x7x16", blur(7), pixels(rng, (1, 7, 16)))
    add("gaussian blur 3, sigma 0.8, 1x5x9", blur(3, 0.8), pixels(rng, (1, 5, 9)))
    add("gaussian blur 9, sigma 2.5, 1x11x21", blur(9, 2.5), pixels(rng, (1, 11, 21)))
    add("gaussian blur 9, sigma from the size, 1x9x9", blur(9), pixels(rng, (1, 9, 9)))
    add("gaussian blur 5, 3x3 image (reach 2 on 3 pixels)", blur(5), pixels(rng, (1, 3, 3)))
    add("gaussian blur 7, 4x4 image (reach 3 on 4 pixels)", blur(7), pixels(rng, (1, 4, 4)))
    add("gaussian blur 31, sigma 4 (the GPU's most taps), 1x16x40", blur(31, 4.0),
        seeded(403, (1, 16, 40), "pixels"))
    add("gaussian blur 5, 1x24x67 (seeded)", blur(5), seeded(404, (1, 24, 67), "pixels"))
    for mode in ("dx", "dy", "magnitude"):
        add(f"sobel {mode}, 2x2 (smallest)", sobel_op(mode), pixels(rng, (1, 2, 2)))
        add(f"sobel {mode}, 2x7x17", sobel_op(mode), pixels(rng, (2, 7, 17)))
    add("sobel magnitude, 1x24x67 (seeded)", sobel_op("magnitude"), seeded(405, (1, 24, 67), "pixels"))
    return cases


def chain_cases(rng):
    cases = []

    def add(name, op, inp):
        cases.append(case(name, op, inp))

    # Fused chains with a convolution producer (CPU: conv rows with the
    # epilogue and pool in cache; CUDA: fused.cu for conv [+ ReLU] + pool up
    # to 3x3, else a generated kernel, else member by member).
    c = conv(rng, 1, 1, 3, 1, 1)
    add("conv k3 p1 + maxpool 2/2", fused(c, [], pool(2, 2)), inline(rng, (1, 8, 12)))
    c = conv(rng, 1, 1, 3)
    add("conv k3 p0 + relu + maxpool 2/2, 1x12x20", fused(c, [relu()], pool(2, 2)),
        inline(rng, (1, 12, 20)))
    c = conv(rng, 3, 8, 3, 1, 1, True)
    add("conv k3 p1 bias 3 -> 8 + relu + maxpool 2/2, 3x9x137 (seeded)",
        fused(c, [relu()], pool(2, 2)), seeded(501, (3, 9, 137)))
    c = conv(rng, 2, 5, 3, 2, 1, True)
    add("conv k3 s2 p1 bias 2 -> 5 + relu + maxpool 3/2", fused(c, [relu()], pool(3, 2)),
        inline(rng, (2, 13, 15)))
    c = conv(rng, 1, 2, 3, 1, 1, True)
    add("conv k3 p1 bias 1 -> 2 + maxpool 2/1", fused(c, [], pool(2, 1)), inline(rng, (1, 8, 9)))
    c = conv(rng, 3, 4, 2)
    add("conv k2 3 -> 4 + relu (no pool)", fused(c, [relu()]), inline(rng, (3, 5, 70)))
    c = conv(rng, 2, 3, 3, 1, 1, True)
    add("conv k3 p1 alone as a chain", fused(c), inline(rng, (2, 5, 21)))
    c = conv(rng, 3, 5, 3, 1, 1, True)
    add("conv k3 p1 bias 3 -> 5 + affine + relu + clip + maxpool 2/2 (generated kernel), seeded",
        fused(c, [affine(0.75, 0.1), relu(), clip(0.0, 0.8)], pool(2, 2)), seeded(502, (3, 21, 75)))
    c = conv(rng, 2, 3, 3, 1, 0, True)
    add("conv k3 bias + clip -0.3..0.3 (no pool)", fused(c, [clip(-0.3, 0.3)]),
        inline(rng, (2, 6, 35)))
    c = conv(rng, 1, 4, 3, 1, 1)
    inp = inline(rng, (1, 9, 33))
    th = pick_threshold(apply(T(inp.shape, inp.values), fused(c, [affine(2.0, -0.5)])), 0.0, 0.015625)
    add("conv k3 p1 + affine + threshold (no pool)",
        fused(c, [affine(2.0, -0.5), threshold(th, 1.0)]), inp)
    c = conv(rng, 2, 2, 3, 1, 1, True)
    inp = inline(rng, (2, 10, 18))
    th = pick_threshold(apply(T(inp.shape, inp.values), fused(c, [relu()])), 0.25, 0.015625)
    add("conv k3 p1 bias + relu + threshold + maxpool 2/2",
        fused(c, [relu(), threshold(th, 0.5)], pool(2, 2)), inp)
    c = conv(rng, 2, 3, 3, 3, 0)
    add("conv k3 s3 + relu + maxpool 2/2 (CUDA: tile too large, member by member)",
        fused(c, [relu()], pool(2, 2)), seeded(503, (2, 14, 200)))
    c = conv(rng, 1, 2, 3, 1, 1)
    add("conv k3 p1 + relu + maxpool 4/4 (CUDA: pool too large, member by member)",
        fused(c, [relu()], pool(4, 4)), inline(rng, (1, 12, 17)))
    c = conv(rng, 4, 3, 1, 1, 0, True)
    add("conv k1 4 -> 3 + clip + maxpool 3/3", fused(c, [clip(-0.5, 0.5)], pool(3, 3)),
        inline(rng, (4, 9, 10)))
    c = conv(rng, 3, 6, 3, 1, 1, True)
    inp = inline(rng, (3, 10, 34))
    pre = apply(T(inp.shape, inp.values), fused(c, [relu(), clip(0.0, 1.5), affine(-1.0, 1.0)]))
    th = pick_threshold(pre, 0.5, 0.015625)
    add("conv k3 p1 bias + relu + clip + affine + threshold + maxpool 2/2 (every pointwise op)",
        fused(c, [relu(), clip(0.0, 1.5), affine(-1.0, 1.0), threshold(th, 2.0)], pool(2, 2)), inp)
    # Chains without a convolution (the planner fuses a pointwise producer
    # with following pointwise ops and a pool).
    add("relu + maxpool 2/2", fused(None, [relu()], pool(2, 2)), inline(rng, (2, 9, 17)))
    add("affine + relu + maxpool 3/2", fused(None, [affine(1.5, -0.25), relu()], pool(3, 2)),
        inline(rng, (1, 11, 35)))
    add("clip + threshold (no pool)", fused(None, [clip(-0.5, 0.5), threshold(0.25, 1.0)]),
        inline(rng, (3, 4, 9)))
    add("affine + clip (no pool), 2x9x61",
        fused(None, [affine(-0.75, 0.125), clip(-0.5, 0.25)]), inline(rng, (2, 9, 61)))
    add("threshold + maxpool 2/1", fused(None, [threshold(0.0, 1.0)], pool(2, 1)),
        inline(rng, (1, 6, 11)))
    add("maxpool 2/2 alone as a chain", fused(None, [], pool(2, 2)), inline(rng, (1, 6, 10)))
    # Vision chains: runs of row-local vision and pointwise steps in one pass
    # over row bands (CPU); step by step (CUDA).
    gbs = chain(gray_op("bgr"), blur(5), sobel_op("magnitude"))
    add("gray bgr -> blur 5 -> sobel magnitude, 3x17x33", gbs, pixels(rng, (3, 17, 33)))
    inp = seeded(505, (3, 40, 131), "pixels")
    th = pick_threshold(apply(T(inp.shape, inp.values), gbs), 60.0, 0.25)
    add("gray bgr -> blur 5 -> sobel magnitude -> threshold, 3x40x131 (many bands, seeded)",
        chain(gray_op("bgr"), blur(5), sobel_op("magnitude"), threshold(th, 255.0)), inp)
    add("gray rgb -> normalize -> relu", chain(gray_op("rgb"), normalize_op(1 / 255, [0.5], [0.25]),
                                               relu()), pixels(rng, (3, 6, 19)))
    add("normalize per channel -> affine -> clip",
        chain(normalize_op(1 / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
              affine(0.5, 0.5), clip(0.0, 1.0)), pixels(rng, (3, 5, 23)))
    inp = pixels(rng, (1, 12, 29))
    pre = apply(T(inp.shape, inp.values), chain(blur(7, 1.5), sobel_op("dx")))
    th = pick_threshold(pre, 20.0, 0.25)
    add("blur 7 sigma 1.5 -> sobel dx -> threshold",
        chain(blur(7, 1.5), sobel_op("dx"), threshold(th, 1.0)), inp)
    add("affine -> sobel dy (a pointwise step first)", chain(affine(0.5, -10.0), sobel_op("dy")),
        pixels(rng, (2, 7, 15)))
    add("gray -> blur 3 -> blur 5 sigma 1.2 -> sobel magnitude, 3x36x67 (stacked halos, seeded)",
        chain(gray_op("rgb"), blur(3), blur(5, 1.2), sobel_op("magnitude")),
        seeded(506, (3, 36, 67), "pixels"))
    add("sobel dx -> relu, 2 channels", chain(sobel_op("dx"), relu()), pixels(rng, (2, 6, 18)))
    inp = pixels(rng, (3, 9, 20))
    pre = apply(T(inp.shape, inp.values), chain(gray_op("bgr"), sobel_op("magnitude")))
    th = pick_threshold(pre, 100.0, 0.25)
    add("gray -> sobel magnitude -> threshold -> blur 3",
        chain(gray_op("bgr"), sobel_op("magnitude"), threshold(th, 255.0), blur(3)), inp)
    # Real-CNN groups: any conv as the producer; batch norm, leaky ReLU and
    # clip in the epilogue; any max or average pool as the consumer.
    c = conv(rng, 3, 8, 7, 2, 3, True)
    add("conv k7 s2 p3 3 -> 8 + batchnorm + relu + maxpool 3/2 p1 (a ResNet stem), seeded",
        fused(c, [batchnorm(rng, 8), relu()], pool2("max", 3, 2, 1)), seeded(507, (3, 24, 40)))
    c = conv(rng, 6, 6, 3, 1, 1, groups=6)
    add("depthwise k3 p1 + batchnorm + clip 0..6 (MobileNet)",
        fused(c, [batchnorm(rng, 6), clip(0.0, 6.0)]), inline(rng, (6, 7, 19)))
    c = conv(rng, 4, 4, 3, 2, (0, 0, 1, 1), groups=4)
    add("depthwise k3 s2 SAME_UPPER + clip 0..6 + avgpool 2/2 ceil_mode",
        fused(c, [clip(0.0, 6.0)], pool2("avg", 2, 2, ceil_mode=True)), inline(rng, (4, 11, 17)))
    c = conv(rng, 2, 3, 3, 1, 2, dilation=2)
    add("conv k3 d2 p2 + leaky_relu + avgpool 3/2 p1",
        fused(c, [leaky(0.2)], pool2("avg", 3, 2, 1)), inline(rng, (2, 10, 13)))
    c = conv(rng, 4, 6, 3, 1, 1, True, groups=2)
    add("conv groups 2 + relu + avgpool 2/2 count_include_pad p1",
        fused(c, [relu()], pool2("avg", 2, 2, 1, count_include_pad=True)), inline(rng, (4, 8, 9)))
    c = conv(rng, 2, 4, 3, 1, 1, True)
    add("conv k3 p1 + relu + global avgpool", fused(c, [relu()], global_pool("avg")),
        inline(rng, (2, 9, 11)))
    c = conv(rng, 1, 2, 3, 1, 0)
    add("conv k3 + maxpool 2/2 ceil_mode (a non-plain max pool)",
        fused(c, [], pool2("max", 2, 2, ceil_mode=True)), inline(rng, (1, 10, 12)))
    c = conv(rng, 2, 2, (3, 1), (2, 1), (1, 0, 1, 0), True)
    add("conv k3x1 s[2,1] + batchnorm + leaky_relu + maxpool k[2,3] s[1,2] d[1,2]",
        fused(c, [batchnorm(rng, 2), leaky(0.1)], pool2("max", (2, 3), (1, 2), dilation=(1, 2))),
        inline(rng, (2, 11, 23)))
    add("batchnorm + relu + maxpool 3/2 p1 (load producer)",
        fused(None, [batchnorm(rng, 3), relu()], pool2("max", 3, 2, 1)), inline(rng, (3, 9, 12)))
    add("leaky_relu + avgpool 2/2", fused(None, [leaky(0.3)], pool2("avg", 2, 2)),
        inline(rng, (2, 6, 10)))
    return cases


TOPICS = {
    "conv": ("2-D convolution (Op::Conv2d): kernel sizes (square or not), strides per axis, "
             "dilations, zero padding per side, groups (depthwise, channel multiplier), bias, "
             "channel counts and widths around the SIMD vectors and tiles.",
             conv_cases),
    "pool": ("Max and average pooling (Op::Pool): window sizes and strides, overlapping and "
             "gapped windows, padding per side, dilations, floor and ceil mode, "
             "count_include_pad, global pools, ties and infinities.", pool_cases),
    "pointwise": ("Pointwise ops (Op::Pointwise, Op::ChannelAffine): relu, clip, affine, "
                  "threshold, leaky_relu and batchnorm's per-channel affine, exactly "
                  "defined on float32 (tolerance 0: identical bits), with zeros, subnormals, "
                  "infinities and NaN.", pointwise_cases),
    "vision": ("Vision ops (Op::Vision) on 0..255 pixel values: gray, normalize, resize, "
               "gaussian_blur and sobel, OpenCV's conventions (BORDER_REFLECT_101, "
               "INTER_LINEAR pixel centres, getGaussianKernel).", vision_cases),
    "chains": ("Fused groups (Op::Fused, Op::VisionChain): every shape the planner makes: a "
               "convolution or pointwise producer, pointwise epilogues, a max-pool consumer; "
               "row-local vision chains such as gray -> blur -> sobel.", chain_cases),
}


# --------------------------------------------------------------------------
# Writing


def dump(x, ind: int = 0) -> str:
    pad = "  " * ind
    flat = inline_json(x)
    if isinstance(x, list) and x and not any(isinstance(e, (list, dict)) for e in x):
        return flat  # a row of numbers: one line, however long
    if not isinstance(x, (list, dict)) or len(pad) + len(flat) <= WIDTH:
        return flat
    if isinstance(x, list):
        items = [pad + "  " + dump(e, ind + 1) for e in x]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    items = [pad + "  " + json.dumps(k) + ": " + dump(v, ind + 1) for k, v in x.items()]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


def inline_json(x) -> str:
    if isinstance(x, Raw):
        return x.s
    if isinstance(x, list):
        return "[" + ", ".join(inline_json(e) for e in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(json.dumps(k) + ": " + inline_json(v) for k, v in x.items()) + "}"
    if isinstance(x, float):
        return num32(x).s if is_f32(x) else repr(x)
    return json.dumps(x)


def write(topic: str, about: str, cases: list) -> None:
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), f"{topic}: duplicate case names"
    head = {"topic": topic, "about": about, "generator": "kernels/testdata/generate.py"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "cases": [')
    lines.append(",\n\n".join("    " + dump(c, 2) for c in cases))
    lines.append("  ]")
    lines.append("}")
    path = HERE / f"{topic}.json"
    text = "\n".join(lines) + "\n"
    json.loads(text)  # well-formed
    path.write_text(text)
    print(f"{path.name}: {len(cases)} cases, {len(text) // 1024} KiB")


def main() -> None:
    for i, (topic, (about, make)) in enumerate(TOPICS.items()):
        write(topic, about, make(random.Random(20261123 + i)))


if __name__ == "__main__":
    main()
