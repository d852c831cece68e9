//! The pipeline spec: a YAML file parsed ([`raw`]), resolved into typed ops
//! with shapes and weights, and validated. Every error names the file, the
//! line and column, and the field ([`SpecError`]).
//!
//! ```yaml
//! name: thesis
//! source: { synthetic: { width: 1280, height: 720, channels: 1, frames: 1000, seed: 7 } }
//! stages:
//!   - { id: conv, op: conv2d, kernel: 3, out_channels: 1, weights: { random: { seed: 1 } } }
//!   - { id: relu, op: relu }
//!   - { id: pool, op: maxpool, size: 2, stride: 2 }
//! sink: { stats: {} }
//! nodes:
//!   edge:   { letter: E, device: auto, machine: jetson }
//!   server: { letter: S, device: auto, machine: gpu-server }
//! placement: EESS
//! fusion: kernel
//! ```

pub mod error;
pub mod raw;
mod resolve;
mod weights;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use streamfuse_kernels::{Op, Shape};

pub use error::{FieldError, Position, SpecError};

/// How co-located stages are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FusionMode {
    /// Every element is its own segment (the microservice baseline): stages
    /// run as separate pipelined tasks.
    Off,
    /// A segment's stages run back to back on each frame, data kept in place.
    Chain,
    /// As `chain`, and fusible runs (conv → ReLU → maxpool) become one kernel.
    #[default]
    Kernel,
}

impl FusionMode {
    /// Name as written in specs.
    pub fn name(self) -> &'static str {
        match self {
            FusionMode::Off => "off",
            FusionMode::Chain => "chain",
            FusionMode::Kernel => "kernel",
        }
    }
}

impl fmt::Display for FusionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FusionMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(FusionMode::Off),
            "chain" => Ok(FusionMode::Chain),
            "kernel" => Ok(FusionMode::Kernel),
            other => Err(format!(
                "unknown fusion mode `{other}` (expected off, chain or kernel)"
            )),
        }
    }
}

/// Which device a node runs its stages on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when a driver and a device are present, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(format!(
                    "unknown device `{s}` (expected auto, cpu, cuda or cuda:N)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// What kind of machine a node is. Only deployment depends on it: it picks
/// the container image, the GPU runtime and the scheduling constraints of
/// the node's pods (`streamfuse manifests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// An x86_64 server with an NVIDIA GPU exposed by the device plugin
    /// (`nvidia.com/gpu`).
    GpuServer,
    /// An NVIDIA Jetson board (aarch64, integrated GPU, L4T).
    Jetson,
    /// A machine without a usable GPU (Raspberry Pi, plain x86_64 or arm64).
    Cpu,
}

impl Machine {
    /// Name as written in specs.
    pub fn name(self) -> &'static str {
        match self {
            Machine::GpuServer => "gpu-server",
            Machine::Jetson => "jetson",
            Machine::Cpu => "cpu",
        }
    }

    /// Whether its pods run on a GPU.
    pub fn has_gpu(self) -> bool {
        !matches!(self, Machine::Cpu)
    }

    /// The machine a node is taken to be when its spec says none: a CUDA
    /// device means a GPU server; `cpu` and `auto` mean a machine without
    /// a GPU (its pods then claim no GPU and fit any node).
    pub fn infer(device: DeviceChoice) -> Self {
        match device {
            DeviceChoice::Cuda(_) => Machine::GpuServer,
            DeviceChoice::Cpu | DeviceChoice::Auto => Machine::Cpu,
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Machine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gpu-server" => Ok(Machine::GpuServer),
            "jetson" => Ok(Machine::Jetson),
            "cpu" => Ok(Machine::Cpu),
            other => Err(format!(
                "unknown machine `{other}` (expected gpu-server, jetson or cpu)"
            )),
        }
    }
}

/// Synthetic source settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSource {
    /// Frame shape.
    pub shape: Shape,
    /// Frames to produce.
    pub frames: u64,
    /// Seed: frame `seq` is the same in every process for the same seed.
    pub seed: u64,
    /// Pace (frames per second), or as fast as the pipeline takes them.
    pub fps: Option<f64>,
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// Seeded random frames.
    Synthetic(SyntheticSource),
    /// Frames from `.npy` files.
    Npy {
        /// The file or files.
        input: crate::media::npy::NpyInput,
        /// Frame shape (from the files).
        shape: Shape,
        /// Frames to read.
        frames: u64,
    },
    /// Frames decoded from a video file.
    Video(crate::media::video::VideoInput),
    /// Frames captured from a camera.
    Camera(crate::media::video::CameraInput),
    /// Image files of a folder.
    Images(crate::media::video::ImagesInput),
}

