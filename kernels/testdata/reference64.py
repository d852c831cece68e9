"""Float64 reference implementations of streamfuse's ops, in plain Python
(no numpy), written from the ops' definitions and independent of the Rust
code; and the float32 helpers the corpus generator uses. Imported by
generate.py."""

import math
import random
import struct
from pathlib import Path

EPS = 2.0 ** -23
MASK = (1 << 64) - 1
HERE = Path(__file__).parent
WIDTH = 100  # lines up to this long are kept on one line

# --------------------------------------------------------------------------
# float32


def f32(x: float) -> float:
    """x rounded to the nearest float32 (ties to even; overflow to inf)."""
    if math.isnan(x) or math.isinf(x):
        return x
    if abs(x) >= 2.0 ** 128 - 2.0 ** 103:
        return math.copysign(math.inf, x)
    return struct.unpack("<f", struct.pack("<f", x))[0]


def is_f32(x: float) -> bool:
    return math.isnan(x) or f32(x) == x


class Raw:
    """A preformatted JSON value."""

    def __init__(self, s: str):
        self.s = s


def num32(x: float) -> Raw:
    """The shortest text that reads back (as float64, then rounded to
    float32, as serde_json and the harness read it) as the float32 x."""
    assert is_f32(x), x
    if math.isnan(x):
        return Raw('"nan"')
    if math.isinf(x):
        return Raw('"inf"' if x > 0 else '"-inf"')
    if x == 0:
        return Raw("-0.0" if math.copysign(1.0, x) < 0 else "0")
    if x == int(x) and abs(x) < 2 ** 24:
        return Raw(str(int(x)))
    for p in range(1, 18):
        s = "%.*g" % (p, x)
        if f32(float(s)) == x:
            return Raw(s)
    raise AssertionError(x)


def num64(x: float, tol: float) -> Raw:
    """An inexact expected value, with the fewest digits that keep it within
    a hundredth of `tol`."""
    for p in range(6, 18):
        s = "%.*g" % (p, x)
        if abs(float(s) - x) <= tol / 100:
            return Raw(s)
    raise AssertionError((x, tol))


