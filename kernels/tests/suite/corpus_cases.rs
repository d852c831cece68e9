//! The shared golden corpus: reading its cases and checking an engine's
//! outputs against them.
//!
//! The corpus is one JSON file per topic in `kernels/testdata/` (format in
//! its `README.md`), written by `testdata/generate.py` from its own float64
//! implementations. Every engine runs it through this module: the CPU
//! backend at each SIMD level and a real GPU (this crate's suite,
//! `corpus.rs`), the CUDA emulator (`kernels/emu`'s suite, which includes
//! this file with `#[path]`).
#![allow(dead_code)] // each suite uses its part

use std::collections::BTreeSet;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;
use streamfuse_kernels::cuda::{codegen, params};
use streamfuse_kernels::{
    ChannelAffine, ColorOrder, Conv2d, Conv2dParams, EpilogueOp, FusedChain, Op, Pointwise, Pool2d,
    PoolKind, Shape, SobelMode, Step, Tensor, Vision, Window,
};

/// The topic files, embedded at build time: `(file name, text)`.
pub const FILES: [(&str, &str); 5] = [
    ("conv.json", include_str!("../../testdata/conv.json")),
    ("pool.json", include_str!("../../testdata/pool.json")),
    (
        "pointwise.json",
        include_str!("../../testdata/pointwise.json"),
    ),
    ("vision.json", include_str!("../../testdata/vision.json")),
    ("chains.json", include_str!("../../testdata/chains.json")),
];

/// One case, ready to run.
#[derive(Debug)]
pub struct Case {
    /// The topic file it comes from.
    pub file: &'static str,
    /// Its name (unique in the file).
    pub name: String,
    /// The op.
    pub op: Op,
    /// The input.
    pub input: Tensor,
    /// Shape of the expected output.
    pub shape: Shape,
    /// Expected values (`[C, H, W]`), as the generator computed them.
    pub expected: Vec<f64>,
    /// Largest allowed `|got - expected|`; 0: identical bits required.
    pub tolerance: f64,
}

/// Whether `a` and `b` have the same shape and bit-identical values.
pub fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.shape() == b.shape()
        && a.data()
            .iter()
            .zip(b.data())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Every case of every topic file, parsed once.
pub fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        FILES
            .iter()
            .flat_map(|&(file, text)| parse_file(file, text))
            .collect()
    })
}

/// A case an engine got wrong.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The case's topic file.
    pub file: &'static str,
    /// The case's name.
    pub case: String,
    /// The engine that ran it.
    pub engine: String,
    /// What was wrong (the worst element, an error, a shape).
    pub what: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: case `{}` on {}: {}",
            self.file, self.case, self.engine, self.what
        )
    }
}

/// Runs every case through `run` (an op on an input, as one engine runs
/// it) and returns the failures. A panic in `run` is a failure of its case.
pub fn run_all(
    engine: &str,
    mut run: impl FnMut(&Op, &Tensor) -> Result<Tensor, String>,
) -> Vec<Failure> {
    cases()
        .iter()
        .filter_map(|case| {
            let got = catch_unwind(AssertUnwindSafe(|| run(&case.op, &case.input)))
                .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&*p))));
            check(case, engine, got)
        })
        .collect()
}

/// Panics listing `failures`, if there are any.
pub fn assert_none(failures: &[Failure]) {
    assert!(
        failures.is_empty(),
        "{} corpus case run(s) failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".into())
}