impl SourceConfig {
    /// Shape of every frame.
    pub fn shape(&self) -> Shape {
        match self {
            SourceConfig::Synthetic(s) => s.shape,
            SourceConfig::Npy { shape, .. } => *shape,
            SourceConfig::Video(v) => v.shape,
            SourceConfig::Camera(c) => c.shape,
            SourceConfig::Images(i) => i.shape,
        }
    }

    /// Frames the source will produce.
    pub fn frames(&self) -> u64 {
        match self {
            SourceConfig::Synthetic(s) => s.frames,
            SourceConfig::Npy { frames, .. } => *frames,
            SourceConfig::Video(v) => v.frames,
            SourceConfig::Camera(c) => c.frames,
            SourceConfig::Images(i) => i.frames,
        }
    }
}

/// Where frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// Discard (timings still recorded).
    Null,
    /// Timings and a digest of every output.
    Stats,
    /// As `Stats`, and every output written to `.npy` files.
    Npy(crate::media::npy::NpyOutput),
    /// As `Stats`, and every output written to a video file.
    Video(crate::media::video::VideoOutput),
    /// As `Stats`, and every output written as a PNG file.
    Images(crate::media::video::ImagesOutput),
}

/// A resolved stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Unique id.
    pub id: String,
    /// The op with its weights.
    pub op: Op,
    /// `false`: this stage starts a new segment.
    pub fuse: bool,
    /// `true`: a metrics tap, never fused with its neighbours.
    pub tap: bool,
    /// Input shape.
    pub input: Shape,
    /// Output shape.
    pub output: Shape,
    /// `device: cuda`: the stage may only be placed on a node with a GPU.
    pub needs_gpu: bool,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Name (the key under `nodes:`).
    pub name: String,
    /// Letter in placement strings.
    pub letter: char,
    /// Device choice.
    pub device: DeviceChoice,
    /// Address its segment server listens on.
    pub address: Option<String>,
    /// Kubernetes node labels.
    pub labels: Vec<(String, String)>,
    /// What kind of machine it is (given, or inferred from `device`).
    pub machine: Machine,
    /// Its TLS files (its own `tls`, over the pipeline's); `None`: its
    /// segment servers and links are plaintext.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of one end of a mutual-TLS link. The files are read when
/// a server or client starts, and re-read when they change
/// ([`crate::transport::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Its certificate (chain, leaf first).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA certificate(s) every peer's certificate must be signed by.
    pub ca: PathBuf,
}

impl Node {
    /// Whether the node can run CUDA kernels: its device is not forced to
    /// `cpu` and its machine has a GPU.
    pub fn has_gpu(&self) -> bool {
        !matches!(self.device, DeviceChoice::Cpu) && self.machine.has_gpu()
    }
}

/// Why a placement puts a stage that needs a GPU (`device: cuda`) on a node
/// without one, or `None` when it does not. `placement` is by element
/// (source first), as [`Pipeline::placement`].
pub fn gpu_violation(
    stages: &[Stage],
    nodes: &[Node],
    placement: &[usize],
) -> Option<(usize, String)> {
    stages.iter().enumerate().find_map(|(i, st)| {
        let node = nodes.get(*placement.get(i + 1)?)?;
        (st.needs_gpu && !node.has_gpu()).then(|| {
            (
                i,
                format!(
                    "stage `{}` needs a GPU (`device: cuda`), but the placement puts it on node `{}`, which has none (device {}, machine {})",
                    st.id,
                    node.name,
                    node.device,
                    node.machine.name()
                ),
            )
        })
    })
}

/// A resolved, validated pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The source: stream 0 (the first of `sources:`), whose frame shape
    /// the stages' shapes and the plan are made for.
    pub source: SourceConfig,
    /// The other sources of `sources:`, streams 1, 2, ...: their frames
    /// interleave with stream 0's through the same stages (shapes may
    /// differ where every stage accepts them).
    pub extra_sources: Vec<SourceConfig>,
    /// Stages in order.
    pub stages: Vec<Stage>,
    /// Sink.
    pub sink: SinkConfig,
    /// Nodes (one implicit `local` node, letter `L`, when the spec has none).
    pub nodes: Vec<Node>,
    /// Node index of each element: `[source, stage 0, stage 1, ...]`.
    pub placement: Vec<usize>,
    /// Fusion mode.
    pub fusion: FusionMode,
    /// Weights files watched for new versions while frames flow
    /// (`weights: { npy: { path, watch: true } }`).
    pub watch: Vec<Watched>,
    /// The files stages read their weights and biases from, each once, in
    /// spec order.
    pub model_files: Vec<ModelFile>,
    /// Client identities allowed to make control calls on TLS servers
    /// (`tls.admins`).
    pub admins: Vec<String>,
}

