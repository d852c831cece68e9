//! `streamfuse bench`: the pipeline experiments (or, with
//! `--advisor-links`, the check of the placement advisor) on an emulated
//! edge/server cluster or loopback.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use streamfuse::bench::cluster::{self, ClusterOptions};
use streamfuse::bench::{self, BenchOptions, Study, SweepRequest};
use streamfuse::spec::{self, DeviceChoice, FusionMode};

/// `streamfuse bench`'s arguments.
#[derive(Debug, Args)]
pub struct PipelineBenchArgs {
    /// Pipeline spec (YAML).
    pub spec: PathBuf,
    /// Image sizes: WxH or one side for a square
    /// [default: 128,256,512,1024,1280x720; --quick: 256,1280x720].
    #[arg(long, value_delimiter = ',', value_parser = spec::parse_size)]
    pub sizes: Vec<(usize, usize)>,
    /// Placements [default: SSSS,ESSS,EESS,EEES,EEEE].
    #[arg(long, value_delimiter = ',')]
    pub placements: Vec<String>,
    /// Fusion modes of the placement sweep [default: off,kernel].
    #[arg(long, value_delimiter = ',')]
    pub fusion: Vec<FusionMode>,
    /// Processes the pipeline is split into, on one node [default: 1,2,3,4].
    #[arg(long, value_delimiter = ',')]
    pub stages: Vec<usize>,
    /// Frames per run [default: 1000; --quick: 100].
    #[arg(long)]
    pub frames: Option<u64>,
    /// Output directory.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// A small matrix that finishes in a few minutes: two sizes, 100 frames.
    #[arg(long)]
    pub quick: bool,
    /// CPUs the edge's processes get together (a CFS quota).
    #[arg(long, default_value_t = 0.5)]
    pub edge_cpu: f64,
    /// CPUs the server's processes get together (default: unlimited).
    #[arg(long)]
    pub server_cpu: Option<f64>,
    /// Rate of the edge-server link (tc syntax: 1gbit, 100mbit).
    #[arg(long, default_value = "1gbit")]
    pub link: String,
    /// Instead of the study: check the placement advisor at each of these
    /// link rates (profile the emulated cluster, predict every placement,
    /// run it, compare; needs root). Sizes default to 256,512, frames to
    /// 200 (more where a run would last under 3 s), fusion to the spec's.
    #[arg(long, value_delimiter = ',')]
    pub advisor_links: Vec<String>,
    /// Run on plain loopback even as root (no emulated cluster).
    #[arg(long)]
    pub no_emulation: bool,
    /// Leave the processes of a split on the server unpinned (by default
    /// each gets one of the machine's CPUs, round robin).
    #[arg(long)]
    pub no_pin: bool,
    /// Slow stage ID down by MS per frame (checks the harness): STAGE:MS.
    #[arg(long, value_parser = parse_slow)]
    pub slow: Option<(String, f64)>,
    /// Longest time one run may take, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Device for every node: auto, cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Kernel worker threads per process (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object (rows, files, checks) as the last line of
    /// stdout, and no progress bar.
    #[arg(long)]
    pub json: bool,
    /// Run nothing: draw the plots again from --out's results.csv and latencies.csv.
    #[arg(long)]
    pub replot: bool,
}

/// `STAGE:MS`, a delay of at least 0 ms.
fn parse_slow(s: &str) -> Result<(String, f64), String> {
    let bad = || format!("bad --slow `{s}` (expected STAGE:MS, e.g. relu:20)");
    let (id, ms) = s.rsplit_once(':').ok_or_else(bad)?;
    let ms: f64 = ms.parse().map_err(|_| bad())?;
    if id.is_empty() || !ms.is_finite() || ms < 0.0 {
        return Err(bad());
    }
    Ok((id.to_owned(), ms))
}

/// Runs the study (or the advisor check, or only the plots again) and
/// prints what it found and wrote.
pub fn run(a: PipelineBenchArgs) -> Result<()> {
    if a.replot {
        for f in bench::replot(&a.out)? {
            println!("wrote {}", f.display());
        }
        return Ok(());
    }
    let study = Study {
        quick: a.quick,
        advisor: !a.advisor_links.is_empty(),
    };
    let sweep = SweepRequest {
        sizes: a.sizes,
        placements: a.placements,
        fusion: a.fusion,
        stages: a.stages,
        frames: a.frames,
    }
    .resolve(study);
    anyhow::ensure!(
        a.timeout.is_finite() && a.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let opts = BenchOptions {
        spec: a.spec,
        exe: std::env::current_exe().context("cannot find the streamfuse executable")?,
        sizes: sweep.sizes,
        placements: sweep.placements,
        fusion: sweep.fusion,
        stages: sweep.stages,
        frames: sweep.frames,
        out: a.out,
        device: a.device,
        threads: a.threads,
        emulate: !a.no_emulation,
        pin: !a.no_pin,
        cluster: ClusterOptions {
            edge_cpu: a.edge_cpu,
            server_cpu: a.server_cpu,
            link: a.link,
        },
        slow: a.slow,
        timeout: Duration::from_secs_f64(a.timeout),
        progress: !a.json && std::io::stderr().is_terminal(),
        command: super::command_line(),
    };
    let t0 = Instant::now();
    if study.advisor {
        for l in &a.advisor_links {
            cluster::parse_rate(l).with_context(|| format!("--advisor-links `{l}`"))?;
        }
        let o = bench::advisor::run(&opts, &a.advisor_links)?;
        if a.json {
            println!("{}", serde_json::to_string(&o)?);
            return Ok(());
        }
        println!(
            "{} placements x configurations in {:.1} s: {}/{} predictions within {:.0}% of measured; advisor's choice = measured best in {}/{} configurations",
            o.rows.len(),
            t0.elapsed().as_secs_f64(),
            o.accurate(),
            o.rows.len(),
            bench::advisor::ACCURACY * 100.0,
            o.picks.iter().filter(|p| p.agree).count(),
            o.picks.len()
        );
        for f in &o.files {
            println!("wrote {}", f.display());
        }
        return Ok(());
    }
    let outcome = bench::run(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&outcome)?);
        return Ok(());
    }
    let c = &outcome.checks;
    println!(
        "{} runs in {:.1} s on {}",
        outcome.rows.len(),
        t0.elapsed().as_secs_f64(),
        outcome.environment
    );
    println!(
        "pipelining: {}/{} split runs >= {} x their slowest stage alone; fused single process fastest at {}/{} sizes",
        c.pipelining_ok,
        c.pipelining_checked,
        bench::summary::PIPELINING_MIN,
        c.latency_ok.len(),
        c.latency_ok.len() + c.latency_failed.len()
    );
    for f in &outcome.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
