//! The commands of the `streamfuse` binary, one module each: its arguments
//! and its handler (`run`), which turns the arguments into the library's
//! options, calls the library and prints the result (text, or JSON from
//! typed reports). What several commands take (the spec and its
//! overrides) is here.

pub mod bench;
pub mod import;
pub mod kernels;
pub mod manifests;
pub mod plan;
pub mod profile;
pub mod run;
pub mod serve;
pub mod update_weights;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use streamfuse::plan::plan;
use streamfuse::spec::{self, FusionMode, Overrides, Pipeline};

/// The spec and the overrides every command that loads one takes.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Pipeline spec (YAML).
    pub spec: PathBuf,
    /// Frames to process (overrides the source's `frames`).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Frame size WxH (or one side for a square), overriding the source's.
    #[arg(long, value_parser = spec::parse_size)]
    pub size: Option<(usize, usize)>,
    /// Placement letters, one per element: the source, then each stage
    /// (`manifests` also takes `auto`: the advisor's choice).
    #[arg(long)]
    pub placement: Option<String>,
    /// Fusion mode: off, chain or kernel.
    #[arg(long)]
    pub fusion: Option<FusionMode>,
    /// Kernel worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Stage ids that start a new segment, as `fuse: false` in the spec.
    #[arg(long, value_delimiter = ',')]
    pub split: Vec<String>,
    /// Only segment K, alone: its stages fed by a synthetic source of its
    /// input shape, output dropped (what the segment does without links).
    #[arg(long, value_name = "K")]
    pub solo: Option<usize>,
}

impl SpecArgs {
    /// The spec path and overrides as `serve` arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![self.spec.display().to_string()];
        let mut push = |k: &str, val: Option<String>| {
            if let Some(x) = val {
                v.push(k.to_owned());
                v.push(x);
            }
        };
        push("--frames", self.frames.map(|f| f.to_string()));
        push("--size", self.size.map(|(w, h)| format!("{w}x{h}")));
        push("--placement", self.placement.clone());
        push("--fusion", self.fusion.map(|f| f.name().to_owned()));
        push("--threads", self.threads.map(|t| t.to_string()));
        push(
            "--split",
            (!self.split.is_empty()).then(|| self.split.join(",")),
        );
        push("--solo", self.solo.map(|k| k.to_string()));
        v
    }
}

/// Mutual-TLS files from the command line (all three, or none).
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// This end's certificate (PEM, chain leaf first) for mutual TLS, with
    /// --tls-key and --tls-ca; overrides the spec's `tls` files. Re-read
    /// when it changes.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// This end's private key (PEM).
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) the peer's certificate must be signed by.
    #[arg(long, value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files given, or `None` when none was.
    pub fn files(&self) -> Option<spec::TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(spec::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }

    /// The client side of the files given (`None`: plaintext), loaded.
    ///
    /// # Errors
    /// When a file cannot be read or used (the error names it).
    pub fn client(&self) -> Result<Option<streamfuse::transport::tls::ClientTls>> {
        self.files()
            .map(|f| streamfuse::transport::tls::ClientTls::load(&f))
            .transpose()
            .map_err(Into::into)
    }
}

/// Sizes the kernel thread pool (`--threads`), then loads the spec with
/// the overrides, its `--split` cuts and, with `--solo K`, only segment K.
pub fn load(a: &SpecArgs) -> Result<Pipeline> {
    set_threads(a.threads)?;
    let ov = Overrides {
        frames: a.frames,
        size: a.size,
        placement: a.placement.clone(),
        fusion: a.fusion,
    };
    let mut p = spec::load(&a.spec, &ov)?;
    streamfuse::plan::cut_before(&mut p, &a.split)?;
    if let Some(k) = a.solo {
        let pl = plan(&p);
        p = streamfuse::plan::solo(&p, &pl, k).with_context(|| {
            format!("--solo {k}: the plan has {} segment(s)", pl.segments.len())
        })?;
    }
    Ok(p)
}

/// Sizes the global kernel thread pool (`--threads`; default: one thread
/// per core).
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads: cannot size the kernel thread pool")?;
    }
    Ok(())
}

/// The command line as the user typed it, the program named `streamfuse`
/// (for reports).
pub fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, x)| if i == 0 { "streamfuse".to_owned() } else { x })
        .collect::<Vec<_>>()
        .join(" ")
}