# --------------------------------------------------------------------------
# Deterministic fills (the harness implements the same; see README.md)


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def fill(seed: int, n: int, kind: str, bound: float = 1.0) -> list[float]:
    """Value i: h = mix64(seed + (i + 1) * 0x9E3779B97F4A7C15 mod 2^64);
    "uniform": ((h >> 40) - 2^23) * 2^-23 * bound (bound a power of two, so
    the value is an exact float32 in [-bound, bound)); "pixels": h >> 56."""
    out = []
    for i in range(n):
        h = mix64((seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK)
        if kind == "uniform":
            assert math.frexp(bound)[0] == 0.5, "bound must be a power of two"
            out.append(((h >> 40) - 2 ** 23) * 2.0 ** -23 * bound)
        elif kind == "pixels":
            out.append(float(h >> 56))
        else:
            raise ValueError(kind)
    return out


# --------------------------------------------------------------------------
# Tensors with error bounds


class T:
    """Values in [C, H, W] order, each with a bound on the error a float32
    implementation may have (0: exact)."""

    def __init__(self, shape, v, b=None):
        self.shape = tuple(shape)
        self.v = list(v)
        self.b = list(b) if b is not None else [0.0] * len(self.v)
        c, h, w = self.shape
        assert len(self.v) == c * h * w == len(self.b)

    def at(self, c, y, x):
        _, h, w = self.shape
        i = (c * h + y) * w + x
        return self.v[i], self.b[i]


def reflect101(i: int, n: int) -> int:
    if n == 1:
        return 0
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * n - 2 - i
    return i


# --------------------------------------------------------------------------
# The ops, from their definitions


def pair(v) -> tuple:
    """An int for both axes, or [rows, columns]."""
    return (v, v) if isinstance(v, int) else tuple(v)


def pads4(p) -> tuple:
    """An int for every side, or [top, left, bottom, right]."""
    return (p, p, p, p) if isinstance(p, int) else tuple(p)


def out_len(n: int, pa: int, pb: int, k: int, d: int, s: int, ceil: bool) -> int:
    """The ONNX output size along an axis; with ceil_mode, a last window
    that would start in the end padding is dropped (as PyTorch and ONNX
    Runtime)."""
    span = n + pa + pb - ((k - 1) * d + 1)
    assert span >= 0, "window larger than the padded input"
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= n + pa:
        o -= 1
    return o


def conv2d(t: T, cv: dict) -> T:
    """ONNX Conv in 2-D: strides, dilations, pads per side, groups."""
    c, h, w = t.shape
    assert c == cv["in_channels"]
    kh, kw = cv["kernel"]
    sh, sw = pair(cv["stride"])
    dh, dw = pair(cv.get("dilation", 1))
    pt, pl, pb, pr = pads4(cv["padding"])
    g = cv.get("groups", 1)
    cout = cv["out_channels"]
    icg, ocg = c // g, cout // g
    wts, bias = cv["weights"], cv["bias"]
    oh = out_len(h, pt, pb, kh, dh, sh, False)
    ow = out_len(w, pl, pr, kw, dw, sw, False)
    terms = icg * kh * kw
    v, b = [], []
    for oc in range(cout):
        grp = oc // ocg
        for oy in range(oh):
            for ox in range(ow):
                acc = bias[oc] if bias else 0.0
                mag = abs(acc)
                prop = 0.0
                for j in range(icg):
                    ic = grp * icg + j
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * sh + ky * dh - pt, ox * sw + kx * dw - pl
                            if 0 <= iy < h and 0 <= ix < w:
                                wt = wts[((oc * icg + j) * kh + ky) * kw + kx]
                                x, xb = t.at(ic, iy, ix)
                                acc += wt * x
                                mag += abs(wt * x)
                                prop += abs(wt) * xb
                v.append(acc)
                b.append(prop + (terms + 2) * EPS * mag)
    return T((cout, oh, ow), v, b)


def pool2d(t: T, p: dict) -> T:
    """ONNX MaxPool / AveragePool in 2-D: kernel, strides, dilations, pads
    per side, ceil_mode, count_include_pad; or a global pool. A max never
    takes the padding; a max window with no value inside the input is
    -FLT_MAX (as ONNX Runtime)."""
    c, h, w = t.shape
    if p.get("global"):
        kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, ceil = h, w, 1, 1, 1, 1, 0, 0, 0, 0, False
    else:
        kh, kw = pair(p["kernel"])
        sh, sw = pair(p["stride"])
        dh, dw = pair(p.get("dilation", 1))
        pt, pl, pb, pr = pads4(p.get("padding", 0))
        ceil = p.get("ceil_mode", False)
    avg = p["kind"] == "avg"
    cip = p.get("count_include_pad", False)
    oh = out_len(h, pt, pb, kh, dh, sh, ceil)
    ow = out_len(w, pl, pr, kw, dw, sw, ceil)
    v, b = [], []
    for ch in range(c):
        for oy in range(oh):
            for ox in range(ow):
                win, padded = [], 0
                for ky in range(kh):
                    for kx in range(kw):
                        iy, ix = oy * sh + ky * dh - pt, ox * sw + kx * dw - pl
                        if iy < h + pb and ix < w + pr:
                            padded += 1
                        if 0 <= iy < h and 0 <= ix < w:
                            win.append(t.at(ch, iy, ix))
                if not avg:
                    if not win:
                        v.append(-3.4028234663852886e38)
                        b.append(0.0)
                        continue
                    m = win[0][0]
                    for x, _ in win[1:]:
                        if x > m:
                            m = x
                    v.append(m)
                    b.append(max(xb for _, xb in win))
                else:
                    n = padded if cip else len(win)
                    assert n > 0, "an average over no value"
                    s = sum(x for x, _ in win)
                    mag = sum(abs(x) for x, _ in win)
                    prop = sum(xb for _, xb in win)
                    y = s / n
                    v.append(y)
                    b.append((prop + (len(win) + 2) * EPS * mag) / n + EPS * abs(y))
    return T((c, oh, ow), v, b)


def maxpool(t: T, size: int, stride: int) -> T:
    return pool2d(t, {"kind": "max", "kernel": size, "stride": stride})


def channel_affine(t: T, op: dict) -> T:
    """Per-channel x * scale[c] + shift[c], rounded after the multiply and
    after the add (batch normalization with its statistics folded in)."""
    c, h, w = t.shape
    v, b = [], []
    for i, (x, xb) in enumerate(zip(t.v, t.b)):
        ch = i // (h * w)
        y, yb = pointwise1({"op": "affine", "scale": op["scale"][ch], "shift": op["shift"][ch]}, x, xb)
        v.append(y)
        b.append(yb)
    return T(t.shape, v, b)


def pointwise1(op: dict, x: float, xb: float) -> tuple[float, float]:
    """One value through a pointwise op: float32-exact when the input is
    exact, else float64 with a propagated bound."""
    kind = op["op"]
    if kind == "relu":
        return (x if x > 0 else 0.0), xb
    if kind == "clip":
        lo, hi = op["min"], op["max"]
        v = x if x > lo else lo
        return (v if v < hi else hi), xb
    if kind == "affine":
        s, t = op["scale"], op["shift"]
        if xb == 0:
            return f32(f32(x * s) + t), 0.0
        y = x * s + t
        return y, abs(s) * xb + EPS * (abs(x * s) + abs(y))
    if kind == "leaky_relu":
        a = op["alpha"]
        if x > 0:
            return x, xb
        if xb == 0:
            return f32(x * a), 0.0
        return x * a, abs(a) * xb + EPS * abs(x * a)
    if kind == "threshold":
        th, val = op["threshold"], op["value"]
        assert xb == 0 or abs(x - th) > 2 * xb, (
            f"value {x} within its error bound {xb} of the threshold {th}")
        return (val if x > th else 0.0), 0.0
    raise ValueError(kind)


def pointwise(t: T, op: dict) -> T:
    pairs = [pointwise1(op, x, xb) for x, xb in zip(t.v, t.b)]
    return T(t.shape, [p[0] for p in pairs], [p[1] for p in pairs])


GRAY = {"rgb": [0.299, 0.587, 0.114], "bgr": [0.114, 0.587, 0.299]}


def gray(t: T, order: str) -> T:
    c, h, w = t.shape
    assert c == 3
    k = [f32(x) for x in GRAY[order]]
    v, b = [], []
    for y in range(h):
        for x in range(w):
            px = [t.at(ch, y, x) for ch in range(3)]
            v.append(sum(kc * p for kc, (p, _) in zip(k, px)))
            mag = sum(abs(kc * p) for kc, (p, _) in zip(k, px))
            b.append(sum(kc * pb for kc, (_, pb) in zip(k, px)) + 5 * EPS * mag)
    return T((1, h, w), v, b)


def normalize(t: T, scale: float, mean: list, std: list) -> T:
    c, h, w = t.shape
    v, b = [], []
    for ch in range(c):
        m = mean[0 if len(mean) == 1 else ch]
        s = std[0 if len(std) == 1 else ch]
        for y in range(h):
            for x in range(w):
                p, pb = t.at(ch, y, x)
                v.append((p * scale - m) / s)
                b.append((abs(scale) * pb + 3 * EPS * (abs(p * scale) + abs(m))) / abs(s))
    return T((c, h, w), v, b)


def linear_taps(src: int, dst: int) -> list[tuple[int, float]]:
    """INTER_LINEAR: source position (d + 0.5) * scale - 0.5 as a float32,
    scale = 1 / (dst / src); index and weight clamped at the edges."""
    scale = 1.0 / (dst / src)
    taps = []
    for d in range(dst):
        f = f32((d + 0.5) * scale - 0.5)
        i = math.floor(f)
        wt = f - i
        if i < 0:
            i, wt = 0, 0.0
        if i + 1 >= src:
            i, wt = src - 1, 0.0
        taps.append((i, wt))
    return taps


def resize(t: T, width: int, height: int) -> T:
    c, h, w = t.shape
    xs, ys = linear_taps(w, width), linear_taps(h, height)
    v, b = [], []
    for ch in range(c):
        for sy, fy in ys:
            for sx, fx in xs:
                a = t.at(ch, sy, sx)
                bb = t.at(ch, sy, min(sx + 1, w - 1))
                cc = t.at(ch, min(sy + 1, h - 1), sx)
                d = t.at(ch, min(sy + 1, h - 1), min(sx + 1, w - 1))
                v.append((1 - fy) * ((1 - fx) * a[0] + fx * bb[0])
                         + fy * ((1 - fx) * cc[0] + fx * d[0]))
                big = max(abs(a[0]), abs(bb[0]), abs(cc[0]), abs(d[0]))
                b.append(max(a[1], bb[1], cc[1], d[1]) + 8 * EPS * big)
    return T((c, height, width), v, b)


GAUSS_TABLES = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
}


