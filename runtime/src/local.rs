//! `streamfuse run --local`: the split layout on one machine. Every segment
//! runs as its own `streamfuse serve --once` process on a loopback port,
//! wired to the next one; the run's report is assembled from what each
//! process prints when its streams end.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use crate::exec::{self, RunReport, SegmentTotals};
use crate::plan::Plan;
use crate::serve::SegmentOutcome;
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
}

/// A free loopback port (bound and released; the segment binds it next).
fn free_port() -> Result<u16, LocalError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| LocalError::Io {
        what: "find a free loopback port".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| LocalError::Io {
            what: "find a free loopback port".into(),
            source,
        })
}

/// Runs `plan` split: one `exe serve` process per segment. `args` are the
/// spec path and overrides every process gets (frames, size, placement,
/// fusion, threads, device).
///
/// # Errors
/// [`LocalError`] when a process cannot start, fails, or reports nothing.
pub fn run(
    exe: &Path,
    args: &[String],
    p: &Pipeline,
    plan: &Plan,
) -> Result<RunReport, LocalError> {
    let n = plan.segments.len();
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let mut children: Vec<Child> = Vec::with_capacity(n);
    // Downstream first, so upstream finds it at once (it would retry anyway).
    for k in (0..n).rev() {
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(args)
            .arg("--segment")
            .arg(k.to_string())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ports[k]))
            .arg("--once")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if k + 1 < n {
            cmd.arg("--next").arg(format!("127.0.0.1:{}", ports[k + 1]));
        }
        let child = cmd.spawn().map_err(|source| LocalError::Io {
            what: format!("start segment {k} ({})", exe.display()),
            source,
        })?;
        children.push(child);
    }
    children.reverse();
    let mut outcomes = Vec::with_capacity(n);
    let mut failure = None;
    for (k, mut child) in children.into_iter().enumerate() {
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let status = child.wait().map_err(|source| LocalError::Io {
            what: format!("wait for segment {k}"),
            source,
        })?;
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
    Ok(report(p, plan, &outcomes))
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
    exec::assemble(
        p,
        plan,
        &totals,
        &sink.latencies_ns,
        sink.digest,
        elapsed,
        &devices,
    )
}
