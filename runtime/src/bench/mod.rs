//! `streamfuse bench`: the pipeline experiments of the thesis study on any
//! cluster — here on one machine, on an emulated one.
//!
//! For every image size it runs each placement with each fusion mode and
//! the pipeline split into 1…4 processes on one node ([`matrix`]); every
//! configuration runs as `streamfuse serve` processes wired over gRPC
//! ([`crate::launch::local`]), inside an emulated edge/server cluster when root is
//! available ([`cluster`]), else on plain loopback. Each run yields
//! throughput, end-to-end latency of every frame (capture to sink),
//! per-stage compute and per-link transit times and their ratio (CCR). For
//! split runs it also finds the slowest resource, the bound a pipelined
//! split should reach: each segment run alone (same node, same CPU quota,
//! no links), each shaped link, and each pool of CPUs that several of the
//! run's processes share ([`cpu_bounds`], from the CPU time every process
//! reports). Results go to `results.csv`, `latencies.csv`, `summary.md`
//! ([`summary`]) and SVG plots ([`plots`]). [`advisor`] checks the
//! placement advisor's predictions against such runs.

pub mod advisor;
mod bounds;
pub mod cluster;
pub mod config;
pub mod matrix;
pub mod plots;
pub mod results;
pub mod summary;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::launch::local::{self, Launcher, LocalError, RunLimits};
use crate::plan::{self, Plan, UnknownStage};
use crate::spec::{self, DeviceChoice, FusionMode, Overrides, Pipeline, SpecError};
use crate::sys::cputime::MachineTimes;
use cluster::{Cluster, ClusterError, ClusterLauncher, ClusterOptions, LoopbackLauncher, Tier};
use matrix::Config;
use results::Row;

pub use bounds::cpu_bounds;
use bounds::machine_cpus;
pub use config::{Study, Sweep, SweepRequest};

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Pipeline spec.
    pub spec: PathBuf,
    /// The `streamfuse` executable the segment processes run.
    pub exe: PathBuf,
    /// Image sizes.
    pub sizes: Vec<(usize, usize)>,
    /// Placements of the placement sweep.
    pub placements: Vec<String>,
    /// Fusion modes of the placement sweep.
    pub fusion: Vec<FusionMode>,
    /// Process counts of the stages sweep.
    pub stages: Vec<usize>,
    /// Frames per run.
    pub frames: u64,
    /// Output directory.
    pub out: PathBuf,
    /// Device for every node.
    pub device: Option<DeviceChoice>,
    /// Kernel threads per process.
    pub threads: Option<usize>,
    /// Run in an emulated cluster when root (else loopback).
    pub emulate: bool,
    /// Pin the processes of a split on the server to CPUs of their own
    /// (one each, round robin, where every process of a run is on the server).
    pub pin: bool,
    /// The emulated cluster's parameters.
    pub cluster: ClusterOptions,
    /// A stage to slow down by this many ms per frame (a dry-run check of
    /// the harness).
    pub slow: Option<(String, f64)>,
    /// Longest time one run may take.
    pub timeout: Duration,
    /// Show a progress bar.
    pub progress: bool,
    /// The command line, for the summary.
    pub command: String,
}

/// A bench failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The spec (or an override) is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A cut names no stage.
    #[error(transparent)]
    Cut(#[from] UnknownStage),
    /// The emulated cluster could not be set up or removed.
    #[error("emulated cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// A configuration's run failed.
    #[error("run `{label}` at {size}: {source}")]
    Run {
        /// The configuration.
        label: String,
        /// Its image size.
        size: String,
        /// Cause.
        source: LocalError,
    },
    /// Interrupted by a signal (everything created was removed).
    #[error("interrupted")]
    Interrupted,
    /// A file or directory could not be written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A CSV file could not be written.
    #[error("write {path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: csv::Error,
    },
    /// A plot could not be drawn.
    #[error("plot {path}: {detail}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Bad options.
    #[error("{0}")]
    Invalid(String),
}

/// What a bench produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchOutcome {
    /// One row per configuration.
    pub rows: Vec<Row>,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Where it ran: the emulated cluster's parameters, or loopback.
    pub environment: String,
    /// The acceptance checks over the rows.
    pub checks: summary::Checks,
}

