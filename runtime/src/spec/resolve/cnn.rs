//! The CNN layers of the op table: convolution (kernel, strides,
//! dilations, padding per side or `same`, groups), max and average pooling
//! (the same, plus `ceil_mode` and `count_include_pad`), the global pools,
//! batch normalization on its own, and leaky ReLU. Each field error names
//! the field; a combination the kernels refuse is reported on the field
//! that caused it.

use serde_saphyr::Spanned;
use streamfuse_kernels::{
    ChannelAffine, Conv2d, Conv2dParams, ConvAlgorithm, Op, Pointwise, Pool2d, PoolKind, Precision,
    Shape, Window, random,
};

use super::{Located, StageCx, explain};
use crate::spec::SpecError;
use crate::spec::raw::{RawBias, RawDims, RawNumbers, RawWeights};
use crate::spec::weights::load_npy;

/// A per-axis field (`3` or `[3, 2]`); `default` when absent.
fn pair(
    sc: &StageCx<'_>,
    v: &Option<Spanned<RawDims>>,
    name: &str,
    default: Option<[usize; 2]>,
) -> Result<[usize; 2], SpecError> {
    let Some(s) = v else {
        return default.ok_or_else(|| {
            sc.cx.at(
                &sc.st.op,
                sc.field(name),
                format!("missing: op {} needs `{name}`", sc.st.op.value),
            )
        });
    };
    let vals = match &s.value {
        RawDims::One(n) => [*n, *n],
        RawDims::Many(v) if v.len() == 2 => [v[0], v[1]],
        RawDims::Many(v) => {
            return Err(sc.cx.at(
                s,
                sc.field(name),
                format!("has {} values: give one, or [rows, columns]", v.len()),
            ));
        }
        RawDims::Word(w) => {
            return Err(sc.cx.at(
                s,
                sc.field(name),
                format!("`{w}` is not a number: give one, or [rows, columns]"),
            ));
        }
    };
    if vals.contains(&0) {
        return Err(sc.cx.at(s, sc.field(name), "must be at least 1"));
    }
    Ok(vals)
}

/// The window of a conv or pool stage: `kernel` (or `size` for a pool),
/// `stride` (default `default_stride(kernel)`), `dilation`, `padding`.
fn window(
    sc: &StageCx<'_>,
    op: &'static str,
    pool: bool,
    input: Shape,
    kernel: [usize; 2],
    default_stride: [usize; 2],
) -> Result<Window, SpecError> {
    let st = sc.st;
    let stride = pair(sc, &st.stride, "stride", Some(default_stride))?;
    let dilation = pair(sc, &st.dilation, "dilation", Some([1, 1]))?;
    let pads = match &st.padding {
        None => [0; 4],
        Some(s) => match &s.value {
            RawDims::One(p) => [*p; 4],
            RawDims::Many(v) if v.len() == 2 => [v[0], v[1], v[0], v[1]],
            RawDims::Many(v) if v.len() == 4 => [v[0], v[1], v[2], v[3]],
            RawDims::Many(v) => {
                return Err(sc.cx.at(
                    s,
                    sc.field("padding"),
                    format!(
                        "has {} values: give one, [rows, columns] or [top, left, bottom, right]",
                        v.len()
                    ),
                ));
            }
            RawDims::Word(w) => match w.as_str() {
                "same" | "same_upper" => Window::same_pads(kernel, stride, dilation, input, false),
                "same_lower" => Window::same_pads(kernel, stride, dilation, input, true),
                "valid" => [0; 4],
                other => {
                    return Err(sc.cx.at(
                        s,
                        sc.field("padding"),
                        format!("unknown `{other}`: a number, a list, same, same_lower or valid"),
                    ));
                }
            },
        },
    };
    let win = Window {
        kernel,
        stride,
        dilation,
        pads,
    };
    let checked = if pool {
        win.check_pool(op)
    } else {
        win.check(op)
    };
    checked.map_err(|e| {
        let (at, name) = match (&st.padding, &st.dilation) {
            (Some(p), _) if e.to_string().contains("padding") => (p.pos(), "padding"),
            (_, Some(d)) => (d.pos(), "dilation"),
            _ => (
                st.kernel.as_ref().map_or_else(|| st.op.pos(), Located::pos),
                "kernel",
            ),
        };
        SpecError::field(sc.cx.file, at, sc.field(name), e.to_string())
    })?;
    Ok(win)
}

