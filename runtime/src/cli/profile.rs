//! `streamfuse profile`: what each stage range costs on this machine (a
//! profile for `plan --advise --profile`), and the measuring arguments
//! `plan --advise` and `manifests --placement auto` share.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use streamfuse::advise::{self, HopProfile, MeasureOptions, Profile};
use streamfuse::spec::Pipeline;

use super::{SpecArgs, load};

/// What `profile` (and `plan --advise` without --profile) takes as given.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// Timed frames per stage range.
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Bandwidth of the links between nodes (tc syntax: 1gbit, 100mbit).
    #[arg(long, default_value = "1gbit")]
    pub link: String,
    /// Round-trip time of the links, ms.
    #[arg(long, default_value_t = 0.0)]
    pub rtt_ms: f64,
    /// CPU cost of handing a frame from one process to another, ms per
    /// frame (split between sender and receiver).
    #[arg(long, default_value_t = 0.0)]
    pub hop_ms: f64,
    /// ... and ms per MB of frame.
    #[arg(long, default_value_t = 0.0)]
    pub hop_ms_per_mb: f64,
    /// This machine is this node of the spec: describe only it (merge the
    /// nodes' profiles by giving `plan --advise` several --profile files).
    #[arg(long)]
    pub node: Option<String>,
    /// Measure the link to another node through its `streamfuse serve`
    /// (NODE=HOST:PORT, repeatable; needs --node): bandwidth, round trip
    /// and hand-off CPU with frames of every size the pipeline can send.
    /// Replaces --link, --rtt-ms and the hop figures for that link.
    #[arg(long, value_name = "NODE=ADDR", requires = "node")]
    pub peer: Vec<String>,
    /// Probe the peers through mutual TLS with these files (default: the
    /// spec's `tls` files of --node, if any).
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// Seconds each link probe streams frames of one size.
    #[arg(long, default_value_t = 1.0)]
    pub probe_secs: f64,
    /// Seconds each stage range runs in the executor.
    #[arg(long, default_value_t = 0.5)]
    pub run_secs: f64,
    /// Runs per stage range; the fastest is kept (shared machines are
    /// noisy).
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// CPUs the node's processes share [default: what this process may
    /// use: its CPU affinity, capped by its cgroup's CPU quota].
    #[arg(long)]
    pub cpus: Option<f64>,
}

/// `streamfuse profile`'s arguments.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// Write the profile here (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Measures the profile and writes it as pretty JSON.
pub fn run(a: ProfileArgs) -> Result<()> {
    let p = load(&a.spec)?;
    let prof = measure(&p, &a.measure)?;
    let text = serde_json::to_string_pretty(&prof)?;
    match &a.out {
        Some(path) => std::fs::write(path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

/// The profile `files` make together ([`Profile::load_all`]), or, without
/// files, one measured here as `m` says.
pub fn from_files_or_measured(p: &Pipeline, files: &[PathBuf], m: &MeasureArgs) -> Result<Profile> {
    if files.is_empty() {
        measure(p, m)
    } else {
        Ok(Profile::load_all(files, p)?)
    }
}

/// Checks the measuring arguments and measures `p` on this machine, and
/// the links to the `--peer`s ([`advise::measure_with_links`]).
pub fn measure(p: &Pipeline, m: &MeasureArgs) -> Result<Profile> {
    anyhow::ensure!(
        m.rtt_ms.is_finite() && m.rtt_ms >= 0.0,
        "--rtt-ms must be a non-negative number"
    );
    anyhow::ensure!(
        m.hop_ms.is_finite()
            && m.hop_ms >= 0.0
            && m.hop_ms_per_mb.is_finite()
            && m.hop_ms_per_mb >= 0.0,
        "--hop-ms and --hop-ms-per-mb must be non-negative numbers"
    );
    if let Some(c) = m.cpus {
        anyhow::ensure!(c.is_finite() && c > 0.0, "--cpus must be a positive number");
    }
    for (flag, v) in [("--probe-secs", m.probe_secs), ("--run-secs", m.run_secs)] {
        anyhow::ensure!(
            v.is_finite() && v > 0.0 && v <= 60.0,
            "{flag} must be above 0 and at most 60"
        );
    }
    let peers = m
        .peer
        .iter()
        .map(|x| {
            x.split_once('=')
                .map(|(n, a)| (n.to_owned(), a.to_owned()))
                .with_context(|| format!("--peer `{x}`: expected NODE=HOST:PORT"))
        })
        .collect::<Result<Vec<_>>>()?;
    let bits = streamfuse::bench::cluster::parse_rate(&m.link)?;
    let o = MeasureOptions {
        warmup: 5,
        iters: m.iters,
        link_bytes_per_s: bits / 8.0,
        rtt_ms: m.rtt_ms,
        hop: HopProfile {
            fixed_ms: m.hop_ms,
            per_mb_ms: m.hop_ms_per_mb,
        },
        node: m.node.clone(),
        run_secs: m.run_secs,
        repeats: m.repeats,
        cpus: m.cpus,
    };
    let per_size = Duration::from_secs_f64(m.probe_secs);
    let files = m.tls.files().or_else(|| {
        let node = m.node.as_deref()?;
        p.nodes.iter().find(|n| n.name == node)?.tls.clone()
    });
    let tls = files
        .map(|f| streamfuse::transport::tls::ClientTls::load(&f))
        .transpose()?;
    Ok(advise::measure_with_links(
        p,
        &o,
        &peers,
        per_size,
        tls.as_ref(),
    )?)
}