/// A file a stage reads its weights or bias from, as the spec names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// Stage id.
    pub stage: String,
    /// The spec field naming it (`stages[0].weights.npy`).
    pub field: String,
    /// The path as the spec writes it: relative to the spec's directory,
    /// or absolute.
    pub written: String,
    /// The file on this machine.
    pub path: PathBuf,
    /// Watched for new versions while frames flow.
    pub watched: bool,
}

impl Pipeline {
    /// The placement as a letter string (`EESS`).
    pub fn placement_letters(&self) -> String {
        self.placement
            .iter()
            .map(|&n| self.nodes[n].letter)
            .collect()
    }

    /// Shape of the frames the sink receives.
    pub fn output_shape(&self) -> Shape {
        self.stages.last().map_or(self.source.shape(), |s| s.output)
    }

    /// Every source, in stream order.
    pub fn sources(&self) -> impl Iterator<Item = &SourceConfig> {
        std::iter::once(&self.source).chain(&self.extra_sources)
    }

    /// Frames all sources produce together.
    pub fn total_frames(&self) -> u64 {
        self.sources().map(SourceConfig::frames).sum()
    }

    /// The shape of each stream's frames as they enter stage `stage`
    /// (`stages.len()`: as they reach the sink), in stream order.
    pub fn stream_shapes(&self, stage: usize) -> Vec<Shape> {
        self.sources()
            .map(|src| {
                let mut shape = src.shape();
                for st in self.stages.iter().take(stage) {
                    // Checked when the spec was resolved; the planned shape
                    // where it would not fit.
                    shape = st.op.output_shape(shape).unwrap_or(st.output);
                }
                shape
            })
            .collect()
    }
}

/// Command-line overrides applied before validation.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--frames N`.
    pub frames: Option<u64>,
    /// `--size WxH`.
    pub size: Option<(usize, usize)>,
    /// `--placement XXXX`.
    pub placement: Option<String>,
    /// `--fusion MODE`.
    pub fusion: Option<FusionMode>,
}

/// Parses `WxH` (`1280x720`) or a single side (`512` for 512x512).
///
/// # Errors
/// A message naming the bad value.
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("bad size `{s}` (expected WxH like 1280x720, or one side like 512)");
    let (w, h) = match s.split_once(['x', 'X']) {
        Some((w, h)) => (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?),
        None => {
            let side = s.parse().map_err(|_| bad())?;
            (side, side)
        }
    };
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok((w, h))
}

/// Reads, resolves and validates the spec at `path`.
///
/// # Errors
/// [`SpecError`] naming the file, line, column and field of the first problem.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Pipeline, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError::Read {
        file: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse(&text, path, overrides)
}

/// Parses, resolves and validates spec text; `path` names it in errors and
/// anchors relative weight paths.
///
/// # Errors
/// [`SpecError`] naming the file, line, column and field of the first problem.
pub fn parse(text: &str, path: &Path, overrides: &Overrides) -> Result<Pipeline, SpecError> {
    let raw = parse_raw(text, path)?;
    resolve::resolve(raw, path, overrides)
}

fn parse_raw(text: &str, path: &Path) -> Result<raw::RawSpec, SpecError> {
    let mut field = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            // `Spanned` wrappers add a `value` step to the path: drop it.
            field = e
                .path()
                .to_string()
                .replace(".value[", "[")
                .replace(".value.", ".")
                .trim_end_matches(".value")
                .to_owned();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let e = e.without_snippet();
        let pos = e.location().map_or(Position { line: 0, column: 0 }, |l| {
            Position::from_location(&l)
        });
        let message = one_line(&e.to_string());
        let field = if field.is_empty() || field == "." {
            "(document)".to_owned()
        } else {
            field
        };
        SpecError::field(path, pos, field, message)
    })
}

/// The first line of a message, without a trailing location the error
/// already carries.
fn one_line(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].trim_end_matches(',').to_owned(),
        None => first.to_owned(),
    }
}

/// A weights file watched for changes (`weights: { npy: { path, watch: true } }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// Stage id.
    pub stage: String,
    /// The `.npy` file.
    pub path: PathBuf,
}
