"""An independent float64 numpy reference for the ONNX nodes streamfuse
imports, written from the ONNX operator spec (not from streamfuse's code
nor ONNX Runtime's): it checks that ONNX Runtime, the reference of the
comparison, computes what the spec says on the models the check builds.

`evaluate(model, x)` interprets a chain (or any topologically sorted graph
of these ops) node by node: Conv (kernel, strides, dilations, pads,
auto_pad, group, bias), MaxPool and AveragePool (the same plus ceil_mode
and count_include_pad), GlobalAveragePool, GlobalMaxPool,
BatchNormalization, Relu, LeakyRelu, Clip (attributes or inputs), Identity,
Dropout and Constant.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper, numpy_helper


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def geometry(a: dict, in_hw, kernel, pool: bool):
    """Pads `[top, left, bottom, right]` and output `[h, w]` as the ONNX
    spec defines them for Conv and the pools. With `ceil_mode` a last
    window that would start in the bottom or right padding is dropped
    (`SAME_*` fixes the output size at ceil(n / stride))."""
    strides = list(a.get("strides") or [1, 1])
    dil = list(a.get("dilations") or [1, 1])
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    ceil = pool and bool(a.get("ceil_mode", 0))
    pads, out = [0, 0, 0, 0], [0, 0]
    for ax in range(2):
        n, s, ext = in_hw[ax], strides[ax], (kernel[ax] - 1) * dil[ax] + 1
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out[ax] = math.ceil(n / s)
            total = max(0, (out[ax] - 1) * s + ext - n)
            head = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[ax], pads[ax + 2] = head, total - head
        else:
            # VALID is no padding; with ceil_mode it rounds up like explicit
            # pads, as ONNX shape inference and ONNX Runtime do (the
            # operator text's VALID formula, and onnx.reference, round down).
            p = [0, 0, 0, 0] if auto == "VALID" else list(a.get("pads") or [0, 0, 0, 0])
            pads[ax], pads[ax + 2] = p[ax], p[ax + 2]
            span = n + p[ax] + p[ax + 2] - ext
            if ceil:
                o = -(-span // s) + 1
                if (o - 1) * s >= n + p[ax]:
                    o -= 1
                out[ax] = o
            else:
                out[ax] = span // s + 1
    return pads, out, strides, dil


def _taps(n_out, stride, head, k, d):
    """Input index of every (output, tap) pair on one axis."""
    return np.arange(n_out)[:, None] * stride - head + np.arange(k)[None, :] * d


def conv(x, w, b, a):
    n, c, h, wd = x.shape
    oc, icg, kh, kw = w.shape
    group = int(a.get("group", 1))
    pads, (oh, ow), (sh, sw), (dh, dw) = geometry(a, (h, wd), (kh, kw), pool=False)
    t, l, bt, r = pads
    # Zero padding, plus slack so every tap slice is in range.
    xp = np.zeros((n, c, h + t + bt + kh * dh + sh, wd + l + r + kw * dw + sw))
    xp[:, :, t:t + h, l:l + wd] = x
    # im2col: every tap's input plane, then one (batched over groups) matmul.
    cols = np.empty((n, group, icg, kh, kw, oh * ow))
    for i in range(kh):
        for j in range(kw):
            xs = xp[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
            cols[:, :, :, i, j, :] = xs.reshape(n, group, icg, oh * ow)
    wg = w.reshape(1, group, oc // group, icg * kh * kw).astype(np.float64)
    out = np.matmul(wg, cols.reshape(n, group, icg * kh * kw, oh * ow)).reshape(n, oc, oh, ow)
    if b is not None:
        out += b[None, :, None, None]
    return out


def pool(x, a, kind):
    n, c, h, w = x.shape
    kernel = list(a["kernel_shape"])
    pads, (oh, ow), (sh, sw), (dh, dw) = geometry(a, (h, w), kernel, pool=True)
    t, l, b, r = pads
    rows = _taps(oh, sh, t, kernel[0], dh)
    cols = _taps(ow, sw, l, kernel[1], dw)
    # Taps inside the input, and inside the padded input (what
    # count_include_pad counts; the ceil_mode overhang is in neither).
    in_r, in_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    pad_r, pad_c = (rows >= -t) & (rows < h + b), (cols >= -l) & (cols < w + r)
    rr, cc = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    acc = np.full((n, c, oh, ow), -np.inf if kind == "max" else 0.0)
    count_in = np.zeros((oh, ow))
    count_pad = np.zeros((oh, ow))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            v = x[:, :, rr[:, i]][:, :, :, cc[:, j]]
            m = in_r[:, i][:, None] & in_c[:, j][None, :]
            if kind == "max":
                acc = np.maximum(acc, np.where(m, v, -np.inf))
            else:
                acc += np.where(m, v, 0.0)
            count_in += m
            count_pad += pad_r[:, i][:, None] & pad_c[:, j][None, :]
    if kind == "max":
        return acc
    count = count_pad if int(a.get("count_include_pad", 0)) else count_in
    return acc / count


def evaluate(model, x: np.ndarray) -> np.ndarray:
    """The model's first output for input `x`, in float64."""
    g = model.graph
    v = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
    v[g.input[0].name] = x.astype(np.float64)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    for node in g.node:
        a = _attrs(node)
        ins = [v[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Constant":
            y = numpy_helper.to_array(a["value"]).astype(np.float64)
        elif op == "Conv":
            y = conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a)
        elif op == "MaxPool":
            y = pool(ins[0], a, "max")
        elif op == "AveragePool":
            y = pool(ins[0], a, "avg")
        elif op == "GlobalAveragePool":
            y = ins[0].mean(axis=(2, 3), keepdims=True)
        elif op == "GlobalMaxPool":
            y = ins[0].max(axis=(2, 3), keepdims=True)
        elif op == "BatchNormalization":
            xx, scale, bias, mean, var = ins[:5]
            eps = a.get("epsilon", 1e-5)
            sh = (1, -1, 1, 1)
            y = (xx - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + eps) * scale.reshape(sh) + bias.reshape(sh)
        elif op == "Relu":
            y = np.maximum(ins[0], 0.0)
        elif op == "LeakyRelu":
            alpha = a.get("alpha", 0.01)
            y = np.where(ins[0] >= 0, ins[0], ins[0] * alpha)
        elif op == "Clip":
            if opset < 11:
                lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
            else:
                lo = ins[1] if len(ins) > 1 and ins[1] is not None else -np.inf
                hi = ins[2] if len(ins) > 2 and ins[2] is not None else np.inf
            y = np.minimum(np.maximum(ins[0], lo), hi)
        elif op in ("Identity", "Dropout"):
            y = ins[0]
        else:
            raise ValueError(f"reference: no numpy reference for op {op} (node {node.name})")
        v[node.output[0]] = y
    return v[g.output[0].name]
