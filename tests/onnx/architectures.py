"""Real architectures for the ONNX Runtime check, built with `onnx.helper`
and seeded random weights, and the models `streamfuse import` must refuse.

- VGG-16 features at 224x224: 13 conv 3x3 pad 1 + ReLU and 5 max-pools
  2x2/2 (64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3, M), He
  initialised so activations neither vanish nor explode.
- The ResNet-50 stem at 720p (1280x720): conv 7x7/2 pad 3, 3->64, no bias
  -> BatchNormalization -> ReLU -> MaxPool 3x3/2 pad 1.
- A MobileNetV2 inverted-residual body without the residual, after the
  MobileNetV2 stem so the whole model is one chain: conv 3->32 3x3/2 pad 1
  -> BN -> ReLU6, then 1x1 expand 32->192 -> BN -> ReLU6 -> 3x3 depthwise
  stride 2 pad 1 -> BN -> ReLU6 -> 1x1 project 192->64 -> BN, at 224x224.
  ReLU6 is Clip 0..6 (Constant nodes in the stem, shared initializers in
  the block, as exporters write it).

Each BatchNormalization is calibrated on the photograph (its mean and
variance are those of its input under ONNX Runtime, perturbed a little),
so the ReLUs and ReLU6s cut a realistic share of values at both ends.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models import Case, Chain, checked, photo


def he(rng, shape) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)


def channel_stats(chain: Chain) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of the chain's running tensor, on its
    input, under ONNX Runtime."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    sess = ort.InferenceSession(chain.model().SerializeToString(), opts, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": chain.x})[0].astype(np.float64)
    return y.mean(axis=(0, 2, 3)), y.var(axis=(0, 2, 3))


def calibrated_bn(chain: Chain, rng, name: str, gamma=(0.5, 1.5)) -> Chain:
    """Appends a BatchNormalization whose statistics are its input's,
    perturbed (mean by 10 % of the deviation, variance by up to 25 %)."""
    mean, var = channel_stats(chain)
    c = len(mean)
    std = np.sqrt(var)
    return chain.bn(rng.uniform(*gamma, c), rng.normal(0.0, 0.2, c),
                    mean + rng.normal(0.0, 0.1, c) * std, var * rng.uniform(0.8, 1.25, c),
                    name=name, epsilon=1e-5)


def vgg16(rng) -> Case:
    x = photo(224, 224)
    c = Chain("vgg16-features", x)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    ic = 3
    for i, v in enumerate(cfg):  # torchvision's layer numbering: features.<i>
        if v == "M":
            c.add("MaxPool", name=f"features.{i}", kernel_shape=[2, 2], strides=[2, 2])
            continue
        c.conv(he(rng, (v, ic, 3, 3)), rng.normal(0.0, 0.01, v), name=f"features.{i}", pads=[1, 1, 1, 1])
        c.add("Relu", name=f"features.{i}.relu")
        ic = v
    return Case("vgg16.features.224", "VGG-16 features, 13 conv 3x3 pad 1 + ReLU, 5 MaxPool 2x2/2, input 3x224x224",
                c.model(), x, unfused=True)


def resnet50_stem(rng) -> Case:
    # The photograph's middle 512x288 band (16:9) at 1280x720.
    x = photo(720, 1280, crop=(112, 0, 400, 512))
    c = Chain("resnet50-stem", x)
    c.conv(he(rng, (64, 3, 7, 7)), None, name="conv1", strides=[2, 2], pads=[3, 3, 3, 3])
    calibrated_bn(c, rng, "bn1")
    c.add("Relu", name="relu").add("MaxPool", name="maxpool", kernel_shape=[3, 3], strides=[2, 2],
                                   pads=[1, 1, 1, 1])
    return Case("resnet50.stem.720p", "ResNet-50 stem: Conv 7x7/2 pad 3 3->64 no bias -> BN -> Relu -> "
                "MaxPool 3x3/2 pad 1, input 3x720x1280", c.model(), x, unfused=True)


def mobilenet_v2_block(rng) -> Case:
    x = photo(224, 224)
    c = Chain("mobilenetv2-block", x)
    # Stem: conv 3->32 3x3/2 pad 1, BN, ReLU6 with Constant-node bounds.
    c.conv(he(rng, (32, 3, 3, 3)), None, name="features.0.0", strides=[2, 2], pads=[1, 1, 1, 1])
    calibrated_bn(c, rng, "features.0.1", gamma=(0.5, 3.0))
    c.add("Clip", c.constant("stem.min", 0.0), c.constant("stem.max", 6.0), name="features.0.2")
    lo, hi = c.init("relu6.min", 0.0), c.init("relu6.max", 6.0)
    # Inverted residual (expand 6), stride 2, no residual.
    c.conv(he(rng, (192, 32, 1, 1)), None, name="features.1.conv.0.0")
    calibrated_bn(c, rng, "features.1.conv.0.1", gamma=(0.5, 3.0))
    c.add("Clip", lo, hi, name="features.1.conv.0.2")
    c.conv(he(rng, (192, 1, 3, 3)), None, name="features.1.conv.1.0", group=192, strides=[2, 2],
           pads=[1, 1, 1, 1])
    calibrated_bn(c, rng, "features.1.conv.1.1", gamma=(0.5, 3.0))
    c.add("Clip", lo, hi, name="features.1.conv.1.2")
    c.conv(he(rng, (64, 192, 1, 1)), None, name="features.1.conv.2")
    calibrated_bn(c, rng, "features.1.conv.3")
    return Case("mobilenetv2.block.224", "MobileNetV2 stem (3->32 3x3/2, BN, ReLU6) + expand 1x1 32->192, BN, "
                "ReLU6, depthwise 3x3/2 pad 1, BN, ReLU6, project 1x1 192->64, BN; input 3x224x224", c.model(), x,
                unfused=True)


def architecture_cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    return [vgg16(rng), resnet50_stem(rng), mobilenet_v2_block(rng)]


# Models the import must refuse: branches joined by an Add or a Concat,
# nodes streamfuse has no stage for, a node reading the running tensor as
# its second operand, a graph output that the chain reads on ---------------

def _model(name: str, nodes: list, inits: dict, out: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return checked(model)


def refused_models(seed: int) -> list[tuple[str, onnx.ModelProto, str]]:
    """(name, model, the node the one-line error must name)."""
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.normal(0.0, 0.1, s)).astype(np.float32)  # noqa: E731
    conv = lambda i, o, name: helper.make_node(  # noqa: E731
        "Conv", [i, f"{name}.weight"], [o], name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    residual = _model(
        "residual",
        [conv("x", "c1", "conv1"), helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         conv("r1", "c2", "conv2"), helper.make_node("Add", ["r1", "c2"], ["y"], name="residual_add")],
        {"conv1.weight": w(8, 3, 3, 3), "conv2.weight": w(8, 8, 3, 3)}, "y")
    sigmoid = _model(
        "sigmoid",
        [conv("x", "c1", "conv1"), helper.make_node("Sigmoid", ["c1"], ["y"], name="gate_sigmoid")],
        {"conv1.weight": w(8, 3, 3, 3)}, "y")
    flatten = _model(
        "flatten",
        [conv("x", "c1", "conv1"), helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="gap"),
         helper.make_node("Flatten", ["p"], ["y"], name="head_flatten", axis=1)],
        {"conv1.weight": w(8, 3, 3, 3)}, "y")
    concat = _model(
        "concat",
        [conv("x", "c1", "conv1"), helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
         conv("r1", "c2", "conv2"), conv("r1", "c3", "conv3"),
         helper.make_node("Concat", ["c2", "c3"], ["y"], name="concat_branches", axis=1)],
        {"conv1.weight": w(8, 3, 3, 3), "conv2.weight": w(8, 8, 3, 3), "conv3.weight": w(8, 8, 3, 3)}, "y")
    second = _model(
        "second-operand",
        [conv("x", "c1", "conv1"), helper.make_node("Add", ["offset", "c1"], ["y"], name="bias_add")],
        {"conv1.weight": w(8, 3, 3, 3), "offset": w(1, 8, 1, 1)}, "y")
    # Two graph outputs: the conv's output is an output and read on.
    two_outputs = _model(
        "two-outputs",
        [conv("x", "c1", "conv1"), helper.make_node("Relu", ["c1"], ["y"], name="relu_after_output")],
        {"conv1.weight": w(8, 3, 3, 3)}, "y")
    two_outputs.graph.output.insert(0, helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, 8, 32, 32]))
    onnx.checker.check_model(two_outputs, full_check=True)
    return [("refused.residual-add", residual, "residual_add"),
            ("refused.concat", concat, "concat_branches"),
            ("refused.sigmoid", sigmoid, "gate_sigmoid"),
            ("refused.flatten", flatten, "head_flatten"),
            ("refused.add-second-operand", second, "bias_add"),
            ("refused.output-read-on", two_outputs, "relu_after_output")]
