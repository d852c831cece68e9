//! `streamfuse serve`: one segment of a split pipeline as a gRPC server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use streamfuse::io::journal::SyncPolicy;
use streamfuse::io::sinks::Durability;
use streamfuse::plan::plan;
use streamfuse::segment::serve::{self, ServeOptions};
use streamfuse::spec::DeviceChoice;
use streamfuse::sys::affinity;
use streamfuse::transport::control::ControlAccess;

use super::{SpecArgs, TlsArgs, load};

/// `streamfuse serve`'s arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Segment to serve (0 is the one with the source).
    #[arg(long)]
    pub segment: usize,
    /// Address for gRPC and health. The default listens on every
    /// interface. Without TLS (no `tls` in the spec, no --tls-* flags) it
    /// is plaintext: anyone who reaches the port can push frames into the
    /// segment, and control calls are refused unless `--control` allows
    /// them. With TLS only clients with a certificate of the CA connect.
    #[arg(long, default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Who may make control calls on a plaintext server (`UpdateWeights`:
    /// replace a stage's weights; `Probe`: measure the link): `off` (the
    /// default) refuses them all, `loopback` accepts them from this host
    /// only (ssh, or `kubectl port-forward` into the pod), every other peer
    /// is refused with PERMISSION_DENIED; `network` accepts them from any
    /// peer, for a closed network whose every host is trusted. Over TLS
    /// the admins list decides instead, and only `off` is accepted here.
    #[arg(long, default_value = "off", value_name = "ACCESS")]
    pub control: ControlAccess,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// A client identity (certificate common name, DNS or URI name)
    /// allowed to make control calls over TLS, besides the spec's
    /// `tls.admins` (repeatable).
    #[arg(long, value_name = "NAME")]
    pub admin: Vec<String>,
    /// Also serve `grpc.health.v1` (only) in plaintext at this address:
    /// for health checks that cannot present a client certificate, such as
    /// the kubelet's gRPC probes, when the server is on TLS.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// Next segment's address (default: from its node's `address` in the spec).
    #[arg(long)]
    pub next: Option<String>,
    /// Serve Prometheus metrics at this address.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Device: auto, cpu, cuda or cuda:N (default: the node's).
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// Exit once every stream has ended and been delivered, printing the
    /// segment's account as one JSON line.
    #[arg(long)]
    pub once: bool,
    /// Longest wait for in-flight frames on SIGTERM, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Pin the process (every thread) to these CPUs, as `taskset -c` takes
    /// them (`0`, `0,2-3`): segment processes sharing a node then keep to
    /// their own cores.
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Extra time per frame, ms (a deliberately slow segment, for experiments).
    #[arg(long, default_value_t = 0.0)]
    pub delay_ms: f64,
    /// The sink's commit journal (last segment). Default: beside an npy
    /// file (`<file>.journal`) or in an npy or image folder; the stats and
    /// null sinks keep one only when given. A restarted sink resumes from
    /// it: nothing it committed is lost or written twice.
    #[arg(long, value_name = "PATH")]
    pub journal: Option<std::path::PathBuf>,
    /// When the sink forces commits to disk: `frame` (before acknowledging
    /// each), an interval (`500ms`, `1s`: the default), or `never` (the
    /// operating system's write-back). A killed process loses nothing
    /// under any of them; they differ on a power loss.
    #[arg(long, default_value = "1s", value_name = "POLICY")]
    pub sync: SyncPolicy,
    /// Start a new run: replace the sink's outputs and journal from an
    /// earlier run instead of resuming it.
    #[arg(long)]
    pub fresh: bool,
}

/// Serves the segment until it is stopped (or, with `--once`, until every
/// stream is done; then prints the segment's account).
pub fn run(a: ServeArgs) -> Result<()> {
    let p = load(&a.spec)?;
    let pl = plan(&p);
    anyhow::ensure!(
        a.drain_timeout.is_finite() && a.drain_timeout >= 0.0,
        "--drain-timeout must be a non-negative number of seconds"
    );
    anyhow::ensure!(
        a.delay_ms.is_finite() && a.delay_ms >= 0.0,
        "--delay-ms must be a non-negative number"
    );
    if let Some(list) = &a.cpus {
        let cpus = affinity::parse_list(list).context("--cpus")?;
        affinity::pin_process(&cpus).context("--cpus")?;
    }
    // The flags' TLS files, else those of the segment's node in the spec.
    let tls = a.tls.files().or_else(|| {
        pl.segments
            .get(a.segment)
            .and_then(|s| p.nodes.get(s.node))
            .and_then(|n| n.tls.clone())
    });
    let mut admins = p.admins.clone();
    admins.extend(a.admin.iter().cloned());
    let opts = ServeOptions {
        segment: a.segment,
        listen: a.listen,
        next: a.next,
        metrics: a.metrics,
        once: a.once,
        device: a.device,
        drain_timeout: Duration::from_secs_f64(a.drain_timeout),
        delay: Duration::from_secs_f64(a.delay_ms / 1e3),
        durability: Durability {
            journal: a.journal,
            sync: a.sync,
            fresh: a.fresh,
        },
        control: a.control,
        tls,
        admins,
        health_listen: a.health_listen,
    };
    let outcome = serve::serve(&p, &pl, &opts)?;
    if a.once {
        println!("{}", serde_json::to_string(&outcome)?);
    }
    Ok(())
}