def gaussian_kernel(k: int, sigma: float) -> list[float]:
    """OpenCV's getGaussianKernel(k, sigma, CV_32F): its tables for sizes up
    to 7 without sigma, else exp(-x^2 / 2 sigma^2) as float32, normalised."""
    if k % 2 == 1 and k <= 7 and sigma <= 0:
        return GAUSS_TABLES[k]
    s = sigma if sigma > 0 else ((k - 1) * 0.5 - 1) * 0.3 + 0.8
    taps = [f32(math.exp(-0.5 / (s * s) * (i - (k - 1) * 0.5) ** 2)) for i in range(k)]
    total = sum(taps)
    return [f32(x / total) for x in taps]


def stencil(t: T, c: int, y: int, x: int, weight, r: int):
    """sum of weight(dy, dx) * t[reflect(y + dy), reflect(x + dx)]: value,
    sum of |terms| and propagated input error."""
    _, h, w = t.shape
    v = mag = prop = 0.0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            k = weight(dy, dx)
            if k:
                p, pb = t.at(c, reflect101(y + dy, h), reflect101(x + dx, w))
                v += k * p
                mag += abs(k * p)
                prop += abs(k) * pb
    return v, mag, prop


def gaussian_blur(t: T, ksize: int, sigma: float) -> T:
    c, h, w = t.shape
    g = gaussian_kernel(ksize, sigma)
    r = ksize // 2
    v, b = [], []
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                s, mag, prop = stencil(t, ch, y, x, lambda dy, dx: g[dy + r] * g[dx + r], r)
                v.append(s)
                b.append(prop + (2 * ksize + 4) * EPS * mag)
    return T((c, h, w), v, b)


