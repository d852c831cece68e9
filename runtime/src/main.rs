//! The `streamfuse` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use streamfuse::exec::{self, RunOptions, RunReport};
use streamfuse::plan::{Plan, plan};
use streamfuse::spec::{self, DeviceChoice, FusionMode, Overrides, Pipeline};
use streamfuse::stagebench;

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
    Run(RunArgs),
    /// Serve one segment: receive frames over gRPC (or read the source),
    /// run the segment's stages, forward downstream (or to the sink).
    Serve(ServeArgs),
    /// Replace a conv stage's weights in a running segment server, between
    /// two frames; prints the first frame that used them.
    UpdateWeights(UpdateWeightsArgs),
    /// Print the segments, fusion groups and link sizes of a placement;
    /// with --advise, rank every placement by predicted fps or latency.
    Plan(PlanArgs),
    /// Measure what each stage range costs on this machine (a profile for
    /// `plan --advise --profile`).
    Profile(ProfileArgs),
    /// Write the Kubernetes (k3s) objects that run a placement: a ConfigMap
    /// with the spec, and a Deployment and a Service per segment.
    Manifests(ManifestsArgs),
    /// Turn an ONNX model's chain of supported nodes into a spec.
    Import(ImportArgs),
    /// Kernel tools.
    #[command(subcommand)]
    Kernels(KernelsCommand),
    /// Pipeline experiments: every size x placement x fusion mode and the
    /// pipeline split into 1..4 processes, on an emulated edge/server
    /// cluster (root) or loopback; writes CSV, a markdown summary and SVG plots.
    Bench(PipelineBenchArgs),
}

#[derive(Debug, Args)]
struct UpdateWeightsArgs {
    /// The segment server (`host:port`) that runs the stage.
    addr: String,
    /// Stage id (a conv2d stage).
    #[arg(long)]
    stage: String,
    /// New weights: a `.npy` file of the stage's shape `[out, in, k, k]`
    /// (float32 or float64).
    #[arg(long)]
    weights: PathBuf,
    /// New bias: a `.npy` file of shape `[out]` (default: keep the bias).
    #[arg(long)]
    bias: Option<PathBuf>,
    /// Print the reply as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct PipelineBenchArgs {
    /// Pipeline spec (YAML).
    spec: PathBuf,
    /// Image sizes: WxH or one side for a square
    /// [default: 128,256,512,1024,1280x720; --quick: 256,1280x720].
    #[arg(long, value_delimiter = ',', value_parser = spec::parse_size)]
    sizes: Vec<(usize, usize)>,
    /// Placements [default: SSSS,ESSS,EESS,EEES,EEEE].
    #[arg(long, value_delimiter = ',')]
    placements: Vec<String>,
    /// Fusion modes of the placement sweep [default: off,kernel].
    #[arg(long, value_delimiter = ',')]
    fusion: Vec<FusionMode>,
    /// Processes the pipeline is split into, on one node [default: 1,2,3,4].
    #[arg(long, value_delimiter = ',')]
    stages: Vec<usize>,
    /// Frames per run [default: 1000; --quick: 100].
    #[arg(long)]
    frames: Option<u64>,
    /// Output directory.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// A small matrix that finishes in a few minutes: two sizes, 100 frames.
    #[arg(long)]
    quick: bool,
    /// CPUs the edge's processes get together (a CFS quota).
    #[arg(long, default_value_t = 0.5)]
    edge_cpu: f64,
    /// CPUs the server's processes get together (default: unlimited).
    #[arg(long)]
    server_cpu: Option<f64>,
    /// Rate of the edge-server link (tc syntax: 1gbit, 100mbit).
    #[arg(long, default_value = "1gbit")]
    link: String,
    /// Instead of the study: check the placement advisor at each of these
    /// link rates (profile the emulated cluster, predict every placement,
    /// run it, compare; needs root). Sizes default to 256,512, frames to
    /// 200 (more where a run would last under 3 s), fusion to the spec's.
    #[arg(long, value_delimiter = ',')]
    advisor_links: Vec<String>,
    /// Run on plain loopback even as root (no emulated cluster).
    #[arg(long)]
    no_emulation: bool,
    /// Leave the processes of a split on the server unpinned (by default
    /// each gets one of the machine's CPUs, round robin).
    #[arg(long)]
    no_pin: bool,
    /// Slow stage ID down by MS per frame (checks the harness): STAGE:MS.
    #[arg(long, value_parser = parse_slow)]
    slow: Option<(String, f64)>,
    /// Longest time one run may take, seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Device for every node: auto, cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Kernel worker threads per process (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object (rows, files, checks) as the last line of
    /// stdout, and no progress bar.
    #[arg(long)]
    json: bool,
    /// Run nothing: draw the plots again from --out's results.csv and latencies.csv.
    #[arg(long)]
    replot: bool,
}

