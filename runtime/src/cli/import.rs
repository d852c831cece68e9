//! `streamfuse import`: an ONNX model's chain of supported nodes as a spec.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use streamfuse::import::{self, ImportOptions};

/// `streamfuse import`'s arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Write the spec here (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Input size WxHxC, when the model's is dynamic or to override it.
    #[arg(long, value_parser = parse_whc)]
    pub input: Option<(usize, usize, usize)>,
}

/// `WxHxC` (`1280x720x3`), every side above 0.
fn parse_whc(s: &str) -> Result<(usize, usize, usize), String> {
    let bad = || format!("bad input size `{s}` (expected WxHxC like 1280x720x3)");
    let parts: Vec<usize> = s
        .split(['x', 'X'])
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [w, h, c] if *w > 0 && *h > 0 && *c > 0 => Ok((*w, *h, *c)),
        _ => Err(bad()),
    }
}

/// Imports the model and writes the spec (to the file, or stdout).
pub fn run(a: ImportArgs) -> Result<()> {
    let opts = ImportOptions {
        input: a.input,
        spec_path: a.output.clone(),
    };
    let text = import::import(&a.model, &opts)?;
    match &a.output {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
