#!/usr/bin/env python3
"""Every vision op of streamfuse against OpenCV's own function, the
independent reference for what these ops mean.

For each op, random 8-bit images (as float32 0-255 values, three planes in
BGR order, several sizes including odd ones) go through `streamfuse run`
with an npy source and sink, and through OpenCV on the same float32 image:

| streamfuse            | OpenCV                                        |
|-----------------------|-----------------------------------------------|
| gray (bgr / rgb)      | cv2.cvtColor(COLOR_BGR2GRAY / COLOR_RGB2GRAY) |
| gaussian_blur k, sigma| cv2.GaussianBlur((k, k), sigma)               |
| sobel dx / dy         | cv2.Sobel(CV_32F, 1, 0 / 0, 1, ksize=3)       |
| sobel magnitude       | cv2.magnitude(Sobel dx, Sobel dy)             |
| resize w x h          | cv2.resize(INTER_LINEAR)                      |
| threshold t, v        | cv2.threshold(THRESH_BINARY)                  |
| normalize             | (x * scale - mean) / std in numpy (OpenCV has no such op) |
| gray -> blur -> sobel | the three OpenCV calls (a fused chain)        |

Tolerance: max |streamfuse - OpenCV| <= 1e-4 x max(1, max |OpenCV|) for
every op (float32 arithmetic in both; the order of the additions differs,
e.g. OpenCV folds symmetric taps). Installs its packages into .venv/vision
(pinned) and re-executes itself there.

    python3 tests/vision/check_against_opencv.py [--binary target/ci/streamfuse]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "vision"
PINS = ["numpy==2.4.6", "opencv-python-headless==5.0.0.93"]
TOLERANCE = 1e-4
SIZES = [(3, 1), (17, 9), (64, 48), (721, 405), (1280, 720)]


def ensure_venv() -> None:
    """Re-executes this script inside .venv/vision, installing the pins first."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    stamp = VENV / ".pins"
    python = VENV / "bin" / "python"
    if not stamp.exists() or stamp.read_text() != "\n".join(PINS):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
        stamp.write_text("\n".join(PINS))
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def cases():
    """(name, stages YAML, OpenCV function of an HWC float32 image, min size)."""
    import cv2
    import numpy as np

    def gray(code):
        return lambda im: cv2.cvtColor(im, code)

    def blur(k, s):
        return lambda im: cv2.GaussianBlur(im, (k, k), s)

    def sobel(dx, dy):
        return lambda im: cv2.Sobel(im, cv2.CV_32F, dx, dy, ksize=3)

    def mag(im):
        return cv2.magnitude(sobel(1, 0)(im), sobel(0, 1)(im))

    def g(im):
        return cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)

    def norm(im):
        mean = np.array([10.0, 120.5, 3.0], np.float32)
        std = np.array([57.0, 0.5, 12.25], np.float32)
        return ((im * np.float32(1 / 255) - mean) / std).astype(np.float32)

    return [
        ("gray bgr", "{ id: g, op: gray, order: bgr }", gray(cv2.COLOR_BGR2GRAY), 1),
        ("gray rgb", "{ id: g, op: gray, order: rgb }", gray(cv2.COLOR_RGB2GRAY), 1),
        ("gaussian_blur 5", "{ id: b, op: gaussian_blur, kernel: 5 }", blur(5, 0), 3),
        ("gaussian_blur 3 sigma 0.8", "{ id: b, op: gaussian_blur, kernel: 3, sigma: 0.8 }", blur(3, 0.8), 2),
        ("gaussian_blur 9 sigma 2.5", "{ id: b, op: gaussian_blur, kernel: 9, sigma: 2.5 }", blur(9, 2.5), 5),
        ("gaussian_blur 11", "{ id: b, op: gaussian_blur, kernel: 11 }", blur(11, 0), 6),
        ("sobel dx", "{ id: s, op: sobel, mode: dx }", sobel(1, 0), 2),
        ("sobel dy", "{ id: s, op: sobel, mode: dy }", sobel(0, 1), 2),
        ("sobel magnitude", "{ id: s, op: sobel, mode: magnitude }", mag, 2),
        ("threshold", "{ id: t, op: threshold, threshold: 127.5, value: 255 }",
         lambda im: cv2.threshold(im, 127.5, 255, cv2.THRESH_BINARY)[1], 1),
        ("normalize", "{ id: n, op: normalize, scale: 0.00392156862745098, mean: [10, 120.5, 3], std: [57, 0.5, 12.25] }",
         norm, 1),
        ("gray -> gaussian_blur -> sobel (fused)",
         "{ id: g, op: gray }, { id: b, op: gaussian_blur, kernel: 5 }, { id: s, op: sobel }",
         lambda im: mag(blur(5, 0)(g(im))), 3),
    ] + [
        (f"resize to {w}x{h}", f"{{ id: r, op: resize, width: {w}, height: {h} }}",
         (lambda w, h: lambda im: cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR))(w, h), 1)
        for (w, h) in [(640, 360), (100, 37), (1921, 1079), (7, 3), (333, 333)]
    ]


def run(binary: Path, *args: str) -> None:
    out = subprocess.run([str(binary), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"streamfuse {' '.join(args)} failed:\n{out.stderr}")


def main() -> None:
    if sys.argv[1:] == ["--setup-only"]:
        # Only the venv (the test command makes it while it compiles):
        # outside it, ensure_venv installs it and runs this again inside.
        ensure_venv()
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "ci" / "streamfuse")
    args = ap.parse_args()
    ensure_venv()
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    rng = np.random.default_rng(20261123)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, stages, fn, min_side in cases():
            worst = 0.0
            for (w, h) in SIZES:
                if min(w, h) < min_side:
                    continue
                img = rng.integers(0, 256, size=(h, w, 3)).astype(np.float32)
                np.save(d / "in.npy", np.ascontiguousarray(img.transpose(2, 0, 1))[None])
                (d / "spec.yaml").write_text(
                    "name: vision-check\n"
                    "source: { npy: { path: in.npy } }\n"
                    f"stages: [ {stages} ]\n"
                    "sink: { npy: { path: out.npy } }\n"
                    "fusion: kernel\n"
                )
                run(args.binary, "run", str(d / "spec.yaml"), "--json")
                got = np.load(d / "out.npy")[0]
                want = fn(img)
                want = want[None] if want.ndim == 2 else want.transpose(2, 0, 1)
                if got.shape != want.shape:
                    failures.append(f"{name} at {w}x{h}: shape {got.shape} vs OpenCV {want.shape}")
                    continue
                err = float(np.max(np.abs(got.astype(np.float64) - want))) / max(1.0, float(np.max(np.abs(want))))
                worst = max(worst, err)
                if err > TOLERANCE:
                    failures.append(f"{name} at {w}x{h}: relative error {err:.2e} > {TOLERANCE:.0e}")
            print(f"{name:42s} max relative error {worst:.2e}")
    print(f"OpenCV {cv2.__version__}; tolerance {TOLERANCE:.0e} x max(1, max |OpenCV|)")
    if failures:
        sys.exit("vision ops differ from OpenCV:\n  " + "\n  ".join(failures))
    print("every vision op agrees with OpenCV")


if __name__ == "__main__":
    main()
