#!/usr/bin/env python3
"""Time real-CNN layers in streamfuse against ONNX Runtime, side by side,
same thread count, kernel time only.

Layers (float32, batch 1):

* ``stem``: ResNet-50's stem at 720p: Conv 7x7/2 pad 3, 3->64, no bias ->
  BatchNormalization -> Relu -> MaxPool 3x3/2 pad 1 (input 3x720x1280);
* ``dw32`` .. ``dw256``: a MobileNet depthwise layer at 112x112: Conv 3x3
  pad 1, group = channels (32, 64, 128, 256) -> BatchNormalization -> Clip
  0..6 (ReLU6);
* ``cnn``: the cnn example's layer at 720p: Conv 3x3 pad 1, 3->16 -> Relu
  -> MaxPool 2x2/2;
* ``conv256``: a deep layer, Conv 3x3 pad 1, 256->256 -> Relu at 56x56;
* ``vgg16``: VGG-16's feature extractor at 224x224 (13 Conv 3x3 + Relu, 5
  MaxPool 2x2/2);
* ``mbv2``: a MobileNetV2 inverted-residual body without the residual, at
  56x56: Conv 1x1 24->144 -> BN -> ReLU6 -> depthwise 3x3/2 pad 1 -> BN ->
  ReLU6 -> Conv 1x1 144->32 -> BN.

Both sides run the same ONNX model, built with ``onnx.helper`` (seeded
random weights): ONNX Runtime directly (CPU execution provider, all graph
optimisations, ``intra_op_num_threads = T``, sequential execution), and
streamfuse as a user would, ``streamfuse import`` (which folds each batch
norm into its conv) then ``streamfuse kernels bench SPEC --threads T
--json`` (``fusion: kernel``: each conv with its activation and pool as one
pass). Each side runs warm-up calls, then timed calls on one input, and
reports the median ms per frame (kernel time: no source, no sink).

    python3 benches/compare/cnn_layers.py [--binary target/release/streamfuse]
        [--layers stem,dw64] [--threads 2] [--iters 30]

Installs numpy, onnx and onnxruntime (the ONNX Runtime check's pins) into
``.venv/onnx`` and re-executes itself there. The markdown table goes to
stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "onnx"))


def ensure_venv() -> None:
    """This script in the ONNX Runtime check's venv (same pins)."""
    from check_against_onnxruntime import ensure_venv as check_venv  # noqa: PLC0415

    check_venv(__file__)


# A layer: its nodes, as (kind, parameters...), and its input shape [C, H, W].


def stem_layer():
    nodes = [("conv", 3, 64, 7, 2, 3, 1), ("bn", 64), ("relu",), ("maxpool", 3, 2, 1)]
    return nodes, (3, 720, 1280)


def dw_layer(c: int):
    nodes = [("conv", c, c, 3, 1, 1, c), ("bn", c), ("clip6",)]
    return nodes, (c, 112, 112)


def mbv2_layer():
    nodes = [("conv", 24, 144, 1, 1, 0, 1), ("bn", 144), ("clip6",),
             ("conv", 144, 144, 3, 2, 1, 144), ("bn", 144), ("clip6",),
             ("conv", 144, 32, 1, 1, 0, 1), ("bn", 32)]
    return nodes, (24, 56, 56)


def vgg16_layer():
    """VGG-16 features at 224x224: 13 conv 3x3 pad 1 + ReLU, 5 max-pools 2x2/2."""
    nodes, cin = [], 3
    for block in ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)):
        for cout in block:
            nodes += [("conv", cin, cout, 3, 1, 1, 1), ("relu",)]
            cin = cout
        nodes.append(("maxpool", 2, 2, 0))
    return nodes, (3, 224, 224)


def conv256_layer():
    """A deep layer: 256->256 3x3 pad 1 + ReLU at 56x56."""
    return [("conv", 256, 256, 3, 1, 1, 1), ("relu",)], (256, 56, 56)


def cnn_layer():
    """The cnn example's layer: 3->16 3x3 pad 1 + ReLU + max-pool 2x2/2 at 720p."""
    return [("conv", 3, 16, 3, 1, 1, 1), ("relu",), ("maxpool", 2, 2, 0)], (3, 720, 1280)