/// `None` when `got` is the case's expected output, else what is wrong.
///
/// A value passes when the expected value is NaN and it is NaN; when the
/// tolerance is 0 and it has the bits of the expected value (as `f32`);
/// else when it is within the tolerance of it (or equal, for infinities).
pub fn check(case: &Case, engine: &str, got: Result<Tensor, String>) -> Option<Failure> {
    let fail = |what: String| {
        Some(Failure {
            file: case.file,
            case: case.name.clone(),
            engine: engine.to_owned(),
            what,
        })
    };
    let got = match got {
        Ok(t) => t,
        Err(e) => return fail(format!("the engine failed: {e}")),
    };
    if got.shape() != case.shape {
        return fail(format!(
            "output shape {} instead of {}",
            got.shape(),
            case.shape
        ));
    }
    let mut wrong = 0usize;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &want)) in got.data().iter().zip(&case.expected).enumerate() {
        let ok = if want.is_nan() {
            g.is_nan()
        } else if case.tolerance == 0.0 {
            g.to_bits() == (want as f32).to_bits()
        } else {
            f64::from(g) == want || (f64::from(g) - want).abs() <= case.tolerance
        };
        if !ok {
            wrong += 1;
            let err = (f64::from(g) - want).abs();
            let err = if err.is_nan() { f64::INFINITY } else { err };
            if worst.is_none_or(|(_, e)| err > e) {
                worst = Some((i, err));
            }
        }
    }
    let (i, err) = worst?;
    let Shape { h, w, .. } = case.shape;
    let (c, y, x) = (i / (h * w), i / w % h, i % w);
    let g = got.data()[i];
    fail(format!(
        "{wrong} of {} values wrong; worst at [{c}, {y}, {x}]: got {g:e} (bits {:#010x}), \
         expected {:e} (error {err:e}, tolerance {:e})",
        case.expected.len(),
        g.to_bits(),
        case.expected[i],
        case.tolerance
    ))
}

// ---------------------------------------------------------------------------
// Coverage

/// What the corpus must exercise: every op and variant of the op model, and
/// every kernel choice the backends make for them. [`features`] names them
/// with exhaustive matches, so a new op or variant does not compile until it
/// is named here too (and then needs cases).
pub const REQUIRED: &[&str] = &[
    "conv2d",
    "conv2d with bias",
    "conv2d without bias",
    "conv2d stride > 1",
    "conv2d padding > 0",
    "conv2d non-square kernel",
    "conv2d strides differ per axis",
    "conv2d dilation > 1",
    "conv2d padding differs per side",
    "conv2d groups",
    "conv2d depthwise",
    "conv2d depthwise with channel multiplier",
    "conv2d 1x1 output",
    "conv2d stride above the kernel",
    "conv2d output wider than one 128-column CPU tile",
    "conv2d output width not a multiple of 16 lanes",
    "conv2d output channels not a multiple of 4",
    "conv2d CUDA tiled kernel",
    "conv2d CUDA direct kernel",
    "conv2d CUDA depthwise kernel",
    "relu",
    "clip",
    "affine",
    "threshold",
    "leaky_relu",
    "batchnorm",
    "pointwise NaN input",
    "pointwise infinite input",
    "maxpool",
    "maxpool overlapping windows",
    "maxpool gapped windows",
    "maxpool padded",
    "maxpool ceil_mode",
    "maxpool dilated",
    "maxpool non-square window",
    "avgpool",
    "avgpool padded",
    "avgpool count_include_pad",
    "avgpool ceil_mode",
    "avgpool dilated",
    "global maxpool",
    "global avgpool",
    "gray rgb",
    "gray bgr",
    "normalize one mean and std",
    "normalize per-channel mean and std",
    "resize down",
    "resize up",
    "gaussian_blur table kernel",
    "gaussian_blur sigma kernel",
    "sobel dx",
    "sobel dy",
    "sobel magnitude",
    "fused conv producer",
    "fused load producer",
    "fused empty epilogue",
    "fused relu-only epilogue",
    "fused general epilogue",
    "fused batchnorm epilogue",
    "fused plain max pool",
    "fused other pool",
    "fused grouped conv producer",
    "fused dilated conv producer",
    "fused with pool",
    "fused without pool",
    "fused CUDA hand-written kernel",
    "fused CUDA generated kernel with conv",
    "fused CUDA generated kernel without conv",
    "fused CUDA member by member",
    "vision chain",
    "vision chain pointwise step",
    "vision chain gray step",
    "vision chain normalize step",
    "vision chain gaussian_blur step",
    "vision chain sobel step",
];

