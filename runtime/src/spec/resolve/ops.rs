//! The one op table: every op a stage may name, the fields it takes, and
//! how it is built. Parsing (the op name), the field check ("does not apply
//! to op ...") and building all read [`OPS`]; adding an op is one entry.

use serde_saphyr::Spanned;
use streamfuse_kernels::{ColorOrder, Op, Pointwise, Shape, SobelMode, Vision};

use super::cnn;
use super::{Located, StageCx, explain};
use crate::spec::SpecError;
use crate::spec::raw::{RawDims, RawNumbers};

/// One op a stage may name.
pub(super) struct OpEntry {
    /// The name in the spec (`op: NAME`).
    pub name: &'static str,
    /// The stage fields it takes besides `id`, `op`, `fuse`, `tap`, `device`.
    pub fields: &'static [&'static str],
    /// Builds the op from the stage's fields for an input of `Shape`.
    pub build: fn(&StageCx<'_>, Shape) -> Result<Op, SpecError>,
}

/// Every op, in the order error messages list them.
pub(super) const OPS: &[OpEntry] = &[
    OpEntry {
        name: "conv2d",
        fields: &[
            "kernel",
            "stride",
            "padding",
            "dilation",
            "groups",
            "in_channels",
            "out_channels",
            "bias",
            "weights",
            "algorithm",
            "precision",
        ],
        build: cnn::conv,
    },
    OpEntry {
        name: "relu",
        fields: &[],
        build: relu,
    },
    OpEntry {
        name: "clip",
        fields: &["min", "max"],
        build: clip,
    },
    OpEntry {
        name: "leaky_relu",
        fields: &["alpha"],
        build: cnn::leaky_relu,
    },
    OpEntry {
        name: "batchnorm",
        fields: &["mean", "var", "scale", "shift", "epsilon", "weights"],
        build: cnn::batchnorm,
    },
    OpEntry {
        name: "affine",
        fields: &["scale", "shift"],
        build: affine,
    },
    OpEntry {
        name: "threshold",
        fields: &["threshold", "value"],
        build: threshold,
    },
    OpEntry {
        name: "maxpool",
        fields: &[
            "size",
            "kernel",
            "stride",
            "padding",
            "dilation",
            "ceil_mode",
        ],
        build: cnn::maxpool,
    },
    OpEntry {
        name: "avgpool",
        fields: &[
            "size",
            "kernel",
            "stride",
            "padding",
            "dilation",
            "ceil_mode",
            "count_include_pad",
        ],
        build: cnn::avgpool,
    },
    OpEntry {
        name: "global_maxpool",
        fields: &[],
        build: cnn::global_maxpool,
    },
    OpEntry {
        name: "global_avgpool",
        fields: &[],
        build: cnn::global_avgpool,
    },
    OpEntry {
        name: "gray",
        fields: &["order"],
        build: gray,
    },
    OpEntry {
        name: "normalize",
        fields: &["scale", "mean", "std"],
        build: normalize,
    },
    OpEntry {
        name: "resize",
        fields: &["width", "height"],
        build: resize,
    },
    OpEntry {
        name: "gaussian_blur",
        fields: &["kernel", "sigma"],
        build: gaussian_blur,
    },
    OpEntry {
        name: "sobel",
        fields: &["mode"],
        build: sobel,
    },
];

/// The entry of op `name`.
pub(super) fn lookup(name: &str) -> Option<&'static OpEntry> {
    OPS.iter().find(|e| e.name == name)
}

