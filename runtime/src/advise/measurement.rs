//! Making a [`Profile`] on this machine: every stage range run in the
//! executor, the sources' cost, and the links to other nodes' servers.

use std::collections::BTreeMap;

use super::profile::{
    HopProfile, LinkProfile, NodeProfile, PROFILE_VERSION, Profile, RangeCost, range_key,
};
use crate::plan;
use crate::spec::Pipeline;

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
    /// CPUs ([`crate::sys::cputime::usable_cpus`]).
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
/// ([`crate::sys::cputime::usable_cpus`]: its CPU quota where it has one). With `o.node`, only that node is described
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
            let k = crate::stagebench::bench(
                &q,
                fusion,
                crate::stagebench::Warmup {
                    calls: o.warmup,
                    time: std::time::Duration::ZERO,
                },
                o.iters,
            )?;
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
                let cpu0 = crate::sys::cputime::process_cpu();
                let r = crate::segment::run(&q, &q_plan, &crate::segment::RunOptions::default())
                    .map_err(|e| MeasureError::Run(e.to_string()))?;
                let cpu_ms = match (cpu0, crate::sys::cputime::process_cpu()) {
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
    let cpus = o.cpus.unwrap_or_else(crate::sys::cputime::usable_cpus);
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
    let cpu0 = crate::sys::cputime::process_cpu();
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
        cpu_ms: match (cpu0, crate::sys::cputime::process_cpu()) {
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
    /// The async runtime the link probes run on could not start.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
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
    tls: Option<&crate::transport::tls::ClientTls>,
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
            let s = crate::transport::probe::probe(addr, bytes, per_size, 10_000, tls).await?;
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
            samples.push(super::LinkSample::from(s));
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

/// [`measure`], then, where `o.node` names this machine's node and
/// `peers` is not empty, [`measure_links`] to each peer (`(node,
/// address)`, `per_size` per frame size, on an async runtime of its own):
/// the measured links replace the given ones ([`Profile::with_links`]) and
/// the fitted hand-off cost the given one.
///
/// # Errors
/// [`MeasureError`] as [`measure`] and [`measure_links`] fail, or
/// [`MeasureError::Runtime`] when the async runtime cannot start.
pub fn measure_with_links(
    p: &Pipeline,
    o: &MeasureOptions,
    peers: &[(String, String)],
    per_size: std::time::Duration,
    tls: Option<&crate::transport::tls::ClientTls>,
) -> Result<Profile, MeasureError> {
    let prof = measure(p, o)?;
    let (Some(from), false) = (&o.node, peers.is_empty()) else {
        return Ok(prof);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(MeasureError::Runtime)?;
    let (links, hop) = rt.block_on(measure_links(p, from, peers, per_size, tls))?;
    Ok(prof.with_links(links, hop))
}

/// Least-squares `y = fixed + per_mb * x` over `(MB, ms)` points, both
/// coefficients at least 0; `None` without points.
pub(super) fn fit_hop(points: &[(f64, f64)]) -> Option<HopProfile> {
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