/// Where a shape error of a windowed op points: the kernel (or size).
fn window_error(sc: &StageCx<'_>, e: &streamfuse_kernels::KernelError, input: Shape) -> SpecError {
    let st = sc.st;
    let (at, name) = match (&st.kernel, &st.size) {
        (Some(k), _) => (k.pos(), "kernel"),
        (None, Some(s)) => (s.pos(), "size"),
        _ => (st.op.pos(), "op"),
    };
    SpecError::field(sc.cx.file, at, sc.field(name), explain(e, input))
}

pub(super) fn conv(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    let (cx, st) = (sc.cx, sc.st);
    let f = |name: &str| sc.field(name);
    let kernel = pair(sc, &st.kernel, "kernel", None)?;
    let out_channels = sc.positive(&st.out_channels, "out_channels", None)?;
    let groups = sc.positive(&st.groups, "groups", Some(1))?;
    if let Some(ic) = &st.in_channels
        && ic.value != input.c
    {
        return Err(cx.at(
            ic,
            f("in_channels"),
            format!(
                "is {} but this stage's input has {} channels",
                ic.value, input.c
            ),
        ));
    }
    if !input.c.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        let g = st.groups.as_ref().map_or_else(|| st.op.pos(), Located::pos);
        return Err(SpecError::field(
            cx.file,
            g,
            f("groups"),
            format!(
                "{groups} must divide the input's {} channels and out_channels {out_channels}",
                input.c
            ),
        ));
    }
    let params = Conv2dParams {
        in_channels: input.c,
        out_channels,
        groups,
        window: window(sc, "conv2d", false, input, kernel, [1, 1])?,
    };
    params
        .output_shape(input)
        .map_err(|e| window_error(sc, &e, input))?;
    let Some(weights) = &st.weights else {
        return Err(cx.at(
            &st.op,
            f("weights"),
            "missing: op conv2d needs `weights` ({ random: { seed: N } } or { npy: path })",
        ));
    };
    let dims = [out_channels, params.in_per_group(), kernel[0], kernel[1]];
    if !super::within_limit(&dims) {
        return Err(cx.at(
            weights,
            f("weights"),
            format!(
                "[{}, {}, {}, {}] weights exceed {} values",
                dims[0],
                dims[1],
                dims[2],
                dims[3],
                super::MAX_TENSOR_VALUES
            ),
        ));
    }
    let fan_in = params.filter_len();
    let bound = 1.0 / (fan_in as f32).sqrt();
    let expected = [
        out_channels as u64,
        params.in_per_group() as u64,
        kernel[0] as u64,
        kernel[1] as u64,
    ];
    let out_shape = [out_channels as u64];
    // Bias named by the weights' source (safetensors, onnx), if any.
    let mut source_bias: Option<Vec<f32>> = None;
    let (w, seed) = match &weights.value {
        RawWeights::Random(r) => (
            (0..params.weight_len() as u64)
                .map(|k| random::symmetric_f32(r.seed, 0, k, bound))
                .collect::<Vec<_>>(),
            Some(r.seed),
        ),
        RawWeights::Npy(n) => (
            load_npy(&cx.base_dir().join(&n.path), &expected)
                .map_err(|m| cx.at(weights, f("weights.npy"), m.to_string()))?,
            None,
        ),
        RawWeights::Safetensors(t) => {
            let path = cx.base_dir().join(&t.path);
            let w = crate::model::safetensors::load(&path, &t.tensor, &expected)
                .map_err(|m| cx.at(weights, f("weights.safetensors.tensor"), m.to_string()))?;
            if let Some(b) = &t.bias {
                source_bias = Some(
                    crate::model::safetensors::load(&path, b, &out_shape).map_err(|m| {
                        cx.at(weights, f("weights.safetensors.bias"), m.to_string())
                    })?,
                );
            }
            (w, None)
        }
        RawWeights::Onnx(o) => {
            let path = cx.base_dir().join(&o.path);
            let Some(init) = &o.initializer else {
                return Err(cx.at(
                    weights,
                    f("weights.onnx.initializer"),
                    "missing: a conv2d needs its weight initializer",
                ));
            };
            let mut w = crate::model::onnx::load(&path, init, &expected)
                .map_err(|m| cx.at(weights, f("weights.onnx.initializer"), m.to_string()))?;
            if let Some(b) = &o.bias {
                source_bias = Some(
                    crate::model::onnx::load(&path, b, &out_shape)
                        .map_err(|m| cx.at(weights, f("weights.onnx.bias"), m.to_string()))?,
                );
            }
            if let Some(bn) = &o.batchnorm {
                let load = |name: &str| {
                    crate::model::onnx::load(&path, name, &out_shape)
                        .map_err(|m| cx.at(weights, f("weights.onnx.batchnorm"), m.to_string()))
                };
                let (scale, beta, mean, var) = (
                    load(&bn.scale)?,
                    load(&bn.bias)?,
                    load(&bn.mean)?,
                    load(&bn.var)?,
                );
                let fan = params.filter_len();
                let mut b = source_bias
                    .take()
                    .unwrap_or_else(|| vec![0.0; out_channels]);
                for oc in 0..out_channels {
                    let k =
                        f64::from(scale[oc]) / (f64::from(var[oc]) + f64::from(bn.epsilon)).sqrt();
                    for x in &mut w[oc * fan..(oc + 1) * fan] {
                        *x = (f64::from(*x) * k) as f32;
                    }
                    b[oc] =
                        ((f64::from(b[oc]) - f64::from(mean[oc])) * k + f64::from(beta[oc])) as f32;
                }
                source_bias = Some(b);
            }
            (w, None)
        }
    };
    if let (Some(_), Some(b)) = (&source_bias, &st.bias) {
        return Err(cx.at(
            b,
            f("bias"),
            "the bias is already named by `weights`; remove one",
        ));
    }
    let bias = match &st.bias {
        None => source_bias,
        Some(b) => match (&b.value, seed) {
            (RawBias::Flag(false), _) => None,
            (RawBias::Flag(true), Some(seed)) => Some(
                (0..out_channels as u64)
                    .map(|k| random::symmetric_f32(seed, 1, k, bound))
                    .collect(),
            ),
            (RawBias::Flag(true), None) => {
                return Err(cx.at(
                    b,
                    f("bias"),
                    "`true` means seeded random bias, which needs random weights; give { npy: path }",
                ));
            }
            (RawBias::File(r), _) => Some(
                load_npy(&cx.base_dir().join(&r.npy), &out_shape)
                    .map_err(|m| cx.at(b, f("bias.npy"), m))?,
            ),
        },
    };
    let algorithm = match &st.algorithm {
        None => None,
        Some(a) if a.value == "auto" => None,
        Some(a) => match ConvAlgorithm::from_name(&a.value) {
            Some(ConvAlgorithm::Depthwise) if !params.depthwise() => {
                return Err(cx.at(
                    a,
                    f("algorithm"),
                    "is depthwise, but this convolution is not (groups must equal its input channels)",
                ));
            }
            Some(ConvAlgorithm::Winograd)
                if !streamfuse_kernels::cpu::winograd_applies(&params) =>
            {
                return Err(cx.at(
                    a,
                    f("algorithm"),
                    "is winograd, which needs groups 1, no dilation, and a 3x3 kernel at stride 1 or 5 to 8 taps per axis at stride 2",
                ));
            }
            Some(alg) => Some(alg),
            None => {
                return Err(cx.at(
                    a,
                    f("algorithm"),
                    format!(
                        "is `{}`; expected auto, rows, panel, depthwise or winograd",
                        a.value
                    ),
                ));
            }
        },
    };
    let precision = match &st.precision {
        None => Precision::F32,
        Some(p) => Precision::from_name(&p.value).ok_or_else(|| {
            cx.at(
                p,
                f("precision"),
                format!("is `{}`; expected f32 or f16", p.value),
            )
        })?,
    };
    Conv2d::new(params, w, bias)
        .map(|c| Op::Conv2d(c.with_algorithm(algorithm).with_precision(precision)))
        .map_err(|e| cx.at(weights, f("weights"), e.to_string()))
}

