//! Nodes, placement and the model files a spec's stages read.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::spec::raw::{RawBias, RawWeights};

pub(super) fn resolve_nodes(
    cx: &Ctx<'_>,
    raw: indexmap::IndexMap<String, crate::spec::raw::RawNode>,
) -> Result<Vec<Node>, SpecError> {
    if raw.is_empty() {
        return Ok(vec![Node {
            name: "local".into(),
            letter: 'L',
            device: DeviceChoice::Auto,
            address: None,
            labels: Vec::new(),
            machine: Machine::Cpu,
            tls: None,
        }]);
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(raw.len());
    for (name, n) in raw {
        let field = |x: &str| format!("nodes.{name}.{x}");
        if !valid_id(&name) {
            return Err(cx.at(
                &n.letter,
                format!("nodes.{name}"),
                format!("`{name}` is not a valid node name (lower-case letter, then lower-case letters, digits, `_` or `-`)"),
            ));
        }
        let mut chars = n.letter.value.chars();
        let letter = match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_uppercase() => c,
            _ => {
                return Err(cx.at(
                    &n.letter,
                    field("letter"),
                    format!("`{}` is not one upper-case letter", n.letter.value),
                ));
            }
        };
        if let Some(other) = nodes.iter().find(|o| o.letter == letter) {
            return Err(cx.at(
                &n.letter,
                field("letter"),
                format!("`{letter}` is already the letter of node {}", other.name),
            ));
        }
        let device = match &n.device {
            None => DeviceChoice::Auto,
            Some(d) => d
                .value
                .parse()
                .map_err(|m: String| cx.at(d, field("device"), m))?,
        };
        let machine = match &n.machine {
            None => Machine::infer(device),
            Some(m) => {
                let machine: Machine = m
                    .value
                    .parse()
                    .map_err(|msg: String| cx.at(m, field("machine"), msg))?;
                if machine == Machine::Cpu && matches!(device, DeviceChoice::Cuda(_)) {
                    return Err(cx.at(
                        m,
                        field("machine"),
                        format!("a `cpu` machine has no GPU, but the node's device is `{device}`"),
                    ));
                }
                machine
            }
        };
        nodes.push(Node {
            name,
            letter,
            device,
            address: n.address,
            labels: n.labels.into_iter().collect(),
            machine,
            tls: None,
        });
    }
    Ok(nodes)
}

fn letters_list(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("{}={}", n.letter, n.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a letter string; the error message is for the caller to locate.
fn placement_from_letters(s: &str, nodes: &[Node], stages: &[Stage]) -> Result<Vec<usize>, String> {
    let n = stages.len() + 1;
    let letters: Vec<char> = s.chars().collect();
    if letters.len() != n {
        return Err(format!(
            "`{s}` has {} letters; this pipeline needs {n} (the source, then {} stages)",
            letters.len(),
            stages.len()
        ));
    }
    letters
        .iter()
        .enumerate()
        .map(|(k, c)| {
            nodes.iter().position(|nd| nd.letter == *c).ok_or_else(|| {
                let element = if k == 0 {
                    "source".to_owned()
                } else {
                    format!("stage {}", stages[k - 1].id)
                };
                format!(
                    "letter `{c}` (for {element}) names no node; nodes: {}",
                    letters_list(nodes)
                )
            })
        })
        .collect()
}

pub(super) fn resolve_placement(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<RawPlacement>>,
    ov: &Overrides,
    nodes: &[Node],
    stages: &[Stage],
) -> Result<Vec<usize>, SpecError> {
    if let Some(s) = &ov.placement {
        return placement_from_letters(s, nodes, stages).map_err(|message| SpecError::Override {
            flag: "--placement",
            message,
        });
    }
    let Some(raw) = raw else {
        return Ok(vec![0; stages.len() + 1]);
    };
    match &raw.value {
        RawPlacement::Letters(s) => {
            placement_from_letters(s, nodes, stages).map_err(|m| cx.at(raw, "placement", m))
        }
        RawPlacement::Map(map) => {
            let mut out: Vec<Option<usize>> = vec![None; stages.len() + 1];
            for (element, node) in map {
                let k = if element == "source" {
                    0
                } else {
                    1 + stages
                        .iter()
                        .position(|s| &s.id == element)
                        .ok_or_else(|| {
                            cx.at(
                                raw,
                                format!("placement.{element}"),
                                format!("`{element}` is neither `source` nor a stage id"),
                            )
                        })?
                };
                let n = nodes
                    .iter()
                    .position(|nd| &nd.name == node)
                    .ok_or_else(|| {
                        cx.at(
                            raw,
                            format!("placement.{element}"),
                            format!(
                                "node `{node}` is not declared (nodes: {})",
                                nodes
                                    .iter()
                                    .map(|n| n.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?;
                out[k] = Some(n);
            }
            // Unplaced elements follow the element before them; the source defaults to the first node.
            let mut prev = 0;
            Ok(out
                .into_iter()
                .map(|p| {
                    prev = p.unwrap_or(prev);
                    prev
                })
                .collect())
        }
    }
}

/// The weights and bias files `stages` name, each once, in spec order.
pub(super) fn model_files(cx: &Ctx<'_>, stages: &[RawStage]) -> Vec<crate::spec::ModelFile> {
    let mut out: Vec<crate::spec::ModelFile> = Vec::new();
    for (i, st) in stages.iter().enumerate() {
        let mut named: Vec<(&str, &str, bool)> = Vec::new();
        match st.weights.as_ref().map(|w| &w.value) {
            Some(RawWeights::Npy(n)) => named.push(("weights.npy", &n.path, n.watch)),
            Some(RawWeights::Safetensors(t)) => {
                named.push(("weights.safetensors.path", &t.path, false));
            }
            Some(RawWeights::Onnx(o)) => named.push(("weights.onnx.path", &o.path, false)),
            Some(RawWeights::Random(_)) | None => {}
        }
        if let Some(RawBias::File(b)) = st.bias.as_ref().map(|b| &b.value) {
            named.push(("bias.npy", &b.npy, false));
        }
        for (field, written, watched) in named {
            if let Some(seen) = out.iter_mut().find(|m| m.written == written) {
                seen.watched |= watched;
                continue;
            }
            out.push(crate::spec::ModelFile {
                stage: st.id.value.clone(),
                field: format!("stages[{i}].{field}"),
                written: written.to_owned(),
                path: cx.base_dir().join(written),
                watched,
            });
        }
    }
    out
}