/// The features of `REQUIRED` no case exercises.
pub fn coverage_gaps() -> Vec<&'static str> {
    let mut seen = BTreeSet::new();
    for case in cases() {
        features(&case.op, case.input.shape(), &mut seen);
        let nan = case.input.data().iter().any(|v| v.is_nan());
        let inf = case.input.data().iter().any(|v| v.is_infinite());
        if matches!(case.op, Op::Pointwise(_)) {
            if nan {
                seen.insert("pointwise NaN input".into());
            }
            if inf {
                seen.insert("pointwise infinite input".into());
            }
        }
    }
    REQUIRED
        .iter()
        .copied()
        .filter(|f| !seen.contains(*f))
        .collect()
}

fn features(op: &Op, input: Shape, seen: &mut BTreeSet<String>) {
    let mut add = |s: &str| {
        seen.insert(s.to_owned());
    };
    match op {
        Op::Conv2d(c) => {
            let p = c.params;
            add("conv2d");
            add(if c.bias.is_some() {
                "conv2d with bias"
            } else {
                "conv2d without bias"
            });
            let w = p.window;
            if w.stride.iter().any(|&s| s > 1) {
                add("conv2d stride > 1");
            }
            if w.stride[0] != w.stride[1] {
                add("conv2d strides differ per axis");
            }
            if w.pads.iter().any(|&s| s > 0) {
                add("conv2d padding > 0");
            }
            if w.pads.iter().any(|&s| s != w.pads[0]) {
                add("conv2d padding differs per side");
            }
            if w.dilation.iter().any(|&d| d > 1) {
                add("conv2d dilation > 1");
            }
            if p.kernel_h() != p.kernel_w() {
                add("conv2d non-square kernel");
            }
            if p.groups > 1 {
                add("conv2d groups");
            }
            if p.depthwise() {
                add(if p.out_per_group() > 1 {
                    "conv2d depthwise with channel multiplier"
                } else {
                    "conv2d depthwise"
                });
            }
            if w.stride[0] > w.extent()[0] || w.stride[1] > w.extent()[1] {
                add("conv2d stride above the kernel");
            }
            if let Ok(out) = p.output_shape(input) {
                if out.h == 1 && out.w == 1 {
                    add("conv2d 1x1 output");
                }
                if out.w > 128 {
                    add("conv2d output wider than one 128-column CPU tile");
                }
                if out.w % 16 != 0 {
                    add("conv2d output width not a multiple of 16 lanes");
                }
            }
            if p.out_channels % 4 != 0 {
                add("conv2d output channels not a multiple of 4");
            }
            match params::conv(c, input).map(|(_, k, _)| k) {
                Ok(params::ConvKernel::Tiled) => add("conv2d CUDA tiled kernel"),
                Ok(params::ConvKernel::Direct) => add("conv2d CUDA direct kernel"),
                Ok(params::ConvKernel::Depthwise) => add("conv2d CUDA depthwise kernel"),
                Err(_) => {}
            }
        }
        Op::Pointwise(p) => add(pointwise_name(*p)),
        Op::ChannelAffine(_) => add("batchnorm"),
        Op::Pool(p) => {
            let w = p.window;
            let global = w.kernel == [input.h, input.w] && w.unpadded() && !p.ceil_mode;
            let name = match (p.kind, global) {
                (PoolKind::Max, true) => "global maxpool",
                (PoolKind::Avg { .. }, true) => "global avgpool",
                (PoolKind::Max, false) => "maxpool",
                (PoolKind::Avg { .. }, false) => "avgpool",
            };
            add(name);
            let base = p.name();
            if p.kind == PoolKind::Max && w.kernel[0] > w.stride[0] {
                add("maxpool overlapping windows");
            }
            if p.kind == PoolKind::Max && w.stride[0] > w.kernel[0] {
                add("maxpool gapped windows");
            }
            if !w.unpadded() {
                add(&format!("{base} padded"));
            }
            if p.ceil_mode {
                add(&format!("{base} ceil_mode"));
            }
            if w.dilation != [1, 1] {
                add(&format!("{base} dilated"));
            }
            if w.kernel[0] != w.kernel[1] {
                add(&format!("{base} non-square window"));
            }
            if p.kind
                == (PoolKind::Avg {
                    count_include_pad: true,
                })
            {
                add("avgpool count_include_pad");
            }
        }
        Op::Fused(f) => {
            add(if f.conv.is_some() {
                "fused conv producer"
            } else {
                "fused load producer"
            });
            add(match f.relu_only() {
                Some(false) => "fused empty epilogue",
                Some(true) => "fused relu-only epilogue",
                None => "fused general epilogue",
            });
            add(if f.pool.is_some() {
                "fused with pool"
            } else {
                "fused without pool"
            });
            if let Some(p) = &f.pool {
                add(if p.is_simple_max() {
                    "fused plain max pool"
                } else {
                    "fused other pool"
                });
            }
            if f.epilogue
                .iter()
                .any(|e| matches!(e, EpilogueOp::Channel(_)))
            {
                add("fused batchnorm epilogue");
            }
            if let Some(c) = &f.conv {
                if c.params.groups > 1 {
                    add("fused grouped conv producer");
                }
                if c.params.window.dilation != [1, 1] {
                    add("fused dilated conv producer");
                }
            }
            let hand = params::fused(f, input).is_ok_and(|p| p.is_some());
            let generated = codegen::plan(f, input).is_ok_and(|p| p.is_some());
            add(match (hand, generated, f.conv.is_some()) {
                (true, _, _) => "fused CUDA hand-written kernel",
                (false, true, true) => "fused CUDA generated kernel with conv",
                (false, true, false) => "fused CUDA generated kernel without conv",
                (false, false, _) => "fused CUDA member by member",
            });
        }
        Op::Vision(Vision::Resize { width, height }) => {
            if *width < input.w || *height < input.h {
                add("resize down");
            }
            if *width > input.w || *height > input.h {
                add("resize up");
            }
        }
        Op::Vision(v) => add(vision_name(v)),
        Op::VisionChain(steps) => {
            add("vision chain");
            for s in steps {
                add(&format!("vision chain {} step", step_kind(s)));
            }
        }
    }
}