def sobel(t: T, mode: str) -> T:
    c, h, w = t.shape

    def smooth(d):
        return 2.0 if d == 0 else 1.0

    def kx(dy, dx):
        return dx * smooth(dy)

    def ky(dy, dx):
        return dy * smooth(dx)

    v, b = [], []
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                gx, mx, px = stencil(t, ch, y, x, kx, 1)
                gy, my, py = stencil(t, ch, y, x, ky, 1)
                bx, by = px + 4 * EPS * mx, py + 4 * EPS * my
                if mode == "dx":
                    v.append(gx)
                    b.append(bx)
                elif mode == "dy":
                    v.append(gy)
                    b.append(by)
                else:
                    m = math.sqrt(gx * gx + gy * gy)
                    v.append(m)
                    b.append(bx + by + 3 * EPS * (abs(gx) + abs(gy)))
    return T((c, h, w), v, b)


def apply(t: T, op: dict) -> T:
    kind = op["op"]
    if kind == "conv2d":
        return conv2d(t, op)
    if kind in ("relu", "clip", "affine", "threshold", "leaky_relu"):
        return pointwise(t, op)
    if kind == "batchnorm":
        return channel_affine(t, op)
    if kind == "pool":
        return pool2d(t, op)
    if kind == "fused":
        if op["conv"]:
            t = conv2d(t, op["conv"])
        for p in op["epilogue"]:
            t = apply(t, p)
        if op["pool"]:
            t = pool2d(t, op["pool"])
        return t
    if kind == "gray":
        return gray(t, op["order"])
    if kind == "normalize":
        return normalize(t, op["scale"], op["mean"], op["std"])
    if kind == "resize":
        return resize(t, op["width"], op["height"])
    if kind == "gaussian_blur":
        return gaussian_blur(t, op["ksize"], op["sigma"])
    if kind == "sobel":
        return sobel(t, op["mode"])
    if kind == "vision_chain":
        for s in op["steps"]:
            t = apply(t, s)
        return t
    raise ValueError(kind)


# --------------------------------------------------------------------------
# Op constructors (the dicts `apply` reads) and their JSON form
