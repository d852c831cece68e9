//! Loading and checking the shared golden corpus (`testdata/corpus.json`,
//! written by `testdata/generate.py` from its own float64 implementations).
//! Used by every backend's corpus test (CPU levels, emulated CUDA, CUDA).
#![allow(dead_code)]

use serde::Deserialize;
use streamfuse_kernels::{Conv2d, Conv2dParams, FusedChain, MaxPoolParams, Op, Shape, Tensor};

#[derive(Debug, Deserialize)]
struct Corpus {
    version: u32,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Data {
    shape: [usize; 3],
    data: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct ConvSpec {
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
}

#[derive(Debug, Deserialize)]
struct PoolSpec {
    size: usize,
    stride: usize,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    op: String,
    #[serde(default)]
    conv: Option<ConvSpec>,
    #[serde(default)]
    relu: Option<bool>,
    #[serde(default)]
    pool: Option<PoolSpec>,
    input: Data,
    expected: Data,
    pub tolerance: f64,
}

fn conv_of(c: &ConvSpec) -> Conv2d {
    let params = Conv2dParams {
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        kernel_h: c.kernel,
        kernel_w: c.kernel,
        stride: c.stride,
        padding: c.padding,
    };
    Conv2d::new(params, c.weights.clone(), c.bias.clone()).unwrap_or_else(|e| panic!("{e}"))
}

/// The case's op.
pub fn op_of(case: &Case) -> Op {
    let conv = || {
        conv_of(
            case.conv
                .as_ref()
                .unwrap_or_else(|| panic!("{}: no conv", case.name)),
        )
    };
    let pool = || {
        case.pool.as_ref().map(|p| MaxPoolParams {
            size: p.size,
            stride: p.stride,
        })
    };
    match case.op.as_str() {
        "conv2d" => Op::Conv2d(conv()),
        "relu" => Op::Pointwise(streamfuse_kernels::Pointwise::Relu),
        "maxpool" => Op::MaxPool(pool().unwrap_or_else(|| panic!("{}: no pool", case.name))),
        "fused" => Op::Fused(FusedChain::conv_relu_pool(
            conv(),
            case.relu.unwrap_or(false),
            pool(),
        )),
        other => panic!("{}: unknown op {other}", case.name),
    }
}

/// Every case of the corpus.
pub fn cases() -> Vec<Case> {
    let text = include_str!("../../testdata/corpus.json");
    let corpus: Corpus = serde_json::from_str(text).unwrap_or_else(|e| panic!("corpus: {e}"));
    assert_eq!(corpus.version, 1);
    assert!(corpus.cases.len() >= 20);
    corpus.cases
}

/// The case's input tensor.
pub fn input_of(case: &Case) -> Tensor {
    let [c, h, w] = case.input.shape;
    Tensor::from_vec(
        Shape::new(c, h, w),
        case.input.data.iter().map(|&v| v as f32).collect(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// `None` when `out` matches the case's expected output within tolerance,
/// else what is wrong.
pub fn mismatch(case: &Case, out: &Tensor) -> Option<String> {
    let [ec, eh, ew] = case.expected.shape;
    if out.shape() != Shape::new(ec, eh, ew) {
        return Some(format!(
            "{}: shape {} expected {:?}",
            case.name,
            out.shape(),
            case.expected.shape
        ));
    }
    let worst = out
        .data()
        .iter()
        .zip(&case.expected.data)
        .enumerate()
        .map(|(i, (&g, &e))| (i, (f64::from(g) - e).abs(), g, e))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match worst {
        Some((i, err, got, want)) if err > case.tolerance || err.is_nan() => Some(format!(
            "{}: value {i} is {got}, expected {want} (error {err:e} > tolerance {:e})",
            case.name, case.tolerance
        )),
        _ => None,
    }
}

/// Runs every case through `run` and returns the failures.
pub fn failures(mut run: impl FnMut(&Op, &Tensor) -> Tensor) -> (usize, Vec<String>) {
    let cases = cases();
    let n = cases.len();
    let fails = cases
        .iter()
        .filter_map(|case| mismatch(case, &run(&op_of(case), &input_of(case))))
        .collect();
    (n, fails)
}
