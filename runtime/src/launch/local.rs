//! `streamfuse run --local`: the split layout on one machine. Every segment
//! runs as its own `streamfuse serve --once` process, wired to the next one;
//! the run's report is assembled from what each process prints when its
//! streams end.
//!
//! By default the processes listen on loopback ports. A [`Launcher`] decides
//! otherwise: the host a segment listens on, how its process is started
//! (e.g. inside a network namespace and a CPU-limited cgroup, as the
//! benchmark harness does) and extra arguments per segment.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::exec::{self, RunReport, SegmentTotals};
use crate::plan::Plan;
use crate::segment::serve::SegmentOutcome;
use crate::spec::Pipeline;

/// A local split run failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A process could not be started or a port found.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A segment process failed.
    #[error("segment {segment} exited with {status}: {stderr}")]
    Segment {
        /// Segment.
        segment: usize,
        /// Exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A segment process printed no account of its run.
    #[error("segment {segment} printed no report: {why}")]
    Report {
        /// Segment.
        segment: usize,
        /// Why.
        why: String,
    },
    /// The run took longer than allowed; its processes were killed.
    #[error("the run did not finish within {0:?}; its processes were stopped")]
    Timeout(Duration),
    /// The run was cancelled (a signal); its processes were killed.
    #[error("the run was interrupted; its processes were stopped")]
    Cancelled,
}

/// How segment processes are started and addressed.
pub trait Launcher {
    /// The host (IP address) a segment placed on `node` listens on and is
    /// reached at.
    fn host(&self, node: &str) -> String;
    /// A command that runs `exe` for a segment placed on `node`; the caller
    /// adds the arguments.
    fn command(&self, node: &str, exe: &Path) -> Command;
    /// Extra arguments for segment `segment` (e.g. `--delay-ms`).
    fn segment_args(&self, segment: usize) -> Vec<String> {
        let _ = segment;
        Vec::new()
    }
}

/// Every segment on loopback, started directly.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loopback;

impl Launcher for Loopback {
    fn host(&self, _node: &str) -> String {
        "127.0.0.1".into()
    }
    fn command(&self, _node: &str, exe: &Path) -> Command {
        Command::new(exe)
    }
}