/// A windowed pool: `kernel` (or the older `size`), `stride` (default: the
/// kernel), `padding`, `dilation`, `ceil_mode`, and for an average
/// `count_include_pad`.
fn pool(sc: &StageCx<'_>, input: Shape, kind: PoolKind) -> Result<Op, SpecError> {
    let st = sc.st;
    let kernel = match (&st.kernel, &st.size) {
        (Some(k), Some(_)) => {
            return Err(sc
                .cx
                .at(k, sc.field("kernel"), "give `kernel` or `size`, not both"));
        }
        (Some(_), None) => pair(sc, &st.kernel, "kernel", None)?,
        (None, _) => {
            let s = sc.positive(&st.size, "size", None).map_err(|_| {
                sc.cx.at(
                    &st.op,
                    sc.field("kernel"),
                    format!("missing: op {} needs `kernel` (or `size`)", st.op.value),
                )
            })?;
            [s, s]
        }
    };
    let p = Pool2d {
        kind,
        window: window(
            sc,
            if kind == PoolKind::Max {
                "maxpool"
            } else {
                "avgpool"
            },
            true,
            input,
            kernel,
            kernel,
        )?,
        ceil_mode: st.ceil_mode.as_ref().is_some_and(|c| c.value),
    };
    p.output_shape(input)
        .map_err(|e| window_error(sc, &e, input))?;
    Ok(Op::Pool(p))
}

