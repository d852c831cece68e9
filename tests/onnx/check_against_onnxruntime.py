#!/usr/bin/env python3
"""End-to-end check of streamfuse against an engine it does not share code
with: ONNX Runtime.

Builds ONNX models with the `onnx` package and seeded random weights, runs
each with `onnxruntime` on a real photograph shipped inside a PyPI wheel
(scikit-image's `data.astronaut()`, 512x512 RGB, resized or cropped to the
model's input, scaled to [0, 1]), runs the same input through
`streamfuse import model.onnx` + `streamfuse run` with an npy source and
sink (weights read from the model's initializers), and compares: max
|streamfuse - ort| must be at most 1e-4 x max |ort|. The models:

1. a small CNN (Conv 3->16 3x3 with bias, pad 1 -> Relu -> MaxPool 2x2 ->
   Conv 16->8 3x3 with bias, pad 1 -> Relu) at 512x512, imported, and the
   same weights given to a hand-written spec as a safetensors export;
2. single-op models (`models.py`, seeded) covering every attribute the
   import takes: Conv (non-square kernels, strides and dilations per axis,
   asymmetric pads, auto_pad SAME_UPPER / SAME_LOWER / VALID, grouped,
   depthwise and depthwise x2, with and without bias, a folded
   BatchNormalization, and random attribute draws), MaxPool and
   AveragePool (pads, strides, dilations, ceil_mode, auto_pad, non-square
   kernels, count_include_pad 0 and 1), GlobalAveragePool (also with a
   dynamic input size given by --input), GlobalMaxPool, BatchNormalization
   alone, Relu, LeakyRelu, Clip (Clip-6 attributes; opset 13 inputs from
   initializers, from Constant nodes, one bound only), Identity and Dropout
   in a chain; corner cases: a 1x1 output from a kernel as large as the
   padded input, strides above the kernel, pads as large as the window,
   odd sizes with ceil_mode and a last window that would start in the
   padding; and short chains the runtime fuses into one kernel (a conv or
   pointwise producer, an epilogue, a pool that is not the plain max pool);
3. real architectures (`architectures.py`): VGG-16 features at 224x224,
   the ResNet-50 stem at 1280x720, and a MobileNetV2 inverted-residual body
   (without the residual) after the MobileNetV2 stem at 224x224;
4. models the import must refuse (a residual Add, a Concat of two
   branches, a Sigmoid, a Flatten, an Add reading the running tensor as its
   second operand, a graph output that a node reads on): `streamfuse
   import` must exit non-zero with a one-line error naming the node, and
   write nothing.

The chains, architectures and the small CNN also run with `--fusion off`
(every stage its own kernel). ONNX Runtime itself is checked against an
independent float64 numpy implementation of the ONNX spec (`reference.py`)
within the same tolerance; where ONNX Runtime refuses a model or departs
from the spec (dilations with auto_pad SAME_*, a negative SAME padding),
streamfuse is compared with that reference instead (rows marked `*`).
Prints one table row per check (max |streamfuse - ort|, max |ort|, their
ratio, ORT's ratio to the numpy reference, pass or fail) and the time
taken, and exits non-zero on any failure, each named with the model and
its attribute set. Installs its packages into .venv/onnx (pinned) and
re-executes itself there.

    python3 tests/onnx/check_against_onnxruntime.py [--binary target/ci/streamfuse] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


def ensure_venv(script: str = __file__) -> None:
    """Re-executes `script` (this one by default) inside .venv/onnx,
    installing the pins first."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    stamp = VENV / ".pins"
    python = VENV / "bin" / "python"
    if not stamp.exists() or stamp.read_text() != "\n".join(PINS):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
        stamp.write_text("\n".join(PINS))
    os.execv(str(python), [str(python), script, *sys.argv[1:]])


@dataclass
class Row:
    """One line of the table."""

    model: str
    err: float | None = None
    scale: float | None = None
    ref_ratio: float | None = None  # ONNX Runtime vs the numpy reference
    failure: str | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.err is None else relative(self.err, self.scale)


def relative(err: float, scale: float) -> float:
    """`err / scale`; an all-zero reference needs an exact match."""
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))


class Timer:
    """Seconds spent per engine."""

    def __init__(self):
        self.spent: dict[str, float] = {}

    def __call__(self, what: str, f, *args, **kw):
        t = time.monotonic()
        try:
            return f(*args, **kw)
        finally:
            self.spent[what] = self.spent.get(what, 0.0) + time.monotonic() - t


