//! The spec as written: serde types that mirror the YAML one to one.
//! Unknown fields are errors everywhere; values that later checks point at
//! are wrapped in [`Spanned`] so the error can name their line and column.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    /// Pipeline name.
    pub name: Spanned<String>,
    /// Where frames come from: one source ...
    #[serde(default)]
    pub source: Option<Spanned<RawSource>>,
    /// ... or several, each its own stream (stream id = position).
    #[serde(default)]
    pub sources: Option<Spanned<Vec<Spanned<RawSource>>>>,
    /// Processing stages, in order.
    pub stages: Spanned<Vec<RawStage>>,
    /// Where frames go.
    pub sink: RawSink,
    /// Nodes by name, in declaration order.
    #[serde(default)]
    pub nodes: IndexMap<String, RawNode>,
    /// Which node runs each element.
    #[serde(default)]
    pub placement: Option<Spanned<RawPlacement>>,
    /// Fusion mode.
    #[serde(default)]
    pub fusion: Option<crate::spec::FusionMode>,
    /// Mutual TLS between segments: the default of every node, and who
    /// may make control calls.
    #[serde(default)]
    pub tls: Option<Spanned<RawTls>>,
}

/// `tls:` of the pipeline: certificate files every node uses unless it
/// gives its own, and the control calls' `admins`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate (chain) of the node.
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    /// PEM private key of the node.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// PEM CA certificate(s) that sign every peer's certificate.
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    /// Client identities (certificate CN, DNS or URI SAN) allowed to make
    /// control calls (`UpdateWeights`, `Probe`).
    #[serde(default)]
    pub admins: Vec<Spanned<String>>,
}

/// `tls:` of a node: its own files, each overriding the pipeline's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeTls {
    /// PEM certificate (chain) of the node.
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    /// PEM private key of the node.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// PEM CA certificate(s) that sign every peer's certificate.
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
}

/// A frame source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawSource {
    /// Seeded random frames.
    Synthetic(RawSynthetic),
    /// Frames from `.npy` files.
    Npy(RawNpySource),
    /// Frames decoded from a video file (OpenCV `VideoCapture`).
    Video(RawVideoSource),
    /// Frames captured from a V4L2 camera (OpenCV `VideoCapture`).
    Camera(RawCameraSource),
    /// Image files of a folder, in name order (OpenCV `imgcodecs`).
    Images(RawImagesSource),
}

/// `source: { video: { path: in.mkv, frames: N } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVideoSource {
    /// The file (relative to the spec).
    pub path: Spanned<String>,
    /// Frames to read (default: all).
    #[serde(default)]
    pub frames: Option<Spanned<u64>>,
}

/// `source: { camera: { index: 0, width: 1280, height: 720, frames: N } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCameraSource {
    /// V4L2 device index (`/dev/video<index>`).
    pub index: Spanned<u32>,
    /// Frame width to ask of the device (with `height`).
    #[serde(default)]
    pub width: Option<Spanned<usize>>,
    /// Frame height to ask of the device (with `width`).
    #[serde(default)]
    pub height: Option<Spanned<usize>>,
    /// Frames to capture.
    pub frames: Spanned<u64>,
}

/// `source: { images: { dir: frames/, pattern: "*.png", frames: N } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImagesSource {
    /// The folder (relative to the spec).
    pub dir: Spanned<String>,
    /// File-name glob (`*`, `?`); default: common image extensions.
    #[serde(default)]
    pub pattern: Option<Spanned<String>>,
    /// Frames to read (default: every matching file).
    #[serde(default)]
    pub frames: Option<Spanned<u64>>,
}

/// `sink: { video: { path: out.mkv, fourcc: FFV1, fps: 30, scale: 255 } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVideoSink {
    /// The file (relative to the spec).
    pub path: Spanned<String>,
    /// Four-character codec code.
    pub fourcc: Spanned<String>,
    /// Frame rate of the file (default: the video source's, else 30).
    #[serde(default)]
    pub fps: Option<Spanned<f64>>,
    /// Factor before rounding values to 8 bits (default 255).
    #[serde(default)]
    pub scale: Option<Spanned<f64>>,
}

/// `sink: { images: { dir: out/, scale: 255 } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImagesSink {
    /// The folder (relative to the spec; created when missing).
    pub dir: Spanned<String>,
    /// Factor before rounding values to 8 bits (default 255).
    #[serde(default)]
    pub scale: Option<Spanned<f64>>,
}