pub(super) fn maxpool(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    pool(sc, input, PoolKind::Max)
}

pub(super) fn avgpool(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    let count_include_pad = sc.st.count_include_pad.as_ref().is_some_and(|c| c.value);
    pool(sc, input, PoolKind::Avg { count_include_pad })
}

pub(super) fn global_maxpool(_: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    Ok(Op::Pool(Pool2d::global(PoolKind::Max, input.h, input.w)))
}

pub(super) fn global_avgpool(_: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    Ok(Op::Pool(Pool2d::global(
        PoolKind::Avg {
            count_include_pad: false,
        },
        input.h,
        input.w,
    )))
}

pub(super) fn leaky_relu(sc: &StageCx<'_>, _: Shape) -> Result<Op, SpecError> {
    let alpha = match &sc.st.alpha {
        Some(a) if !a.value.is_finite() || (a.value as f32).is_infinite() => {
            return Err(sc.cx.at(a, sc.field("alpha"), "must be a finite number"));
        }
        Some(a) => a.value as f32,
        None => 0.01,
    };
    Ok(Op::Pointwise(Pointwise::LeakyRelu { alpha }))
}

/// A per-channel list field of a batchnorm: `n` finite values, or one
/// value for every channel.
fn per_channel(
    sc: &StageCx<'_>,
    v: Option<(&dyn Located, Vec<f64>)>,
    name: &str,
    n: usize,
    default: Option<f64>,
) -> Result<Vec<f32>, SpecError> {
    let Some((at, vals)) = v else {
        return default.map(|d| vec![d as f32; n]).ok_or_else(|| {
            sc.cx.at(
                &sc.st.op,
                sc.field(name),
                "missing: op batchnorm needs `mean`, `var`, `scale` and `shift` (one value per channel) or `weights: { onnx: ... }`",
            )
        });
    };
    let err = |m: String| SpecError::field(sc.cx.file, at.pos(), sc.field(name), m);
    let vals = match vals.len() {
        1 => vec![vals[0]; n],
        k if k == n => vals,
        k => return Err(err(format!("has {k} values; the input has {n} channels"))),
    };
    if let Some(i) = vals
        .iter()
        .position(|x| !x.is_finite() || (*x as f32).is_infinite())
    {
        return Err(err(format!("value {i} is not a finite number")));
    }
    Ok(vals.into_iter().map(|x| x as f32).collect())
}