def astronaut_cnn(seed: int):
    """The small CNN of check 1 and its weights (also saved as safetensors)."""
    import numpy as np

    from models import Case, Chain, photo

    rng = np.random.default_rng(seed)

    def uniform(shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    weights = {
        "conv1.weight": uniform((16, 3, 3, 3), 27),
        "conv1.bias": uniform((16,), 27),
        "conv2.weight": uniform((8, 16, 3, 3), 144),
        "conv2.bias": uniform((8,), 144),
    }
    x = photo(512, 512)  # the photograph at its own size
    c = Chain("astronaut-cnn", x, opset=17)
    c.conv(weights["conv1.weight"], weights["conv1.bias"], name="conv1", pads=[1, 1, 1, 1], strides=[1, 1])
    c.add("Relu", name="relu1").add("MaxPool", name="pool1", kernel_shape=[2, 2], strides=[2, 2])
    c.conv(weights["conv2.weight"], weights["conv2.bias"], name="conv2", pads=[1, 1, 1, 1])
    c.add("Relu", name="relu2")
    what = "Conv 3->16 3x3 pad 1 -> Relu -> MaxPool 2x2 -> Conv 16->8 3x3 pad 1 -> Relu, input 3x512x512"
    return Case("astronaut-cnn", what, c.model(), x, unfused=True), weights


def streamfuse(binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True)


def first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else "(no output)"


class Checker:
    """Runs cases through ONNX Runtime, the numpy reference and streamfuse."""

    def __init__(self, binary: Path, work: Path, timer: Timer):
        import onnxruntime as ort

        self.binary, self.work, self.timer = binary, work, timer
        self.opts = ort.SessionOptions()
        self.opts.intra_op_num_threads = 2
        self.opts.log_severity_level = 3

    def ort(self, model, x):
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), self.opts, providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0]

    def compare(self, row: Row, got, ref, what: str, attrs: str, ref_name: str = "onnxruntime") -> None:
        import numpy as np

        if got.shape != ref.shape:
            row.failure = f"{row.model} [{attrs}]: streamfuse output shape {got.shape}, {ref_name} {ref.shape}"
            return
        row.err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
        row.scale = float(np.max(np.abs(ref)))
        if not row.ratio <= TOLERANCE:
            worst = np.unravel_index(int(np.argmax(np.abs(got.astype(np.float64) - ref))), ref.shape)
            row.failure = (f"{row.model} [{attrs}]: {what} max |streamfuse - {ref_name}| = {row.err:.3e} at "
                           f"{tuple(int(i) for i in worst)} (streamfuse {float(got[worst]):.6g}, {ref_name} "
                           f"{float(ref[worst]):.6g}), ratio {row.ratio:.2e} > {TOLERANCE:.0e}")

    def case(self, case) -> list[Row]:
        """Imports and runs one case (also with `--fusion off` where the
        case asks); compares with ONNX Runtime, and ONNX Runtime with the
        numpy reference."""
        import numpy as np
        import onnx

        import reference

        row = Row(case.name + ("" if case.ort else " *"))
        d = self.work / case.name
        d.mkdir()
        onnx.save(case.model, str(d / "model.onnx"))
        fail = lambda why: f"{case.name} [{case.attrs}]: {why}"  # noqa: E731
        want = self.timer("numpy reference", reference.evaluate, case.model, case.x)
        if case.ort:
            try:
                ref = self.timer("ONNX Runtime", self.ort, case.model, case.x)
            except Exception as e:  # noqa: BLE001 (a model ORT refuses is a broken check)
                row.failure = fail(f"ONNX Runtime refused the model: {first_line(str(e))}")
                return [row]
            if want.shape != ref.shape:
                row.failure = fail(f"numpy reference shape {want.shape}, ONNX Runtime {ref.shape}")
                return [row]
            row.ref_ratio = relative(float(np.max(np.abs(ref - want))), float(np.max(np.abs(want))))
            if not row.ref_ratio <= TOLERANCE:
                row.failure = fail(f"ONNX Runtime differs from the numpy reference (ratio {row.ref_ratio:.2e}): "
                                   "the model or the reference is wrong, not streamfuse")
                return [row]
        else:
            ref = want.astype(np.float32)
        np.save(d / "frames.npy", case.x)
        out = self.timer("streamfuse", streamfuse, self.binary, "import", str(d / "model.onnx"),
                         "-o", str(d / "model.yaml"), *case.import_args)
        if out.returncode != 0:
            row.failure = fail(f"streamfuse import failed: {first_line(out.stderr)}")
            return [row]
        spec = []
        for line in (d / "model.yaml").read_text().splitlines():
            if line.startswith("source:"):
                line = "source: { npy: { path: frames.npy } }"
            elif line.startswith("sink:"):
                line = "sink: { npy: { path: out.npy } }"
            spec.append(line)
        (d / "model.yaml").write_text("\n".join(spec) + "\n")
        rows = [row]
        if case.unfused:
            rows.append(Row(f"{row.model} [fusion off]", ref_ratio=row.ref_ratio))
        for r, extra in zip(rows, ([], ["--fusion", "off"])):
            (d / "out.npy").unlink(missing_ok=True)
            out = self.timer("streamfuse", streamfuse, self.binary, "run", str(d / "model.yaml"), "--json", *extra)
            if out.returncode != 0:
                r.failure = fail(f"streamfuse run {' '.join(extra)} failed: {first_line(out.stderr)}")
                continue
            self.compare(r, np.load(d / "out.npy"), ref, f"imported model {' '.join(extra)}".strip(), case.attrs,
                         "onnxruntime" if case.ort else "numpy reference")
        return rows

    def safetensors(self, case, weights) -> Row:
        """The astronaut CNN as a hand-written spec reading safetensors."""
        import numpy as np
        from safetensors.numpy import save_file

        row = Row("astronaut-cnn.safetensors-spec")
        d = self.work / row.model
        d.mkdir()
        np.save(d / "frames.npy", case.x)
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
        out = self.timer("streamfuse", streamfuse, self.binary, "run", str(d / "safetensors.yaml"), "--json")
        if out.returncode != 0:
            row.failure = f"{row.model} [safetensors weights]: streamfuse run failed: {first_line(out.stderr)}"
            return row
        ref = self.timer("ONNX Runtime", self.ort, case.model, case.x)
        self.compare(row, np.load(d / "out-st" / "0-0.npy")[None], ref, "safetensors spec", case.attrs)
        return row

    def refused(self, name: str, model, node: str) -> Row:
        """`streamfuse import` must fail with one line naming `node`."""
        import onnx

        row = Row(name)
        d = self.work / name
        d.mkdir()
        onnx.save(model, str(d / "model.onnx"))
        out = self.timer("streamfuse", streamfuse, self.binary, "import", str(d / "model.onnx"),
                         "-o", str(d / "model.yaml"))
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        if out.returncode == 0:
            row.failure = f"{name} [node {node}]: streamfuse import exited 0; expected an error naming `{node}`"
        elif len(lines) != 1 or f"`{node}`" not in lines[0] or "  " in lines[0]:
            row.failure = (f"{name} [node {node}]: expected a one-line error naming `{node}`, got "
                           f"{len(lines)} line(s): {out.stderr.strip()!r}")
        elif (d / "model.yaml").exists():
            row.failure = f"{name} [node {node}]: the import failed but wrote model.yaml"
        else:
            print(f"  {name}: {lines[0]}")
        return row


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[Row]) -> None:
    width = max(len(r.model) for r in rows)
    head = (f"{'model':<{width}}  {'max|sf-ort|':>11}  {'max|ort|':>9}  {'ratio':>8}  {'ort~numpy':>9}  result")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.model:<{width}}  {fmt(r.err, '.3e'):>11}  {fmt(r.scale, '.3e'):>9}  {fmt(r.ratio, '.2e'):>8}  "
              f"{fmt(r.ref_ratio, '.2e'):>9}  {'FAIL' if r.failure else 'ok'}")