fn pointwise_name(p: Pointwise) -> &'static str {
    match p {
        Pointwise::Relu => "relu",
        Pointwise::Clip { .. } => "clip",
        Pointwise::Affine { .. } => "affine",
        Pointwise::Threshold { .. } => "threshold",
        Pointwise::LeakyRelu { .. } => "leaky_relu",
    }
}

fn vision_name(v: &Vision) -> &'static str {
    match v {
        Vision::Gray { order } => match order {
            ColorOrder::Rgb => "gray rgb",
            ColorOrder::Bgr => "gray bgr",
        },
        Vision::Normalize { mean, std, .. } => {
            if mean.len() == 1 && std.len() == 1 {
                "normalize one mean and std"
            } else {
                "normalize per-channel mean and std"
            }
        }
        Vision::Resize { .. } => "resize",
        Vision::GaussianBlur { ksize, sigma } => {
            if *ksize <= 7 && *sigma <= 0.0 {
                "gaussian_blur table kernel"
            } else {
                "gaussian_blur sigma kernel"
            }
        }
        Vision::Sobel { mode } => match mode {
            SobelMode::Dx => "sobel dx",
            SobelMode::Dy => "sobel dy",
            SobelMode::Magnitude => "sobel magnitude",
        },
    }
}

fn step_kind(s: &Step) -> &'static str {
    match s {
        Step::Pointwise(_) => "pointwise",
        Step::Vision(v) => v.name(),
    }
}

// ---------------------------------------------------------------------------
// Reading the files

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    topic: String,
    about: String,
    generator: String,
    cases: Vec<CaseSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    op: OpSpec,
    input: TensorSpec,
    expected: TensorSpec,
    tolerance: f64,
}

/// Values stored in the file, or a seed to expand (`fill`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorSpec {
    shape: Vec<usize>,
    #[serde(default)]
    values: Option<Value>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    fill: Option<Fill>,
    #[serde(default)]
    bound: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Fill {
    Uniform,
    Pixels,
}

