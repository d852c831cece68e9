"""Model builders of the ONNX Runtime check: the photograph as input
tensors, a chain builder on `onnx.helper`, and the seeded single-op models
that cover every attribute streamfuse imports (Conv, MaxPool, AveragePool,
the global pools, BatchNormalization, Relu, LeakyRelu, Clip, Identity,
Dropout), corner cases included.

Each model is a `Case`: its name, the attribute set it tests (named in
failure messages), the ONNX model (checked with `onnx.checker`, full
check) and its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20261204

# Regions of the 512x512 photograph (top, left, bottom, right) whose RGB
# planes make the channels of a multi-channel input: the whole picture,
# the face, the top-left quarter, the lower half.
CROPS = [(0, 0, 512, 512), (40, 150, 240, 350), (0, 0, 256, 256), (256, 0, 512, 512)]


@lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut().astype(np.float64) / 255.0  # (512, 512, 3) in [0, 1]


def photo(h: int, w: int, channels: int = 3, crop: tuple | None = None) -> np.ndarray:
    """The photograph resized to `h`x`w` as a `[1, channels, h, w]` float32
    tensor in [0, 1]; more than 3 channels stack the RGB planes of further
    regions ([`CROPS`], then the same mirrored)."""
    import skimage.transform

    img = astronaut()
    regions = [crop] if crop else []
    regions += CROPS
    planes = []
    k = 0
    while len(planes) < channels:
        t, l, b, r = regions[k % len(regions)]
        part = img[t:b, l:r]
        if k >= len(regions):  # then the same regions mirrored
            part = part[::-1, ::-1]
        if part.shape[:2] != (h, w):  # area averaging down, linear up
            part = skimage.transform.resize_local_mean(part, (h, w), channel_axis=2)
        planes.extend(part.transpose(2, 0, 1))
        k += 1
    x = np.stack(planes[:channels])[None]
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def checked(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its output's type from shape inference (strict), after
    `onnx.checker`'s full check."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    onnx.checker.check_model(model, full_check=True)
    return model


@dataclass
class Case:
    """One model to compare: streamfuse against ONNX Runtime on `x`."""

    name: str
    attrs: str
    model: onnx.ModelProto
    x: np.ndarray
    import_args: list = field(default_factory=list)
    # False where ONNX Runtime refuses the model or departs from the spec:
    # streamfuse is then compared with reference.py (always checked
    # against ONNX Runtime otherwise).
    ort: bool = True
    unfused: bool = False  # also run with `--fusion off` (every stage its own kernel)


class Chain:
    """A chain of nodes on one running tensor, built with `onnx.helper`."""

    def __init__(self, name: str, x: np.ndarray, opset: int = 13, dims: list | None = None):
        self.name, self.x, self.opset = name, x, opset
        self.dims = dims if dims is not None else list(x.shape)
        self.nodes: list = []
        self.inits: list = []
        self.cur = "x"
        self.k = 0

    def init(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name=name))
        return name

    def constant(self, name: str, value) -> str:
        """A `Constant` node producing `value` as tensor `name`."""
        t = numpy_helper.from_array(np.asarray(value, dtype=np.float32), name=name + "_value")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=t))
        return name

    def add(self, op: str, *extra: str, name: str | None = None, outputs: int = 1, **attrs) -> "Chain":
        """Appends node `op` reading the running tensor then `extra`."""
        self.k += 1
        name = name or f"{op.lower()}{self.k}"
        outs = [f"{name}_out"] + [f"{name}_out{i}" for i in range(1, outputs)]
        self.nodes.append(helper.make_node(op, [self.cur, *extra], outs, name=name, **attrs))
        self.cur = outs[0]
        return self

    def conv(self, w: np.ndarray, b: np.ndarray | None = None, name: str | None = None, **attrs) -> "Chain":
        name = name or f"conv{self.k + 1}"
        ins = [self.init(f"{name}.weight", w)]
        if b is not None:
            ins.append(self.init(f"{name}.bias", b))
        return self.add("Conv", *ins, name=name, kernel_shape=list(w.shape[2:]), **attrs)

    def bn(self, scale, bias, mean, var, name: str | None = None, **attrs) -> "Chain":
        name = name or f"bn{self.k + 1}"
        ins = [self.init(f"{name}.{k}", v) for k, v in
               (("scale", scale), ("bias", bias), ("mean", mean), ("var", var))]
        return self.add("BatchNormalization", *ins, name=name, **attrs)

    def model(self) -> onnx.ModelProto:
        """The chain as a checked model whose output is the running tensor."""
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.dims)],
            [helper.make_tensor_value_info(self.cur, TensorProto.FLOAT, None)],
            initializer=self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        return checked(model)


def uniform(rng, shape, fan_in: int) -> np.ndarray:
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def random_bn(rng, c: int, center: float = 0.0, spread: float = 0.3):
    """scale, bias, mean, var of a BatchNormalization over `c` channels."""
    return (rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.2, c),
            center + rng.normal(0.0, spread, c), rng.uniform(0.05, 1.0, c))


def describe(**attrs) -> str:
    return ", ".join(f"{k}={v}" for k, v in attrs.items())


# Conv ---------------------------------------------------------------------

def conv_case(rng, name: str, x, oc: int, kernel, bias: bool = True, bn: bool = False, ort: bool = True,
              **attrs) -> Case:
    """A single Conv (a folded BatchNormalization after it with `bn`)."""
    ic = x.shape[1]
    group = attrs.get("group", 1)
    fan = ic // group * kernel[0] * kernel[1]
    w = uniform(rng, (oc, ic // group, *kernel), fan)
    b = uniform(rng, (oc,), fan) if bias else None
    c = Chain(name, x).conv(w, b, **attrs)
    if bn:
        c.bn(*random_bn(rng, oc, 0.0, 0.1), epsilon=1e-3)
    what = describe(input=f"{x.shape[1]}x{x.shape[2]}x{x.shape[3]}", oc=oc, kernel=list(kernel),
                    bias=bias, **attrs, **({"batchnorm": "folded"} if bn else {}))
    return Case(name, what, c.model(), x, ort=ort)


def negative_same(hw, kernel, strides) -> bool:
    """Whether auto_pad SAME_* would need a negative total padding on an
    axis (a stride above the kernel): ONNX Runtime then pads the head by a
    negative amount (Conv) or refuses the model (pools), where
    onnx.reference, TensorFlow and streamfuse pad 0."""
    return any((-(-n // s) - 1) * s + k < n for n, k, s in zip(hw, kernel, strides))


def random_conv(rng, k: int) -> Case:
    """A Conv with attributes drawn at random (every one a valid, fitting
    window with pads no larger than the window's extent)."""
    while True:
        kernel = [int(v) for v in rng.integers(1, 6, 2)]
        strides = [int(v) for v in rng.integers(1, 4, 2)]
        auto = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
        # ONNX Runtime refuses dilations with auto_pad SAME_*.
        dil = [int(v) for v in rng.integers(1, 3, 2)] if not auto.startswith("SAME") else [1, 1]
        ext = [(kernel[a] - 1) * dil[a] + 1 for a in range(2)]
        pads = [int(rng.integers(0, ext[a % 2] + 1)) for a in range(4)]
        groups = int(rng.choice([1, 2, 3, 6]))
        oc = groups * int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(9, 40, 2))
        padded = [h, w] if auto != "NOTSET" else [h + pads[0] + pads[2], w + pads[1] + pads[3]]
        if ext[0] <= padded[0] and ext[1] <= padded[1] and not (auto.startswith("SAME") and negative_same(
                (h, w), kernel, strides)):
            break
    attrs = {"strides": strides, "dilations": dil, "group": groups}
    attrs.update({"auto_pad": auto} if auto != "NOTSET" else {"pads": pads})
    x = photo(h, w, 6)
    return conv_case(rng, f"conv.random{k}", x, oc, kernel, bias=bool(rng.integers(0, 2)), **attrs)