LAYERS = {
    "stem": stem_layer,
    "dw32": lambda: dw_layer(32),
    "dw64": lambda: dw_layer(64),
    "dw128": lambda: dw_layer(128),
    "dw256": lambda: dw_layer(256),
    "mbv2": mbv2_layer,
    "cnn": cnn_layer,
    "conv256": conv256_layer,
    "vgg16": vgg16_layer,
}


def onnx_model(nodes, shape):
    import numpy as np  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(7)
    inits, graph_nodes = [], []
    cur = "x"
    for k, n in enumerate(nodes):
        out = f"t{k}"
        if n[0] == "conv":
            _, cin, cout, ksz, s, p, g = n
            w = (rng.standard_normal((cout, cin // g, ksz, ksz)) * 0.1).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{k}"))
            graph_nodes.append(helper.make_node(
                "Conv", [cur, f"w{k}"], [out], kernel_shape=[ksz, ksz], strides=[s, s],
                pads=[p] * 4, group=g))
        elif n[0] == "bn":
            c = n[1]
            for nm, v in (("s", 1.0), ("b", 0.1), ("m", 0.05), ("v", 1.2)):
                inits.append(numpy_helper.from_array(np.full(c, v, np.float32), f"{nm}{k}"))
            graph_nodes.append(helper.make_node(
                "BatchNormalization", [cur, f"s{k}", f"b{k}", f"m{k}", f"v{k}"], [out]))
        elif n[0] == "relu":
            graph_nodes.append(helper.make_node("Relu", [cur], [out]))
        elif n[0] == "clip6":
            inits.append(numpy_helper.from_array(np.array(0.0, np.float32), f"lo{k}"))
            inits.append(numpy_helper.from_array(np.array(6.0, np.float32), f"hi{k}"))
            graph_nodes.append(helper.make_node("Clip", [cur, f"lo{k}", f"hi{k}"], [out]))
        elif n[0] == "maxpool":
            _, ksz, s, p = n
            graph_nodes.append(helper.make_node(
                "MaxPool", [cur], [out], kernel_shape=[ksz, ksz], strides=[s, s], pads=[p] * 4))
        cur = out
    c, h, w = shape
    graph = helper.make_graph(
        graph_nodes, "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def time_ort(model, shape, threads: int, warmup: int, iters: int) -> float:
    import numpy as np  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    for _ in range(warmup):
        sess.run(None, {"x": x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {"x": x})
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def time_streamfuse(binary: Path, name: str, model, threads: int, warmup: int,
                    iters: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as d:
        onnx_path = Path(d) / f"{name}.onnx"
        onnx_path.write_bytes(model.SerializeToString())
        spec = Path(d) / f"{name}.yaml"
        imp = subprocess.run([str(binary), "import", str(onnx_path), "-o", str(spec)],
                             capture_output=True, text=True, check=False)
        if imp.returncode != 0:
            raise SystemExit(f"cnn_layers: streamfuse import failed on {name}:\n{imp.stderr}")
        r = subprocess.run([str(binary), "kernels", "bench", str(spec), "--threads", str(threads),
                            "--warmup", str(warmup), "--iters", str(iters), "--json"],
                           capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"cnn_layers: streamfuse failed on {name}:\n{r.stderr}")
    j = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    groups = " | ".join(j.get("kernels", []))
    return float(j["median_ms"]), groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "streamfuse"))
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    ensure_venv()
    import onnxruntime as ort  # noqa: PLC0415

    print(f"Machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; ONNX Runtime {ort.__version__}; {args.threads} threads; "
          f"median of {args.iters} after {args.warmup} warm-up calls\n")
    print("| layer | streamfuse ms | ONNX Runtime ms | speed-up (ORT / streamfuse) | streamfuse groups |")
    print("|---|---:|---:|---:|---|")
    for name in args.layers.split(","):
        nodes, shape = LAYERS[name]()
        model = onnx_model(nodes, shape)
        sf, groups = time_streamfuse(Path(args.binary), name, model, args.threads, args.warmup,
                                     args.iters)
        ort_ms = time_ort(model, shape, args.threads, args.warmup, args.iters)
        print(f"| {name} | {sf:.2f} | {ort_ms:.2f} | {ort_ms / sf:.2f}x | {groups} |", flush=True)


if __name__ == "__main__":
    main()
