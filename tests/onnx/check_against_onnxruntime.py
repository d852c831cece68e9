#!/usr/bin/env python3
"""End-to-end check of streamfuse against an engine it does not share code
with: ONNX Runtime.

Builds a small ONNX model with the `onnx` package (Conv 3->16 3x3 with bias,
pad 1 -> Relu -> MaxPool 2x2 -> Conv 16->8 3x3 with bias, pad 1 -> Relu),
seeded random weights, runs it with `onnxruntime` on a real photograph
shipped inside a PyPI wheel (scikit-image's `data.astronaut()`, 512x512 RGB,
scaled to [0, 1]), then runs the same image through

1. `streamfuse import model.onnx` + `streamfuse run` with an npy source and
   sink (weights read from the model's initializers), and
2. a spec whose conv weights come from a safetensors export of the same
   weights,

and compares each output with ONNX Runtime's: max |streamfuse - ort| must be
at most 1e-4 x max |ort|. Installs its packages into .venv/onnx (pinned) and
re-executes itself there.

    python3 tests/onnx/check_against_onnxruntime.py [--binary target/ci/streamfuse]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "onnx"
PINS = [
    "numpy==2.4.6",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "scikit-image==0.26.0",
    "safetensors==0.8.0",
]
TOLERANCE = 1e-4


def ensure_venv() -> None:
    """Re-executes this script inside .venv/onnx, installing the pins first."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    stamp = VENV / ".pins"
    python = VENV / "bin" / "python"
    if not stamp.exists() or stamp.read_text() != "\n".join(PINS):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
        stamp.write_text("\n".join(PINS))
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def build_model(path: Path, weights: dict) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
    ]
    graph = helper.make_graph(
        nodes,
        "astronaut-cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 512, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 256, 256])],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def run(binary: Path, *args: str) -> str:
    out = subprocess.run([str(binary), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"streamfuse {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def compare(name: str, got, ref) -> float:
    import numpy as np

    if got.shape != ref.shape:
        sys.exit(f"{name}: shape {got.shape}, ONNX Runtime {ref.shape}")
    err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    scale = float(np.max(np.abs(ref)))
    ratio = err / scale
    status = "ok" if ratio <= TOLERANCE else "FAIL"
    print(f"{name}: max |streamfuse - onnxruntime| = {err:.3e}, max |onnxruntime| = {scale:.3e}, "
          f"ratio {ratio:.2e} (limit {TOLERANCE:.0e}) {status}")
    return ratio


def main() -> None:
    ensure_venv()
    import numpy as np
    import onnxruntime as ort
    import skimage.data
    from safetensors.numpy import save_file

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="target/ci/streamfuse", help="streamfuse binary (relative to the repo)")
    args = ap.parse_args()
    binary = (ROOT / args.binary).resolve()

    rng = np.random.default_rng(20261123)

    def uniform(shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    weights = {
        "conv1.weight": uniform((16, 3, 3, 3), 27),
        "conv1.bias": uniform((16,), 27),
        "conv2.weight": uniform((8, 16, 3, 3), 144),
        "conv2.bias": uniform((8,), 144),
    }
    image = skimage.data.astronaut()  # (512, 512, 3) uint8, shipped in the wheel
    x = (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        build_model(d / "model.onnx", weights)
        sess_opts = ort.SessionOptions()
        sess_opts.intra_op_num_threads = 2
        ref = ort.InferenceSession(str(d / "model.onnx"), sess_opts,
                                   providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.save(d / "frames.npy", x)

        # 1. import + run, weights from the model's initializers.
        run(binary, "import", str(d / "model.onnx"), "-o", str(d / "model.yaml"))
        spec = []
        for line in (d / "model.yaml").read_text().splitlines():
            if line.startswith("source:"):
                line = "source: { npy: { path: frames.npy } }"
            elif line.startswith("sink:"):
                line = "sink: { npy: { path: out.npy } }"
            spec.append(line)
        (d / "model.yaml").write_text("\n".join(spec) + "\n")
        run(binary, "run", str(d / "model.yaml"), "--json")
        worst = compare("imported ONNX model", np.load(d / "out.npy"), ref)

        # 2. the same weights from safetensors (as exported from PyTorch).
        save_file(weights, str(d / "weights.safetensors"))
        (d / "safetensors.yaml").write_text(
            "name: astronaut-cnn-safetensors\n"
            "source: { npy: { path: frames.npy } }\n"
            "stages:\n"
            "  - { id: conv1, op: conv2d, kernel: 3, padding: 1, out_channels: 16,"
            " weights: { safetensors: { path: weights.safetensors, tensor: conv1.weight, bias: conv1.bias } } }\n"
            "  - { id: relu1, op: relu }\n"
            "  - { id: pool1, op: maxpool, size: 2 }\n"
            "  - { id: conv2, op: conv2d, kernel: 3, padding: 1, out_channels: 8,"
            " weights: { safetensors: { path: weights.safetensors, tensor: conv2.weight, bias: conv2.bias } } }\n"
            "  - { id: relu2, op: relu }\n"
            "sink: { npy: { dir: out-st } }\n"
        )
        run(binary, "run", str(d / "safetensors.yaml"), "--json")
        got = np.load(d / "out-st" / "0-0.npy")[None]
        worst = max(worst, compare("safetensors weights", got, ref))

    if worst > TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    main()