/// `source: { npy: { path: frames.npy } }` or `{ npy: { dir: frames/ } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNpySource {
    /// A stacked `[N, C, H, W]` (or `[C, H, W]`) file.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// A folder of `[C, H, W]` files, read in name order.
    #[serde(default)]
    pub dir: Option<Spanned<String>>,
    /// Frames to read (default: all).
    #[serde(default)]
    pub frames: Option<Spanned<u64>>,
}

/// `sink: { npy: { path: out.npy } }` or `{ npy: { dir: out/ } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNpySink {
    /// One stacked `[N, C, H, W]` float32 file.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// `<stream>-<seq>.npy` per frame.
    #[serde(default)]
    pub dir: Option<Spanned<String>>,
}

/// `source: { synthetic: { ... } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSynthetic {
    /// Frame width.
    pub width: Spanned<usize>,
    /// Frame height.
    pub height: Spanned<usize>,
    /// Channels.
    #[serde(default = "one")]
    pub channels: Spanned<usize>,
    /// Frames to produce.
    #[serde(default = "default_frames")]
    pub frames: u64,
    /// Seed.
    #[serde(default)]
    pub seed: u64,
    /// Frames per second to pace at (unpaced when absent).
    #[serde(default)]
    pub fps: Option<Spanned<f64>>,
}

fn one() -> Spanned<usize> {
    Spanned::new(
        1,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn default_frames() -> u64 {
    1000
}

/// A sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawSink {
    /// Discard frames (timings still recorded).
    Null(Empty),
    /// Record timings and a digest of every output.
    Stats(Empty),
    /// Write every output to `.npy` files (timings and digest recorded too).
    Npy(RawNpySink),
    /// Write every output to a video file (timings and digest recorded too).
    Video(RawVideoSink),
    /// Write every output as a PNG file (timings and digest recorded too).
    Images(RawImagesSink),
}

/// A map that must be empty: `{}`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// One upper-case letter used in placement strings.
    pub letter: Spanned<String>,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default)]
    pub device: Option<Spanned<String>>,
    /// Address its segment server listens on.
    #[serde(default)]
    pub address: Option<String>,
    /// Kubernetes node labels that select it.
    #[serde(default)]
    pub labels: IndexMap<String, String>,
    /// What kind of machine it is (`gpu-server`, `jetson`, `cpu`): picks the
    /// container image and GPU runtime in generated manifests. Inferred
    /// from `device` when absent.
    #[serde(default)]
    pub machine: Option<Spanned<String>>,
    /// Its TLS files (over the pipeline's `tls`).
    #[serde(default)]
    pub tls: Option<Spanned<RawNodeTls>>,
}

/// `placement: EESS` or `placement: { conv: edge, relu: server }`.
#[derive(Debug)]
pub enum RawPlacement {
    /// One letter per element: the source, then each stage.
    Letters(String),
    /// Element id (`source` or a stage id) to node name.
    Map(IndexMap<String, String>),
}