/// Every op name, comma-separated.
pub(super) fn names() -> String {
    OPS.iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

fn relu(_: &StageCx<'_>, _: Shape) -> Result<Op, SpecError> {
    Ok(Op::Pointwise(Pointwise::Relu))
}

fn clip(sc: &StageCx<'_>, _: Shape) -> Result<Op, SpecError> {
    let (cx, st) = (sc.cx, sc.st);
    let bound = |v: &Option<Spanned<f64>>, name: &str, default: f32| match v {
        Some(s) if s.value.is_nan() => Err(cx.at(s, sc.field(name), "must be a number")),
        Some(s) => Ok(s.value as f32),
        None => Ok(default),
    };
    let min = bound(&st.min, "min", f32::NEG_INFINITY)?;
    let max = bound(&st.max, "max", f32::INFINITY)?;
    if min > max {
        let at = st.max.as_ref().map_or_else(|| st.op.pos(), Located::pos);
        return Err(SpecError::field(
            cx.file,
            at,
            sc.field("max"),
            format!("{max} is below min {min}"),
        ));
    }
    Ok(Op::Pointwise(Pointwise::Clip { min, max }))
}

/// A finite `f32` field; `default` when absent, else required.
fn finite(
    sc: &StageCx<'_>,
    v: &Option<Spanned<f64>>,
    name: &str,
    default: Option<f32>,
) -> Result<f32, SpecError> {
    match v {
        Some(s) if !s.value.is_finite() || (s.value as f32).is_infinite() => {
            Err(sc.cx.at(s, sc.field(name), "must be a finite number"))
        }
        Some(s) => Ok(s.value as f32),
        None => default.ok_or_else(|| sc.cx.at(&sc.st.op, sc.field(name), "is required")),
    }
}

/// A one-number field given as [`RawNumbers`] (a list is refused).
fn one_number(
    sc: &StageCx<'_>,
    v: &Option<Spanned<RawNumbers>>,
    name: &str,
) -> Result<Option<Spanned<f64>>, SpecError> {
    match v {
        None => Ok(None),
        Some(s) => match &s.value {
            RawNumbers::One(x) => Ok(Some(Spanned {
                value: *x,
                referenced: s.referenced,
                defined: s.defined,
            })),
            RawNumbers::Many(_) => Err(sc.cx.at(
                s,
                sc.field(name),
                "must be one number (a per-channel list is for op batchnorm)",
            )),
        },
    }
}

fn affine(sc: &StageCx<'_>, _: Shape) -> Result<Op, SpecError> {
    let scale = one_number(sc, &sc.st.scale, "scale")?;
    let shift = one_number(sc, &sc.st.shift, "shift")?;
    let scale = finite(sc, &scale, "scale", Some(1.0))?;
    let shift = finite(sc, &shift, "shift", Some(0.0))?;
    Ok(Op::Pointwise(Pointwise::Affine { scale, shift }))
}

fn threshold(sc: &StageCx<'_>, _: Shape) -> Result<Op, SpecError> {
    let threshold = finite(sc, &sc.st.threshold, "threshold", None)?;
    let value = finite(sc, &sc.st.value, "value", Some(1.0))?;
    Ok(Op::Pointwise(Pointwise::Threshold { threshold, value }))
}

/// A vision op, checked against its input: parameters that only the input
/// can refute (channel counts, sizes) are named on the op.
fn vision(sc: &StageCx<'_>, input: Shape, v: Vision) -> Result<Op, SpecError> {
    v.output_shape(input).map_err(|e| {
        sc.cx
            .at(&sc.st.op, format!("stages[{}]", sc.i), explain(&e, input))
    })?;
    Ok(Op::Vision(v))
}

/// A word field that must be one of `known`; `default` when absent.
fn word(
    sc: &StageCx<'_>,
    v: &Option<Spanned<String>>,
    name: &str,
    default: &str,
    known: &[&str],
) -> Result<String, SpecError> {
    match v {
        Some(s) if !known.contains(&s.value.as_str()) => Err(sc.cx.at(
            s,
            sc.field(name),
            format!("unknown value `{}` (known: {})", s.value, known.join(", ")),
        )),
        Some(s) => Ok(s.value.clone()),
        None => Ok(default.to_owned()),
    }
}

/// A per-channel list (1 value, or one per input channel) of finite values.
fn list(
    sc: &StageCx<'_>,
    v: &Option<Spanned<Vec<f64>>>,
    name: &str,
    default: f32,
    input: Shape,
) -> Result<Vec<f32>, SpecError> {
    match v {
        None => Ok(vec![default]),
        Some(s) if s.value.len() != 1 && s.value.len() != input.c => Err(sc.cx.at(
            s,
            sc.field(name),
            format!(
                "has {} values; the input has {} channels (give 1 or {})",
                s.value.len(),
                input.c,
                input.c
            ),
        )),
        Some(s) if s.value.iter().any(|x| !x.is_finite()) => {
            Err(sc.cx.at(s, sc.field(name), "values must be finite numbers"))
        }
        Some(s) => Ok(s.value.iter().map(|&x| x as f32).collect()),
    }
}

fn gray(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    let order = if word(sc, &sc.st.order, "order", "bgr", &["rgb", "bgr"])? == "rgb" {
        ColorOrder::Rgb
    } else {
        ColorOrder::Bgr
    };
    vision(sc, input, Vision::Gray { order })
}

fn normalize(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    let (cx, st) = (sc.cx, sc.st);
    let scale = match one_number(sc, &st.scale, "scale")? {
        Some(s) if !s.value.is_finite() => {
            return Err(cx.at(&s, sc.field("scale"), "must be a finite number"));
        }
        Some(s) => s.value as f32,
        None => 1.0,
    };
    let std = list(sc, &st.std, "std", 1.0, input)?;
    if let (Some(s), true) = (&st.std, std.contains(&0.0)) {
        return Err(cx.at(s, sc.field("std"), "values must not be 0"));
    }
    let mean = list(sc, &st.mean, "mean", 0.0, input)?;
    vision(sc, input, Vision::Normalize { scale, mean, std })
}

fn resize(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    let width = sc.positive(&sc.st.width, "width", None)?;
    let height = sc.positive(&sc.st.height, "height", None)?;
    vision(sc, input, Vision::Resize { width, height })
}

fn gaussian_blur(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    let (cx, st) = (sc.cx, sc.st);
    let ksize = match &st.kernel {
        None => 5,
        Some(k) => match &k.value {
            RawDims::One(n) if *n > 0 => *n,
            _ => return Err(cx.at(k, sc.field("kernel"), "must be one odd whole number")),
        },
    };
    if ksize % 2 == 0 {
        let at = st.kernel.as_ref().map_or_else(|| st.op.pos(), Located::pos);
        return Err(SpecError::field(
            cx.file,
            at,
            sc.field("kernel"),
            format!("{ksize} must be odd"),
        ));
    }
    let sigma = match &st.sigma {
        Some(s) if !s.value.is_finite() || s.value < 0.0 => {
            return Err(cx.at(s, sc.field("sigma"), "must be a number ≥ 0"));
        }
        Some(s) => s.value as f32,
        None => 0.0,
    };
    vision(sc, input, Vision::GaussianBlur { ksize, sigma })
}

fn sobel(sc: &StageCx<'_>, input: Shape) -> Result<Op, SpecError> {
    let mode = match word(
        sc,
        &sc.st.mode,
        "mode",
        "magnitude",
        &["dx", "dy", "magnitude"],
    )?
    .as_str()
    {
        "dx" => SobelMode::Dx,
        "dy" => SobelMode::Dy,
        _ => SobelMode::Magnitude,
    };
    vision(sc, input, Vision::Sobel { mode })
}

#[cfg(test)]
mod tests {
    use super::OPS;

    #[test]
    fn op_names_are_unique_and_fields_are_stage_fields() {
        // The raw stage's optional fields, as `present_fields` lists them.
        const STAGE_FIELDS: &[&str] = &[
            "kernel",
            "stride",
            "padding",
            "in_channels",
            "out_channels",
            "bias",
            "weights",
            "size",
            "min",
            "max",
            "scale",
            "shift",
            "threshold",
            "value",
            "order",
            "mean",
            "std",
            "width",
            "height",
            "sigma",
            "mode",
            "dilation",
            "groups",
            "algorithm",
            "precision",
            "ceil_mode",
            "count_include_pad",
            "alpha",
            "var",
            "epsilon",
        ];
        for (i, e) in OPS.iter().enumerate() {
            assert!(
                OPS[..i].iter().all(|o| o.name != e.name),
                "op `{}` twice in the table",
                e.name
            );
            for f in e.fields {
                assert!(
                    STAGE_FIELDS.contains(f),
                    "op `{}`: field `{f}` is not a stage field",
                    e.name
                );
            }
        }
    }
}
