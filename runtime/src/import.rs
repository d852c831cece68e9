//! `streamfuse import`: an ONNX model's chain of supported nodes becomes a
//! pipeline spec whose stages read the model's initializers.
//!
//! Supported nodes: `Conv` (2-D, square kernel, equal strides, symmetric
//! padding, no dilation, one group, optional bias; a following
//! `BatchNormalization` is folded in), `Relu`, `Clip` (bounded ReLU),
//! `MaxPool` (square window, no padding, floor mode). The chain starts at the graph's
//! first non-initializer input and follows each node's first output; it
//! must end at a graph output. Anything else stops the import with a
//! one-line error naming the node, its op and where the chain stopped;
//! nothing is written then.

use std::path::{Path, PathBuf};

use crate::model::onnx::{self, NodeProto};
use crate::spec::{self, Overrides};

/// The model cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{model}: {message}")]
pub struct ImportError {
    /// The model file.
    pub model: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Input size `(width, height, channels)` when the model's is dynamic
    /// (or to override it).
    pub input: Option<(usize, usize, usize)>,
    /// Where the spec will be written (model paths are made relative to its
    /// folder when the model lies below it).
    pub spec_path: Option<PathBuf>,
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn stage_id(raw: &str, fallback: &str, used: &mut Vec<String>) -> String {
    let mut id: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
        id = format!("{fallback}_{id}");
    }
    id.truncate(56);
    let base = id.clone();
    let mut k = 2;
    while used.contains(&id) || id == "source" || id == "sink" {
        id = format!("{base}_{k}");
        k += 1;
    }
    used.push(id.clone());
    id
}

