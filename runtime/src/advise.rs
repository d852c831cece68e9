//! The placement advisor: predicts every placement's throughput and
//! latency from measured costs ([`Profile`]) and ranks them.
//!
//! # The model
//!
//! A placement puts the source and each stage on a node; the planner makes
//! its segments (maximal same-node runs, every stage its own with `fusion:
//! off`), and each segment runs as one process. From the profile:
//!
//! - **Compute** of segment `s`, `c_s`: the measured wall time per frame of
//!   its stage range on its node's device, run as the executor runs it (one
//!   fused group where the fusion rules allow), with the node's kernel
//!   threads; and its CPU time per frame, `u_s`.
//! - **Source**: producing a frame on the node that holds the source, on
//!   the source's own thread: wall time `g` and CPU time per frame.
//! - **Hand-off** between two segments: the frame of `b` bytes costs CPU on
//!   both processes (encode, send, receive, check):
//!   `h(b) = hop.fixed_ms + hop.per_mb_ms * b / 1e6`, half on each side.
//! - **Link** between two nodes: `b / bandwidth` to cross, plus half the
//!   round trip.
//!
//! Throughput is what the executor's pipelining gives: every segment, link
//! and node works on a different frame at once, so the placement runs at
//! its tightest resource:
//!
//! - each segment's worker, which runs its kernels one frame after another:
//!   `1 / c_s`; and the source's thread, `1 / g`;
//! - each node's CPUs shared by its processes: `cpus_n / D_n`, with
//!   `D_n` the CPU time per frame of every segment on `n` (`u_s` plus its
//!   hand-offs' halves, plus the source's where it runs there);
//! - each link between nodes: `bandwidth / b`.
//!
//! Latency is one frame alone through the pipeline: `g + Σ c_s + Σ h(b) + Σ
//! (b / bandwidth + rtt / 2)` over the segments, hand-offs and links.
//! Frames queued before a bottleneck add to it under load; the prediction
//! is the unloaded latency.
//!
//! The source stays on the node the spec places it on (the node that owns
//! the camera); every stage may go on any node the profile measured it on,
//! except that a stage marked `device: cuda` only goes on nodes with a GPU
//! ([`crate::spec::Node::has_gpu`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::plan::{self, Plan};
use crate::spec::Pipeline;

/// Version of the profile format this build reads and writes.
pub const PROFILE_VERSION: u32 = 1;

/// Measured costs of a pipeline on a cluster (`streamfuse profile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version ([`PROFILE_VERSION`]).
    pub version: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Frame shape the costs were measured at, `[C, H, W]`.
    pub frame: [usize; 3],
    /// Per node (by name).
    pub nodes: BTreeMap<String, NodeProfile>,
    /// Links between nodes.
    pub links: Vec<LinkProfile>,
    /// CPU cost of handing a frame from one process to another.
    pub hop: HopProfile,
}

/// What one node costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeProfile {
    /// CPUs its processes share (a CPU quota, or its cores).
    pub cpus: f64,
    /// The device the stage ranges ran on (`cpu`, or the CUDA device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// What producing one frame of the spec's sources costs on this node
    /// (they run on threads of their own in the segment that holds them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RangeCost>,
    /// Per stage range `"a..b"` (stage indices, end exclusive): the cost of
    /// running those stages as one segment on this node.
    pub ranges: BTreeMap<String, RangeCost>,
}

/// The cost of a stage range on a node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeCost {
    /// Wall time per frame, ms.
    pub ms: f64,
    /// CPU time per frame (every kernel thread), ms.
    pub cpu_ms: f64,
}

/// A link between two nodes (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Bandwidth, bytes per second.
    pub bytes_per_s: f64,
    /// Round-trip time, ms.
    pub rtt_ms: f64,
    /// Whether the figures were measured (`profile --peer`) rather than
    /// given on the command line.
    #[serde(default)]
    pub measured: bool,
    /// What each probe measured, by payload size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<crate::transport::probe::LinkSample>,
}

/// CPU cost of one hand-off between processes: `fixed_ms + per_mb_ms *
/// bytes / 1e6`, split evenly between the sender and the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopProfile {
    /// Per frame, ms.
    pub fixed_ms: f64,
    /// Per MB of frame, ms.
    pub per_mb_ms: f64,
}