impl<'de> Deserialize<'de> for RawPlacement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawPlacement;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a string of node letters (like EESS) or a map of element id to node name",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPlacement, E> {
                Ok(RawPlacement::Letters(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<RawPlacement, A::Error> {
                let mut out = IndexMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    if out.insert(k.clone(), v).is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "element `{k}` placed twice"
                        )));
                    }
                }
                Ok(RawPlacement::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A stage as written. Which fields are allowed depends on `op`; that is
/// checked when the stage is resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    /// Unique id.
    pub id: Spanned<String>,
    /// Op kind.
    pub op: Spanned<String>,
    /// `false` starts a new segment at this stage.
    #[serde(default)]
    pub fuse: Option<bool>,
    /// conv2d, maxpool, avgpool: kernel (`3` or `[kh, kw]`);
    /// gaussian_blur: kernel side.
    #[serde(default)]
    pub kernel: Option<Spanned<RawDims>>,
    /// conv2d, maxpool, avgpool: stride (`2` or `[sh, sw]`).
    #[serde(default)]
    pub stride: Option<Spanned<RawDims>>,
    /// conv2d, maxpool, avgpool: zero padding: `1` (every side), `[h, w]`,
    /// `[top, left, bottom, right]` (ONNX `pads` order), `same` (ONNX
    /// `SAME_UPPER`), `same_lower` or `valid`.
    #[serde(default)]
    pub padding: Option<Spanned<RawDims>>,
    /// conv2d, maxpool, avgpool: dilation (`2` or `[dh, dw]`).
    #[serde(default)]
    pub dilation: Option<Spanned<RawDims>>,
    /// conv2d: channel groups (default 1; `in_channels` for depthwise).
    #[serde(default)]
    pub groups: Option<Spanned<usize>>,
    /// conv2d: the CPU algorithm, `auto` (default: the cost model picks),
    /// `rows`, `panel` or `depthwise`. Every choice gives the same values;
    /// only the speed differs.
    #[serde(default)]
    pub algorithm: Option<Spanned<String>>,
    /// conv2d: the arithmetic a backend may use, `f32` (default) or `f16`
    /// (CUDA tensor cores for layers the implicit GEMM takes; the CPU
    /// computes f32 either way).
    #[serde(default)]
    pub precision: Option<Spanned<String>>,
    /// maxpool, avgpool: round partial windows up (default false).
    #[serde(default)]
    pub ceil_mode: Option<Spanned<bool>>,
    /// avgpool: divide by the taps in the padded input (default false).
    #[serde(default)]
    pub count_include_pad: Option<Spanned<bool>>,
    /// leaky_relu: slope below zero (default 0.01).
    #[serde(default)]
    pub alpha: Option<Spanned<f64>>,
    /// batchnorm: running variance per channel.
    #[serde(default)]
    pub var: Option<Spanned<Vec<f64>>>,
    /// batchnorm: added to the variance (default 1e-5).
    #[serde(default)]
    pub epsilon: Option<Spanned<f64>>,
    /// conv2d: input channels (inferred when absent; checked when given).
    #[serde(default)]
    pub in_channels: Option<Spanned<usize>>,
    /// conv2d: output channels.
    #[serde(default)]
    pub out_channels: Option<Spanned<usize>>,
    /// conv2d: bias (`true` for seeded random, or a file).
    #[serde(default)]
    pub bias: Option<Spanned<RawBias>>,
    /// conv2d: weights; batchnorm: its tensors in an ONNX model.
    #[serde(default)]
    pub weights: Option<Spanned<RawWeights>>,
    /// maxpool: window side (the same as a square `kernel`).
    #[serde(default)]
    pub size: Option<Spanned<usize>>,
    /// clip: lower bound (default: no bound).
    #[serde(default)]
    pub min: Option<Spanned<f64>>,
    /// clip: upper bound (default: no bound).
    #[serde(default)]
    pub max: Option<Spanned<f64>>,
    /// affine: factor (default 1); batchnorm: gamma per channel.
    #[serde(default)]
    pub scale: Option<Spanned<RawNumbers>>,
    /// affine: offset (default 0); batchnorm: beta per channel.
    #[serde(default)]
    pub shift: Option<Spanned<RawNumbers>>,
    /// threshold: level.
    #[serde(default)]
    pub threshold: Option<Spanned<f64>>,
    /// threshold: value above the level (default 1).
    #[serde(default)]
    pub value: Option<Spanned<f64>>,
    /// gray: order of the colour planes (`rgb` or `bgr`, default `bgr`).
    #[serde(default)]
    pub order: Option<Spanned<String>>,
    /// normalize: per-channel mean (one value for all channels);
    /// batchnorm: running mean per channel.
    #[serde(default)]
    pub mean: Option<Spanned<Vec<f64>>>,
    /// normalize: per-channel standard deviation (one value for all).
    #[serde(default)]
    pub std: Option<Spanned<Vec<f64>>>,
    /// resize: output width.
    #[serde(default)]
    pub width: Option<Spanned<usize>>,
    /// resize: output height.
    #[serde(default)]
    pub height: Option<Spanned<usize>>,
    /// gaussian_blur: standard deviation (default 0: from the kernel size).
    #[serde(default)]
    pub sigma: Option<Spanned<f64>>,
    /// sobel: `dx`, `dy` or `magnitude` (default `magnitude`).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// `true`: the stage's output is observed on its own (its compute time
    /// is reported), so it is never fused with its neighbours.
    #[serde(default)]
    pub tap: Option<bool>,
    /// `cuda`: the stage must run on a node with a GPU (any op).
    #[serde(default)]
    pub device: Option<Spanned<String>>,
}

/// Where a conv's weights come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawWeights {
    /// Seeded uniform values in `±1/sqrt(fan_in)` (PyTorch's default init).
    Random(RawRandom),
    /// A `.npy` file of shape `[out, in, k, k]` (path relative to the spec):
    /// `npy: w.npy`, or `npy: { path: w.npy, watch: true }` to swap in each
    /// new version of the file while frames flow.
    Npy(RawNpyWeights),
    /// A tensor of a safetensors file (f32 or f16), and optionally the bias.
    Safetensors(RawTensorRef),
    /// An initializer of an ONNX model, and optionally the bias.
    Onnx(RawOnnxRef),
}

