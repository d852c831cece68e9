//! `streamfuse manifests`: the Kubernetes (k3s) objects that run a
//! placement.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use streamfuse::advise::{self, Objective};
use streamfuse::deploy::{self, DeployOptions, Images};
use streamfuse::plan::plan;

use super::profile::{self, MeasureArgs};
use super::{SpecArgs, load};

/// `streamfuse manifests`'s arguments.
#[derive(Debug, Args)]
pub struct ManifestsArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Image for `gpu-server` nodes (x86_64, CUDA 12).
    #[arg(long, default_value_t = Images::default().server)]
    pub image_server: String,
    /// Image for `jetson` nodes (L4T r35, CUDA 11.4).
    #[arg(long, default_value_t = Images::default().jetson)]
    pub image_jetson: String,
    /// Image for `cpu` nodes (amd64 and arm64).
    #[arg(long, default_value_t = Images::default().cpu)]
    pub image_cpu: String,
    /// `serve --drain-timeout` of every pod, seconds; the termination grace
    /// period is 5 s longer.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout: u32,
    /// Write one file per object group into DIR (default: print every
    /// object to stdout, for `kubectl apply -f -`). Generated files of an
    /// earlier run that are no longer produced are removed.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Also write `runtimeclass.yaml`: the `nvidia` RuntimeClass, for k3s
    /// versions that do not create it.
    #[arg(long)]
    pub runtime_class: bool,
    /// With `--placement auto`: the profile the advisor ranks placements
    /// from (repeat to merge one per node; default: measured here first).
    #[arg(long)]
    pub profile: Vec<PathBuf>,
    #[command(flatten)]
    pub measure: MeasureArgs,
}

/// Generates the objects, checks them against the deployment rules and
/// writes them (into the directory, or to stdout).
pub fn run(mut a: ManifestsArgs) -> Result<()> {
    if a.spec.placement.as_deref() == Some("auto") {
        // The advisor's first choice for throughput.
        a.spec.placement = None;
        let p = load(&a.spec)?;
        let prof = profile::from_files_or_measured(&p, &a.profile, &a.measure)?;
        let best =
            advise::best_placement(&p, &prof, Objective::Throughput).context("--placement auto")?;
        eprintln!(
            "placement auto: {} ({:.1} fps predicted, bound by {})",
            best.placement, best.fps, best.bound_by
        );
        a.spec.placement = Some(best.placement);
    }
    let p = load(&a.spec)?;
    let pl = plan(&p);
    let text = std::fs::read_to_string(&a.spec.spec)
        .with_context(|| format!("cannot read {}", a.spec.spec.display()))?;
    let opts = DeployOptions {
        images: Images {
            server: a.image_server,
            jetson: a.image_jetson,
            cpu: a.image_cpu,
        },
        drain_timeout_s: a.drain_timeout,
        frames: a.spec.frames,
        size: a.spec.size,
        threads: a.spec.threads,
    };
    let m = deploy::generate(&p, &pl, &text, &opts)?;
    let violations = deploy::policy::check(&p, &pl, &m);
    anyhow::ensure!(
        violations.is_empty(),
        "generated manifests break the deployment rules:\n  {}",
        violations.join("\n  ")
    );
    for w in &m.warnings {
        eprintln!("warning: {w}");
    }
    let mut files = m.files()?;
    if a.runtime_class {
        files.push(deploy::runtime_class_file()?);
    }
    match &a.output {
        Some(dir) => {
            for path in deploy::write_dir(dir, &files)? {
                eprintln!("removed {}", path.display());
            }
            for f in &files {
                eprintln!("wrote {}", dir.join(&f.name).display());
            }
        }
        None => {
            let docs: Vec<&str> = files
                .iter()
                .map(|f| f.text.strip_prefix(deploy::HEADER).unwrap_or(&f.text))
                .collect();
            print!("{}{}", deploy::HEADER, docs.join("---\n"));
        }
    }
    Ok(())
}