/// Imports the model at `model`; returns the spec's YAML text, validated by
/// loading it as a spec.
///
/// # Errors
/// [`ImportError`] naming the node and op where the chain cannot be
/// followed, or a validation error of the generated spec.
pub fn import(model: &Path, opts: &ImportOptions) -> Result<String, ImportError> {
    let fail = |message: String| ImportError {
        model: model.to_path_buf(),
        message,
    };
    let m = onnx::read_model(model).map_err(|e| fail(e.to_string()))?;
    let g = onnx::graph(&m, model).map_err(|e| fail(e.to_string()))?;
    let inits: Vec<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let input = g
        .input
        .iter()
        .find(|i| i.name.as_deref().is_some_and(|n| !inits.contains(&n)))
        .ok_or_else(|| fail("the graph has no input that is not an initializer".into()))?;
    let input_name = input.name.clone().unwrap_or_default();
    let dims: Vec<Option<i64>> = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| d.dim_value.filter(|&v| v > 0))
                .collect()
        })
        .unwrap_or_default();
    let (w, h, c) = match (opts.input, dims.as_slice()) {
        (Some(x), _) => x,
        (None, [_, Some(c), Some(h), Some(w)]) => (*w as usize, *h as usize, *c as usize),
        _ => {
            return Err(fail(format!(
                "input `{input_name}` has no fixed [N, C, H, W] size; give --input WxHxC"
            )));
        }
    };
    let outputs: Vec<&str> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
    let model_ref = model_reference(model, opts.spec_path.as_deref());

    let mut stages: Vec<String> = Vec::new();
    let mut used: Vec<String> = Vec::new();
    let mut cur = input_name.clone();
    let mut last_stage = "the input".to_owned();
    loop {
        let consumers: Vec<&NodeProto> = g
            .node
            .iter()
            .filter(|n| n.input.first() == Some(&cur))
            .collect();
        let node = match consumers.as_slice() {
            [] if outputs.contains(&cur.as_str()) => break,
            [] => {
                return Err(fail(format!(
                    "the chain stopped after {last_stage}: no node reads `{cur}` and it is not a graph output"
                )));
            }
            [n] => *n,
            many => {
                return Err(fail(format!(
                    "the chain branches after {last_stage}: nodes {} all read `{cur}`; only chains are supported",
                    many.iter()
                        .map(|n| format!("`{}`", n.name.as_deref().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let op = node.op_type.as_deref().unwrap_or("?");
        let name = node
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| op.to_lowercase());
        let unsupported = |why: &str| {
            fail(format!(
                "node `{name}` (op {op}) is not supported{why}; the chain stopped after {last_stage}"
            ))
        };
        let id = stage_id(&name, &op.to_lowercase(), &mut used);
        // A BatchNormalization right after a conv is folded into it.
        let bn = (op == "Conv")
            .then(|| {
                let consumers: Vec<&NodeProto> = g
                    .node
                    .iter()
                    .filter(|m| m.input.first() == node.output.first())
                    .collect();
                match consumers.as_slice() {
                    [m] if m.op_type.as_deref() == Some("BatchNormalization") => Some(*m),
                    _ => None,
                }
            })
            .flatten();
        let line = match op {
            "Relu" => format!("  - {{ id: {id}, op: relu }}"),
            "Conv" => conv_stage(g, node, bn, &id, &quote(&model_ref), model)
                .map_err(|why| unsupported(&why))?,
            "MaxPool" => pool_stage(node, &id).map_err(|why| unsupported(&why))?,
            "Clip" => clip_stage(g, node, &id, model).map_err(|why| unsupported(&why))?,
            _ => return Err(unsupported("")),
        };
        stages.push(line);
        last_stage = format!("stage `{id}`");
        cur = bn
            .unwrap_or(node)
            .output
            .first()
            .cloned()
            .ok_or_else(|| fail(format!("node `{name}` has no output")))?;
    }
    if stages.is_empty() {
        return Err(fail("the graph has no node to import".into()));
    }
    let name = g
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "imported".into());
    let text = format!(
        "# Imported from {} by `streamfuse import`: stages read the model's initializers.\n\
         # Replace the synthetic source with your frames (e.g. {{ npy: {{ path: frames.npy }} }}).\n\
         name: {}\n\
         source: {{ synthetic: {{ width: {w}, height: {h}, channels: {c}, frames: 100, seed: 0 }} }}\n\
         stages:\n{}\n\
         sink: {{ stats: {{}} }}\n\
         fusion: kernel\n",
        model.display(),
        quote(&name),
        stages.join("\n")
    );
    // Validate: the generated spec must load (shapes, weights) where it will live.
    let check_path = opts
        .spec_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("imported.yaml"));
    spec::parse(&text, &check_path, &Overrides::default())
        .map_err(|e| fail(format!("generated spec does not validate: {e}")))?;
    Ok(text)
}

/// The model path as the spec should name it: relative to the spec's folder
/// when the model lies below it, else absolute.
fn model_reference(model: &Path, spec: Option<&Path>) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let model_abs = abs(model);
    let spec_dir = spec
        .and_then(Path::parent)
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .unwrap_or(Path::new("."));
    match model_abs.strip_prefix(abs(spec_dir)) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => model_abs.display().to_string(),
    }
}

fn pair(v: Option<Vec<i64>>, default: i64, what: &str) -> Result<i64, String> {
    match v.as_deref() {
        None | Some([]) => Ok(default),
        Some([a, b]) if a == b => Ok(*a),
        Some(other) => Err(format!(" ({what} {other:?} differ per axis)")),
    }
}

fn conv_stage(
    g: &onnx::GraphProto,
    n: &NodeProto,
    bn: Option<&NodeProto>,
    id: &str,
    model_ref: &str,
    model: &Path,
) -> Result<String, String> {
    if onnx::int(n, "group").unwrap_or(1) != 1 {
        return Err(" (grouped convolution)".into());
    }
    if let Some(p) = onnx::string(n, "auto_pad").filter(|p| !p.is_empty() && p != "NOTSET") {
        return Err(format!(" (auto_pad {p})"));
    }
    if pair(onnx::ints(n, "dilations"), 1, "dilations")? != 1 {
        return Err(" (dilation)".into());
    }
    let stride = pair(onnx::ints(n, "strides"), 1, "strides")?;
    let pads = onnx::ints(n, "pads").unwrap_or_default();
    let pad = match pads.as_slice() {
        [] => 0,
        [a, b, c, d] if a == b && b == c && c == d => *a,
        other => return Err(format!(" (asymmetric pads {other:?})")),
    };
    let w_name = n.input.get(1).ok_or(" (no weight input)")?;
    let (dims, _) = onnx::initializer(g, w_name, model).map_err(|e| format!(" ({e})"))?;
    let [oc, _ic, kh, kw] = dims.as_slice() else {
        return Err(format!(" (weights of shape {dims:?}, not 2-D)"));
    };
    if kh != kw {
        return Err(format!(" (non-square kernel {kh}x{kw})"));
    }
    let mut bias = match n.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => format!(", bias: {}", quote(b)),
        None => String::new(),
    };
    if let Some(bn) = bn {
        let [_, scale, beta, mean, var] = bn.input.as_slice() else {
            return Err(" (BatchNormalization without its four parameters)".into());
        };
        let eps = bn
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some("epsilon"))
            .and_then(|a| a.f)
            .unwrap_or(1e-5);
        bias.push_str(&format!(
            ", batchnorm: {{ scale: {}, bias: {}, mean: {}, var: {}, epsilon: {eps:e} }}",
            quote(scale),
            quote(beta),
            quote(mean),
            quote(var)
        ));
    }
    Ok(format!(
        "  - {{ id: {id}, op: conv2d, kernel: {kh}, stride: {stride}, padding: {pad}, out_channels: {oc}, weights: {{ onnx: {{ path: {model_ref}, initializer: {}{bias} }} }} }}",
        quote(w_name)
    ))
}