fn parse_slow(s: &str) -> Result<(String, f64), String> {
    let bad = || format!("bad --slow `{s}` (expected STAGE:MS, e.g. relu:20)");
    let (id, ms) = s.rsplit_once(':').ok_or_else(bad)?;
    let ms: f64 = ms.parse().map_err(|_| bad())?;
    if id.is_empty() || !ms.is_finite() || ms < 0.0 {
        return Err(bad());
    }
    Ok((id.to_owned(), ms))
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The ONNX model.
    model: PathBuf,
    /// Write the spec here (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Input size WxHxC, when the model's is dynamic or to override it.
    #[arg(long, value_parser = parse_whc)]
    input: Option<(usize, usize, usize)>,
}

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

#[derive(Debug, Args)]
struct SpecArgs {
    /// Pipeline spec (YAML).
    spec: PathBuf,
    /// Frames to process (overrides the source's `frames`).
    #[arg(long)]
    frames: Option<u64>,
    /// Frame size WxH (or one side for a square), overriding the source's.
    #[arg(long, value_parser = spec::parse_size)]
    size: Option<(usize, usize)>,
    /// Placement letters, one per element: the source, then each stage
    /// (`manifests` also takes `auto`: the advisor's choice).
    #[arg(long)]
    placement: Option<String>,
    /// Fusion mode: off, chain or kernel.
    #[arg(long)]
    fusion: Option<FusionMode>,
    /// Kernel worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Stage ids that start a new segment, as `fuse: false` in the spec.
    #[arg(long, value_delimiter = ',')]
    split: Vec<String>,
    /// Only segment K, alone: its stages fed by a synthetic source of its
    /// input shape, output dropped (what the segment does without links).
    #[arg(long, value_name = "K")]
    solo: Option<usize>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Device for every node: auto, cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Print one JSON object as the last line of stdout, and no progress bar.
    #[arg(long)]
    json: bool,
    /// Run each segment as its own `serve` process on loopback ports, wired
    /// over gRPC (the split layout on one machine).
    #[arg(long)]
    local: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Segment to serve (0 is the one with the source).
    #[arg(long)]
    segment: usize,
    /// Address for gRPC and health.
    #[arg(long, default_value = "0.0.0.0:50051")]
    listen: std::net::SocketAddr,
    /// Next segment's address (default: from its node's `address` in the spec).
    #[arg(long)]
    next: Option<String>,
    /// Serve Prometheus metrics at this address.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Device: auto, cpu, cuda or cuda:N (default: the node's).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Exit once every stream has ended and been delivered, printing the
    /// segment's account as one JSON line.
    #[arg(long)]
    once: bool,
    /// Longest wait for in-flight frames on SIGTERM, seconds.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Pin the process (every thread) to these CPUs, as `taskset -c` takes
    /// them (`0`, `0,2-3`): segment processes sharing a node then keep to
    /// their own cores.
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
    /// Extra time per frame, ms (a deliberately slow segment, for experiments).
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
}

