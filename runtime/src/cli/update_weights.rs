//! `streamfuse update-weights`: replaces a conv stage's weights in a
//! running segment server.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

/// `streamfuse update-weights`'s arguments.
#[derive(Debug, Args)]
pub struct UpdateWeightsArgs {
    /// The segment server (`host:port`) that runs the stage.
    pub addr: String,
    /// Stage id (a conv2d stage).
    #[arg(long)]
    pub stage: String,
    /// New weights: a `.npy` file of the stage's shape `[out, in, k, k]`
    /// (float32 or float64).
    #[arg(long)]
    pub weights: PathBuf,
    /// New bias: a `.npy` file of shape `[out]` (default: keep the bias).
    #[arg(long)]
    pub bias: Option<PathBuf>,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
    /// Connect through mutual TLS with these files (a TLS server accepts
    /// the update only from a client identity in its admins list).
    #[command(flatten)]
    pub tls: super::TlsArgs,
}

/// The server's reply, as `--json` prints it (fields in that order).
#[derive(Debug, Serialize)]
struct Reply {
    /// Whether a frame has used the new weights yet.
    applied: bool,
    /// When they were applied, ns since the Unix epoch.
    applied_ns: u64,
    /// The first frame (of `stream_id`) that used them.
    first_seq: u64,
    /// The stage.
    stage: String,
    /// The stream of that frame.
    stream_id: u32,
    /// The stage's weights version from now on.
    version: u64,
}

/// Sends the update and prints the reply.
pub fn run(a: UpdateWeightsArgs) -> Result<()> {
    let up = streamfuse::segment::live::read_npy(&a.stage, &a.weights, a.bias.as_deref())?;
    let tls = a.tls.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = rt.block_on(streamfuse::transport::update::send(
        &a.addr,
        up,
        tls.as_ref(),
    ))?;
    let r = Reply {
        applied: r.applied,
        applied_ns: r.applied_ns,
        first_seq: r.first_seq,
        stage: r.stage,
        stream_id: r.stream_id,
        version: r.version,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if r.applied {
        println!(
            "stage {}: weights version {} in use from stream {} seq {}",
            r.stage, r.version, r.stream_id, r.first_seq
        );
    } else {
        println!(
            "stage {}: weights version {} accepted; no frame has used them yet (they apply to the next frame)",
            r.stage, r.version
        );
    }
    Ok(())
}
