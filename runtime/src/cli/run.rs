//! `streamfuse run`: the whole pipeline, in this process or split into
//! `serve` processes on loopback (`--local`); prints its [`RunReport`].

use std::io::IsTerminal;

use anyhow::{Context, Result};
use clap::Args;
use streamfuse::exec::RunReport;
use streamfuse::plan::plan;
use streamfuse::segment::{self, RunOptions};
use streamfuse::spec::DeviceChoice;

use super::{SpecArgs, load};

/// `streamfuse run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Device for every node: auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Print one JSON object as the last line of stdout, and no progress bar.
    #[arg(long)]
    pub json: bool,
    /// Run each segment as its own `serve` process on loopback ports, wired
    /// over gRPC (the split layout on one machine).
    #[arg(long)]
    pub local: bool,
    /// When the sink forces its commits to disk (see `serve --sync`):
    /// `frame`, an interval such as `1s` (the default), or `never`.
    #[arg(long, default_value = "1s", value_name = "POLICY")]
    pub sync: streamfuse::io::journal::SyncPolicy,
}

/// Runs the pipeline and prints its report (text, or one JSON line).
pub fn run(a: RunArgs) -> Result<()> {
    let p = load(&a.spec)?;
    let pl = plan(&p);
    let r = if a.local {
        let exe = std::env::current_exe().context("cannot find the streamfuse executable")?;
        let mut args = a.spec.to_args();
        if let Some(d) = a.device {
            args.push("--device".into());
            args.push(d.to_string());
        }
        tracing::info!(segments = pl.segments.len(), "running split on loopback");
        streamfuse::launch::local::run(&exe, &args, &p, &pl)?
    } else {
        let opts = RunOptions {
            device: a.device,
            progress: !a.json && std::io::stderr().is_terminal(),
            sync: a.sync,
        };
        tracing::info!(
            pipeline = %p.name,
            frames = p.total_frames(),
            streams = p.sources().count(),
            segments = pl.segments.len(),
            fusion = %p.fusion,
            placement = %p.placement_letters(),
            "running"
        );
        segment::run(&p, &pl, &opts)?
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_report(&r);
    }
    Ok(())
}

/// The report as text: the run, its latency, each fusion group and link,
/// each stream (where there are several), weight updates and the digest.
fn print_report(r: &RunReport) {
    println!(
        "{}: {} frames in {:.3} s, {:.1} fps ({} segment(s), placement {}, fusion {}, device {}, {} threads, {})",
        r.name,
        r.frames,
        r.elapsed_s,
        r.fps,
        r.segments,
        r.placement,
        r.fusion,
        r.device,
        r.threads,
        r.cpu_features
    );
    let l = &r.latency_ms;
    println!(
        "latency ms: p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}   ccr {:.4}",
        l.p50, l.p95, l.p99, l.max, l.mean, r.ccr
    );
    println!(
        "{:<8} {:<28} {:<24} {:>10}",
        "segment", "stages", "kernel", "ms/frame"
    );
    for g in &r.groups {
        println!(
            "{:<8} {:<28} {:<24} {:>10.3}",
            format!("{}@{}", g.segment, g.node),
            g.stages.join("+"),
            g.kernel,
            g.mean_ms
        );
    }
    for l in &r.links {
        println!(
            "link {}->{}: {} bytes/frame, {:.4} ms/frame transit",
            l.from_segment, l.to_segment, l.bytes_per_frame, l.mean_ms
        );
    }
    if r.streams.len() > 1 {
        println!(
            "{:<7} {:>7} {:>9} {:>9} {:>9}  digest",
            "stream", "frames", "fps", "p50 ms", "p99 ms"
        );
        for s in &r.streams {
            println!(
                "{:<7} {:>7} {:>9.1} {:>9.3} {:>9.3}  {}",
                s.stream_id,
                s.frames,
                s.fps,
                s.latency_ms.p50,
                s.latency_ms.p99,
                s.output_digest.as_deref().unwrap_or("-")
            );
        }
    }
    for u in &r.weight_updates {
        let a = &u.applied;
        println!(
            "weights: stage {} version {} from stream {} seq {} (p99 latency around the swap {})",
            a.stage,
            a.version,
            a.stream_id,
            a.first_seq,
            u.p99_around_ms
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.3} ms"))
        );
    }
    for why in &r.weight_updates_refused {
        println!("weights update refused, old weights kept: {why}");
    }
    if let Some(d) = &r.output_digest {
        println!("output digest: {d}");
    }
}