#[derive(Debug, Args)]
struct ManifestsArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Image for `gpu-server` nodes (x86_64, CUDA 12).
    #[arg(long, default_value_t = streamfuse::deploy::Images::default().server)]
    image_server: String,
    /// Image for `jetson` nodes (L4T r35, CUDA 11.4).
    #[arg(long, default_value_t = streamfuse::deploy::Images::default().jetson)]
    image_jetson: String,
    /// Image for `cpu` nodes (amd64 and arm64).
    #[arg(long, default_value_t = streamfuse::deploy::Images::default().cpu)]
    image_cpu: String,
    /// `serve --drain-timeout` of every pod, seconds; the termination grace
    /// period is 5 s longer.
    #[arg(long, default_value_t = 10)]
    drain_timeout: u32,
    /// Write one file per object group into DIR (default: print every
    /// object to stdout, for `kubectl apply -f -`). Generated files of an
    /// earlier run that are no longer produced are removed.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Also write `runtimeclass.yaml`: the `nvidia` RuntimeClass, for k3s
    /// versions that do not create it.
    #[arg(long)]
    runtime_class: bool,
    /// With `--placement auto`: the profile the advisor ranks placements
    /// from (repeat to merge one per node; default: measured here first).
    #[arg(long)]
    profile: Vec<PathBuf>,
    #[command(flatten)]
    measure: MeasureArgs,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Rank every placement by predicted throughput or latency (from
    /// --profile, or measured here first).
    #[arg(long)]
    advise: bool,
    /// A profile written by `streamfuse profile` (repeat to merge one
    /// profile per node).
    #[arg(long, requires = "advise")]
    profile: Vec<PathBuf>,
    /// What --advise ranks by: throughput or latency.
    #[arg(long, default_value = "throughput", requires = "advise")]
    objective: streamfuse::advise::Objective,
    #[command(flatten)]
    measure: MeasureArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What `profile` (and `plan --advise` without --profile) takes as given.
#[derive(Debug, Args)]
struct MeasureArgs {
    /// Timed frames per stage range.
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// Bandwidth of the links between nodes (tc syntax: 1gbit, 100mbit).
    #[arg(long, default_value = "1gbit")]
    link: String,
    /// Round-trip time of the links, ms.
    #[arg(long, default_value_t = 0.0)]
    rtt_ms: f64,
    /// CPU cost of handing a frame from one process to another, ms per
    /// frame (split between sender and receiver).
    #[arg(long, default_value_t = 0.0)]
    hop_ms: f64,
    /// ... and ms per MB of frame.
    #[arg(long, default_value_t = 0.0)]
    hop_ms_per_mb: f64,
    /// This machine is this node of the spec: describe only it (merge the
    /// nodes' profiles by giving `plan --advise` several --profile files).
    #[arg(long)]
    node: Option<String>,
    /// Measure the link to another node through its `streamfuse serve`
    /// (NODE=HOST:PORT, repeatable; needs --node): bandwidth, round trip
    /// and hand-off CPU with frames of every size the pipeline can send.
    /// Replaces --link, --rtt-ms and the hop figures for that link.
    #[arg(long, value_name = "NODE=ADDR", requires = "node")]
    peer: Vec<String>,
    /// Seconds each link probe streams frames of one size.
    #[arg(long, default_value_t = 1.0)]
    probe_secs: f64,
    /// Seconds each stage range runs in the executor.
    #[arg(long, default_value_t = 0.5)]
    run_secs: f64,
    /// Runs per stage range; the fastest is kept (shared machines are
    /// noisy).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// CPUs the node's processes share [default: what this process may
    /// use: its CPU affinity, capped by its cgroup's CPU quota].
    #[arg(long)]
    cpus: Option<f64>,
}

#[derive(Debug, Args)]
struct ProfileArgs {
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    measure: MeasureArgs,
    /// Write the profile here (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum KernelsCommand {
    /// Time a spec's stages on one synthetic frame in this process.
    Bench(BenchArgs),
    /// Measure this machine's memory bandwidth and peak FLOP/s on the kernel threads.
    Roofline(RooflineArgs),
    /// Compile every CUDA kernel with NVRTC for each target architecture:
    /// the hand-written sources and the generated kernels of a
    /// representative set of fused chains.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Virtual architectures (default: compute_70,compute_72,compute_87,compute_90).
    #[arg(long, value_delimiter = ',')]
    arch: Vec<String>,
    /// Also write each PTX to DIR/<source>-<arch>.ptx.
    #[arg(long, value_name = "DIR")]
    emit_ptx: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RooflineArgs {
    /// Kernel worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Timed iterations.
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    streamfuse::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let quiet = match &cli.command {
        Command::Run(a) => a.json,
        Command::Serve(_) => false,
        Command::UpdateWeights(a) => a.json,
        Command::Plan(a) => a.json,
        Command::Profile(_) => true,
        Command::Manifests(_) | Command::Import(_) => true,
        Command::Kernels(KernelsCommand::Bench(a)) => a.json,
        Command::Kernels(KernelsCommand::Roofline(a)) => a.json,
        Command::Kernels(KernelsCommand::Check(a)) => a.json,
        Command::Bench(a) => a.json,
    };
    if !matches!(cli.command, Command::Serve(_)) {
        die_quietly_on_broken_pipe();
    }
    init_tracing(quiet);
    match dispatch(cli) {
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

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads: cannot size the kernel thread pool")?;
    }
    Ok(())
}

fn cmd_roofline(a: RooflineArgs) -> Result<()> {
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

fn cmd_import(a: ImportArgs) -> Result<()> {
    let opts = streamfuse::import::ImportOptions {
        input: a.input,
        spec_path: a.output.clone(),
    };
    let text = streamfuse::import::import(&a.model, &opts)?;
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

fn cmd_manifests(mut a: ManifestsArgs) -> Result<()> {
    use streamfuse::deploy::{self, DeployOptions, Images};
    if a.spec.placement.as_deref() == Some("auto") {
        // The advisor's first choice for throughput.
        a.spec.placement = None;
        let p = load(&a.spec)?;
        let prof = if a.profile.is_empty() {
            measure(&p, &a.measure)?
        } else {
            streamfuse::advise::Profile::load_all(&a.profile, &p)?
        };
        let best = streamfuse::advise::rank(&p, &prof, streamfuse::advise::Objective::Throughput)
            .into_iter()
            .next()
            .context("--placement auto: the advisor could predict no placement from the profile")?;
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

fn cmd_check(a: CheckArgs) -> Result<()> {
    use streamfuse_kernels::cuda::{self, nvrtc};
    let archs: Vec<&'static str> = if a.arch.is_empty() {
        cuda::ARCHS.to_vec()
    } else {
        a.arch
            .iter()
            .map(|x| {
                cuda::ARCHS
                    .iter()
                    .copied()
                    .find(|k| k == x)
                    .with_context(|| {
                        format!("--arch: `{x}` is not one of {}", cuda::ARCHS.join(", "))
                    })
            })
            .collect::<Result<_>>()?
    };
    let (major, minor) = nvrtc::version()?;
    if let Some(dir) = &a.emit_ptx {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut rows = Vec::new();
    let mut failed = 0;
    // The hand-written sources, then the generated kernel of each
    // representative fused chain (one per distinct source).
    let mut units: Vec<(String, Vec<String>, String)> = cuda::SOURCES
        .iter()
        .map(|s| {
            (
                s.name.trim_end_matches(".cu").to_owned(),
                s.kernels.iter().map(|k| (*k).to_owned()).collect(),
                s.standalone(),
            )
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for chain in cuda::codegen::representative_chains() {
        let g = cuda::codegen::generate(&chain);
        if seen.insert(g.name.clone()) {
            units.push((format!("chain({})", chain.label()), vec![g.name], g.source));
        }
    }
    for (unit, kernels, text) in &units {
        for &arch in &archs {
            let t0 = std::time::Instant::now();
            let result = nvrtc::compile_text(unit, text.clone(), arch);
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let (ok, detail) = match &result {
                Ok(ptx) => {
                    if let Some(dir) = &a.emit_ptx {
                        let path = dir.join(format!("{unit}-{arch}.ptx"));
                        std::fs::write(&path, ptx)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                    (true, format!("{} bytes of PTX", ptx.len()))
                }
                Err(e) => {
                    failed += 1;
                    (false, e.to_string())
                }
            };
            rows.push(serde_json::json!({
                "source": unit, "kernels": kernels, "arch": arch,
                "ok": ok, "ms": ms, "detail": detail,
            }));
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"nvrtc": format!("{major}.{minor}"), "results": rows, "failed": failed})
        );
    } else {
        println!("NVRTC {major}.{minor}");
        println!(
            "{:<40} {:<12} {:<6} {:>9}  kernels / detail",
            "source", "arch", "status", "ms"
        );
        for r in &rows {
            println!(
                "{:<40} {:<12} {:<6} {:>9.1}  {} ({})",
                r["source"].as_str().unwrap_or_default(),
                r["arch"].as_str().unwrap_or_default(),
                if r["ok"].as_bool().unwrap_or(false) {
                    "ok"
                } else {
                    "FAIL"
                },
                r["ms"].as_f64().unwrap_or(0.0),
                r["kernels"]
                    .as_array()
                    .map(|k| k
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default(),
                r["detail"].as_str().unwrap_or_default(),
            );
        }
    }
    anyhow::ensure!(failed == 0, "{failed} kernel compilation(s) failed");
    Ok(())
}

fn load(a: &SpecArgs) -> Result<Pipeline> {
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

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => cmd_run(a),
        Command::Serve(a) => cmd_serve(a),
        Command::UpdateWeights(a) => cmd_update_weights(a),
        Command::Plan(a) => cmd_plan(a),
        Command::Profile(a) => cmd_profile(a),
        Command::Manifests(a) => cmd_manifests(a),
        Command::Import(a) => cmd_import(a),
        Command::Kernels(KernelsCommand::Bench(a)) => cmd_bench(a),
        Command::Kernels(KernelsCommand::Roofline(a)) => cmd_roofline(a),
        Command::Kernels(KernelsCommand::Check(a)) => cmd_check(a),
        Command::Bench(a) => cmd_pipeline_bench(a),
    }
}

/// The spec path and overrides as `serve` arguments.
fn spec_args(a: &SpecArgs) -> Vec<String> {
    let mut v = vec![a.spec.display().to_string()];
    let mut push = |k: &str, val: Option<String>| {
        if let Some(x) = val {
            v.push(k.to_owned());
            v.push(x);
        }
    };
    push("--frames", a.frames.map(|f| f.to_string()));
    push("--size", a.size.map(|(w, h)| format!("{w}x{h}")));
    push("--placement", a.placement.clone());
    push("--fusion", a.fusion.map(|f| f.name().to_owned()));
    push("--threads", a.threads.map(|t| t.to_string()));
    push("--split", (!a.split.is_empty()).then(|| a.split.join(",")));
    push("--solo", a.solo.map(|k| k.to_string()));
    v
}

fn cmd_pipeline_bench(a: PipelineBenchArgs) -> Result<()> {
    use streamfuse::bench::{self, BenchOptions, cluster::ClusterOptions};
    if a.replot {
        for f in bench::replot(&a.out)? {
            println!("wrote {}", f.display());
        }
        return Ok(());
    }
    let sizes = if a.sizes.is_empty() {
        if !a.advisor_links.is_empty() {
            vec![(256, 256), (512, 512)]
        } else if a.quick {
            vec![(256, 256), (1280, 720)]
        } else {
            vec![
                (128, 128),
                (256, 256),
                (512, 512),
                (1024, 1024),
                (1280, 720),
            ]
        }
    } else {
        a.sizes.clone()
    };
    let placements = if a.placements.is_empty() {
        ["SSSS", "ESSS", "EESS", "EEES", "EEEE"]
            .map(str::to_owned)
            .to_vec()
    } else {
        a.placements.clone()
    };
    let fusion = if a.fusion.is_empty() {
        if a.advisor_links.is_empty() {
            vec![FusionMode::Off, FusionMode::Kernel]
        } else {
            // The advisor check: the spec's own fusion.
            Vec::new()
        }
    } else {
        a.fusion.clone()
    };
    let stages = if a.stages.is_empty() {
        vec![1, 2, 3, 4]
    } else {
        a.stages.clone()
    };
    anyhow::ensure!(
        a.timeout.is_finite() && a.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let opts = BenchOptions {
        spec: a.spec.clone(),
        exe: std::env::current_exe().context("cannot find the streamfuse executable")?,
        sizes,
        placements,
        fusion,
        stages,
        frames: a.frames.unwrap_or(if a.quick {
            100
        } else if a.advisor_links.is_empty() {
            1000
        } else {
            200
        }),
        out: a.out.clone(),
        device: a.device,
        threads: a.threads,
        emulate: !a.no_emulation,
        pin: !a.no_pin,
        cluster: ClusterOptions {
            edge_cpu: a.edge_cpu,
            server_cpu: a.server_cpu,
            link: a.link.clone(),
        },
        slow: a.slow.clone(),
        timeout: std::time::Duration::from_secs_f64(a.timeout),
        progress: !a.json && std::io::stderr().is_terminal(),
        command: std::env::args()
            .enumerate()
            .map(|(i, x)| if i == 0 { "streamfuse".to_owned() } else { x })
            .collect::<Vec<_>>()
            .join(" "),
    };
    let t0 = std::time::Instant::now();
    if !a.advisor_links.is_empty() {
        for l in &a.advisor_links {
            bench::cluster::parse_rate(l).with_context(|| format!("--advisor-links `{l}`"))?;
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

fn cmd_serve(a: ServeArgs) -> Result<()> {
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
        let cpus = streamfuse::affinity::parse_list(list).context("--cpus")?;
        streamfuse::affinity::pin_process(&cpus).context("--cpus")?;
    }
    let opts = streamfuse::serve::ServeOptions {
        segment: a.segment,
        listen: a.listen,
        next: a.next,
        metrics: a.metrics,
        once: a.once,
        device: a.device,
        drain_timeout: std::time::Duration::from_secs_f64(a.drain_timeout),
        delay: std::time::Duration::from_secs_f64(a.delay_ms / 1e3),
    };
    let outcome = streamfuse::serve::serve(&p, &pl, &opts)?;
    if a.once {
        println!("{}", serde_json::to_string(&outcome)?);
    }
    Ok(())
}

fn cmd_update_weights(a: UpdateWeightsArgs) -> Result<()> {
    let up = streamfuse::live::read_npy(&a.stage, &a.weights, a.bias.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = rt.block_on(streamfuse::transport::update::send(&a.addr, up))?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "stage": r.stage,
                "version": r.version,
                "applied": r.applied,
                "stream_id": r.stream_id,
                "first_seq": r.first_seq,
                "applied_ns": r.applied_ns,
            })
        );
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

fn cmd_run(a: RunArgs) -> Result<()> {
    let p = load(&a.spec)?;
    let pl = plan(&p);
    if a.local {
        let exe = std::env::current_exe().context("cannot find the streamfuse executable")?;
        let mut args = spec_args(&a.spec);
        if let Some(d) = a.device {
            args.push("--device".into());
            args.push(d.to_string());
        }
        tracing::info!(segments = pl.segments.len(), "running split on loopback");
        let r = streamfuse::local::run(&exe, &args, &p, &pl)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_report(&r);
        }
        return Ok(());
    }
    let opts = RunOptions {
        device: a.device,
        progress: !a.json && std::io::stderr().is_terminal(),
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
    let r = exec::run(&p, &pl, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_report(&r);
    }
    Ok(())
}

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

fn measure(p: &Pipeline, m: &MeasureArgs) -> Result<streamfuse::advise::Profile> {
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
    let o = streamfuse::advise::MeasureOptions {
        warmup: 5,
        iters: m.iters,
        link_bytes_per_s: bits / 8.0,
        rtt_ms: m.rtt_ms,
        hop: streamfuse::advise::HopProfile {
            fixed_ms: m.hop_ms,
            per_mb_ms: m.hop_ms_per_mb,
        },
        node: m.node.clone(),
        run_secs: m.run_secs,
        repeats: m.repeats,
        cpus: m.cpus,
    };
    let mut prof = streamfuse::advise::measure(p, &o)?;
    if let (Some(from), false) = (&m.node, peers.is_empty()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let (links, hop) = rt.block_on(streamfuse::advise::measure_links(
            p,
            from,
            &peers,
            std::time::Duration::from_secs_f64(m.probe_secs),
        ))?;
        for l in links {
            prof.links
                .retain(|x| !((x.a == l.a && x.b == l.b) || (x.a == l.b && x.b == l.a)));
            prof.links.push(l);
        }
        if let Some(h) = hop {
            prof.hop = h;
        }
    }
    Ok(prof)
}

fn cmd_profile(a: ProfileArgs) -> Result<()> {
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

fn cmd_advise(a: &PlanArgs, p: &Pipeline) -> Result<()> {
    let (prof, from) = match a.profile.as_slice() {
        [] => (
            measure(p, &a.measure)?,
            format!(
                "measured here (every node as this machine; links {}, rtt {} ms)",
                a.measure.link, a.measure.rtt_ms
            ),
        ),
        files => (
            streamfuse::advise::Profile::load_all(files, p)?,
            format!(
                "profile {}",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" + ")
            ),
        ),
    };
    let ranked = streamfuse::advise::rank(p, &prof, a.objective);
    let objective = match a.objective {
        streamfuse::advise::Objective::Throughput => "throughput",
        streamfuse::advise::Objective::Latency => "latency",
    };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "pipeline": p.name,
                "objective": objective,
                "costs": from,
                "best": ranked.first(),
                "placements": ranked,
            })
        );
        return Ok(());
    }
    println!("{}: placements ranked by {objective}; costs {from}", p.name);
    println!(
        "{:<5} {:<10} {:>9} {:>10} {:>12}  bound by",
        "rank", "placement", "processes", "fps", "latency ms"
    );
    for (k, x) in ranked.iter().enumerate() {
        println!(
            "{:<5} {:<10} {:>9} {:>10.1} {:>12.3}  {}",
            k + 1,
            x.placement,
            x.segments,
            x.fps,
            x.latency_ms,
            x.bound_by
        );
    }
    if let Some(b) = ranked.first() {
        println!(
            "best: {} ({:.1} fps, {:.3} ms; bound by {})",
            b.placement, b.fps, b.latency_ms, b.bound_by
        );
    }
    Ok(())
}

fn cmd_plan(a: PlanArgs) -> Result<()> {
    let p = load(&a.spec)?;
    if a.advise {
        return cmd_advise(&a, &p);
    }
    let pl = plan(&p);
    if a.json {
        println!("{}", serde_json::to_string(&plan_json(&p, &pl)?)?);
        return Ok(());
    }
    println!(
        "{}: placement {}, fusion {}, {} segment(s)",
        p.name,
        p.placement_letters(),
        p.fusion,
        pl.segments.len()
    );
    for seg in &pl.segments {
        let node = &p.nodes[seg.node];
        println!(
            "segment {} on {} ({}, device {}){}",
            seg.index,
            node.name,
            node.letter,
            node.device,
            if seg.has_source { " + source" } else { "" }
        );
        for g in &seg.groups {
            let ids: Vec<&str> = p.stages[g.stages.clone()]
                .iter()
                .map(|s| s.id.as_str())
                .collect();
            let (flops, bytes) = (g.op.flops(g.input)?, g.op.min_bytes(g.input)?);
            println!(
                "  {:<24} {:<28} {} -> {}  {:.1} MFLOP  {:.2} MB  {:.2} FLOP/B",
                ids.join("+"),
                g.op.label(),
                g.input,
                g.output,
                flops as f64 / 1e6,
                bytes as f64 / 1e6,
                flops as f64 / bytes.max(1) as f64
            );
        }
        println!(
            "  emits {} = {} bytes/frame",
            seg.output,
            seg.output.bytes()
        );
    }
    Ok(())
}

/// The CUDA kernel a fused group runs as: the hand-written one, a
/// generated one (by name), or its members one by one.
fn cuda_kernel_of(op: &streamfuse_kernels::Op, input: streamfuse_kernels::Shape) -> String {
    use streamfuse_kernels::cuda::{codegen, params};
    match op {
        streamfuse_kernels::Op::Fused(chain) => {
            if matches!(params::fused(chain, input), Ok(Some(_))) {
                "fused_conv_pool_f32".into()
            } else if matches!(codegen::plan(chain, input), Ok(Some(_))) {
                codegen::generate(chain).name
            } else {
                "members one by one".into()
            }
        }
        streamfuse_kernels::Op::Vision(v) => match v {
            streamfuse_kernels::Vision::Gray { .. } => "gray_f32".into(),
            streamfuse_kernels::Vision::Normalize { .. } => "normalize_f32".into(),
            streamfuse_kernels::Vision::Resize { .. } => "resize_linear_f32".into(),
            streamfuse_kernels::Vision::GaussianBlur { .. } => "hfilter_f32+vfilter_f32".into(),
            streamfuse_kernels::Vision::Sobel { .. } => "sobel_h_f32+sobel_v_f32".into(),
        },
        streamfuse_kernels::Op::VisionChain(_) => "each step's kernels in turn".into(),
        other => other.name().into(),
    }
}

fn plan_json(p: &Pipeline, pl: &Plan) -> Result<serde_json::Value> {
    let mut segs = Vec::new();
    for seg in &pl.segments {
        let mut groups = Vec::new();
        for g in &seg.groups {
            groups.push(serde_json::json!({
                "stages": p.stages[g.stages.clone()].iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
                "kernel": g.op.label(),
                "input": [g.input.c, g.input.h, g.input.w],
                "output": [g.output.c, g.output.h, g.output.w],
                "fused": matches!(
                    g.op,
                    streamfuse_kernels::Op::Fused(_) | streamfuse_kernels::Op::VisionChain(_)
                ),
                "cuda_kernel": cuda_kernel_of(&g.op, g.input),
                "flops": g.op.flops(g.input)?,
                "bytes": g.op.min_bytes(g.input)?,
                "flops_per_byte": g.op.flops(g.input)? as f64 / g.op.min_bytes(g.input)?.max(1) as f64,
            }));
        }
        segs.push(serde_json::json!({
            "index": seg.index,
            "node": p.nodes[seg.node].name,
            "device": p.nodes[seg.node].device.to_string(),
            "source": seg.has_source,
            "groups": groups,
            "output_bytes": seg.output.bytes(),
        }));
    }
    // Every link between segments carries the sending segment's output.
    let links: Vec<serde_json::Value> = pl
        .segments
        .windows(2)
        .map(|w| {
            serde_json::json!({
                "from": w[0].index, "to": w[1].index, "bytes_per_frame": w[0].output.bytes(),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "links": links,
        "name": p.name,
        "placement": p.placement_letters(),
        "fusion": p.fusion.name(),
        "segments": segs,
    }))
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let p = load(&a.spec)?;
    let r = stagebench::bench(&p, a.spec.fusion.unwrap_or(p.fusion), a.warmup, a.iters)?;
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
