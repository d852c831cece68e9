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

Every implementation runs the same ONNX model, built with ``onnx.helper``
(seeded random weights):

* streamfuse as a user would: ``streamfuse import`` (which folds each batch
  norm into its conv) then ``streamfuse kernels bench SPEC --threads T
  --json`` (``fusion: kernel``: each conv with its activation and pool as
  one pass);
* ONNX Runtime directly (CPU execution provider, all graph optimisations,
  ``intra_op_num_threads = T``, sequential execution);
* PyTorch eager: the model's nodes as ``torch.nn.functional`` calls on its
  initializers (``torch.set_num_threads(T)``, ``inference_mode``);
* OpenCV DNN: ``cv2.dnn.readNetFromONNX`` on the model
  (``cv2.setNumThreads(T)``, its default CPU engine).

PyTorch's and OpenCV's outputs are checked against ONNX Runtime's (max abs
difference within 1e-3 of the output's largest magnitude) before they are
timed; a peer that cannot run a layer gets "n/a" and the reason on stderr.
Each implementation runs warm-up calls (at least ``--warmup`` calls and at
least ``--warmup-ms`` of them: a virtual machine's idle cores take some
tens of milliseconds of work to reach their steady speed, longer than a
few sub-millisecond calls last), then timed calls on one input, and
reports the median ms per frame (kernel time: no source, no sink).

    python3 benches/compare/cnn_layers.py [--binary target/release/streamfuse]
        [--layers stem,dw64] [--threads 2] [--iters 30] [--warmup-ms 500]
        [--rounds 5] [--no-peers]

Installs the CPU peers with ``benches/compare/cpu_peers.py``'s installer
(``.venv/peers``: numpy, onnx, onnxruntime, opencv-python-headless and a
CPU-only torch, pinned) and re-executes itself there; ``--no-peers`` times
ONNX Runtime only, from the ONNX Runtime check's ``.venv/onnx``. The
markdown table goes to stdout.
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


def ensure_venv(peers: bool) -> None:
    """This script in the peers' venv (``cpu_peers.py``'s pins) or, without
    peers, the ONNX Runtime check's."""
    if not peers:
        from check_against_onnxruntime import ensure_venv as check_venv  # noqa: PLC0415

        check_venv(__file__)
        return
    sys.path.insert(0, str(ROOT / "benches" / "compare"))
    import cpu_peers  # noqa: PLC0415

    if (os.environ.get(cpu_peers.BOOTSTRAP_ENV) == "1"
            and Path(sys.prefix).resolve() == cpu_peers.VENV.resolve()):
        return
    cpu_peers.ensure_venv(cpu_peers.resolve_torch_mode("auto"), False)
    env = cpu_peers.torch_env()
    env[cpu_peers.BOOTSTRAP_ENV] = "1"
    os.execve(str(cpu_peers.VENV_PY),
              [str(cpu_peers.VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]], env)


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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    # The output's shape in the graph (OpenCV's importer needs it).
    import onnx  # noqa: PLC0415

    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def warm_up(fn, warmup) -> None:
    """Calls `fn` at least `warmup[0]` times and for at least `warmup[1]` ms."""
    calls, ms = warmup
    start, n = time.perf_counter(), 0
    while n < calls or (time.perf_counter() - start) * 1e3 < ms:
        fn()
        n += 1


def median_ms(fn, warmup, iters: int) -> float:
    warm_up(fn, warmup)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return middle(times)


