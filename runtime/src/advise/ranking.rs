//! Predicting a placement's throughput and latency from a [`Profile`], and
//! ranking every placement (the model in [the module's documentation](super)).

use std::collections::BTreeMap;

use serde::Serialize;

use super::profile::{AdviseError, Profile, range_key};
use crate::plan::{self, Plan};
use crate::spec::Pipeline;

/// What to rank placements by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// Highest predicted frames per second.
    #[default]
    Throughput,
    /// Lowest predicted end-to-end latency.
    Latency,
}

impl Objective {
    /// `throughput` or `latency`, as `--objective` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Throughput => "throughput",
            Self::Latency => "latency",
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "throughput" => Ok(Self::Throughput),
            "latency" => Ok(Self::Latency),
            _ => Err(format!("unknown objective `{s}` (throughput or latency)")),
        }
    }
}

/// One placement's prediction (fields in the order its JSON has them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The resource that bounds its throughput.
    pub bound_by: String,
    /// Predicted frames per second.
    pub fps: f64,
    /// Predicted end-to-end latency of one frame alone, ms.
    pub latency_ms: f64,
    /// Placement letters (`EESS`).
    pub placement: String,
    /// Processes (segments).
    pub segments: usize,
}

/// Every placement of `p` that the profile can predict, ranked best first
/// by `objective` (ties: fewer processes, then the placement letters).
/// Placements that put a stage needing a GPU (`device: cuda`) on a node
/// without one are not offered.
/// Placements with a stage on a node the profile did not measure it on,
/// or across two nodes with no link, are left out.
pub fn rank(p: &Pipeline, prof: &Profile, objective: Objective) -> Vec<Prediction> {
    let mut out: Vec<Prediction> = placements(p)
        .into_iter()
        .filter(|pl| crate::spec::gpu_violation(&p.stages, &p.nodes, pl).is_none())
        .filter_map(|placement| {
            let mut q = p.clone();
            q.placement = placement;
            predict(&q, &plan::plan(&q), prof)
        })
        .collect();
    out.sort_by(|x, y| {
        let key = match objective {
            Objective::Throughput => y.fps.total_cmp(&x.fps),
            Objective::Latency => x.latency_ms.total_cmp(&y.latency_ms),
        };
        key.then(x.segments.cmp(&y.segments))
            .then_with(|| x.placement.cmp(&y.placement))
    });
    out
}

/// The placement the advisor picks for `p` (`--placement auto`): the
/// first of [`rank`] by `objective`.
///
/// # Errors
/// [`AdviseError::NoPlacement`] when the profile lets it predict none.
pub fn best_placement(
    p: &Pipeline,
    prof: &Profile,
    objective: Objective,
) -> Result<Prediction, AdviseError> {
    rank(p, prof, objective)
        .into_iter()
        .next()
        .ok_or(AdviseError::NoPlacement)
}

/// Every assignment of the stages to nodes, the source kept where `p`
/// places it.
fn placements(p: &Pipeline) -> Vec<Vec<usize>> {
    let nodes = p.nodes.len().max(1);
    let mut all = vec![vec![p.placement.first().copied().unwrap_or(0)]];
    for _ in &p.stages {
        all = all
            .into_iter()
            .flat_map(|pre| {
                (0..nodes).map(move |n| {
                    let mut v = pre.clone();
                    v.push(n);
                    v
                })
            })
            .collect();
    }
    all
}

/// The prediction for `p`'s placement planned as `plan`; `None` where the
/// profile lacks a measurement it needs.
pub fn predict(p: &Pipeline, plan: &Plan, prof: &Profile) -> Option<Prediction> {
    let mut bound: Option<(String, f64)> = None;
    let mut consider = |name: String, fps: f64| {
        if bound.as_ref().is_none_or(|(_, b)| fps < *b) {
            bound = Some((name, fps));
        }
    };
    let mut latency = 0.0;
    let mut demand: BTreeMap<usize, f64> = BTreeMap::new();
    for seg in &plan.segments {
        let node = &p.nodes[seg.node].name;
        let np = prof.nodes.get(node)?;
        if let (true, Some(src)) = (seg.has_source, np.source) {
            latency += src.ms;
            *demand.entry(seg.node).or_default() += src.cpu_ms;
            if src.ms > 0.0 {
                consider(format!("the source on {node}"), 1e3 / src.ms);
            }
        }
        if !seg.stages.is_empty() {
            let c = np
                .ranges
                .get(&range_key(seg.stages.start, seg.stages.end))?;
            latency += c.ms;
            *demand.entry(seg.node).or_default() += c.cpu_ms;
            if c.ms > 0.0 {
                consider(format!("{}'s worker on {node}", names(p, seg)), 1e3 / c.ms);
            }
        }
        if seg.index == 0 {
            continue;
        }
        let prev = &plan.segments[seg.index - 1];
        let bytes = prev.output.bytes();
        let h = prof.hop_ms(bytes);
        latency += h;
        *demand.entry(prev.node).or_default() += h / 2.0;
        *demand.entry(seg.node).or_default() += h / 2.0;
        if prev.node != seg.node {
            let from = &p.nodes[prev.node].name;
            let l = prof.link(from, node)?;
            latency += bytes as f64 / l.bytes_per_s * 1e3 + l.rtt_ms / 2.0;
            if bytes > 0 {
                consider(format!("link {from}->{node}"), l.bytes_per_s / bytes as f64);
            }
        }
    }
    for (&n, &d) in &demand {
        let node = &p.nodes[n];
        let cpus = prof.nodes.get(&node.name)?.cpus;
        if d > 0.0 {
            consider(format!("{}'s {cpus} CPUs", node.name), cpus * 1e3 / d);
        }
    }
    let (bound_by, fps) = bound.unwrap_or_else(|| ("nothing measured".into(), f64::INFINITY));
    Some(Prediction {
        placement: p.placement_letters(),
        segments: plan.segments.len(),
        fps,
        latency_ms: latency,
        bound_by,
    })
}

fn names(p: &Pipeline, seg: &plan::Segment) -> String {
    p.stages[seg.stages.clone()]
        .iter()
        .map(|s| s.id.as_str())
        .collect::<Vec<_>>()
        .join("+")
}