def conv_cases(rng) -> list[Case]:
    p3 = photo
    return [
        conv_case(rng, "conv.k3x5.s1x2.pads-asym", p3(37, 53), 8, (3, 5), strides=[1, 2], pads=[1, 2, 0, 3]),
        conv_case(rng, "conv.k5x3.s2x1.d2x3.nobias", p3(41, 36), 6, (5, 3), bias=False,
                  strides=[2, 1], dilations=[2, 3], pads=[4, 3, 2, 6]),
        conv_case(rng, "conv.k4x3.s2x3.same_upper", p3(31, 29), 5, (4, 3), strides=[2, 3], auto_pad="SAME_UPPER"),
        conv_case(rng, "conv.k4x4.s3x2.same_lower", p3(33, 40), 4, (4, 4), bias=False,
                  strides=[3, 2], auto_pad="SAME_LOWER"),
        # ONNX Runtime refuses dilations with auto_pad SAME_*, and pads
        # SAME_UPPER by -1 on the left when the stride exceeds the kernel:
        # the numpy reference is the only one for these three.
        conv_case(rng, "conv.k3x4.s2x1.d2x3.same_upper", p3(30, 33), 4, (3, 4), ort=False,
                  strides=[2, 1], dilations=[2, 3], auto_pad="SAME_UPPER"),
        conv_case(rng, "conv.k4x2.s1x3.d3x2.same_lower", p3(29, 31), 4, (4, 2), bias=False, ort=False,
                  strides=[1, 3], dilations=[3, 2], auto_pad="SAME_LOWER"),
        conv_case(rng, "conv.k5x1.s2x4.same_upper.negative-pad", p3(16, 44), 4, (5, 1), ort=False,
                  strides=[2, 4], auto_pad="SAME_UPPER"),
        conv_case(rng, "conv.k7x2.s3x1.valid", p3(30, 25), 4, (7, 2), strides=[3, 1], auto_pad="VALID"),
        conv_case(rng, "conv.group2", p3(28, 30, 6), 8, (3, 3), group=2, pads=[1, 1, 1, 1]),
        conv_case(rng, "conv.depthwise.s2", p3(35, 33, 6), 6, (3, 3), group=6, strides=[2, 2], pads=[1, 1, 1, 1]),
        conv_case(rng, "conv.depthwise.x2.d2.nobias", p3(32, 32, 6), 12, (5, 5), bias=False,
                  group=6, dilations=[2, 2], pads=[4, 4, 4, 4]),
        conv_case(rng, "conv.group3.k1x3.s2", p3(27, 31, 9), 6, (1, 3), group=3, strides=[2, 2], pads=[0, 1, 0, 0]),
        conv_case(rng, "conv.kernel-as-padded-input.1x1", p3(9, 7), 4, (11, 9), pads=[1, 2, 1, 0]),
        conv_case(rng, "conv.k2.s3x4.stride-above-kernel", p3(40, 41), 5, (2, 2), strides=[3, 4]),
        conv_case(rng, "conv.k3.pads-at-extent", p3(12, 14), 4, (3, 3), pads=[3, 0, 2, 3]),
        conv_case(rng, "conv.k1.s2", p3(33, 34), 16, (1, 1), strides=[2, 2]),
        conv_case(rng, "conv.group3+bn-folded", p3(24, 26, 6), 6, (3, 3), bn=True, group=3, pads=[1, 1, 1, 1]),
    ] + [random_conv(rng, k) for k in range(1, 6)]