/// A number, or `"nan"`, `"inf"`, `"-inf"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Num {
    Number(f64),
    Special(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvSpec {
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
    weights: TensorSpec,
    bias: Option<TensorSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PoolKindSpec {
    Max,
    Avg,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSpec {
    kind: PoolKindSpec,
    #[serde(default)]
    kernel: Option<[usize; 2]>,
    #[serde(default)]
    stride: Option<[usize; 2]>,
    #[serde(default)]
    padding: Option<[usize; 4]>,
    #[serde(default)]
    dilation: Option<[usize; 2]>,
    #[serde(default)]
    ceil_mode: bool,
    #[serde(default)]
    count_include_pad: bool,
    #[serde(default)]
    global: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OrderSpec {
    Rgb,
    Bgr,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum ModeSpec {
    Dx,
    Dy,
    Magnitude,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum OpSpec {
    Conv2d(ConvSpec),
    Relu,
    Clip {
        min: Num,
        max: Num,
    },
    Affine {
        scale: Num,
        shift: Num,
    },
    Threshold {
        threshold: Num,
        value: Num,
    },
    LeakyRelu {
        alpha: Num,
    },
    Batchnorm {
        scale: Vec<Num>,
        shift: Vec<Num>,
    },
    Pool(PoolSpec),
    Fused {
        conv: Option<ConvSpec>,
        epilogue: Vec<OpSpec>,
        pool: Option<PoolSpec>,
    },
    Gray {
        order: OrderSpec,
    },
    Normalize {
        scale: Num,
        mean: Vec<Num>,
        std: Vec<Num>,
    },
    Resize {
        width: usize,
        height: usize,
    },
    GaussianBlur {
        ksize: usize,
        sigma: Num,
    },
    Sobel {
        mode: ModeSpec,
    },
    VisionChain(Vec<OpSpec>),
}

/// Where a case is, for messages about malformed data.
struct At<'a> {
    file: &'a str,
    case: &'a str,
}

impl At<'_> {
    fn bad(&self, what: impl fmt::Display) -> ! {
        panic!("{}: case `{}`: {what}", self.file, self.case)
    }
}

fn parse_file(file: &'static str, text: &str) -> Vec<Case> {
    let spec: FileSpec =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{file}: not a corpus file: {e}"));
    assert_eq!(
        format!("{}.json", spec.topic),
        file,
        "{file}: topic `{}` does not match the file name",
        spec.topic
    );
    assert!(
        !spec.about.is_empty() && spec.generator.ends_with("generate.py"),
        "{file}: no description or generator"
    );
    let mut names = BTreeSet::new();
    spec.cases
        .into_iter()
        .map(|c| {
            let at = At {
                file,
                case: &c.name,
            };
            if !names.insert(c.name.clone()) {
                at.bad("duplicate case name");
            }
            let shape = shape3(&at, &c.input.shape);
            let op = op_of(&at, &c.op, shape);
            let input =
                Tensor::from_vec(shape, tensor_values(&at, &c.input)).unwrap_or_else(|e| at.bad(e));
            let out = shape3(&at, &c.expected.shape);
            if c.expected.values.is_none() {
                at.bad("expected values must be stored, not seeded");
            }
            let expected = values_f64(&at, &c.expected);
            if !(c.tolerance >= 0.0 && c.tolerance.is_finite()) {
                at.bad(format!("tolerance {}", c.tolerance));
            }
            Case {
                file,
                name: c.name.clone(),
                op,
                input,
                shape: out,
                expected,
                tolerance: c.tolerance,
            }
        })
        .collect()
}

fn shape3(at: &At<'_>, s: &[usize]) -> Shape {
    match *s {
        [c, h, w] => Shape::new(c, h, w),
        _ => at.bad(format!("shape {s:?} is not [C, H, W]")),
    }
}

impl Num {
    fn f64(&self, at: &At<'_>) -> f64 {
        match self {
            Num::Number(v) => *v,
            Num::Special(s) => match s.as_str() {
                "nan" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                other => at.bad(format!("`{other}` is not a number")),
            },
        }
    }

    /// The `f32` nearest the value (parameters are `f32` values written
    /// with the fewest digits that read back as them).
    fn f32(&self, at: &At<'_>) -> f32 {
        self.f64(at) as f32
    }
}

/// SplitMix64's finaliser (the corpus's own definition, see README.md).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Value `i` of a seeded tensor.
fn filled(seed: u64, i: u64, fill: Fill, bound: f64) -> f64 {
    let h = mix64(seed.wrapping_add((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    match fill {
        Fill::Uniform => ((h >> 40) as f64 - 8_388_608.0) / 8_388_608.0 * bound,
        Fill::Pixels => (h >> 56) as f64,
    }
}

fn values_f64(at: &At<'_>, t: &TensorSpec) -> Vec<f64> {
    let n: usize = t.shape.iter().product();
    match (&t.values, t.seed, t.fill) {
        (Some(v), None, None) => {
            let mut out = Vec::with_capacity(n);
            flatten(at, v, &t.shape, &mut out);
            out
        }
        (None, Some(seed), Some(fill)) => {
            let bound = match (fill, t.bound) {
                (Fill::Uniform, Some(b)) if b > 0.0 && b.log2().fract() == 0.0 => b,
                (Fill::Pixels, None) => 1.0,
                _ => at.bad(format!("fill {fill:?} with bound {:?}", t.bound)),
            };
            (0..n as u64)
                .map(|i| filled(seed, i, fill, bound))
                .collect()
        }
        _ => at.bad("a tensor needs `values`, or `seed` and `fill`"),
    }
}

/// Stored or seeded values as `f32`: the `f32` nearest each stored number
/// (written with the fewest digits that read back as the intended `f32`);
/// seeded values are `f32` values already.
fn tensor_values(at: &At<'_>, t: &TensorSpec) -> Vec<f32> {
    values_f64(at, t).into_iter().map(|v| v as f32).collect()
}

/// Nested arrays of `shape` (innermost: the last axis) into `out`.
fn flatten(at: &At<'_>, v: &Value, shape: &[usize], out: &mut Vec<f64>) {
    let Some((&n, rest)) = shape.split_first() else {
        let x = match v {
            Value::Number(x) => x.as_f64(),
            Value::String(s) => Some(Num::Special(s.clone()).f64(at)),
            _ => None,
        };
        out.push(x.unwrap_or_else(|| at.bad(format!("`{v}` is not a number"))));
        return;
    };
    match v {
        Value::Array(items) if items.len() == n => {
            for item in items {
                flatten(at, item, rest, out);
            }
        }
        _ => at.bad(format!(
            "values do not have the shape's {n} entries along an axis"
        )),
    }
}

fn conv_of(at: &At<'_>, c: &ConvSpec) -> Conv2d {
    let params = Conv2dParams {
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        groups: c.groups,
        window: Window {
            kernel: c.kernel,
            stride: c.stride,
            dilation: c.dilation,
            pads: c.padding,
        },
    };
    let expect = [
        c.out_channels,
        c.in_channels / c.groups.max(1),
        c.kernel[0],
        c.kernel[1],
    ];
    if c.weights.shape != expect {
        at.bad(format!(
            "weights shape {:?}, expected {expect:?}",
            c.weights.shape
        ));
    }
    let weights = tensor_values(at, &c.weights);
    let bias = c.bias.as_ref().map(|b| {
        if b.shape != [c.out_channels] {
            at.bad(format!("bias shape {:?}", b.shape));
        }
        tensor_values(at, b)
    });
    Conv2d::new(params, weights, bias).unwrap_or_else(|e| at.bad(e))
}

/// The pool of `p` for an input of `input` (a global pool's window is
/// the input's size).
fn pool_of(at: &At<'_>, p: &PoolSpec, input: Shape) -> Pool2d {
    let kind = match p.kind {
        PoolKindSpec::Max => PoolKind::Max,
        PoolKindSpec::Avg => PoolKind::Avg {
            count_include_pad: p.count_include_pad,
        },
    };
    if p.global {
        return Pool2d::global(kind, input.h, input.w);
    }
    let Some(kernel) = p.kernel else {
        at.bad("a pool needs `kernel` unless it is global")
    };
    Pool2d {
        kind,
        window: Window {
            kernel,
            stride: p.stride.unwrap_or(kernel),
            dilation: p.dilation.unwrap_or([1, 1]),
            pads: p.padding.unwrap_or([0; 4]),
        },
        ceil_mode: p.ceil_mode,
    }
}

/// The op of `op` for an input of `input`.
fn op_of(at: &At<'_>, op: &OpSpec, input: Shape) -> Op {
    match op {
        OpSpec::Conv2d(c) => Op::Conv2d(conv_of(at, c)),
        OpSpec::Pool(p) => Op::Pool(pool_of(at, p, input)),
        OpSpec::Fused {
            conv,
            epilogue,
            pool,
        } => {
            let conv = conv.as_ref().map(|c| conv_of(at, c));
            let mid = match &conv {
                Some(c) => c.params.output_shape(input).unwrap_or_else(|e| at.bad(e)),
                None => input,
            };
            Op::Fused(FusedChain {
                conv,
                epilogue: epilogue
                    .iter()
                    .map(|p| {
                        op_of(at, p, mid).epilogue().unwrap_or_else(|| {
                            at.bad("a fused epilogue holds pointwise ops and batchnorms only")
                        })
                    })
                    .collect(),
                pool: pool.as_ref().map(|p| pool_of(at, p, mid)),
            })
        }
        OpSpec::VisionChain(steps) => Op::VisionChain(
            steps
                .iter()
                .map(|s| match op_of(at, s, input) {
                    Op::Pointwise(p) => Step::Pointwise(p),
                    Op::Vision(v) => Step::Vision(v),
                    _ => at.bad("a vision chain holds vision and pointwise ops only"),
                })
                .collect(),
        ),
        OpSpec::Relu => Op::Pointwise(Pointwise::Relu),
        OpSpec::Clip { min, max } => Op::Pointwise(Pointwise::Clip {
            min: min.f32(at),
            max: max.f32(at),
        }),
        OpSpec::Affine { scale, shift } => Op::Pointwise(Pointwise::Affine {
            scale: scale.f32(at),
            shift: shift.f32(at),
        }),
        OpSpec::Threshold { threshold, value } => Op::Pointwise(Pointwise::Threshold {
            threshold: threshold.f32(at),
            value: value.f32(at),
        }),
        OpSpec::LeakyRelu { alpha } => Op::Pointwise(Pointwise::LeakyRelu {
            alpha: alpha.f32(at),
        }),
        OpSpec::Batchnorm { scale, shift } => Op::ChannelAffine(
            ChannelAffine::new(
                scale.iter().map(|v| v.f32(at)).collect(),
                shift.iter().map(|v| v.f32(at)).collect(),
            )
            .unwrap_or_else(|e| at.bad(e)),
        ),
        OpSpec::Gray { order } => Op::Vision(Vision::Gray {
            order: match order {
                OrderSpec::Rgb => ColorOrder::Rgb,
                OrderSpec::Bgr => ColorOrder::Bgr,
            },
        }),
        OpSpec::Normalize { scale, mean, std } => Op::Vision(Vision::Normalize {
            scale: scale.f32(at),
            mean: mean.iter().map(|m| m.f32(at)).collect(),
            std: std.iter().map(|s| s.f32(at)).collect(),
        }),
        OpSpec::Resize { width, height } => Op::Vision(Vision::Resize {
            width: *width,
            height: *height,
        }),
        OpSpec::GaussianBlur { ksize, sigma } => Op::Vision(Vision::GaussianBlur {
            ksize: *ksize,
            sigma: sigma.f32(at),
        }),
        OpSpec::Sobel { mode } => Op::Vision(Vision::Sobel {
            mode: match mode {
                ModeSpec::Dx => SobelMode::Dx,
                ModeSpec::Dy => SobelMode::Dy,
                ModeSpec::Magnitude => SobelMode::Magnitude,
            },
        }),
    }
}
