//! ONNX nodes as spec stages: each function returns the stage's body after
//! `op: ` (for example `conv2d, kernel: [3, 3], ...`), or the reason, in
//! parentheses, why the node cannot be imported.

use std::path::Path;

use crate::model::onnx::{self, GraphProto, NodeProto};

use super::quote;

/// What the node translators read besides the node.
pub(super) struct NodeCx<'a> {
    /// The graph.
    pub g: &'a GraphProto,
    /// The model file.
    pub model: &'a Path,
    /// The model path as the spec names it, quoted.
    pub model_ref: &'a str,
}

/// What a node of op `op` would need, for the error of an unsupported
/// node.
pub(super) fn needs(op: &str) -> String {
    match op {
        "Add" | "Sum" | "Concat" | "Mul" | "Sub" | "Div" => {
            " (it combines two tensors; streamfuse imports chains of single-input nodes)".into()
        }
        "Flatten" | "Reshape" | "Gemm" | "MatMul" | "Softmax" => {
            " (a classifier head; import the feature extractor up to the last pool, or cut the model before this node)".into()
        }
        "Sigmoid" | "HardSigmoid" | "HardSwish" | "Tanh" | "Elu" | "Selu" | "PRelu" => {
            " (an activation streamfuse has no op for yet; supported: Relu, LeakyRelu, Clip)".into()
        }
        "ConvTranspose" | "Resize" | "Upsample" | "Pad" => {
            " (a resampling op streamfuse has no stage for yet)".into()
        }
        _ => String::new(),
    }
}

