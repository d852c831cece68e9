//! `summary.md`: the tables a placement is chosen by, and the checks that
//! the harness measures what it claims.

use std::fmt::Write as _;

use serde::Serialize;

use super::results::Row;

/// Pipelining must reach this share of the tightest bound on a split
/// run's throughput (its slowest resource).
pub const PIPELINING_MIN: f64 = 0.85;

/// The acceptance checks over a bench's rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checks {
    /// Split runs whose throughput reached [`PIPELINING_MIN`] × their
    /// bound: the slowest stage alone, link or shared CPUs.
    pub pipelining_ok: usize,
    /// Split runs checked.
    pub pipelining_checked: usize,
    /// `label @ size: ratio` of those below.
    pub pipelining_failed: Vec<String>,
    /// Of the checked runs, those split across tiers (edge and server:
    /// the stages do not share a device), and how many of them reached it.
    pub pipelining_across_tiers: (usize, usize),
    /// Sizes where the fused single-process run on the server had a lower
    /// median latency than every split run.
    pub latency_ok: Vec<String>,
    /// Sizes where it did not (or had no such run), with the reason.
    pub latency_failed: Vec<String>,
}

/// The fused single-process run on the server at `size`: all elements on
/// `server`, fusion `kernel`, one segment.
fn monolith<'a>(rows: &'a [Row], size: &str, server: char) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.size == size
            && r.segments == 1
            && r.fusion == "kernel"
            && r.placement.chars().all(|c| c == server)
    })
}

/// Whether a run places elements on more than one node.
fn across_tiers(r: &Row) -> bool {
    r.placement.chars().any(|c| !r.placement.starts_with(c))
}

fn sizes(rows: &[Row]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        if !out.contains(&r.size) {
            out.push(r.size.clone());
        }
    }
    out
}

/// Evaluates the checks; `server` is the server node's letter.
pub fn checks(rows: &[Row], server: Option<char>) -> Checks {
    let mut c = Checks::default();
    for r in rows {
        if let Some(ratio) = r.pipelining {
            c.pipelining_checked += 1;
            let across = across_tiers(r);
            if across {
                c.pipelining_across_tiers.1 += 1;
            }
            if ratio >= PIPELINING_MIN {
                c.pipelining_ok += 1;
                if across {
                    c.pipelining_across_tiers.0 += 1;
                }
            } else {
                c.pipelining_failed
                    .push(format!("{} @ {}: {ratio:.2}", r.label, r.size));
            }
        }
    }
    for size in sizes(rows) {
        let Some(mono) = server.and_then(|s| monolith(rows, &size, s)) else {
            c.latency_failed
                .push(format!("{size}: no fused single-process run on the server"));
            continue;
        };
        let worse: Vec<String> = rows
            .iter()
            .filter(|r| r.size == size && r.segments > 1)
            .filter(|r| r.latency_p50_ms <= mono.latency_p50_ms)
            .map(|r| format!("{} ({:.3} ms)", r.label, r.latency_p50_ms))
            .collect();
        if worse.is_empty() {
            c.latency_ok.push(size);
        } else {
            c.latency_failed.push(format!(
                "{size}: monolith p50 {:.3} ms not below {}",
                mono.latency_p50_ms,
                worse.join(", ")
            ));
        }
    }
    c
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

/// The summary as markdown.
pub fn markdown(
    rows: &[Row],
    checks: &Checks,
    environment: &str,
    command: &str,
    plots: &[(std::path::PathBuf, String)],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# streamfuse bench\n");
    let _ = writeln!(s, "Command: `{command}`\n");
    let _ = writeln!(s, "Environment: {environment}.\n");
    let frames = rows.first().map_or(0, |r| r.frames);
    let _ = writeln!(
        s,
        "{frames} frames per run. Latency is end to end, capture to sink (ms); \
         CCR is link transit time over compute time, summed over the links and \
         stages. A split run's throughput is bounded by its slowest resource, \
         and \"bound by\" names the tightest of: each stage (segment) run alone \
         on its node, each link at its shaped rate, and each pool of CPUs the \
         run's processes share (a tier's CPU quota, a CPU processes are \
         pinned to, this machine's CPUs) at the CPU time per frame the \
         processes used in the run, less the share a hypervisor took (steal); \
         \"steady fps\" is the sink's rate between its 10th and 90th \
         percentile frames, without the pipeline's fill and drain, and \
         \"pipelined\" is that rate over the bound.\n"
    );
    let _ = writeln!(s, "## Placements\n");
    let _ = writeln!(
        s,
        "| size | placement | fusion | processes | fps | p50 | p95 | p99 | max | compute ms | comm ms | CCR | steady fps | bound by | bound fps | pipelined |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    );
    for r in rows.iter().filter(|r| r.in_placements) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {} |",
            r.size,
            r.placement,
            r.fusion,
            r.segments,
            r.fps,
            r.latency_p50_ms,
            r.latency_p95_ms,
            r.latency_p99_ms,
            r.latency_max_ms,
            r.compute_ms,
            r.comm_ms,
            r.ccr,
            bound_cells(r),
        );
    }
    let _ = writeln!(s, "\n## Split into processes\n");
    let _ = writeln!(
        s,
        "The whole pipeline on one node, as 1 process (fused) up to one process per element.\n"
    );
    let _ = writeln!(
        s,
        "| size | node | processes | cut before | fps | p50 | p99 | CCR | steady fps | bound by | bound fps | pipelined |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"
    );
    for r in rows.iter().filter(|r| r.stages.is_some()) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.3} | {} |",
            r.size,
            r.stages_node,
            r.segments,
            if r.split.is_empty() {
                if r.segments > 1 {
                    "every element"
                } else {
                    "–"
                }
            } else {
                &r.split
            },
            r.fps,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.ccr,
            bound_cells(r),
        );
    }
    let _ = writeln!(s, "\n## Checks\n");
    let _ = writeln!(
        s,
        "- Pipelining: {}/{} split runs reach ≥ {PIPELINING_MIN} × their bound ({}/{} of those split across edge and server; the others run every process on one node).{}",
        checks.pipelining_ok,
        checks.pipelining_checked,
        checks.pipelining_across_tiers.0,
        checks.pipelining_across_tiers.1,
        if checks.pipelining_failed.is_empty() {
            String::new()
        } else {
            format!(" Below: {}.", checks.pipelining_failed.join("; "))
        }
    );
    let _ = writeln!(
        s,
        "- Latency: the fused single-process run on the server has a lower median latency than every split run at {} of {} sizes{}.",
        checks.latency_ok.len(),
        checks.latency_ok.len() + checks.latency_failed.len(),
        if checks.latency_failed.is_empty() {
            String::new()
        } else {
            format!(" (not: {})", checks.latency_failed.join("; "))
        }
    );
    let _ = writeln!(s, "\n## Plots\n");
    for (path, what) in plots {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(s, "- [{file}]({file}): {what}");
    }
    s
}

/// The "steady fps | bound by | bound fps | pipelined" cells of a row.
fn bound_cells(r: &Row) -> String {
    format!(
        "{} | {} | {} | {}",
        opt(r.steady_fps, 1),
        if r.slowest.is_empty() {
            "–"
        } else {
            &r.slowest
        },
        opt(r.bound_fps, 1),
        opt(r.pipelining, 2)
    )
}
