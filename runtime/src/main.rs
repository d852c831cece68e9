//! The `streamfuse` command: parses the command line and hands each
//! command to its module in [`cli`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// mimalloc keeps freed frame-sized blocks for reuse instead of returning
/// them to the OS, so per-frame tensors do not pay page faults each frame.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// GPU-accelerated stream processing for CNN and vision pipelines.
#[derive(Debug, Parser)]
#[command(name = "streamfuse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline (in this process, or split with --local) and
    /// report fps, latency and CCR.
    Run(cli::run::RunArgs),
    /// Serve one segment: receive frames over gRPC (or read the source),
    /// run the segment's stages, forward downstream (or to the sink).
    Serve(cli::serve::ServeArgs),
    /// Replace a conv stage's weights in a running segment server, between
    /// two frames; prints the first frame that used them.
    UpdateWeights(cli::update_weights::UpdateWeightsArgs),
    /// Print the segments, fusion groups and link sizes of a placement;
    /// with --advise, rank every placement by predicted fps or latency.
    Plan(cli::plan::PlanArgs),
    /// Measure what each stage range costs on this machine (a profile for
    /// `plan --advise --profile`).
    Profile(cli::profile::ProfileArgs),
    /// Write the Kubernetes (k3s) objects that run a placement: a ConfigMap
    /// with the spec, and a Deployment and a Service per segment.
    Manifests(cli::manifests::ManifestsArgs),
    /// Turn an ONNX model's chain of supported nodes into a spec.
    Import(cli::import::ImportArgs),
    /// Kernel tools.
    #[command(subcommand)]
    Kernels(cli::kernels::KernelsCommand),
    /// Pipeline experiments: every size x placement x fusion mode and the
    /// pipeline split into 1..4 processes, on an emulated edge/server
    /// cluster (root) or loopback; writes CSV, a markdown summary and SVG plots.
    Bench(cli::bench::PipelineBenchArgs),
}

impl Command {
    /// Whether only warnings are logged: the command prints JSON (or a
    /// file's text) on stdout.
    fn quiet(&self) -> bool {
        match self {
            Self::Run(a) => a.json,
            Self::Serve(_) => false,
            Self::UpdateWeights(a) => a.json,
            Self::Plan(a) => a.json,
            Self::Profile(_) | Self::Manifests(_) | Self::Import(_) => true,
            Self::Kernels(k) => k.json(),
            Self::Bench(a) => a.json,
        }
    }

    fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Run(a) => cli::run::run(a),
            Self::Serve(a) => cli::serve::run(a),
            Self::UpdateWeights(a) => cli::update_weights::run(a),
            Self::Plan(a) => cli::plan::run(a),
            Self::Profile(a) => cli::profile::run(a),
            Self::Manifests(a) => cli::manifests::run(a),
            Self::Import(a) => cli::import::run(a),
            Self::Kernels(k) => cli::kernels::run(k),
            Self::Bench(a) => cli::bench::run(a),
        }
    }
}

fn main() -> ExitCode {
    streamfuse::sys::alloc::keep_freed_memory();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        die_quietly_on_broken_pipe();
    }
    init_tracing(cli.command.quiet());
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets a closed stdout (`streamfuse plan ... | head`) end the process
/// quietly, as it ends other command-line tools, instead of `println!`
/// panicking on the broken pipe: the default action of `SIGPIPE`, which
/// the Rust runtime sets to ignored. Sockets are unaffected (the standard
/// library sends with `MSG_NOSIGNAL`); `serve` keeps it ignored all the
/// same, as a server must never die of a peer's closed connection.
fn die_quietly_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restores a signal's default disposition before any other
    // thread exists; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Logs to stderr: `RUST_LOG`, else `info` (`warn` when `quiet`).
fn init_tracing(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