/// Runs every configuration and writes the results, summary and plots to
/// `opts.out`.
///
/// # Errors
/// [`BenchError`] when the spec or options are invalid, the cluster cannot
/// be set up, a run fails or an output cannot be written. The emulated
/// cluster is removed on every path, also on `SIGINT`/`SIGTERM`.
pub fn run(opts: &BenchOptions) -> Result<BenchOutcome, BenchError> {
    let base = spec::load(&opts.spec, &Overrides::default())?;
    validate(opts, &base)?;
    let tiers: Vec<(String, Tier)> = base
        .nodes
        .iter()
        .map(|n| (n.name.clone(), cluster::tier(n)))
        .collect();
    // The stages sweep runs on the first server node, then the first edge node.
    let mut stage_nodes = Vec::new();
    for want in [Tier::Server, Tier::Edge] {
        if let Some(n) = base.nodes.iter().find(|n| cluster::tier(n) == want) {
            stage_nodes.push(n.letter);
        }
    }
    let configs = matrix::configs(
        &base,
        &matrix::Sweeps {
            sizes: &opts.sizes,
            placements: &opts.placements,
            fusion: &opts.fusion,
            stages: &opts.stages,
            stage_nodes: &stage_nodes,
        },
    );
    let cancel = prepare(opts)?;
    let mut emulated = if opts.emulate && cluster::is_root() {
        Some(Cluster::create(&opts.cluster)?)
    } else {
        if opts.emulate {
            tracing::warn!("not root: running on plain loopback (no link shaping, no CPU quota)");
        }
        None
    };
    let environment = match &emulated {
        Some(c) => format!(
            "emulated cluster: edge and server network namespaces, veth link at {} (tc htb; no netem, so no link delay), edge CPU quota {} CPU{}{}",
            c.options.link,
            c.options.edge_cpu,
            c.edge_affinity
                .as_ref()
                .map_or_else(String::new, |l| format!(" on CPU {l}")),
            c.options
                .server_cpu
                .map_or_else(String::new, |s| format!(", server CPU quota {s} CPU"))
        ),
        None => "plain loopback (no link shaping, no CPU quota)".to_owned(),
    };
    tracing::info!(configurations = configs.len(), %environment, "bench");
    let bar = progress(opts.progress, configs.len() as u64);
    let mut ctx = Ctx {
        opts,
        cluster: emulated.as_ref(),
        tiers,
        cancel: cancel.clone(),
        solo: HashMap::new(),
    };
    let mut rows = Vec::with_capacity(configs.len());
    let mut latencies = Vec::with_capacity(configs.len());
    for (id, c) in configs.iter().enumerate() {
        bar.set_message(format!("{} {}", c.size_label(), c.label()));
        let (row, lat) = ctx.run_config(id, c)?;
        tracing::info!(
            run = %format!("{}/{}", id + 1, configs.len()),
            size = %row.size,
            config = %row.label,
            fps = format!("{:.1}", row.fps),
            p50_ms = format!("{:.2}", row.latency_p50_ms),
            "done"
        );
        rows.push(row);
        latencies.push(lat);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(c) = emulated.as_mut() {
        c.teardown()?;
    }
    drop(emulated);
    let mut files = Vec::new();
    let csv_path = opts.out.join("results.csv");
    results::write_csv(&csv_path, &rows)?;
    files.push(csv_path);
    let lat_path = opts.out.join("latencies.csv");
    results::write_latencies(&lat_path, &rows, &latencies)?;
    files.push(lat_path);
    let server_letter = stage_nodes.first().copied();
    let checks = summary::checks(&rows, server_letter);
    let plotted = plots::all(&opts.out, &rows, &latencies)?;
    let md = summary::markdown(&rows, &checks, &environment, &opts.command, &plotted);
    files.extend(plotted.into_iter().map(|(f, _)| f));
    let md_path = opts.out.join("summary.md");
    std::fs::write(&md_path, md).map_err(|source| BenchError::Io {
        what: "write",
        path: md_path.clone(),
        source,
    })?;
    files.push(md_path);
    Ok(BenchOutcome {
        rows,
        files,
        environment,
        checks,
    })
}

/// Draws the plots again from the `results.csv` and `latencies.csv` in
/// `dir` (after a change to the plots, without running anything).
///
/// # Errors
/// [`BenchError`] when the files cannot be read or a plot written.
pub fn replot(dir: &std::path::Path) -> Result<Vec<PathBuf>, BenchError> {
    let (rows, latencies) = results::read(dir)?;
    Ok(plots::all(dir, &rows, &latencies)?
        .into_iter()
        .map(|(f, _)| f)
        .collect())
}

/// Creates the output directory and turns `SIGINT`/`SIGTERM` into the
/// flag the runs poll ([`cluster::interrupt_flag`]).
fn prepare(opts: &BenchOptions) -> Result<Arc<AtomicBool>, BenchError> {
    std::fs::create_dir_all(&opts.out).map_err(|source| BenchError::Io {
        what: "create",
        path: opts.out.clone(),
        source,
    })?;
    cluster::interrupt_flag().map_err(|source| BenchError::Io {
        what: "install signal handlers for",
        path: PathBuf::from("SIGINT/SIGTERM"),
        source,
    })
}

fn validate(opts: &BenchOptions, base: &Pipeline) -> Result<(), BenchError> {
    let bad = |m: String| Err(BenchError::Invalid(m));
    if opts.sizes.is_empty() {
        return bad("--sizes: no size given".into());
    }
    if opts.frames == 0 {
        return bad("--frames must be at least 1".into());
    }
    for pl in &opts.placements {
        // The spec resolves (and checks) the letters.
        spec::load(
            &opts.spec,
            &Overrides {
                placement: Some(pl.clone()),
                ..Overrides::default()
            },
        )?;
    }
    if let Some((id, ms)) = &opts.slow {
        if !base.stages.iter().any(|s| s.id == *id) {
            return bad(format!("--slow: no stage `{id}`"));
        }
        if !(ms.is_finite() && *ms >= 0.0) {
            return bad(format!("--slow: bad delay {ms} ms"));
        }
    }
    Ok(())
}

fn progress(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs  eta {eta}  {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// What every run needs.
struct Ctx<'a> {
    opts: &'a BenchOptions,
    cluster: Option<&'a Cluster>,
    tiers: Vec<(String, Tier)>,
    cancel: Arc<AtomicBool>,
    /// Throughput of a segment run alone, by what it runs.
    solo: HashMap<String, f64>,
}

/// A segment's stage ids joined by `+` (`source` for the source alone).
fn segment_name(p: &Pipeline, plan: &Plan, k: usize) -> String {
    let seg = &plan.segments[k];
    let mut names: Vec<&str> = Vec::new();
    if seg.has_source {
        names.push("source");
    }
    names.extend(p.stages[seg.stages.clone()].iter().map(|s| s.id.as_str()));
    names.join("+")
}

impl Ctx<'_> {
    fn args(&self, c: &Config) -> Vec<String> {
        let o = self.opts;
        let mut v = vec![
            o.spec.display().to_string(),
            "--frames".into(),
            o.frames.to_string(),
            "--size".into(),
            c.size_label(),
            "--placement".into(),
            c.placement.clone(),
            "--fusion".into(),
            c.fusion.name().into(),
        ];
        if !c.split.is_empty() {
            v.push("--split".into());
            v.push(c.split.join(","));
        }
        if let Some(t) = o.threads {
            v.push("--threads".into());
            v.push(t.to_string());
        }
        if let Some(d) = o.device {
            v.push("--device".into());
            v.push(d.to_string());
        }
        v
    }

    /// The CPU each segment process of `plan` is pinned to (`serve
    /// --cpus`): where every process of the run is on the server and
    /// there are several (a split on one node, no `--threads` given),
    /// segment `k` gets the `k`-th of this machine's CPUs, round robin, as
    /// Kubernetes' static CPU manager gives pods with whole-CPU requests
    /// cores of their own. Unpinned, the scheduler moves the processes'
    /// threads between the CPUs frame by frame; on the 2-vCPU machine of
    /// BENCHMARKS.md that left the CPUs 12–17% idle while the threads on
    /// every frame's path waited for a CPU a third of the time, and the
    /// latency was three times as high at the same throughput. Runs with
    /// processes on the edge leave the server's unpinned: the emulated
    /// edge is a slice of the same CPUs.
    fn server_pins(&self, p: &Pipeline, plan: &Plan) -> Vec<Option<usize>> {
        let n = plan.segments.len();
        let all_server = plan
            .segments
            .iter()
            .all(|seg| self.tier_name(p, seg.node) == "server");
        if n < 2 || !all_server || self.opts.threads.is_some() || !self.opts.pin {
            return vec![None; n];
        }
        let cpus = crate::sys::affinity::allowed();
        (0..n).map(|k| Some(cpus[k % cpus.len()])).collect()
    }

    /// Extra arguments for each segment of `plan`: `--delay-ms` for the
    /// segment that holds the slowed stage, `--cpus` where
    /// [`Self::server_pins`] pins it, and, where several segment
    /// processes share a tier's CPUs (and no `--threads` was given),
    /// `--threads` with an even share of those CPUs each (at least one), as
    /// pods with CPU limits get: each process's kernels then run on the
    /// threads its share can keep busy, instead of every process splitting
    /// each frame over all CPUs and waiting for the thread that another
    /// process preempted.
    fn segment_args(&self, p: &Pipeline, plan: &Plan) -> Vec<Vec<String>> {
        let tiers: Vec<String> = plan
            .segments
            .iter()
            .map(|seg| self.tier_name(p, seg.node))
            .collect();
        let pins = self.server_pins(p, plan);
        plan.segments
            .iter()
            .zip(&tiers)
            .map(|(seg, tier)| {
                let mut a = Vec::new();
                if let Some((id, ms)) = &self.opts.slow
                    && p.stages[seg.stages.clone()].iter().any(|s| s.id == *id)
                {
                    a.extend(["--delay-ms".to_owned(), ms.to_string()]);
                }
                if let Some(cpu) = pins[seg.index] {
                    a.extend(["--cpus".to_owned(), cpu.to_string()]);
                }
                let sharing = tiers.iter().filter(|t| *t == tier).count();
                if self.opts.threads.is_none() && sharing > 1 {
                    let cpus = match (tier.as_str(), self.cluster) {
                        ("edge", Some(c)) => c.options.edge_cpu.ceil().clamp(1.0, machine_cpus()),
                        _ => machine_cpus(),
                    };
                    let threads = ((cpus as usize) / sharing).max(1);
                    a.extend(["--threads".to_owned(), threads.to_string()]);
                }
                a
            })
            .collect()
    }

    fn launch(
        &self,
        args: &[String],
        p: &Pipeline,
        plan: &Plan,
        label: &str,
        size: &str,
    ) -> Result<local::LocalRun, BenchError> {
        let extra = self.segment_args(p, plan);
        let limits = RunLimits {
            timeout: Some(self.opts.timeout),
            cancel: Some(self.cancel.clone()),
        };
        let launcher: Box<dyn Launcher + '_> = match self.cluster {
            Some(cluster) => Box::new(ClusterLauncher {
                cluster,
                tiers: self.tiers.clone(),
                extra,
            }),
            None => Box::new(LoopbackLauncher { extra }),
        };
        local::run_with(&self.opts.exe, args, p, plan, launcher.as_ref(), &limits).map_err(
            |source| {
                if self.cancel.load(Ordering::SeqCst) {
                    BenchError::Interrupted
                } else {
                    BenchError::Run {
                        label: label.to_owned(),
                        size: size.to_owned(),
                        source,
                    }
                }
            },
        )
    }

    fn tier_name(&self, p: &Pipeline, node: usize) -> String {
        let name = &p.nodes[node].name;
        match self.tiers.iter().find(|(n, _)| n == name) {
            Some((_, Tier::Edge)) => "edge".into(),
            _ => "server".into(),
        }
    }

    fn run_config(&mut self, id: usize, c: &Config) -> Result<(Row, Vec<u64>), BenchError> {
        let ov = Overrides {
            frames: Some(self.opts.frames),
            size: Some(c.size),
            placement: Some(c.placement.clone()),
            fusion: Some(c.fusion),
        };
        let mut p = spec::load(&self.opts.spec, &ov)?;
        plan::cut_before(&mut p, &c.split)?;
        let pl = plan::plan(&p);
        let args = self.args(c);
        let label = c.label();
        let size = c.size_label();
        let before = MachineTimes::now();
        let run = self.launch(&args, &p, &pl, &label, &size)?;
        let after = MachineTimes::now();
        let steal = match (before, after) {
            (Some(a), Some(b)) => b.steal_since(&a),
            _ => 0.0,
        };
        let machine_idle = before.zip(after).map(|(a, b)| b.idle_since(&a));
        let r = &run.report;
        let compute_ms = r.groups.iter().fold(0.0, |a, g| a + g.mean_ms);
        let comm_ms = r.links.iter().fold(0.0, |a, l| a + l.mean_ms);
        let group_ms = r
            .groups
            .iter()
            .map(|g| format!("{}@{}={:.4}", g.stages.join("+"), g.node, g.mean_ms))
            .collect::<Vec<_>>()
            .join(";");
        let link_ms = r
            .links
            .iter()
            .map(|l| {
                format!(
                    "{}->{}={:.4} ({} B)",
                    l.from_segment, l.to_segment, l.mean_ms, l.bytes_per_frame
                )
            })
            .collect::<Vec<_>>()
            .join(";");
        let (slowest, bound_fps) = if pl.segments.len() > 1 {
            let (s, b) = self.bound(&args, &p, &pl, &size, &run.outcomes, steal)?;
            (s, Some(b))
        } else {
            (String::new(), None)
        };
        let stages_node = match c.stages {
            Some(_) => self.tier_name(&p, p.placement[0]),
            None => String::new(),
        };
        let row = Row {
            id,
            size,
            width: c.size.0,
            height: c.size.1,
            placement: c.placement.clone(),
            fusion: c.fusion.name().into(),
            split: c.split.join("|"),
            label,
            in_placements: c.in_placements,
            stages: c.stages,
            stages_node,
            segments: r.segments,
            frames: r.frames,
            fps: r.fps,
            steady_fps: r.steady_fps,
            latency_p50_ms: r.latency_ms.p50,
            latency_p95_ms: r.latency_ms.p95,
            latency_p99_ms: r.latency_ms.p99,
            latency_max_ms: r.latency_ms.max,
            latency_mean_ms: r.latency_ms.mean,
            compute_ms,
            comm_ms,
            ccr: r.ccr,
            group_ms,
            link_ms,
            slowest,
            bound_fps,
            pipelining: bound_fps.map(|b| {
                if b > 0.0 {
                    r.steady_fps.unwrap_or(r.fps) / b
                } else {
                    0.0
                }
            }),
            machine_idle,
            output_digest: r.output_digest.clone().unwrap_or_default(),
            elapsed_s: r.elapsed_s,
        };
        Ok((row, run.latencies_ns))
    }

    /// What bounds a split run's throughput, and that bound in frames/s:
    /// the tightest of each segment run alone on its node (cached), each
    /// link between the tiers at its shaped rate, each pool of CPUs the
    /// run's processes share ([`cpu_bounds`]), and each segment's worker
    /// (the thread that runs its kernels frame after frame) at the time it
    /// was busy per frame in the run's steady state (as the rate it bounds,
    /// without fill and drain): it cannot go faster than that, and
    /// the run's throughput over it is that worker's utilisation. `steal`
    /// is the share of the machine's CPU time a hypervisor took during the
    /// run.
    fn bound(
        &mut self,
        args: &[String],
        p: &Pipeline,
        pl: &Plan,
        size: &str,
        outcomes: &[crate::segment::serve::SegmentOutcome],
        steal: f64,
    ) -> Result<(String, f64), BenchError> {
        let mut best: Option<(String, f64)> = None;
        let mut consider = |name: String, fps: f64| {
            if best.as_ref().is_none_or(|(_, b)| fps < *b) {
                best = Some((name, fps));
            }
        };
        for k in 0..pl.segments.len() {
            let Some(sp) = plan::solo(p, pl, k) else {
                continue;
            };
            let splan = plan::plan(&sp);
            let name = segment_name(p, pl, k);
            let tier = self.tier_name(p, pl.segments[k].node);
            let delay = self.segment_args(&sp, &splan).concat().join(" ");
            let key = format!("{size}|{tier}|{}|{name}|{delay}", pl.fusion);
            let fps = match self.solo.get(&key) {
                Some(&f) => f,
                None => {
                    let mut a = args.to_vec();
                    a.push("--solo".into());
                    a.push(k.to_string());
                    let label = format!("{name} alone on {tier}");
                    let r = self.launch(&a, &sp, &splan, &label, size)?.report;
                    let f = r.steady_fps.unwrap_or(r.fps);
                    self.solo.insert(key, f);
                    f
                }
            };
            consider(format!("{name} alone on {tier}"), fps);
        }
        let tiers: Vec<String> = pl
            .segments
            .iter()
            .map(|seg| self.tier_name(p, seg.node))
            .collect();
        let pins = self.server_pins(p, pl);
        for (name, fps) in cpu_bounds(
            &tiers,
            &pins,
            outcomes,
            self.cluster.map(|c| &c.options),
            steal,
        ) {
            consider(name, fps);
        }
        for o in outcomes {
            if let Some(s) = o.busy_per_frame()
                && s > 0.0
                && o.segment < pl.segments.len()
            {
                consider(
                    format!("{}'s worker in the run", segment_name(p, pl, o.segment)),
                    1.0 / s,
                );
            }
        }
        if let Some(c) = self.cluster {
            for w in pl.segments.windows(2) {
                let (a, b) = (&w[0], &w[1]);
                if self.tier_name(p, a.node) != self.tier_name(p, b.node) {
                    let bytes = a.output.bytes() as f64;
                    if bytes > 0.0 {
                        consider(
                            format!("link {}->{} at {}", a.index, b.index, c.options.link),
                            c.link_bps / (8.0 * bytes),
                        );
                    }
                }
            }
        }
        Ok(best.unwrap_or_default())
    }
}
