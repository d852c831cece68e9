//! `streamfuse kernels`: time a spec's stages (`bench`), measure this
//! machine's limits (`roofline`), compile every CUDA kernel (`check`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use streamfuse::stagebench::{self, CheckReport};
use streamfuse_kernels::cuda::ARCHS;

use super::{SpecArgs, load, set_threads};

/// The kernel tools.
#[derive(Debug, Subcommand)]
pub enum KernelsCommand {
    /// Time a spec's stages on one synthetic frame in this process.
    Bench(BenchArgs),
    /// Measure this machine's memory bandwidth and peak FLOP/s on the kernel threads.
    Roofline(RooflineArgs),
    /// Compile every CUDA kernel with NVRTC for each target architecture:
    /// the hand-written sources and the generated kernels of a
    /// representative set of fused chains.
    Check(CheckArgs),
}

impl KernelsCommand {
    /// Whether it prints JSON (and so logs only warnings).
    pub fn json(&self) -> bool {
        match self {
            Self::Bench(a) => a.json,
            Self::Roofline(a) => a.json,
            Self::Check(a) => a.json,
        }
    }
}

/// `streamfuse kernels check`'s arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Virtual architectures (default: compute_70,compute_72,compute_87,compute_90).
    #[arg(long, value_delimiter = ',')]
    pub arch: Vec<String>,
    /// Also write each PTX to DIR/<source>-<arch>.ptx.
    #[arg(long, value_name = "DIR")]
    pub emit_ptx: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `streamfuse kernels roofline`'s arguments.
#[derive(Debug, Args)]
pub struct RooflineArgs {
    /// Kernel worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `streamfuse kernels bench`'s arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// And untimed iterations until this many milliseconds have passed
    /// (a virtual machine's idle cores take some tens of milliseconds of
    /// work to reach their steady speed).
    #[arg(long, default_value_t = 0)]
    pub warmup_ms: u64,
    /// Timed iterations.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the kernel tool.
pub fn run(c: KernelsCommand) -> Result<()> {
    match c {
        KernelsCommand::Bench(a) => bench(a),
        KernelsCommand::Roofline(a) => roofline(a),
        KernelsCommand::Check(a) => check(a),
    }
}

fn bench(a: BenchArgs) -> Result<()> {
    let p = load(&a.spec)?;
    let warmup = stagebench::Warmup {
        calls: a.warmup,
        time: std::time::Duration::from_millis(a.warmup_ms),
    };
    let r = stagebench::bench(&p, a.spec.fusion.unwrap_or(p.fusion), warmup, a.iters)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {} x{} fusion {} [{}]: median {:.3} ms/frame (min {:.3}, mean {:.3}) over {} iters, {} threads, {}",
            r.name,
            r.size,
            r.channels,
            r.fusion,
            r.kernels.join(", "),
            r.median_ms,
            r.min_ms,
            r.mean_ms,
            r.iters,
            r.threads,
            r.cpu_features
        );
    }
    Ok(())
}

fn roofline(a: RooflineArgs) -> Result<()> {
    set_threads(a.threads)?;
    let r = stagebench::roofline();
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "triad bandwidth {:.1} GB/s, peak {:.1} GFLOP/s ({} threads, {})",
            r.bandwidth_gbs, r.peak_gflops, r.threads, r.cpu_features
        );
    }
    Ok(())
}

/// Compiles every kernel ([`stagebench::check`]), prints the report (JSON
/// or a table) and fails when a compilation did.
fn check(a: CheckArgs) -> Result<()> {
    let archs: Vec<&'static str> =
        if a.arch.is_empty() {
            ARCHS.to_vec()
        } else {
            a.arch
                .iter()
                .map(|x| {
                    ARCHS.iter().copied().find(|k| k == x).with_context(|| {
                        format!("--arch: `{x}` is not one of {}", ARCHS.join(", "))
                    })
                })
                .collect::<Result<_>>()?
        };
    let r = stagebench::check(&archs, a.emit_ptx.as_deref(), !a.arch.is_empty())?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_check(&r);
    }
    anyhow::ensure!(r.failed == 0, "{} kernel compilation(s) failed", r.failed);
    Ok(())
}

/// The check as a table, one compilation a row.
fn print_check(r: &CheckReport) {
    println!("NVRTC {} ({})", r.nvrtc, r.library);
    for s in &r.skipped {
        println!("skipped {s}");
    }
    println!(
        "{:<40} {:<12} {:<6} {:>9}  kernels / detail",
        "source", "arch", "status", "ms"
    );
    for row in &r.results {
        println!(
            "{:<40} {:<12} {:<6} {:>9.1}  {} ({})",
            row.source,
            row.arch,
            if row.ok { "ok" } else { "FAIL" },
            row.ms,
            row.kernels.join(", "),
            row.detail,
        );
    }
}