fn numbers(v: &Option<Spanned<RawNumbers>>) -> Option<(&dyn Located, Vec<f64>)> {
    v.as_ref().map(|s| {
        let vals = match &s.value {
            RawNumbers::One(x) => vec![*x],
            RawNumbers::Many(v) => v.clone(),
        };
        (s as &dyn Located, vals)
    })
}

fn list(v: &Option<Spanned<Vec<f64>>>) -> Option<(&dyn Located, Vec<f64>)> {
    v.as_ref().map(|s| (s as &dyn Located, s.value.clone()))
}

/// Batch normalization at inference, folded into a per-channel affine:
/// `mean`, `var`, `scale` (gamma, default 1), `shift` (beta, default 0) and
/// `epsilon` in the spec, or the tensors of an ONNX model
/// (`weights: { onnx: { path, batchnorm: { scale, bias, mean, var, epsilon } } }`).
pub(super) fn batchnorm(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    let (cx, st) = (sc.cx, sc.st);
    let n = input.c;
    let (gamma, beta, mean, var, eps) = match &st.weights {
        Some(w) => {
            let RawWeights::Onnx(o) = &w.value else {
                return Err(cx.at(
                    w,
                    sc.field("weights"),
                    "a batchnorm reads its tensors from { onnx: { path, batchnorm: {...} } }",
                ));
            };
            let Some(bn) = &o.batchnorm else {
                return Err(cx.at(
                    w,
                    sc.field("weights.onnx.batchnorm"),
                    "missing: name the scale, bias, mean and var initializers",
                ));
            };
            if let Some(f) = [
                ("mean", st.mean.is_some()),
                ("var", st.var.is_some()),
                ("scale", st.scale.is_some()),
                ("shift", st.shift.is_some()),
                ("epsilon", st.epsilon.is_some()),
            ]
            .iter()
            .find(|(_, set)| *set)
            {
                return Err(cx.at(w, sc.field(f.0), "is given by `weights`; remove one"));
            }
            let path = cx.base_dir().join(&o.path);
            let load = |name: &str| {
                crate::model::onnx::load(&path, name, &[n as u64])
                    .map_err(|m| cx.at(w, sc.field("weights.onnx.batchnorm"), m.to_string()))
            };
            (
                load(&bn.scale)?,
                load(&bn.bias)?,
                load(&bn.mean)?,
                load(&bn.var)?,
                f64::from(bn.epsilon),
            )
        }
        None => {
            let eps = match &st.epsilon {
                Some(e) if !e.value.is_finite() || e.value < 0.0 => {
                    return Err(cx.at(e, sc.field("epsilon"), "must be a number ≥ 0"));
                }
                Some(e) => e.value,
                None => 1e-5,
            };
            (
                per_channel(sc, numbers(&st.scale), "scale", n, Some(1.0))?,
                per_channel(sc, numbers(&st.shift), "shift", n, Some(0.0))?,
                per_channel(sc, list(&st.mean), "mean", n, None)?,
                per_channel(sc, list(&st.var), "var", n, None)?,
                eps,
            )
        }
    };
    ChannelAffine::batch_norm(&gamma, &beta, &mean, &var, eps)
        .map(Op::ChannelAffine)
        .map_err(|e| {
            let at = st.var.as_ref().map_or_else(|| st.op.pos(), Located::pos);
            SpecError::field(cx.file, at, sc.field("var"), e.to_string())
        })
}