/// Limits of a local split run.
#[derive(Debug, Clone, Default)]
pub struct RunLimits {
    /// Stop the processes and fail after this long.
    pub timeout: Option<Duration>,
    /// Stop the processes and fail once this is set.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// A finished local split run.
#[derive(Debug, Clone)]
pub struct LocalRun {
    /// The report, as `run --json` prints it.
    pub report: RunReport,
    /// End-to-end latency of every frame at the sink, ns, in arrival order.
    pub latencies_ns: Vec<u64>,
    /// Each segment's account.
    pub outcomes: Vec<SegmentOutcome>,
}

/// A free loopback port for a segment (see [`crate::launch::ports`]).
fn free_port() -> Result<u16, LocalError> {
    crate::launch::ports::free_loopback_port().map_err(|source| LocalError::Io {
        what: "find a free loopback port".into(),
        source,
    })
}

/// Runs `plan` split: one `exe serve` process per segment on loopback.
/// `args` are the spec path and overrides every process gets (frames,
/// size, placement, fusion, threads, device).
///
/// # Errors
/// [`LocalError`] when a process cannot start, fails, or reports nothing.
pub fn run(
    exe: &Path,
    args: &[String],
    p: &Pipeline,
    plan: &Plan,
) -> Result<RunReport, LocalError> {
    run_with(exe, args, p, plan, &Loopback, &RunLimits::default()).map(|r| r.report)
}

/// Processes started for a run; whatever is still running when this is
/// dropped (an error, a timeout, a cancel) is killed and reaped.
struct Procs {
    children: Vec<Option<Child>>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `plan` split: one `exe serve` process per segment, each started and
/// addressed by `launcher`, within `limits`.
///
/// # Errors
/// [`LocalError`] when a process cannot start, fails or reports nothing,
/// the run times out or is cancelled. Every process started is stopped
/// before this returns.
pub fn run_with(
    exe: &Path,
    args: &[String],
    p: &Pipeline,
    plan: &Plan,
    launcher: &dyn Launcher,
    limits: &RunLimits,
) -> Result<LocalRun, LocalError> {
    let n = plan.segments.len();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let hosts: Vec<String> = plan
        .segments
        .iter()
        .map(|s| launcher.host(&p.nodes[s.node].name))
        .collect();
    let mut procs = Procs {
        children: (0..n).map(|_| None).collect(),
    };
    let mut readers = Vec::with_capacity(n);
    // Downstream first, so upstream finds it at once (it would retry anyway).
    for k in (0..n).rev() {
        let node = &p.nodes[plan.segments[k].node].name;
        let mut cmd = launcher.command(node, exe);
        cmd.arg("serve")
            .args(args)
            .arg("--segment")
            .arg(k.to_string())
            .arg("--listen")
            .arg(format!("{}:{}", hosts[k], ports[k]))
            .arg("--once")
            .args(launcher.segment_args(k))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if k + 1 < n {
            cmd.arg("--next")
                .arg(format!("{}:{}", hosts[k + 1], ports[k + 1]));
        } else {
            // A new run: the sink replaces the outputs of an earlier one.
            cmd.arg("--fresh");
        }
        let mut child = cmd.spawn().map_err(|source| LocalError::Io {
            what: format!("start segment {k} ({})", exe.display()),
            source,
        })?;
        readers.push((
            k,
            read_all(child.stdout.take()),
            read_all(child.stderr.take()),
        ));
        procs.children[k] = Some(child);
    }
    readers.sort_by_key(|r| r.0);
    let statuses = wait_all(&mut procs, limits)?;
    let mut outcomes = Vec::with_capacity(n);
    let mut failure = None;
    for ((k, out, err), status) in readers.into_iter().zip(statuses) {
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            failure.get_or_insert(LocalError::Segment {
                segment: k,
                status: status.to_string(),
                stderr: tail(&stderr),
            });
            continue;
        }
        let line = stdout.lines().last().unwrap_or_default();
        match serde_json::from_str::<SegmentOutcome>(line) {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                failure.get_or_insert(LocalError::Report {
                    segment: k,
                    why: e.to_string(),
                });
            }
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let latencies_ns = outcomes
        .iter()
        .rev()
        .find_map(|o| o.sink.as_ref())
        .map(|s| s.latencies_ns.clone())
        .unwrap_or_default();
    Ok(LocalRun {
        report: report(p, plan, &outcomes),
        latencies_ns,
        outcomes,
    })
}

/// Reads a pipe to its end on its own thread (so a full pipe never blocks
/// the process writing it).
fn read_all<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// How long the other processes may go on after one failed (they may be
/// retrying a link to it).
const AFTER_FAILURE: Duration = Duration::from_secs(2);

/// Waits until every process has exited; after a failure the others get
/// [`AFTER_FAILURE`] before they are killed. Returns the exit statuses in
/// segment order.
fn wait_all(
    procs: &mut Procs,
    limits: &RunLimits,
) -> Result<Vec<std::process::ExitStatus>, LocalError> {
    let start = Instant::now();
    let n = procs.children.len();
    let mut statuses: Vec<Option<std::process::ExitStatus>> = vec![None; n];
    let mut failed_at: Option<Instant> = None;
    loop {
        for (k, slot) in procs.children.iter_mut().enumerate() {
            if let Some(c) = slot {
                match c.try_wait() {
                    Ok(Some(st)) => {
                        if !st.success() {
                            failed_at.get_or_insert_with(Instant::now);
                        }
                        statuses[k] = Some(st);
                        *slot = None;
                    }
                    Ok(None) => {}
                    Err(source) => {
                        return Err(LocalError::Io {
                            what: format!("wait for segment {k}"),
                            source,
                        });
                    }
                }
            }
        }
        if statuses.iter().all(Option::is_some) {
            return Ok(statuses.into_iter().flatten().collect());
        }
        if limits
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
        {
            return Err(LocalError::Cancelled);
        }
        if let Some(t) = limits.timeout
            && start.elapsed() > t
        {
            return Err(LocalError::Timeout(t));
        }
        if failed_at.is_some_and(|f| f.elapsed() > AFTER_FAILURE) {
            // Kill the rest; their statuses say they were killed.
            for (k, slot) in procs.children.iter_mut().enumerate() {
                if let Some(mut c) = slot.take() {
                    let _ = c.kill();
                    let st = c.wait().map_err(|source| LocalError::Io {
                        what: format!("wait for segment {k}"),
                        source,
                    })?;
                    statuses[k] = Some(st);
                }
            }
            return Ok(statuses.into_iter().flatten().collect());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Assembles the run's report from each segment's account.
pub fn report(p: &Pipeline, plan: &Plan, outcomes: &[SegmentOutcome]) -> RunReport {
    let totals: Vec<SegmentTotals> = outcomes
        .iter()
        .map(|o| SegmentTotals {
            frames: o.frames,
            group_compute: o
                .group_compute_ns
                .iter()
                .map(|&ns| Duration::from_nanos(ns))
                .collect(),
            link_in: Duration::from_nanos(o.link_in_ns),
            weight_updates: o.weight_updates.clone(),
        })
        .collect();
    let first = outcomes.iter().find_map(|o| o.first_capture_ns);
    let sink = outcomes
        .iter()
        .rev()
        .find_map(|o| o.sink.clone())
        .unwrap_or_default();
    let elapsed = first.map_or(0.0, |f| sink.last_ns.saturating_sub(f) as f64 / 1e9);
    let devices: Vec<String> = outcomes.iter().map(|o| o.device.clone()).collect();
    let mut r = exec::assemble(p, plan, &totals, &sink, elapsed, &devices);
    r.weight_updates_refused = outcomes
        .iter()
        .flat_map(|o| o.weight_updates_refused.iter().cloned())
        .collect();
    r.device_fallback = outcomes.iter().find_map(|o| o.device_fallback.clone());
    r
}