# Pools --------------------------------------------------------------------

def pool_case(name: str, op: str, x, opset: int = 13, ort: bool = True, **attrs) -> Case:
    c = Chain(name, x, opset=opset).add(op, **attrs)
    what = describe(op=op, opset=opset, input=f"{x.shape[1]}x{x.shape[2]}x{x.shape[3]}", **attrs)
    return Case(name, what, c.model(), x, ort=ort)


def maxpool_cases() -> list[Case]:
    m = "MaxPool"
    return [
        pool_case("maxpool.k3x2.s2x1.pads-asym", m, photo(29, 31), kernel_shape=[3, 2], strides=[2, 1],
                  pads=[1, 0, 2, 1]),
        # ONNX Runtime takes pool pads below the kernel (not its extent).
        pool_case("maxpool.k3.d2x3.s2.pads", m, photo(30, 35, 6), kernel_shape=[3, 3], strides=[2, 2],
                  dilations=[2, 3], pads=[2, 1, 0, 2]),
        pool_case("maxpool.k3.s2.ceil.odd", m, photo(33, 27), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        pool_case("maxpool.k2.s3.pad1.ceil.drop-last", m, photo(17, 23), kernel_shape=[2, 2], strides=[3, 3],
                  pads=[1, 1, 1, 1], ceil_mode=1),
        pool_case("maxpool.k3x4.s2.same_upper", m, photo(35, 30), kernel_shape=[3, 4], strides=[2, 2],
                  auto_pad="SAME_UPPER"),
        pool_case("maxpool.k3.s2.same_upper.ceil.odd", m, photo(27, 33), kernel_shape=[3, 3], strides=[2, 2],
                  auto_pad="SAME_UPPER", ceil_mode=1),
        pool_case("maxpool.k4.s3.same_lower", m, photo(31, 32), kernel_shape=[4, 4], strides=[3, 3],
                  auto_pad="SAME_LOWER"),
        pool_case("maxpool.k5x3.s2x4.valid", m, photo(30, 29), kernel_shape=[5, 3], strides=[2, 4],
                  auto_pad="VALID"),
        pool_case("maxpool.k2.s3.stride-above-kernel", m, photo(40, 38), kernel_shape=[2, 2], strides=[3, 3]),
        pool_case("maxpool.kernel-as-padded-input.1x1", m, photo(7, 6), kernel_shape=[9, 7], pads=[1, 0, 1, 1]),
        pool_case("maxpool.k3.d2.s2.pad1.ceil", m, photo(26, 23), kernel_shape=[3, 3], strides=[2, 2],
                  dilations=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        pool_case("maxpool.k2x3.s2.valid.ceil", m, photo(21, 26), kernel_shape=[2, 3], strides=[2, 2],
                  auto_pad="VALID", ceil_mode=1),
    ]


def avgpool_cases() -> list[Case]:
    a = "AveragePool"
    out = []
    for cip in (0, 1):
        out += [
            pool_case(f"avgpool.k3x2.s2x1.pads-asym.cip{cip}", a, photo(29, 31), kernel_shape=[3, 2],
                      strides=[2, 1], pads=[1, 0, 2, 1], count_include_pad=cip),
            pool_case(f"avgpool.k3.s2.pad1.ceil.odd.cip{cip}", a, photo(33, 27), kernel_shape=[3, 3],
                      strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=cip),
        ]
    return out + [
        pool_case("avgpool.k2.s3.pad1.ceil.drop-last.cip1", a, photo(17, 23), kernel_shape=[2, 2], strides=[3, 3],
                  pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
        pool_case("avgpool.k3.d2.pads.cip1", a, photo(28, 30, 6), opset=19, kernel_shape=[3, 3],
                  dilations=[2, 2], pads=[2, 1, 2, 2], count_include_pad=1),
        pool_case("avgpool.k3x2.d2x3.s2.pad1.ceil.cip0", a, photo(27, 25), opset=19, kernel_shape=[3, 2],
                  strides=[2, 2], dilations=[2, 3], pads=[1, 1, 1, 1], ceil_mode=1),
        pool_case("avgpool.k4x3.s2.same_upper.cip0", a, photo(31, 30), kernel_shape=[4, 3], strides=[2, 2],
                  auto_pad="SAME_UPPER"),
        pool_case("avgpool.k4.s3.same_lower.cip1", a, photo(32, 29), kernel_shape=[4, 4], strides=[3, 3],
                  auto_pad="SAME_LOWER", count_include_pad=1),
        pool_case("avgpool.k2x1.s3x4.same_upper.negative-pad.cip1", a, photo(14, 15), ort=False,
                  kernel_shape=[2, 1], strides=[3, 4], auto_pad="SAME_UPPER", count_include_pad=1),
        pool_case("avgpool.k5x3.s4x2.valid", a, photo(30, 28), kernel_shape=[5, 3], strides=[4, 2],
                  auto_pad="VALID"),
        pool_case("avgpool.kernel-as-padded-input.1x1.cip1", a, photo(7, 6), kernel_shape=[9, 7],
                  pads=[1, 0, 1, 1], count_include_pad=1),
    ]


def global_cases() -> list[Case]:
    dyn = photo(30, 40)
    return [
        pool_case("global_avgpool", "GlobalAveragePool", photo(45, 61)),
        pool_case("global_maxpool", "GlobalMaxPool", photo(37, 50, 6)),
        Case("global_avgpool.dynamic-input", "GlobalAveragePool, input [N, 3, H, W] given by --input 40x30x3",
             Chain("dynamic", dyn, dims=["N", 3, "H", "W"]).add("GlobalAveragePool").model(), dyn,
             import_args=["--input", "40x30x3"]),
    ]


# BatchNormalization and pointwise -----------------------------------------

def pointwise_cases(rng) -> list[Case]:
    """BatchNormalization alone, and Relu, LeakyRelu and Clip after a
    BatchNormalization or a Conv that makes negative values too."""
    out = []

    def case(name: str, what: str, c: Chain):
        out.append(Case(name, what, c.model(), c.x))

    def shifted(name: str, opset: int = 13) -> Chain:
        """The photo through a BatchNormalization centred on 0.5."""
        x = photo(26, 30, 6)
        return Chain(name, x, opset=opset).bn(*random_bn(rng, 6, 0.5, 0.1), epsilon=1e-3)

    def conv(name: str, opset: int = 13) -> Chain:
        x = photo(24, 28)
        return Chain(name, x, opset=opset).conv(uniform(rng, (8, 3, 3, 3), 27), uniform(rng, (8,), 27),
                                                pads=[1, 1, 1, 1])

    x = photo(32, 36, 6)
    scale, bias, mean, var = random_bn(rng, 6, 0.4, 0.2)
    case("batchnorm", "BatchNormalization alone, epsilon=1e-3, random scale/bias/mean/var",
         Chain("bn", x).bn(scale, bias, mean, var, epsilon=1e-3))
    case("batchnorm.default-eps", "BatchNormalization alone, default epsilon (1e-5)",
         Chain("bn", x).bn(*random_bn(rng, 6, 0.4, 0.2)))
    case("relu.after-bn", "BatchNormalization -> Relu", shifted("relu").add("Relu"))
    case("relu.after-conv", "Conv 3x3 pad 1 -> Relu", conv("relu").add("Relu"))
    case("leaky_relu.a0.2.after-conv", "Conv -> LeakyRelu alpha=0.2", conv("lrelu").add("LeakyRelu", alpha=0.2))
    case("leaky_relu.default.after-bn", "BatchNormalization -> LeakyRelu (default alpha 0.01)",
         shifted("lrelu").add("LeakyRelu"))
    case("clip.v6.attrs", "opset 10 (Clip-6), Clip min=-0.25 max=0.35 attributes",
         shifted("clip6", opset=10).add("Clip", min=-0.25, max=0.35))
    c = conv("clip13")
    case("clip.opset13.initializers", "opset 13, Clip min/max inputs from initializers (ReLU6-like 0..0.3)",
         c.add("Clip", c.init("clip.min", 0.0), c.init("clip.max", 0.3)))
    case("clip.v6.min-only", "opset 10 (Clip-6), Clip min=0.1 attribute only",
         shifted("clip6min", opset=10).add("Clip", min=0.1))
    c = shifted("clip13c")
    case("clip.opset13.constants", "opset 13, Clip min/max inputs from Constant nodes (-0.2..0.25)",
         c.add("Clip", c.constant("lo", -0.2), c.constant("hi", 0.25)))
    c = shifted("clip13max")
    case("clip.opset13.max-only", "opset 13, Clip with only max (min input empty), Constant 0.1",
         c.add("Clip", "", c.constant("hi", 0.1)))
    c = conv("clip13min")
    case("clip.opset13.min-only", "opset 13, Clip with only min, initializer -0.05",
         c.add("Clip", c.init("clip.min", -0.05)))

    # Identity and Dropout (with an unused mask output) around a Conv.
    x = photo(25, 27)
    c = Chain("noops", x).add("Identity")
    c.conv(uniform(rng, (4, 3, 3, 3), 27), uniform(rng, (4,), 27), strides=[2, 2])
    c.add("Dropout", outputs=2).add("Relu").add("Identity").add("Dropout")
    case("identity+dropout.chain", "Identity -> Conv -> Dropout (mask unused) -> Relu -> Identity -> Dropout", c)
    return out


# Short chains the runtime fuses into one kernel -----------------------------

def chain_cases(rng) -> list[Case]:
    """Conv or pointwise producers with an epilogue and a pool consumer that
    is not the plain square max pool (the fused kernel's ring path), each
    also run with `--fusion off`."""
    out = []

    def conv(c: Chain, oc: int, kernel, **attrs) -> Chain:
        ic = c.x.shape[1] // attrs.get("group", 1)
        fan = ic * kernel[0] * kernel[1]
        return c.conv(uniform(rng, (oc, ic, *kernel), fan), uniform(rng, (oc,), fan), **attrs)

    c = conv(Chain("c1", photo(37, 41)), 10, (3, 2), strides=[1, 2], pads=[1, 0, 1, 1])
    c.bn(*random_bn(rng, 10, 0.0, 0.1)).add("LeakyRelu", alpha=0.1)
    c.add("AveragePool", kernel_shape=[3, 2], strides=[2, 1], pads=[1, 1, 0, 1], ceil_mode=1, count_include_pad=1)
    out.append(("chain.conv+bn+leaky_relu+avgpool.ceil.cip1", "Conv 3x2 s1x2 pads 1,0,1,1 -> BN (folded) -> "
                "LeakyRelu 0.1 -> AveragePool 3x2 s2x1 pads 1,1,0,1 ceil_mode count_include_pad", c))
    c = Chain("c2", photo(29, 34, 6)).bn(*random_bn(rng, 6, 0.5, 0.1)).add("Relu")
    c.add("MaxPool", kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2], pads=[1, 2, 2, 1], ceil_mode=1)
    out.append(("chain.bn+relu+maxpool.d2.ceil", "BN -> Relu -> MaxPool 3x3 s2 d2 pads 1,2,2,1 ceil_mode", c))
    c = conv(Chain("c3", photo(33, 35, 6)), 6, (3, 3), group=6, pads=[1, 1, 1, 1])
    c.add("Clip", c.init("lo", 0.0), c.init("hi", 0.4)).add("MaxPool", kernel_shape=[2, 2], strides=[2, 2],
                                                             ceil_mode=1)
    out.append(("chain.depthwise+clip+maxpool.ceil", "depthwise Conv 3x3 pad 1 -> Clip 0..0.4 -> MaxPool 2x2/2 "
                "ceil_mode on 33x35", c))
    c = conv(Chain("c4", photo(31, 30)), 12, (1, 1))
    c.add("Relu").add("AveragePool", kernel_shape=[4, 4], strides=[3, 3], auto_pad="SAME_LOWER")
    out.append(("chain.conv1x1+relu+avgpool.same_lower", "Conv 1x1 -> Relu -> AveragePool 4x4/3 SAME_LOWER", c))
    c = conv(Chain("c5", photo(27, 38, 6)), 9, (3, 5), strides=[2, 1], dilations=[1, 2], pads=[2, 0, 1, 0],
             group=3)
    c.add("Relu").add("GlobalAveragePool")
    out.append(("chain.conv.s2x1.d1x2.g3+relu+global_avgpool", "Conv 3x5 s2x1 d1x2 pads 2,0,1,0 group 3 (rows "
                "read in place: no left/right padding, column stride 1) -> Relu -> GlobalAveragePool", c))
    c = conv(Chain("c6", photo(23, 26)), 8, (3, 3), pads=[1, 1, 1, 1])
    c.bn(*random_bn(rng, 8, 0.0, 0.1)).add("GlobalMaxPool")
    out.append(("chain.conv+bn+global_maxpool", "Conv 3x3 pad 1 -> BN (folded) -> GlobalMaxPool", c))
    c = conv(Chain("c7", photo(21, 45, 12)), 37, (5, 3), strides=[2, 2], pads=[2, 1, 2, 1])
    c.add("Relu").add("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    out.append(("chain.conv12->37+relu+maxpool.k3s2p1", "Conv 12->37 5x3/2 pads 2,1,2,1 -> Relu -> MaxPool "
                "3x3/2 pad 1 (many channels, not a multiple of the vector width)", c))
    return [Case(name, what, c.model(), c.x, unfused=True) for name, what, c in out]


def single_op_cases() -> list[Case]:
    rng = np.random.default_rng(SEED)
    return (conv_cases(rng) + maxpool_cases() + avgpool_cases() + global_cases() + pointwise_cases(rng)
            + chain_cases(rng))
