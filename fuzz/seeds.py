#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/seed-*):
small valid and near-valid inputs, built here byte by byte (the standard
library only: no numpy, onnx or safetensors package), so the seeds are
reproducible and nothing is fetched.

    python3 fuzz/seeds.py

Inputs of bugs fixed are named regress-*: those written here reproduce
the bugs found by reading the readers (each named below); those the
fuzzers found are kept as found. The layouts of the framing and wire inputs are
described in runtime/src/fuzzing.rs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
EXAMPLES = ROOT.parent / "examples"


# Inputs that made a reader panic, loop or allocate what a header claimed
# before the fixes; kept as regress-<name>.
REGRESSIONS = {
    # npyz allocated the header length a version-2 header states (4 GiB).
    ("npy", "header-4gib"),
    # npyz multiplied the dimensions unchecked (overflow panic).
    ("npy", "overflow-shape"),
    # onnx::tensor_values multiplied dims unchecked; negative dims read as 0;
    # trailing raw bytes dropped.
    ("onnx", "overflow-dims"),
    ("onnx", "negative-dims"),
    ("onnx", "raw-misaligned"),
    # import followed a cycle forever, a stage per turn.
    ("onnx", "cycle"),
    ("onnx", "self-loop"),
}


def write(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    prefix = "regress" if (target, name) in REGRESSIONS else "seed"
    (d / f"{prefix}-{name}").write_bytes(data)


# --- protobuf encoding (enough for the Frame and ONNX messages) ---------


def varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def f_varint(field: int, v: int) -> bytes:
    return key(field, 0) + varint(v)


def f_bytes(field: int, b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return key(field, 2) + varint(len(b)) + b


def f_float(field: int, v: float) -> bytes:
    return key(field, 5) + struct.pack("<f", v)


def f_packed(field: int, fmt: str, values: list) -> bytes:
    if fmt == "varint":
        body = b"".join(varint(v) for v in values)
    else:
        body = b"".join(struct.pack(fmt, v) for v in values)
    return f_bytes(field, body)


# --- framing and wire ----------------------------------------------------


def frame(stream=0, seq=0, shape=(1, 2, 2), payload=None, protocol=2, first_unacked=0,
          dtype=1, eos=False, capture_ns=0, sent_ns=0) -> bytes:
    if payload is None:
        n = 1
        for d in shape:
            n *= d
        payload = struct.pack(f"<{n}f", *[i * 0.25 for i in range(n)])
    m = b""
    if stream:
        m += f_varint(1, stream)
    if seq:
        m += f_varint(2, seq)
    if capture_ns:
        m += f_varint(3, capture_ns)
    if sent_ns:
        m += f_varint(4, sent_ns)
    if shape:
        m += f_packed(5, "varint", list(shape))
    if dtype:
        m += f_varint(6, dtype)
    if eos:
        m += f_varint(7, 1)
    if protocol:
        m += f_varint(8, protocol)
    if first_unacked:
        m += f_varint(9, first_unacked)
    if payload:
        m += f_bytes(15, payload)
    return m


def grpc(msg: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(msg)) + msg


def chunked(data: bytes, step: int) -> bytes:
    """The framing target's chunk encoding of `data` cut every `step` bytes."""
    out = bytearray()
    for i in range(0, len(data), step):
        c = data[i : i + step]
        if len(c) < 0x80:
            out.append(len(c))
        else:
            out += bytes([0x80 | len(c) >> 8, len(c) & 0xFF])
        out += c
    return bytes(out)


def framing_and_wire() -> None:
    # Shapes by the first byte (runtime/src/fuzzing.rs SHAPES): 0: [1,2,2];
    # 1: [3,4,4] and [1,2,2]; 2: [1,1,1]; 3: none.
    frames = {
        "one": (0, frame(seq=1, sent_ns=5, capture_ns=7)),
        "two-streams": (1, frame(stream=1, seq=3, first_unacked=2)),
        "big-stream0": (1, frame(shape=(3, 4, 4))),
        "scalar": (2, frame(shape=(1, 1, 1), seq=9)),
        "end": (0, frame(seq=4, shape=(), payload=b"", eos=True)),
        "end-with-shape": (0, frame(seq=4, eos=True)),
        "old-protocol": (0, frame(protocol=0)),
        "ahead": (0, frame(seq=1, first_unacked=5)),
        "u8": (0, frame(dtype=2)),
        "short": (0, frame(payload=b"\x00" * 8)),
        "flat": (0, frame(shape=(16,))),
        "zero-dim": (0, frame(shape=(1, 0, 4), payload=b"")),
        "huge-shape": (0, frame(shape=(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), payload=b"")),
        "no-inputs": (3, frame()),
    }
    for name, (conf, m) in frames.items():
        for limit in range(5):
            if name != "one" and limit not in (3, 4):
                continue
            write("wire", f"{name}-{limit}", bytes([conf | limit << 2]) + m)

    msgs = [grpc(frame(seq=s)) for s in range(1, 4)]
    wire = b"".join(msgs)
    write("framing", "three-whole", bytes([0, 0]) + chunked(wire, 127))
    write("framing", "three-by-7", bytes([0, 0]) + chunked(wire, 7))
    write("framing", "three-by-1", bytes([0, 0]) + chunked(wire, 1))
    write("framing", "trailers-ok", bytes([0x80, 0]) + chunked(wire, 40))
    write("framing", "trailers-error", bytes([0x80, 13]) + chunked(wire, 40))
    two = grpc(frame(stream=1, shape=(1, 2, 2), seq=2)) + grpc(frame(shape=(3, 4, 4), seq=2))
    write("framing", "two-streams", bytes([1, 0]) + chunked(two, 300))
    write("framing", "end", bytes([0, 0]) + chunked(msgs[0] + grpc(frame(seq=1, shape=(), payload=b"", eos=True)), 9))
    over = grpc(frame(seq=77, stream=2, shape=(64, 64, 64), payload=b"\x01" * 600))
    write("framing", "oversized", bytes([2, 0]) + chunked(over, 100))
    write("framing", "oversized-head-only", bytes([2, 0]) + chunked(over[:20], 20))
    write("framing", "compressed", bytes([0, 0]) + chunked(grpc(frame(), flag=1), 50))
    write("framing", "truncated", bytes([0, 0]) + chunked(msgs[0][:-3], 50))
    write("framing", "garbage-message", bytes([0, 0]) + chunked(grpc(b"\xff\xff\xff\xff"), 50))
    write("framing", "empty-message", bytes([0, 0]) + chunked(grpc(b""), 50))


# --- npy -----------------------------------------------------------------


def npy(descr: str, shape: tuple, data: bytes, fortran=False, version=1, pad=True) -> bytes:
    dims = ", ".join(str(d) for d in shape)
    if len(shape) == 1:
        dims += ","
    d = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': ({dims}), }}"
    pre = 10 if version == 1 else 12
    total = pre + len(d) + 1
    if pad:
        d += " " * ((64 - total % 64) % 64)
    d += "\n"
    size = struct.pack("<H", len(d)) if version == 1 else struct.pack("<I", len(d))
    return b"\x93NUMPY" + bytes([version, 0]) + size + d.encode() + data


def values(fmt: str, n: int) -> bytes:
    return struct.pack(f"{fmt[0]}{n}{fmt[1]}", *[(i % 7) * 0.5 - 1 for i in range(n)])


def npy_seeds() -> None:
    w = lambda name, b: write("npy", name, b)  # noqa: E731
    w("f32-chw", npy("<f4", (1, 2, 3), values("<f", 6)))
    w("f32-nchw", npy("<f4", (2, 1, 2, 2), values("<f", 8)))
    w("f32-be", npy(">f4", (1, 2, 2), values(">f", 4)))
    w("f64", npy("<f8", (1, 2, 2), values("<d", 4)))
    w("f64-be-stacked", npy(">f8", (3, 1, 1, 2), values(">d", 6)))
    w("f32-vector", npy("<f4", (5,), values("<f", 5)))
    w("f32-scalar", npy("<f4", (), values("<f", 1)))
    w("f32-zero-dim", npy("<f4", (0, 3, 4), b""))
    w("v2-header", npy("<f4", (1, 2, 2), values("<f", 4), version=2))
    w("v3-header", npy("<f4", (1, 2, 2), values("<f", 4), version=3))
    w("unpadded", npy("<f4", (1, 1, 2), values("<f", 2), pad=False))
    w("int32", npy("<i4", (1, 2, 2), struct.pack("<4i", 1, 2, 3, 4)))
    w("fortran", npy("<f4", (1, 2, 2), values("<f", 4), fortran=True))
    w("truncated", npy("<f4", (1, 4, 4), values("<f", 5)))
    w("nan", npy("<f4", (1, 1, 2), struct.pack("<2f", 1.0, float("nan"))))
    w("huge-shape", npy("<f4", (3, 1, 99999999, 99999999), values("<f", 4)))
    w("overflow-shape", npy("<f4", (0, 2**40, 2**40), b""))
    w("header-4gib", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr': '<f4'")
    w("bad-magic", b"\x93NUMPX\x01\x00" + npy("<f4", (1,), values("<f", 1))[8:])
    w("structured", npy("[('a', '<f4'), ('b', '<f8')]", (1, 1, 1), b"\x00" * 12))


# --- safetensors ---------------------------------------------------------


def safetensors(tensors: dict, meta=None, align=True) -> bytes:
    header = {}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta is not None:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    if align:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds() -> None:
    w = lambda name, b: write("safetensors", name, b)  # noqa: E731
    f16 = lambda n: struct.pack(f"<{n}e", *[(i % 5) * 0.5 for i in range(n)])  # noqa: E731
    w("f32", safetensors({"weight": ("F32", (2, 1, 3, 3), values("<f", 18)), "bias": ("F32", (2,), values("<f", 2))}))
    w("f16", safetensors({"weight": ("F16", (1, 1, 2, 2), f16(4))}, meta={"format": "pt"}))
    w("bf16", safetensors({"w": ("BF16", (2,), b"\x80\x3f\x00\x40")}))
    w("i32", safetensors({"w": ("I32", (2,), struct.pack("<2i", 1, 2))}))
    w("scalar", safetensors({"w": ("F32", (), values("<f", 1))}))
    w("empty", safetensors({"w": ("F32", (0, 3), b"")}))
    w("nan", safetensors({"w": ("F32", (2,), struct.pack("<2f", 1.0, float("inf")))}))
    w("no-tensors", safetensors({}, meta={"k": "v"}))
    good = safetensors({"w": ("F32", (2, 2), values("<f", 4))})
    w("truncated", good[:-3])
    w("bad-offsets", good.replace(b"[0,16]", b"[4,20]"))
    w("big-shape", good.replace(b"[2,2]", b"[99999999999,99999999999]"))
    w("header-too-long", struct.pack("<Q", 1 << 40) + b"{}")


# --- onnx ----------------------------------------------------------------

FLOAT, FLOAT16, DOUBLE = 1, 10, 11


def tensor(name: str, dims: list, vals: list | None = None, data_type=FLOAT, raw: bytes | None = None,
           inline=False, external=False) -> bytes:
    t = f_packed(1, "varint", dims) if dims else b""
    t += f_varint(2, data_type) + f_bytes(8, name)
    if vals is None:
        vals = [(i % 5) * 0.25 - 0.5 for i in range(prod(dims))]
    if raw is not None:
        t += f_bytes(9, raw)
    elif inline:
        if data_type == FLOAT:
            t += f_packed(4, "<f", vals)
        elif data_type == DOUBLE:
            t += f_packed(10, "<d", vals)
        else:  # float16 bits in int32_data
            t += f_packed(5, "varint", [struct.unpack("<H", struct.pack("<e", v))[0] for v in vals])
    else:
        fmt = {FLOAT: "<f", DOUBLE: "<d", FLOAT16: "<e"}.get(data_type, "<f")
        t += f_bytes(9, b"".join(struct.pack(fmt, v) for v in vals))
    if external:
        t += f_varint(14, 1)
    return t


def prod(dims: list) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def attr(name: str, f=None, i=None, s=None, ints=None, floats=None, t=None) -> bytes:
    a = f_bytes(1, name)
    if f is not None:
        a += f_float(2, f)
    if i is not None:
        a += f_varint(3, i)
    if s is not None:
        a += f_bytes(4, s)
    if t is not None:
        a += f_bytes(5, t)
    for v in floats or []:
        a += f_float(7, v)
    for v in ints or []:
        a += f_varint(8, v)
    return a


def node(op: str, inputs: list, outputs: list, name: str = "", attrs: list = ()) -> bytes:
    n = b"".join(f_bytes(1, x) for x in inputs) + b"".join(f_bytes(2, x) for x in outputs)
    if name:
        n += f_bytes(3, name)
    n += f_bytes(4, op)
    n += b"".join(f_bytes(5, a) for a in attrs)
    return n


def value_info(name: str, dims: list | None) -> bytes:
    v = f_bytes(1, name)
    if dims is not None:
        shape = b"".join(f_bytes(1, f_varint(1, d) if d else f_bytes(2, "N")) for d in dims)
        ttype = f_varint(1, FLOAT) + f_bytes(2, shape)
        v += f_bytes(2, f_bytes(1, ttype))
    return v


def model(nodes: list, inits: list, inputs: list, outputs: list, name="g") -> bytes:
    g = b"".join(f_bytes(1, n) for n in nodes) + f_bytes(2, name)
    g += b"".join(f_bytes(5, t) for t in inits)
    g += b"".join(f_bytes(11, v) for v in inputs) + b"".join(f_bytes(12, v) for v in outputs)
    opset = f_bytes(1, "") + f_varint(2, 17)
    return f_varint(1, 8) + f_bytes(2, "streamfuse-seeds") + f_bytes(7, g) + f_bytes(8, opset)


def onnx_seeds() -> None:
    w = lambda name, b: write("onnx", name, b)  # noqa: E731
    x = value_info("x", [1, 3, 8, 8])
    conv = node("Conv", ["x", "w", "b"], ["c"], "conv1",
                [attr("kernel_shape", ints=[3, 3]), attr("pads", ints=[1, 1, 1, 1]), attr("strides", ints=[1, 1])])
    bn = node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"], "bn1", [attr("epsilon", f=1e-5)])
    relu = node("Relu", ["n"], ["r"], "relu1")
    pool = node("MaxPool", ["r"], ["y"], "pool1", [attr("kernel_shape", ints=[2, 2]), attr("strides", ints=[2, 2])])
    inits = [tensor("w", [4, 3, 3, 3]), tensor("b", [4], inline=True), tensor("s", [4]), tensor("bb", [4]),
             tensor("m", [4]), tensor("v", [4], vals=[1.0, 2.0, 0.5, 1.5])]
    w("conv-bn-relu-pool", model([conv, bn, relu, pool], inits, [x, *[value_info(n, None) for n in ["w", "b"]]],
                                 [value_info("y", [1, 4, 4, 4])]))
    # Clip with Constant-node bounds, LeakyRelu, AveragePool, global pool.
    lo = node("Constant", [], ["lo"], "lo", [attr("value", t=tensor("lo", [], vals=[0.0]))])
    hi = node("Constant", [], ["hi"], "hi", [attr("value_float", f=6.0)])
    chain = [lo, hi,
             node("Clip", ["x", "lo", "hi"], ["a"], "clip"),
             node("LeakyRelu", ["a"], ["b1"], "lrelu", [attr("alpha", f=0.1)]),
             node("AveragePool", ["b1"], ["c1"], "avg", [attr("kernel_shape", ints=[2, 2]), attr("auto_pad", s="SAME_UPPER"),
                                                          attr("count_include_pad", i=1), attr("ceil_mode", i=1)]),
             node("Identity", ["c1"], ["d1"]),
             node("Dropout", ["d1"], ["e1", "mask"]),
             node("GlobalAveragePool", ["e1"], ["y"])]
    w("clip-pools", model(chain, [], [x], [value_info("y", None)]))
    # Depthwise conv with float16 and double weights, dilation, old-style Clip.
    dw = node("Conv", ["x", "wd"], ["c"], "dw", [attr("group", i=3), attr("dilations", ints=[2, 2]), attr("auto_pad", s="VALID")])
    w("depthwise-f16", model([dw, node("Clip", ["c"], ["y"], "", [attr("min", f=0.0), attr("max", f=1.0)])],
                             [tensor("wd", [3, 1, 3, 3], data_type=FLOAT16)], [x], [value_info("y", None)]))
    w("double-inline", model([node("Conv", ["x", "wd"], ["y"], "c")],
                             [tensor("wd", [2, 3, 1, 1], data_type=DOUBLE, inline=True)], [x], [value_info("y", None)]))
    w("f16-inline", model([node("Conv", ["x", "wd"], ["y"], "c")],
                          [tensor("wd", [2, 3, 1, 1], data_type=FLOAT16, inline=True)], [x], [value_info("y", None)]))
    w("global-max", model([node("GlobalMaxPool", ["x"], ["y"])], [], [value_info("x", [0, 0, 0, 0])], [value_info("y", None)]))
    # Near-valid: a branch, a cycle, an unsupported op, bad tensors.
    w("branch", model([node("Relu", ["x"], ["a"], "r1"), node("Relu", ["a"], ["b"], "r2"), node("Add", ["a", "b"], ["y"], "add")],
                      [], [x], [value_info("y", None)]))
    w("cycle", model([node("Relu", ["x"], ["a"], "r1"), node("Relu", ["a"], ["x2"], "r2"), node("Relu", ["x2"], ["a"], "r3")],
                     [], [x], [value_info("y", None)]))
    w("self-loop", model([node("Relu", ["x"], ["x"], "r1")], [], [x], [value_info("y", None)]))
    w("gemm", model([node("Gemm", ["x", "w"], ["y"])], [tensor("w", [3, 3])], [x], [value_info("y", None)]))
    w("negative-dims", model([node("Conv", ["x", "w"], ["y"])], [tensor("w", [-1, 3, 3, 3], vals=[])], [x], [value_info("y", None)]))
    w("overflow-dims", model([node("Conv", ["x", "w"], ["y"])], [tensor("w", [2**32, 2**32, 2, 1], vals=[])], [x], [value_info("y", None)]))
    w("raw-misaligned", model([node("Conv", ["x", "w"], ["y"])], [tensor("w", [1], raw=b"\x00\x00\x80\x3f\x00")], [x], [value_info("y", None)]))
    w("external", model([node("Conv", ["x", "w"], ["y"])], [tensor("w", [1, 3, 1, 1], external=True)], [x], [value_info("y", None)]))
    w("int64", model([node("Conv", ["x", "w"], ["y"])], [tensor("w", [1], data_type=7, raw=b"\x01" * 8)], [x], [value_info("y", None)]))
    w("huge-input", model([node("Relu", ["x"], ["y"])], [], [value_info("x", [1, 2**40, 2**40, 2**40])], [value_info("y", None)]))
    w("no-graph", f_varint(1, 8))


# --- specs ---------------------------------------------------------------


def spec_seeds() -> None:
    for p in sorted(EXAMPLES.glob("*.yaml")):
        write("spec", p.stem + ".yaml", p.read_bytes())
    w = lambda name, text: write("spec", name + ".yaml", text.encode())  # noqa: E731
    w("npy-source", "name: n\nsource: { npy: { path: frames.npy } }\nstages:\n  - { id: r, op: relu }\nsink: { npy: { dir: out } }\n")
    w("weights-files", "name: w\nsource: { synthetic: { width: 8, height: 8, channels: 3, frames: 2, seed: 1 } }\n"
      "stages:\n  - { id: c, op: conv2d, kernel: 3, out_channels: 4, weights: { onnx: { path: m.onnx, initializer: w } } }\n"
      "  - { id: d, op: conv2d, kernel: 1, out_channels: 4, weights: { safetensors: { path: m.safetensors, tensor: w } } }\n"
      "  - { id: e, op: conv2d, kernel: 1, out_channels: 4, weights: { npy: { path: w.npy } } }\n"
      "sink: { stats: {} }\n")
    w("huge-size", "name: h\nsource: { synthetic: { width: 4294967295, height: 4294967295, channels: 4294967295, frames: 1, seed: 0 } }\n"
      "stages:\n  - { id: p, op: maxpool, size: 2, stride: 2 }\nsink: { stats: {} }\n")
    w("zero-size", "name: z\nsource: { synthetic: { width: 0, height: 0, channels: 0, frames: 0, seed: 0 } }\nstages: []\nsink: { stats: {} }\n")
    w("anchors", "name: &n a\nsource: &s { synthetic: { width: 8, height: 8, channels: 1, frames: 1, seed: 0 } }\n"
      "stages:\n  - &st { id: r, op: relu }\nsink: { stats: {} }\nx: *s\n")
    w("bad-field", "name: b\nsorce: {}\n")
    w("not-a-map", "- 1\n- 2\n")


def main() -> None:
    framing_and_wire()
    npy_seeds()
    safetensors_seeds()
    onnx_seeds()
    spec_seeds()
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    count = sum(1 for p in CORPUS.rglob("*") if p.is_file())
    print(f"{count} files, {total} bytes under {CORPUS}")


if __name__ == "__main__":
    main()