/// A profile or an advice request is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdviseError {
    /// The profile file cannot be read or parsed.
    #[error("profile {file}: {message}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// The profile does not describe this pipeline.
    #[error("profile: {0}")]
    Mismatch(String),
}

/// The key of stage range `a..b`.
pub fn range_key(a: usize, b: usize) -> String {
    format!("{a}..{b}")
}

impl Profile {
    /// Reads and validates a profile for `p`.
    ///
    /// # Errors
    /// [`AdviseError`] when the file is missing, not a profile of this
    /// version, or does not describe `p` ([`Profile::check`]).
    pub fn load(path: &Path, p: &Pipeline) -> Result<Self, AdviseError> {
        Self::load_all(&[path], p)
    }

    /// Reads the profiles in `paths` (each node measured on itself, say),
    /// merges them ([`Profile::merge`]) and validates the result for `p`.
    ///
    /// # Errors
    /// [`AdviseError`] when a file is missing or not a profile of this
    /// version, two disagree on the pipeline or frame, or the merged
    /// profile does not describe `p` ([`Profile::check`]).
    pub fn load_all<P: AsRef<Path>>(paths: &[P], p: &Pipeline) -> Result<Self, AdviseError> {
        let mut merged: Option<Self> = None;
        for path in paths {
            let path = path.as_ref();
            let read = |message: String| AdviseError::Read {
                file: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
            let prof: Self = serde_json::from_str(&text).map_err(|e| read(e.to_string()))?;
            merged = Some(match merged {
                None => prof,
                Some(m) => m.merge(prof).map_err(|e| read(e.to_string()))?,
            });
        }
        let prof = merged.ok_or_else(|| AdviseError::Mismatch("no profile given".into()))?;
        prof.check(p)?;
        Ok(prof)
    }

    /// This profile with `other`'s nodes and links added: a node or link
    /// both describe takes `other`'s figures, except that a measured link
    /// is not replaced by one given on the command line. The hand-off cost
    /// is taken from the profile with measured links.
    ///
    /// # Errors
    /// [`AdviseError::Mismatch`] when the two describe different versions,
    /// pipelines or frame shapes.
    pub fn merge(mut self, other: Self) -> Result<Self, AdviseError> {
        if (other.version, &other.pipeline, other.frame)
            != (self.version, &self.pipeline, self.frame)
        {
            return Err(AdviseError::Mismatch(format!(
                "profiles of different pipelines or frames: `{}` {:?} (version {}) and `{}` {:?} (version {})",
                self.pipeline, self.frame, self.version, other.pipeline, other.frame, other.version
            )));
        }
        let other_measured = other.links.iter().any(|l| l.measured);
        let self_measured = self.links.iter().any(|l| l.measured);
        if other_measured && !self_measured {
            self.hop = other.hop;
        }
        self.nodes.extend(other.nodes);
        for l in other.links {
            let same = |x: &LinkProfile| (x.a == l.a && x.b == l.b) || (x.a == l.b && x.b == l.a);
            match self.links.iter_mut().find(|x| same(x)) {
                Some(x) if x.measured && !l.measured => {}
                Some(x) => *x = l,
                None => self.links.push(l),
            }
        }
        Ok(self)
    }

    /// Checks that the profile is of this version and describes `p`: its
    /// name and frame shape, a node profile for every node, finite positive
    /// figures, and links between known nodes.
    ///
    /// # Errors
    /// [`AdviseError::Mismatch`] naming the first problem.
    pub fn check(&self, p: &Pipeline) -> Result<(), AdviseError> {
        let bad = |m: String| Err(AdviseError::Mismatch(m));
        if self.version != PROFILE_VERSION {
            return bad(format!(
                "version {} (this build reads version {PROFILE_VERSION})",
                self.version
            ));
        }
        if self.pipeline != p.name {
            return bad(format!(
                "measured pipeline `{}`, the spec is `{}`",
                self.pipeline, p.name
            ));
        }
        let s = p.source.shape();
        if self.frame != [s.c, s.h, s.w] {
            return bad(format!(
                "measured frames {:?}, the spec's are {:?} (CxHxW)",
                self.frame,
                [s.c, s.h, s.w]
            ));
        }
        let source_key = "source".to_owned();
        for n in &p.nodes {
            let Some(np) = self.nodes.get(&n.name) else {
                return bad(format!("no measurements of node `{}`", n.name));
            };
            if !(np.cpus.is_finite() && np.cpus > 0.0) {
                return bad(format!(
                    "node `{}`: cpus {} is not positive",
                    n.name, np.cpus
                ));
            }
            for (k, c) in np
                .ranges
                .iter()
                .chain(np.source.iter().map(|c| (&source_key, c)))
            {
                if !(c.ms.is_finite() && c.ms >= 0.0 && c.cpu_ms.is_finite() && c.cpu_ms >= 0.0) {
                    return bad(format!(
                        "node `{}`, stages {k}: a negative or non-finite time",
                        n.name
                    ));
                }
            }
        }
        for l in &self.links {
            for end in [&l.a, &l.b] {
                if !p.nodes.iter().any(|n| &n.name == end) {
                    return bad(format!("link to unknown node `{end}`"));
                }
            }
            if !(l.bytes_per_s.is_finite()
                && l.bytes_per_s > 0.0
                && l.rtt_ms.is_finite()
                && l.rtt_ms >= 0.0)
            {
                return bad(format!("link {}-{}: bandwidth must be positive", l.a, l.b));
            }
        }
        let h = self.hop;
        if !(h.fixed_ms.is_finite()
            && h.fixed_ms >= 0.0
            && h.per_mb_ms.is_finite()
            && h.per_mb_ms >= 0.0)
        {
            return bad("hop costs must be non-negative".into());
        }
        Ok(())
    }

    fn link(&self, a: &str, b: &str) -> Option<&LinkProfile> {
        self.links
            .iter()
            .find(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    fn hop_ms(&self, bytes: usize) -> f64 {
        self.hop.fixed_ms + self.hop.per_mb_ms * bytes as f64 / 1e6
    }
}

/// What to rank placements by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// Highest predicted frames per second.
    #[default]
    Throughput,
    /// Lowest predicted end-to-end latency.
    Latency,
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

/// One placement's prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Placement letters (`EESS`).
    pub placement: String,
    /// Processes (segments).
    pub segments: usize,
    /// Predicted frames per second.
    pub fps: f64,
    /// Predicted end-to-end latency of one frame alone, ms.
    pub latency_ms: f64,
    /// The resource that bounds its throughput.
    pub bound_by: String,
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

fn names(p: &Pipeline, seg: &crate::plan::Segment) -> String {
    p.stages[seg.stages.clone()]
        .iter()
        .map(|s| s.id.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

/// How [`measure`] measures, and what it takes as given.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureOptions {
    /// Untimed frames per stage range first.
    pub warmup: usize,
    /// Timed frames per stage range (the median is kept).
    pub iters: usize,
    /// Bandwidth of every link between two nodes, bytes per second (where
    /// no link is measured).
    pub link_bytes_per_s: f64,
    /// Round trip of every link, ms (where no link is measured).
    pub rtt_ms: f64,
    /// CPU cost of a hand-off between processes (where no link is
    /// measured).
    pub hop: HopProfile,
    /// The node this machine is: only it is described. `None`: every node
    /// of the spec, each as this machine.
    pub node: Option<String>,
    /// Seconds each stage range runs in the executor (long enough for a
    /// CPU quota's periods to show).
    pub run_secs: f64,
    /// Runs per stage range; the fastest is kept.
    pub repeats: usize,
    /// CPUs the node's processes share; `None`: this process's usable
    /// CPUs ([`crate::cputime::usable_cpus`]).
    pub cpus: Option<f64>,
}

/// Measures every stage range of `p` on this machine: each range run as
/// one segment in the executor (fused as `p`'s fusion mode fuses it; with
/// `off`, chained), fed by a synthetic source of its input shape and
/// followed by a sink that drops the frames, for about `o.run_secs`, the
/// fastest of `o.repeats` runs: its wall time per frame (from the
/// steady-state rate) and its process CPU time per frame less the feed's
/// (measured alone), on the node's device (with `o.node`, that node's
/// `device`: its CUDA kernels where the machine has a GPU, as a run would
/// place them); and the sources' cost of producing a frame (a synthetic source of the
/// same shape where the source is a camera, video or files). The node gets
/// `o.cpus`, by default this machine's usable CPUs
/// ([`crate::cputime::usable_cpus`]: its CPU quota where it has one). With `o.node`, only that node is described
/// (merge the nodes' profiles with [`Profile::merge`]); else every node of
/// the spec, each as this machine. Links and hand-offs are as `o` gives
/// them; [`measure_links`] measures them.
///
/// # Errors
/// A kernel error (the spec was validated, so this means a bug), or
/// [`MeasureError::Node`] when `o.node` is not a node of the spec.
pub fn measure(p: &Pipeline, o: &MeasureOptions) -> Result<Profile, MeasureError> {
    use crate::spec::{FusionMode, SourceConfig, SyntheticSource};
    if let Some(n) = &o.node
        && !p.nodes.iter().any(|x| &x.name == n)
    {
        return Err(MeasureError::Node(n.clone()));
    }
    let n = p.stages.len();
    let fusion = if p.fusion == FusionMode::Off {
        FusionMode::Chain
    } else {
        p.fusion
    };
    let here = o
        .node
        .as_ref()
        .and_then(|name| p.nodes.iter().position(|x| &x.name == name))
        .unwrap_or(0);
    let mut ranges = BTreeMap::new();
    let mut ran_on: Option<String> = None;
    for a in 0..n {
        let feed = SyntheticSource {
            shape: p.stages[a].input,
            frames: 1,
            seed: 0,
            fps: None,
        };
        // The feed stands in for the source or the link in front: its cost
        // (the same for every range from `a`) is not the range's.
        let feed_cpu = synthetic_cost(&feed, o).cpu_ms;
        for b in a + 1..=n {
            let mut q = p.clone();
            q.stages = p.stages[a..b].to_vec();
            q.extra_sources.clear();
            // On the profiled node, so its device (CUDA where it has one
            // and the machine has it) runs the kernels.
            q.placement = vec![here; b - a + 1];
            q.sink = crate::spec::SinkConfig::Null;
            q.fusion = fusion;
            // Kernel time first, to size a run of about `o.run_secs`.
            q.source = SourceConfig::Synthetic(feed.clone());
            let k = crate::stagebench::bench(&q, fusion, o.warmup, o.iters)?;
            let frames = (o.run_secs * 1e3 / k.median_ms.max(1e-3)).clamp(20.0, 200_000.0) as u64;
            q.source = SourceConfig::Synthetic(SyntheticSource {
                frames,
                ..feed.clone()
            });
            // The fastest of `repeats` runs: what the node can do when
            // nothing else (a hypervisor's other guests) takes its CPUs.
            let q_plan = plan::plan(&q);
            let mut best: Option<(f64, f64)> = None;
            for _ in 0..o.repeats.max(1) {
                let cpu0 = crate::cputime::process_cpu();
                let r = crate::exec::run(&q, &q_plan, &crate::exec::RunOptions::default())
                    .map_err(|e| MeasureError::Run(e.to_string()))?;
                let cpu_ms = match (cpu0, crate::cputime::process_cpu()) {
                    (Some(t0), Some(t1)) => {
                        t1.saturating_sub(t0).as_secs_f64() * 1e3 / frames as f64
                    }
                    _ => k.median_ms * rayon::current_num_threads() as f64,
                };
                let fps = r.steady_fps.unwrap_or(r.fps);
                ran_on = Some(r.device.clone());
                if best.is_none_or(|(f, _)| fps > f) {
                    best = Some((fps, cpu_ms));
                }
            }
            let (fps, cpu_ms) = best.unwrap_or((0.0, 0.0));
            ranges.insert(
                range_key(a, b),
                RangeCost {
                    ms: if fps > 0.0 { 1e3 / fps } else { k.median_ms },
                    cpu_ms: (cpu_ms - feed_cpu).max(0.0),
                },
            );
        }
    }
    let source = source_cost(p, o);
    let cpus = o.cpus.unwrap_or_else(crate::cputime::usable_cpus);
    let nodes = p
        .nodes
        .iter()
        .filter(|nd| o.node.as_ref().is_none_or(|only| *only == nd.name))
        .map(|nd| {
            (
                nd.name.clone(),
                NodeProfile {
                    cpus,
                    device: ran_on.clone(),
                    source: Some(source),
                    ranges: ranges.clone(),
                },
            )
        })
        .collect();
    let mut links = Vec::new();
    for (i, x) in p.nodes.iter().enumerate() {
        for y in &p.nodes[i + 1..] {
            links.push(LinkProfile {
                a: x.name.clone(),
                b: y.name.clone(),
                bytes_per_s: o.link_bytes_per_s,
                rtt_ms: o.rtt_ms,
                measured: false,
                samples: Vec::new(),
            });
        }
    }
    let s = p.source.shape();
    Ok(Profile {
        version: PROFILE_VERSION,
        pipeline: p.name.clone(),
        frame: [s.c, s.h, s.w],
        nodes,
        links,
        hop: o.hop,
    })
}

/// Median wall time and mean CPU time of producing one frame of every
/// source of `p` (synthetic frames of each source's shape).
fn source_cost(p: &Pipeline, o: &MeasureOptions) -> RangeCost {
    use crate::spec::SyntheticSource;
    let mut total = RangeCost {
        ms: 0.0,
        cpu_ms: 0.0,
    };
    for src in p.sources() {
        let cfg = match src {
            crate::spec::SourceConfig::Synthetic(s) => s.clone(),
            other => SyntheticSource {
                shape: other.shape(),
                frames: 1,
                seed: 0,
                fps: None,
            },
        };
        let c = synthetic_cost(&cfg, o);
        total.ms += c.ms;
        total.cpu_ms += c.cpu_ms;
    }
    total
}

/// Median wall time and mean CPU time of generating one synthetic frame.
fn synthetic_cost(cfg: &crate::spec::SyntheticSource, o: &MeasureOptions) -> RangeCost {
    use crate::io::synthetic::Synthetic;
    let runs = o.warmup + o.iters.max(1);
    let mut times = Vec::with_capacity(runs);
    let cpu0 = crate::cputime::process_cpu();
    for seq in 0..runs as u64 {
        let t = std::time::Instant::now();
        std::hint::black_box(Synthetic::tensor(cfg, seq));
        if seq >= o.warmup as u64 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    RangeCost {
        ms: median,
        cpu_ms: match (cpu0, crate::cputime::process_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() * 1e3 / runs as f64,
            _ => median,
        },
    }
}

/// Profiling failed.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// A stage range could not run.
    #[error(transparent)]
    Kernel(#[from] streamfuse_kernels::KernelError),
    /// A stage range could not run in the executor.
    #[error("running a stage range: {0}")]
    Run(String),
    /// `--node` names no node of the spec.
    #[error("--node `{0}` is not a node of the spec")]
    Node(String),
    /// A peer is not a node of the spec, or is this node.
    #[error("--peer `{0}`: not another node of the spec")]
    Peer(String),
    /// A link probe failed.
    #[error(transparent)]
    Probe(#[from] crate::transport::probe::ProbeError),
}

/// The payload sizes a frame of `p` can have on a link: the sources' and
/// every stage's output, largest first, without repeats.
pub fn link_sizes(p: &Pipeline) -> Vec<usize> {
    let mut v: Vec<usize> = p
        .sources()
        .map(|s| s.shape().bytes())
        .chain(p.stages.iter().map(|s| s.output.bytes()))
        .filter(|&b| b > 0)
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.dedup();
    v
}

/// Measures the link from node `from` to each `(node, address)` peer, a
/// `streamfuse serve` of that node, with frames of every size a frame of
/// `p` can have on a link ([`link_sizes`]), for about `per_size` each:
/// bandwidth (at the largest size), round trip, and the CPU time sender and
/// receiver spend per frame. The hand-off cost is fitted to those CPU
/// times by least squares (`fixed_ms + per_mb_ms * MB`, both at least 0).
///
/// # Errors
/// [`MeasureError`] when a peer is not another node of the spec, or a
/// probe fails.
pub async fn measure_links(
    p: &Pipeline,
    from: &str,
    peers: &[(String, String)],
    per_size: std::time::Duration,
) -> Result<(Vec<LinkProfile>, Option<HopProfile>), MeasureError> {
    let sizes = link_sizes(p);
    let mut links = Vec::new();
    let mut points = Vec::new();
    for (node, addr) in peers {
        if node == from || !p.nodes.iter().any(|n| &n.name == node) {
            return Err(MeasureError::Peer(node.clone()));
        }
        let mut samples = Vec::new();
        for &bytes in &sizes {
            let s = crate::transport::probe::probe(addr, bytes, per_size, 10_000).await?;
            tracing::info!(
                peer = %node,
                bytes,
                mb_per_s = format!("{:.1}", s.bytes_per_s / 1e6),
                rtt_ms = format!("{:.3}", s.rtt_ms),
                send_cpu_ms = format!("{:.3}", s.send_cpu_ms),
                recv_cpu_ms = format!("{:.3}", s.recv_cpu_ms),
                "link probe"
            );
            points.push((bytes as f64 / 1e6, s.send_cpu_ms + s.recv_cpu_ms));
            samples.push(s);
        }
        let Some(largest) = samples.first() else {
            continue;
        };
        let mut rtts: Vec<f64> = samples.iter().map(|s| s.rtt_ms).collect();
        rtts.sort_by(f64::total_cmp);
        links.push(LinkProfile {
            a: from.to_owned(),
            b: node.clone(),
            bytes_per_s: largest.bytes_per_s,
            rtt_ms: rtts[rtts.len() / 2],
            measured: true,
            samples,
        });
    }
    Ok((links, fit_hop(&points)))
}

/// Least-squares `y = fixed + per_mb * x` over `(MB, ms)` points, both
/// coefficients at least 0; `None` without points.
fn fit_hop(points: &[(f64, f64)]) -> Option<HopProfile> {
    if points.is_empty() {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let (fixed, per_mb) = if sxx > 0.0 {
        let b = (sxy / sxx).max(0.0);
        let a = my - b * mx;
        if a >= 0.0 {
            (a, b)
        } else {
            // Through the origin.
            let sx2: f64 = points.iter().map(|p| p.0 * p.0).sum();
            let sxy0: f64 = points.iter().map(|p| p.0 * p.1).sum();
            (0.0, (sxy0 / sx2).max(0.0))
        }
    } else {
        (my.max(0.0), 0.0)
    };
    Some(HopProfile {
        fixed_ms: fixed,
        per_mb_ms: per_mb,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// 1 x 100 x 100 frames (40,000 bytes), conv (same size) -> relu ->
    /// pool (2x2: 10,000 bytes).
    const SPEC: &str = "
name: t
source: { synthetic: { width: 100, height: 100, channels: 1 } }
stages:
  - { id: conv, op: conv2d, kernel: 3, padding: 1, out_channels: 1, weights: { random: { seed: 1 } } }
  - { id: relu, op: relu }
  - { id: pool, op: maxpool, size: 2 }
sink: { stats: {} }
nodes:
  edge:   { letter: E, device: cpu }
  server: { letter: S, device: cpu }
placement: ESSS
fusion: kernel
";

    fn pipeline() -> Pipeline {
        crate::spec::parse(SPEC, Path::new("t.yaml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every stage range on both nodes: each stage costs `edge_ms` on the
    /// edge and `server_ms` on the server, fused ranges the sum; one CPU
    /// each; no hand-off cost.
    fn profile(edge_ms: f64, server_ms: f64, link_bytes_per_s: f64) -> Profile {
        let node = |ms: f64| NodeProfile {
            cpus: 1.0,
            device: None,
            source: None,
            ranges: (0..3)
                .flat_map(|a| (a + 1..=3).map(move |b| (a, b)))
                .map(|(a, b)| {
                    let t = ms * (b - a) as f64;
                    (range_key(a, b), RangeCost { ms: t, cpu_ms: t })
                })
                .collect(),
        };
        Profile {
            version: PROFILE_VERSION,
            pipeline: "t".into(),
            frame: [1, 100, 100],
            nodes: [
                ("edge".to_owned(), node(edge_ms)),
                ("server".to_owned(), node(server_ms)),
            ]
            .into_iter()
            .collect(),
            links: vec![LinkProfile {
                a: "edge".into(),
                b: "server".into(),
                bytes_per_s: link_bytes_per_s,
                rtt_ms: 0.0,
                measured: false,
                samples: Vec::new(),
            }],
            hop: HopProfile {
                fixed_ms: 0.0,
                per_mb_ms: 0.0,
            },
        }
    }

    #[test]
    fn every_placement_is_ranked_with_the_source_kept_on_the_edge() {
        let p = pipeline();
        let r = rank(&p, &profile(1.0, 1.0, 1e9), Objective::Throughput);
        assert_eq!(r.len(), 8, "2 nodes, 3 stages");
        assert!(r.iter().all(|x| x.placement.starts_with('E')));
    }

    #[test]
    fn a_fast_link_and_a_fast_server_send_everything_to_the_server() {
        // Edge 10 ms per stage, server 1 ms; 1 GB/s (40 us per frame).
        let p = pipeline();
        let r = rank(&p, &profile(10.0, 1.0, 1e9), Objective::Throughput);
        assert_eq!(r[0].placement, "ESSS");
        // One server process, 3 ms of CPU per frame on one CPU.
        assert!((r[0].fps - 1e3 / 3.0).abs() < 1e-9, "{:?}", r[0]);
        assert_eq!(r[0].bound_by, "conv+relu+pool's worker on server");
        let l = rank(&p, &profile(10.0, 1.0, 1e9), Objective::Latency);
        assert_eq!(l[0].placement, "ESSS");
        assert!((l[0].latency_ms - (3.0 + 0.04)).abs() < 1e-9, "{:?}", l[0]);
    }

    #[test]
    fn a_slow_link_keeps_the_frame_on_the_edge_until_it_is_small() {
        // 400 kB/s: a 40 kB frame takes 100 ms to cross, a pooled 10 kB
        // frame 25 ms; edge 2 ms per stage (6 ms for all three), server 1 ms.
        let p = pipeline();
        let r = rank(&p, &profile(2.0, 1.0, 4e5), Objective::Throughput);
        // Everything on the edge: 6 ms of its one CPU, no link.
        assert_eq!(r[0].placement, "EEEE");
        assert!((r[0].fps - 1e3 / 6.0).abs() < 1e-9);
        // Every other placement sends a full frame across: 10 fps.
        for x in &r[1..] {
            assert_eq!(x.bound_by, "link edge->server", "{x:?}");
            assert!((x.fps - 10.0).abs() < 1e-9, "{x:?}");
        }
        // By latency: EEEE (6 ms) beats EEES (conv+relu 4 ms, 100 ms on the
        // link, pool 1 ms).
        let l = rank(&p, &profile(2.0, 1.0, 4e5), Objective::Latency);
        assert_eq!(l[0].placement, "EEEE");
        assert!((l[0].latency_ms - 6.0).abs() < 1e-9);
        let eees = l.iter().find(|x| x.placement == "EEES");
        assert!(
            eees.is_some_and(|x| (x.latency_ms - 105.0).abs() < 1e-9),
            "{eees:?}"
        );
    }

    #[test]
    fn a_profile_of_another_pipeline_or_size_is_refused() {
        let p = pipeline();
        let mut other = profile(1.0, 1.0, 1e9);
        other.frame = [1, 720, 1280];
        let e = other.check(&p).unwrap_err().to_string();
        assert!(e.contains("measured frames [1, 720, 1280]"), "{e}");
        let mut missing = profile(1.0, 1.0, 1e9);
        missing.nodes.remove("server");
        assert!(
            missing
                .check(&p)
                .unwrap_err()
                .to_string()
                .contains("node `server`")
        );
        let mut v = profile(1.0, 1.0, 1e9);
        v.version = 9;
        assert!(v.check(&p).unwrap_err().to_string().contains("version 9"));
        assert!(profile(1.0, 1.0, 1e9).check(&p).is_ok());
    }

    #[test]
    fn a_slow_source_bounds_the_placement_and_costs_its_node_cpu() {
        let p = pipeline();
        let mut prof = profile(1.0, 1.0, 1e9);
        if let Some(e) = prof.nodes.get_mut("edge") {
            e.source = Some(RangeCost {
                ms: 5.0,
                cpu_ms: 0.5,
            });
        }
        let r = rank(&p, &prof, Objective::Throughput);
        // Every placement keeps the source on the edge: 200 fps at most.
        for x in &r {
            assert!(x.fps <= 200.0 + 1e-9, "{x:?}");
        }
        let eeee = r.iter().find(|x| x.placement == "EEEE");
        assert!(
            eeee.is_some_and(|x| x.bound_by == "the source on edge" && (x.fps - 200.0).abs() < 1e-9),
            "{eeee:?}"
        );
        // A cheap source thread but costly in CPU: the edge's one CPU pays
        // 3 ms of stages and 1 ms of source per frame.
        if let Some(e) = prof.nodes.get_mut("edge") {
            e.source = Some(RangeCost {
                ms: 0.1,
                cpu_ms: 1.0,
            });
        }
        let mut q = p.clone();
        q.placement = vec![0, 0, 0, 0];
        let x = predict(&q, &plan::plan(&q), &prof).unwrap_or_else(|| panic!("no prediction"));
        assert!((x.fps - 250.0).abs() < 1e-9, "{x:?}");
        assert_eq!(x.bound_by, "edge's 1 CPUs");
    }

    #[test]
    fn the_hand_off_fit_recovers_a_line_and_stays_non_negative() {
        let h = fit_hop(&[(0.0, 0.1), (1.0, 1.1), (4.0, 4.1)]).unwrap_or_else(|| panic!("none"));
        assert!(
            (h.fixed_ms - 0.1).abs() < 1e-9 && (h.per_mb_ms - 1.0).abs() < 1e-9,
            "{h:?}"
        );
        // A negative intercept is refitted through the origin.
        let h = fit_hop(&[(1.0, 0.5), (2.0, 2.0)]).unwrap_or_else(|| panic!("none"));
        assert_eq!(h.fixed_ms, 0.0);
        assert!((h.per_mb_ms - 0.9).abs() < 1e-9, "{h:?}");
        // One size: a fixed cost.
        let h = fit_hop(&[(1.0, 0.3), (1.0, 0.5)]).unwrap_or_else(|| panic!("none"));
        assert!(
            (h.fixed_ms - 0.4).abs() < 1e-9 && h.per_mb_ms == 0.0,
            "{h:?}"
        );
        assert!(fit_hop(&[]).is_none());
    }

    #[test]
    fn merged_profiles_take_each_node_and_keep_a_measured_link() {
        let p = pipeline();
        let full = profile(1.0, 2.0, 1e9);
        let mut edge = full.clone();
        edge.nodes.remove("server");
        edge.links[0].measured = true;
        edge.links[0].bytes_per_s = 5e6;
        edge.hop.fixed_ms = 0.7;
        let mut server = full.clone();
        server.nodes.remove("edge");
        let m = edge
            .clone()
            .merge(server.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.check(&p).is_ok());
        assert_eq!(m.nodes, full.nodes);
        // The server's assumed link does not replace the edge's measured one,
        // and the hand-off cost comes with the measured link.
        assert_eq!(m.links.len(), 1);
        assert_eq!(m.links[0].bytes_per_s, 5e6);
        assert_eq!(m.hop.fixed_ms, 0.7);
        let m2 = server.merge(edge.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m2.links[0].bytes_per_s, 5e6);
        assert_eq!(m2.hop.fixed_ms, 0.7);
        let mut other = full;
        other.frame = [1, 50, 50];
        let e = edge.merge(other).unwrap_err().to_string();
        assert!(e.contains("different pipelines or frames"), "{e}");
    }

    #[test]
    fn link_sizes_are_every_distinct_frame_size_largest_first() {
        // 100x100 source, conv same size (padding 1), relu, pool to 50x50.
        assert_eq!(link_sizes(&pipeline()), [40_000, 10_000]);
    }

    #[test]
    fn a_stage_that_needs_a_gpu_is_only_placed_on_a_node_with_one() {
        // The edge is a CPU-only board; conv needs a GPU.
        let text = SPEC
            .replace(
                "edge:   { letter: E, device: cpu }",
                "edge:   { letter: E, device: cpu, machine: cpu }",
            )
            .replace(
                "server: { letter: S, device: cpu }",
                "server: { letter: S, device: auto, machine: gpu-server }",
            )
            .replace(
                "weights: { random: { seed: 1 } } }",
                "weights: { random: { seed: 1 } }, device: cuda }",
            );
        let p = crate::spec::parse(&text, Path::new("t.yaml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.stages[0].needs_gpu);
        // Without the constraint EEEE would win (slow link, see above).
        let r = rank(&p, &profile(2.0, 1.0, 4e5), Objective::Throughput);
        assert_eq!(r.len(), 4, "conv on the server; relu and pool anywhere");
        assert!(r.iter().all(|x| x.placement.as_bytes()[1] == b'S'), "{r:?}");
        // A spec that places conv on the edge is refused where it says so.
        let bad = text.replace("placement: ESSS", "placement: EESS");
        let e = crate::spec::parse(&bad, Path::new("t.yaml"), &Default::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("stages[0].device") && e.contains("node `edge`, which has none"),
            "{e}"
        );
    }
}
