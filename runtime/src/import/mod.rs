//! `streamfuse import`: an ONNX model's chain of supported nodes becomes a
//! pipeline spec whose stages read the model's initializers.
//!
//! Supported nodes, with every attribute the ONNX operator spec gives them
//! in 2-D ([`nodes`]): `Conv` (kernel, strides, dilations, pads or
//! `auto_pad`, `group`, optional bias; a following `BatchNormalization` is
//! folded in), `MaxPool` and `AveragePool` (the same plus `ceil_mode` and
//! `count_include_pad`), `GlobalMaxPool`, `GlobalAveragePool`,
//! `BatchNormalization` on its own (a per-channel affine), `Relu`,
//! `LeakyRelu`, `Clip` (bounds as attributes, or as inputs from
//! initializers or `Constant` nodes), and `Identity` and `Dropout` (no-ops
//! at inference, no stage). The chain starts at the graph's first
//! non-initializer input and follows each node's first output; it must end
//! at a graph output. Anything else, and any branch (a residual `Add`, a
//! `Concat`), stops the import with a one-line error naming the node, its
//! op, where the chain stopped and what would be needed; nothing is
//! written then.

mod nodes;

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
    let bytes = crate::model::read_file(model).map_err(|e| ImportError {
        model: model.to_path_buf(),
        message: e.to_string(),
    })?;
    import_bytes(model, &bytes, opts)
}

/// [`import`] of an in-memory model whose file is at `model` (the spec
/// names that file, and its validation reads the weights from it).
///
/// # Errors
/// As [`import`].
pub fn import_bytes(
    model: &Path,
    bytes: &[u8],
    opts: &ImportOptions,
) -> Result<String, ImportError> {
    let fail = |message: String| ImportError {
        model: model.to_path_buf(),
        message,
    };
    let m = onnx::decode_model(model, bytes).map_err(|e| fail(e.to_string()))?;
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
    // Tensors the chain went through: a node reading what it or a later
    // node writes would loop.
    let mut seen: Vec<String> = Vec::new();
    loop {
        if seen.contains(&cur) {
            return Err(fail(format!(
                "the chain loops back to `{cur}` after {last_stage}; streamfuse imports acyclic chains"
            )));
        }
        seen.push(cur.clone());
        // Every node that reads `cur`, in any input (Constant nodes read
        // nothing).
        let consumers: Vec<&NodeProto> = g.node.iter().filter(|n| n.input.contains(&cur)).collect();
        let node = match consumers.as_slice() {
            [] if outputs.contains(&cur.as_str()) => break,
            [] => {
                return Err(fail(format!(
                    "the chain stopped after {last_stage}: no node reads `{cur}` and it is not a graph output"
                )));
            }
            [n] if n.input.first() == Some(&cur) => *n,
            [n] => {
                return Err(fail(format!(
                    "node `{}` (op {}) reads `{cur}` as a second operand after {last_stage}; \
                     streamfuse imports chains whose nodes take the running tensor first",
                    n.name.as_deref().unwrap_or("?"),
                    n.op_type.as_deref().unwrap_or("?"),
                )));
            }
            many => return Err(fail(nodes::branch_error(g, many, &cur, &last_stage))),
        };
        if outputs.contains(&cur.as_str()) {
            return Err(fail(format!(
                "`{cur}` after {last_stage} is a graph output and also read by node `{}`; \
                 only the last tensor of the chain can be an output",
                node.name.as_deref().unwrap_or("?")
            )));
        }
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
        // A BatchNormalization right after a conv is folded into it.
        let bn = (op == "Conv")
            .then(|| {
                let consumers: Vec<&NodeProto> = g
                    .node
                    .iter()
                    .filter(|m| m.input.first() == node.output.first())
                    .collect();
                match consumers.as_slice() {
                    [m] if m.op_type.as_deref() == Some("BatchNormalization")
                        && node
                            .output
                            .first()
                            .is_some_and(|o| !outputs.contains(&o.as_str())) =>
                    {
                        Some(*m)
                    }
                    _ => None,
                }
            })
            .flatten();
        let cx = nodes::NodeCx {
            g,
            model,
            model_ref: &quote(&model_ref),
        };
        let line = match op {
            // No-ops at inference: no stage.
            "Identity" | "Dropout" => {
                nodes::check_no_extra_outputs(g, node).map_err(|why| unsupported(&why))?;
                None
            }
            "Relu" => Some("relu".to_owned()),
            "LeakyRelu" => Some(format!(
                "leaky_relu, alpha: {:e}",
                onnx::float(node, "alpha").unwrap_or(0.01)
            )),
            "Conv" => Some(nodes::conv(&cx, node, bn).map_err(|why| unsupported(&why))?),
            "MaxPool" | "AveragePool" => {
                Some(nodes::pool(node, op == "MaxPool").map_err(|why| unsupported(&why))?)
            }
            "GlobalMaxPool" => Some("global_maxpool".to_owned()),
            "GlobalAveragePool" => Some("global_avgpool".to_owned()),
            "BatchNormalization" => {
                Some(nodes::batchnorm(&cx, node).map_err(|why| unsupported(&why))?)
            }
            "Clip" => Some(nodes::clip(&cx, node).map_err(|why| unsupported(&why))?),
            other => return Err(unsupported(&nodes::needs(other))),
        };
        if let Some(body) = line {
            let id = stage_id(&name, &op.to_lowercase(), &mut used);
            stages.push(format!("  - {{ id: {id}, op: {body} }}"));
            last_stage = format!("stage `{id}`");
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::pb::{GraphProto, ModelProto, ValueInfoProto};
    use prost::Message;

    fn relu(input: &str, output: &str) -> NodeProto {
        NodeProto {
            input: vec![input.into()],
            output: vec![output.into()],
            op_type: Some("Relu".into()),
            ..NodeProto::default()
        }
    }

    /// A node writing the tensor it reads (or a later one) looped forever,
    /// adding a stage each time.
    #[test]
    fn a_cycle_is_refused() {
        let info = |n: &str| ValueInfoProto {
            name: Some(n.into()),
            r#type: None,
        };
        for nodes in [
            vec![relu("x", "x")],
            vec![relu("x", "a"), relu("a", "b"), relu("b", "a")],
        ] {
            let m = ModelProto {
                graph: Some(GraphProto {
                    node: nodes,
                    input: vec![info("x")],
                    output: vec![info("y")],
                    ..GraphProto::default()
                }),
                ..ModelProto::default()
            };
            let opts = ImportOptions {
                input: Some((4, 4, 1)),
                spec_path: None,
            };
            let e = import_bytes(Path::new("m.onnx"), &m.encode_to_vec(), &opts).unwrap_err();
            assert!(e.message.contains("the chain loops back"), "{e}");
        }
    }
}