def middle(xs: list[float]) -> float:
    """The median of `xs` (the upper middle of an even count)."""
    return sorted(xs)[len(xs) // 2]


def layer_input(shape):
    import numpy as np  # noqa: PLC0415

    return np.random.default_rng(1).random((1, *shape), dtype=np.float32)


def ort_output(model, shape):
    import onnxruntime as ort  # noqa: PLC0415

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": layer_input(shape)})[0]


def torch_fn(model, shape, threads: int):
    """The model's nodes as torch.nn.functional calls (the node kinds
    ``onnx_model`` writes)."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415
    from onnx import helper, numpy_helper  # noqa: PLC0415

    torch.set_num_threads(threads)
    inits = {i.name: torch.from_numpy(np.array(numpy_helper.to_array(i)))
             for i in model.graph.initializer}
    nodes = list(model.graph.node)

    def run(x):
        for n in nodes:
            a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
            if n.op_type == "Conv":
                p = a["pads"]
                x = F.conv2d(x, inits[n.input[1]], None, a["strides"], (p[0], p[1]),
                             groups=a.get("group", 1))
            elif n.op_type == "BatchNormalization":
                s, b, m, v = (inits[i] for i in n.input[1:5])
                x = F.batch_norm(x, m, v, s, b, False, 0.0, a.get("epsilon", 1e-5))
            elif n.op_type == "Relu":
                x = F.relu(x)
            elif n.op_type == "Clip":
                x = torch.clamp(x, float(inits[n.input[1]]), float(inits[n.input[2]]))
            elif n.op_type == "MaxPool":
                p = a["pads"]
                x = F.max_pool2d(x, a["kernel_shape"], a["strides"], (p[0], p[1]))
            else:
                raise ValueError(f"no torch call for {n.op_type}")
        return x

    x = torch.from_numpy(layer_input(shape))

    def call():
        with torch.inference_mode():
            return run(x)

    return call, lambda: call().numpy()


def opencv_fn(model, shape, threads: int):
    import cv2  # noqa: PLC0415

    cv2.setNumThreads(threads)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "layer.onnx"
        path.write_bytes(model.SerializeToString())
        net = cv2.dnn.readNetFromONNX(str(path))
    x = layer_input(shape)

    def call():
        net.setInput(x)
        return net.forward()

    return call, call


def time_peer(name: str, peer: str, make, model, shape, want, threads: int, warmup,
              iters: int) -> float | None:
    """A peer's median ms, or None (reason on stderr) when it cannot run the
    layer or disagrees with ONNX Runtime."""
    import numpy as np  # noqa: PLC0415

    try:
        call, output = make(model, shape, threads)
        got = np.asarray(output()).reshape(want.shape)
    except Exception as e:  # noqa: BLE001 - a peer's failure is reported, not fatal
        print(f"cnn_layers: {peer} cannot run {name}: {e}", file=sys.stderr)
        return None
    err = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want))) or 1.0
    if err > 1e-3 * scale:
        print(f"cnn_layers: {peer} differs from ONNX Runtime on {name} by {err:g}",
              file=sys.stderr)
        return None
    return median_ms(call, warmup, iters)


def ort_fn(model, shape, threads: int):
    """ONNX Runtime's call on the layer's input (the session made once)."""
    import numpy as np  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    return lambda: sess.run(None, {"x": x})


def import_spec(binary: Path, name: str, model, d: str) -> Path:
    """`streamfuse import` of the layer's model into folder `d`: the spec."""
    onnx_path = Path(d) / f"{name}.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    spec = Path(d) / f"{name}.yaml"
    imp = subprocess.run([str(binary), "import", str(onnx_path), "-o", str(spec)],
                         capture_output=True, text=True, check=False)
    if imp.returncode != 0:
        raise SystemExit(f"cnn_layers: streamfuse import failed on {name}:\n{imp.stderr}")
    return spec


def time_streamfuse(binary: Path, name: str, spec: Path, threads: int, warmup,
                    iters: int) -> tuple[float, str]:
    """`streamfuse kernels bench` of an imported spec: its median ms and
    groups."""
    r = subprocess.run([str(binary), "kernels", "bench", str(spec), "--threads", str(threads),
                        "--warmup", str(warmup[0]), "--warmup-ms", str(warmup[1]),
                        "--iters", str(iters), "--json"],
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
    ap.add_argument("--warmup-ms", type=int, default=500,
                    help="warm up each engine for at least this long (ms)")
    ap.add_argument("--no-peers", action="store_true",
                    help="time ONNX Runtime only (no PyTorch, no OpenCV DNN)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the engines this many times per layer (each round: "
                         "warm-up and --iters calls of each in turn) and report the "
                         "median of the rounds' medians and the range of the rounds' "
                         "ratios: on a noisy machine, rounds side by side compare the "
                         "engines under the same conditions")
    args = ap.parse_args()
    if args.rounds < 1:
        raise SystemExit("cnn_layers: --rounds must be at least 1")
    ensure_venv(not args.no_peers)
    import onnxruntime as ort  # noqa: PLC0415

    peers = [] if args.no_peers else [("PyTorch", torch_fn), ("OpenCV DNN", opencv_fn)]
    versions = [f"ONNX Runtime {ort.__version__}"]
    if peers:
        import cv2  # noqa: PLC0415
        import torch  # noqa: PLC0415

        versions += [f"PyTorch {torch.__version__}", f"OpenCV {cv2.__version__}"]
    rounds = (f"; {args.rounds} alternating rounds, the median of their medians"
              if args.rounds > 1 else "")
    print(f"Machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; {', '.join(versions)}; {args.threads} threads; "
          f"median of {args.iters} after at least {args.warmup} warm-up calls and "
          f"{args.warmup_ms} ms{rounds}\n")
    head = ["streamfuse ms", "ONNX Runtime ms", "speed-up (ORT / streamfuse)"]
    if args.rounds > 1:
        head.append("rounds' ORT / streamfuse")
    for p, _ in peers:
        head += [f"{p} ms", f"speed-up ({p} / streamfuse)"]
    print("| layer | " + " | ".join(head) + " | streamfuse groups |")
    print("|---|" + "---:|" * len(head) + "---|")
    warmup = (args.warmup, args.warmup_ms)
    for name in args.layers.split(","):
        nodes, shape = LAYERS[name]()
        model = onnx_model(nodes, shape)
        ort_call = ort_fn(model, shape, args.threads)
        sf_rounds, ort_rounds = [], []
        with tempfile.TemporaryDirectory() as d:
            spec = import_spec(Path(args.binary), name, model, d)
            for _ in range(args.rounds):
                sf, groups = time_streamfuse(Path(args.binary), name, spec, args.threads,
                                             warmup, args.iters)
                sf_rounds.append(sf)
                ort_rounds.append(median_ms(ort_call, warmup, args.iters))
        sf, ort_ms = middle(sf_rounds), middle(ort_rounds)
        cells = [f"{sf:.2f}", f"{ort_ms:.2f}", f"{ort_ms / sf:.2f}x"]
        if args.rounds > 1:
            ratios = [o / s for o, s in zip(ort_rounds, sf_rounds)]
            cells.append(f"{min(ratios):.2f}–{max(ratios):.2f}x")
        want = ort_output(model, shape) if peers else None
        for p, make in peers:
            t = time_peer(name, p, make, model, shape, want, args.threads, warmup,
                          args.iters)
            cells += [f"{t:.2f}", f"{t / sf:.2f}x"] if t is not None else ["n/a", "n/a"]
        print(f"| {name} | " + " | ".join(cells) + f" | {groups} |", flush=True)


if __name__ == "__main__":
    main()