/// `{ path, tensor, bias }` of a safetensors file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTensorRef {
    /// File (relative to the spec).
    pub path: String,
    /// Weight tensor name.
    pub tensor: String,
    /// Bias tensor name.
    #[serde(default)]
    pub bias: Option<String>,
}

/// `{ path, initializer, bias }` of an ONNX model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnnxRef {
    /// Model file (relative to the spec).
    pub path: String,
    /// Weight initializer name (conv2d; a batchnorm names its tensors in
    /// `batchnorm`).
    #[serde(default)]
    pub initializer: Option<String>,
    /// Bias initializer name.
    #[serde(default)]
    pub bias: Option<String>,
    /// A BatchNormalization after the conv, folded into its weights and bias.
    #[serde(default)]
    pub batchnorm: Option<RawBatchNorm>,
}

/// Initializer names of a BatchNormalization to fold into the conv:
/// `w' = w * scale / sqrt(var + epsilon)`, `b' = (b - mean) * scale /
/// sqrt(var + epsilon) + bias`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatchNorm {
    /// Scale (gamma).
    pub scale: String,
    /// Bias (beta).
    pub bias: String,
    /// Running mean.
    pub mean: String,
    /// Running variance.
    pub var: String,
    /// Epsilon.
    #[serde(default = "default_epsilon")]
    pub epsilon: f32,
}

fn default_epsilon() -> f32 {
    1e-5
}

/// `{ seed: N }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRandom {
    /// Seed.
    #[serde(default)]
    pub seed: u64,
}

/// A conv's bias.
#[derive(Debug)]
pub enum RawBias {
    /// `true`: seeded random (needs random weights); `false`: no bias.
    Flag(bool),
    /// `{ npy: path }`: a `.npy` file of shape `[out]`.
    File(RawNpyRef),
}

impl<'de> Deserialize<'de> for RawBias {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawBias;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or { npy: path }")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawBias, E> {
                Ok(RawBias::Flag(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawBias, A::Error> {
                RawNpyRef::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(RawBias::File)
            }
        }
        d.deserialize_any(V)
    }
}

/// `{ npy: path }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNpyRef {
    /// Path relative to the spec.
    pub npy: String,
}

/// A conv's `.npy` weights file: `w.npy` or `{ path: w.npy, watch: true }`.
#[derive(Debug)]
pub struct RawNpyWeights {
    /// Path relative to the spec.
    pub path: String,
    /// Swap in each new version of the file while frames flow.
    pub watch: bool,
}

/// `{ path, watch }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNpyWeightsMap {
    path: String,
    #[serde(default)]
    watch: bool,
}

impl<'de> Deserialize<'de> for RawNpyWeights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawNpyWeights;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path, or { path, watch }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawNpyWeights, E> {
                Ok(RawNpyWeights {
                    path: v.to_owned(),
                    watch: false,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<RawNpyWeights, A::Error> {
                RawNpyWeightsMap::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(
                    |r| RawNpyWeights {
                        path: r.path,
                        watch: r.watch,
                    },
                )
            }
        }
        d.deserialize_any(V)
    }
}

/// Sizes per axis or side: `3`, `[3, 2]`, `[1, 1, 0, 0]`, or a word
/// (`same`, `same_lower`, `valid` for padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawDims {
    /// One value for every axis or side.
    One(usize),
    /// One value per axis, or per side.
    Many(Vec<usize>),
    /// A word.
    Word(String),
}

impl<'de> Deserialize<'de> for RawDims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawDims;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number, a list of whole numbers, or a word")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDims, E> {
                usize::try_from(v)
                    .map(RawDims::One)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDims, E> {
                usize::try_from(v)
                    .map(RawDims::One)
                    .map_err(|_| E::custom(format!("{v} must not be negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDims, E> {
                Ok(RawDims::Word(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<RawDims, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element::<usize>()? {
                    v.push(x);
                }
                Ok(RawDims::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One number or a list of numbers (one per channel).
#[derive(Debug, Clone, PartialEq)]
pub enum RawNumbers {
    /// One value.
    One(f64),
    /// One value per channel.
    Many(Vec<f64>),
}

impl<'de> Deserialize<'de> for RawNumbers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawNumbers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number or a list of numbers")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawNumbers, E> {
                Ok(RawNumbers::One(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawNumbers, E> {
                Ok(RawNumbers::One(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawNumbers, E> {
                Ok(RawNumbers::One(v as f64))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<RawNumbers, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element::<f64>()? {
                    v.push(x);
                }
                Ok(RawNumbers::Many(v))
            }
        }
        d.deserialize_any(V)
    }
}