def main() -> None:
    if sys.argv[1:] == ["--setup-only"]:
        # Only the venv (the test command makes it while it compiles):
        # outside it, ensure_venv installs it and runs this again inside.
        ensure_venv()
        return
    start = time.monotonic()
    ensure_venv()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import architectures
    import models

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="target/ci/streamfuse", help="streamfuse binary (relative to the repo)")
    ap.add_argument("--only", default="", help="check only the models whose name contains this")
    args = ap.parse_args()
    binary = (ROOT / args.binary).resolve()
    if not binary.exists():
        sys.exit(f"no streamfuse binary at {binary}: cargo build --profile ci -p streamfuse --bin streamfuse")

    timer = Timer()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        check = Checker(binary, Path(tmp), timer)
        cnn, weights = astronaut_cnn(20261123)
        cases = [cnn, *models.single_op_cases(), *architectures.architecture_cases(models.SEED + 1)]
        cases = [c for c in cases if args.only in c.name]
        print(f"built {len(cases)} models in {time.monotonic() - start:.1f} s")
        for case in cases:
            rows += check.case(case)
            if case is cnn:
                rows.append(check.safetensors(cnn, weights))
        for name, model, node in architectures.refused_models(models.SEED + 2):
            if args.only in name:
                rows.append(check.refused(name, model, node))

    print_table(rows)
    if any(" *" in r.model for r in rows):
        print("* compared with the numpy reference (which agrees with onnx.reference): ONNX Runtime refuses\n"
              "  dilations with auto_pad SAME_*, and a SAME padding that would be negative (a stride above the\n"
              "  kernel) in pools, and pads the head of such a SAME_UPPER Conv by -1 where onnx.reference pads 0")
    failures = [r.failure for r in rows if r.failure]
    spent = ", ".join(f"{k} {v:.1f} s" for k, v in timer.spent.items())
    print(f"{len(rows)} checks, {len(failures)} failed; limit: max |streamfuse - ort| <= {TOLERANCE:.0e} x max |ort|; "
          f"took {time.monotonic() - start:.1f} s ({spent})")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