/// The error of a tensor read by several nodes: a branch. Names a join
/// node (a residual `Add`, a `Concat`) where one of the readers is one.
pub(super) fn branch_error(
    g: &GraphProto,
    readers: &[&NodeProto],
    cur: &str,
    after: &str,
) -> String {
    let names = readers
        .iter()
        .map(|n| {
            format!(
                "`{}` ({})",
                n.name.as_deref().unwrap_or("?"),
                n.op_type.as_deref().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let join = g.node.iter().find(|n| {
        matches!(n.op_type.as_deref(), Some("Add" | "Sum" | "Concat" | "Mul"))
            && n.input.iter().filter(|i| !is_constant(g, i)).count() >= 2
            && readers
                .iter()
                .any(|r| r.name == n.name || r.output.iter().any(|o| n.input.contains(o)))
    });
    let what = match join {
        Some(j) => format!(
            "; node `{}` (op {}) joins the branches again (a residual or concatenation), which would need a join stage that takes two streams",
            j.name.as_deref().unwrap_or("?"),
            j.op_type.as_deref().unwrap_or("?")
        ),
        None => "; streamfuse imports chains only".into(),
    };
    format!("the chain branches after {after}: nodes {names} all read `{cur}`{what}")
}

fn is_constant(g: &GraphProto, name: &str) -> bool {
    g.initializer
        .iter()
        .any(|t| t.name.as_deref() == Some(name))
        || g.node.iter().any(|n| {
            n.op_type.as_deref() == Some("Constant")
                && n.output.first().map(String::as_str) == Some(name)
        })
}

/// An Identity or Dropout whose extra outputs (Dropout's mask) nothing reads.
pub(super) fn check_no_extra_outputs(g: &GraphProto, n: &NodeProto) -> Result<(), String> {
    if n.op_type.as_deref() == Some("Dropout")
        && let Some(t) = n.input.get(2).filter(|t| !t.is_empty())
        && let Ok((_, v)) = onnx::initializer(g, t, Path::new(""))
        && v.first().is_some_and(|&x| x != 0.0)
    {
        return Err(" (Dropout in training mode)".into());
    }
    for o in n.output.iter().skip(1).filter(|o| !o.is_empty()) {
        let read = g.node.iter().any(|m| m.input.contains(o))
            || g.output.iter().any(|x| x.name.as_deref() == Some(o));
        if read {
            return Err(format!(
                " (its output `{o}` is used; only the first output can be)"
            ));
        }
    }
    Ok(())
}

/// A 2-element per-axis attribute; `default` for both when absent.
fn axes(v: Option<Vec<i64>>, default: i64, what: &str) -> Result<[usize; 2], String> {
    let v = match v.as_deref() {
        None | Some([]) => return Ok([default as usize; 2]),
        Some(v) => v.to_vec(),
    };
    match v.as_slice() {
        [a, b] if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
        other => Err(format!(
            " ({what} {other:?}: need two positive values, 2-D only)"
        )),
    }
}

/// `padding: ...` from `auto_pad` and `pads`.
fn padding(n: &NodeProto) -> Result<String, String> {
    match onnx::string(n, "auto_pad").as_deref() {
        None | Some("" | "NOTSET") => {}
        Some("SAME_UPPER") => return Ok("same".into()),
        Some("SAME_LOWER") => return Ok("same_lower".into()),
        Some("VALID") => return Ok("valid".into()),
        Some(other) => return Err(format!(" (auto_pad {other})")),
    }
    match onnx::ints(n, "pads").as_deref() {
        None | Some([]) => Ok("0".into()),
        Some([t, l, b, r]) if [t, l, b, r].iter().all(|&&p| p >= 0) => {
            Ok(format!("[{t}, {l}, {b}, {r}]"))
        }
        Some(other) => Err(format!(
            " (pads {other:?}: need four non-negative values, 2-D only)"
        )),
    }
}

/// The window fields shared by Conv and the pools.
fn window_fields(n: &NodeProto, kernel: [usize; 2]) -> Result<String, String> {
    let stride = axes(onnx::ints(n, "strides"), 1, "strides")?;
    let dil = axes(onnx::ints(n, "dilations"), 1, "dilations")?;
    let mut s = format!(
        "kernel: [{}, {}], stride: [{}, {}], padding: {}",
        kernel[0],
        kernel[1],
        stride[0],
        stride[1],
        padding(n)?
    );
    if dil != [1, 1] {
        s.push_str(&format!(", dilation: [{}, {}]", dil[0], dil[1]));
    }
    Ok(s)
}

/// `Conv`, with a following `BatchNormalization` folded in.
pub(super) fn conv(
    cx: &NodeCx<'_>,
    n: &NodeProto,
    bn: Option<&NodeProto>,
) -> Result<String, String> {
    let w_name = n.input.get(1).ok_or(" (no weight input)")?;
    let (dims, _) = onnx::initializer(cx.g, w_name, cx.model).map_err(|e| format!(" ({e})"))?;
    let [oc, _icg, kh, kw] = dims.as_slice() else {
        return Err(format!(" (weights of shape {dims:?}, not 2-D)"));
    };
    if let Some(k) = onnx::ints(n, "kernel_shape")
        && !k.is_empty()
        && k != [*kh as i64, *kw as i64]
    {
        return Err(format!(
            " (kernel_shape {k:?} differs from the weights' {kh}x{kw})"
        ));
    }
    let group = onnx::int(n, "group").unwrap_or(1);
    if group < 1 {
        return Err(format!(" (group {group})"));
    }
    let mut body = format!(
        "conv2d, {}, out_channels: {oc}",
        window_fields(n, [*kh as usize, *kw as usize])?
    );
    if group != 1 {
        body.push_str(&format!(", groups: {group}"));
    }
    let mut refs = String::new();
    if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
        refs.push_str(&format!(", bias: {}", quote(b)));
    }
    if let Some(bn) = bn {
        refs.push_str(&format!(", batchnorm: {}", bn_fields(bn)?));
    }
    Ok(format!(
        "{body}, weights: {{ onnx: {{ path: {}, initializer: {}{refs} }} }}",
        cx.model_ref,
        quote(w_name)
    ))
}

/// `{ scale, bias, mean, var, epsilon }` of a BatchNormalization.
fn bn_fields(bn: &NodeProto) -> Result<String, String> {
    let [_, scale, beta, mean, var] = bn.input.as_slice() else {
        return Err(" (BatchNormalization without its four parameters)".into());
    };
    if onnx::int(bn, "training_mode").unwrap_or(0) != 0
        || bn.output.iter().skip(1).any(|o| !o.is_empty())
    {
        return Err(" (BatchNormalization in training mode)".into());
    }
    let eps = onnx::float(bn, "epsilon").unwrap_or(1e-5);
    Ok(format!(
        "{{ scale: {}, bias: {}, mean: {}, var: {}, epsilon: {eps:e} }}",
        quote(scale),
        quote(beta),
        quote(mean),
        quote(var)
    ))
}

/// `BatchNormalization` on its own: a per-channel affine.
pub(super) fn batchnorm(cx: &NodeCx<'_>, n: &NodeProto) -> Result<String, String> {
    Ok(format!(
        "batchnorm, weights: {{ onnx: {{ path: {}, batchnorm: {} }} }}",
        cx.model_ref,
        bn_fields(n)?
    ))
}

/// `MaxPool` or `AveragePool`.
pub(super) fn pool(n: &NodeProto, max: bool) -> Result<String, String> {
    let kernel = axes(onnx::ints(n, "kernel_shape"), 0, "kernel_shape")?;
    if kernel.contains(&0) {
        return Err(" (no 2-D kernel_shape)".into());
    }
    if n.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(" (Indices output)".into());
    }
    if onnx::int(n, "storage_order").unwrap_or(0) != 0 {
        return Err(
            " (storage_order 1 only changes the Indices output, which is not supported)".into(),
        );
    }
    let mut body = format!(
        "{}, {}",
        if max { "maxpool" } else { "avgpool" },
        window_fields(n, kernel)?
    );
    if onnx::int(n, "ceil_mode").unwrap_or(0) != 0 {
        body.push_str(", ceil_mode: true");
    }
    if !max && onnx::int(n, "count_include_pad").unwrap_or(0) != 0 {
        body.push_str(", count_include_pad: true");
    }
    Ok(body)
}

/// `Clip`: bounds from inputs 1 and 2 (opset 11+, scalar initializers or
/// Constant nodes) or from the `min`/`max` attributes (older opsets); a
/// missing bound is none.
pub(super) fn clip(cx: &NodeCx<'_>, n: &NodeProto) -> Result<String, String> {
    let bound = |k: usize, attr: &str| -> Result<Option<f32>, String> {
        match n.input.get(k).filter(|s| !s.is_empty()) {
            Some(name) => {
                let (_, v) =
                    onnx::initializer(cx.g, name, cx.model).map_err(|e| format!(" ({e})"))?;
                match v.as_slice() {
                    [x] => Ok(Some(*x)),
                    _ => Err(format!(" (bound `{name}` is not a scalar)")),
                }
            }
            None => Ok(onnx::float(n, attr)),
        }
    };
    let mut line = "clip".to_owned();
    if let Some(lo) = bound(1, "min")? {
        line.push_str(&format!(", min: {lo:e}"));
    }
    if let Some(hi) = bound(2, "max")? {
        line.push_str(&format!(", max: {hi:e}"));
    }
    Ok(line)
}