/// `Clip`: bounds from inputs 1 and 2 (opset 11+, scalar initializers) or
/// from the `min`/`max` attributes (older opsets); a missing bound is none.
fn clip_stage(
    g: &onnx::GraphProto,
    n: &NodeProto,
    id: &str,
    model: &Path,
) -> Result<String, String> {
    let bound = |k: usize, attr: &str| -> Result<Option<f32>, String> {
        match n.input.get(k).filter(|s| !s.is_empty()) {
            Some(name) => {
                let (_, v) = onnx::initializer(g, name, model).map_err(|e| format!(" ({e})"))?;
                match v.as_slice() {
                    [x] => Ok(Some(*x)),
                    _ => Err(format!(" (bound `{name}` is not a scalar)")),
                }
            }
            None => Ok(n
                .attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(attr))
                .and_then(|a| a.f)),
        }
    };
    let mut line = format!("  - {{ id: {id}, op: clip");
    if let Some(lo) = bound(1, "min")? {
        line.push_str(&format!(", min: {lo:e}"));
    }
    if let Some(hi) = bound(2, "max")? {
        line.push_str(&format!(", max: {hi:e}"));
    }
    line.push_str(" }");
    Ok(line)
}

fn pool_stage(n: &NodeProto, id: &str) -> Result<String, String> {
    let k = pair(onnx::ints(n, "kernel_shape"), 0, "kernel_shape")?;
    if k <= 0 {
        return Err(" (no kernel_shape)".into());
    }
    let stride = pair(onnx::ints(n, "strides"), 1, "strides")?;
    if onnx::ints(n, "pads").is_some_and(|p| p.iter().any(|&x| x != 0)) {
        return Err(" (padded pooling)".into());
    }
    if onnx::int(n, "ceil_mode").unwrap_or(0) != 0 {
        return Err(" (ceil_mode)".into());
    }
    if pair(onnx::ints(n, "dilations"), 1, "dilations")? != 1 {
        return Err(" (dilation)".into());
    }
    if n.output.len() > 1 {
        return Err(" (Indices output)".into());
    }
    Ok(format!(
        "  - {{ id: {id}, op: maxpool, size: {k}, stride: {stride} }}"
    ))
}
