//! Raw spec → validated [`Pipeline`].

use std::path::Path;

use serde_saphyr::Spanned;
use streamfuse_kernels::{KernelError, Op, Shape};

use super::raw::{RawPlacement, RawSink, RawSource, RawSpec, RawStage};
use super::{
    DeviceChoice, Machine, Node, Overrides, Pipeline, Position, SinkConfig, SourceConfig,
    SpecError, Stage, SyntheticSource,
};

mod cnn;
mod media;
mod ops;
mod placement;
mod tls;
use placement::{model_files, resolve_nodes, resolve_placement};

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn at<T>(&self, s: &Spanned<T>, field: impl Into<String>, msg: impl Into<String>) -> SpecError {
        SpecError::field(
            self.file,
            Position::from_location(&s.referenced),
            field,
            msg,
        )
    }

    fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

/// The most values a spec may ask for in one tensor: a frame, a stage's
/// output, or a convolution's weights (1 GiB of f32). Checked before
/// anything of that size is allocated, so a spec with a huge size is a
/// located error rather than a failed allocation.
pub const MAX_TENSOR_VALUES: usize = 1 << 28;

/// Whether a tensor of these dimensions has at most [`MAX_TENSOR_VALUES`].
pub(super) fn within_limit(dims: &[usize]) -> bool {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_some_and(|n| n <= MAX_TENSOR_VALUES)
}

pub(super) fn resolve(
    mut raw: RawSpec,
    file: &Path,
    ov: &Overrides,
) -> Result<Pipeline, SpecError> {
    let cx = Ctx { file };
    if raw.name.value.trim().is_empty() {
        return Err(cx.at(&raw.name, "name", "must not be empty"));
    }
    let (source, extra_sources, at) = resolve_sources(&cx, raw.source, raw.sources, ov)?;
    let stages = resolve_stages(&cx, &raw.stages, source.shape())?;
    for (k, (src, pos)) in extra_sources.iter().zip(at).enumerate() {
        let mut shape = src.shape();
        for (i, st) in stages.iter().enumerate() {
            shape = st.op.output_shape(shape).map_err(|e| {
                SpecError::field(
                    cx.file,
                    pos.clone(),
                    format!("sources[{}]", k + 1),
                    format!(
                        "its {}x{}x{} (CxHxW) frames do not fit stage {i} `{}`: {e}",
                        src.shape().c,
                        src.shape().h,
                        src.shape().w,
                        st.id
                    ),
                )
            })?;
        }
    }
    let sink = match raw.sink {
        RawSink::Null(_) => SinkConfig::Null,
        RawSink::Stats(_) => SinkConfig::Stats,
        RawSink::Video(v) => media::video_sink(
            &cx,
            v,
            &source,
            stages.last().map_or(source.shape(), |s| s.output),
        )?,
        RawSink::Images(i) => {
            media::images_sink(&cx, i, stages.last().map_or(source.shape(), |s| s.output))?
        }
        RawSink::Npy(n) => {
            use crate::media::npy::NpyOutput;
            match (n.path, n.dir) {
                (Some(p), None) => {
                    SinkConfig::Npy(NpyOutput::Stacked(cx.base_dir().join(&p.value)))
                }
                (None, Some(d)) => SinkConfig::Npy(NpyOutput::Dir(cx.base_dir().join(&d.value))),
                (Some(p), Some(_)) => {
                    return Err(cx.at(
                        &p,
                        "sink.npy",
                        "give `path` (one stacked file) or `dir` (a file per frame), not both",
                    ));
                }
                (None, None) => {
                    return Err(SpecError::field(
                        cx.file,
                        Position { line: 0, column: 0 },
                        "sink.npy",
                        "needs `path` (one stacked file) or `dir` (a file per frame)",
                    ));
                }
            }
        }
    };
    let node_tls: Vec<_> = raw
        .nodes
        .iter_mut()
        .map(|(name, n)| (name.clone(), n.tls.take()))
        .collect();
    let mut nodes = resolve_nodes(&cx, raw.nodes)?;
    let admins = tls::resolve_tls(&cx, raw.tls.as_ref(), &node_tls, &mut nodes)?;
    let placement = resolve_placement(&cx, raw.placement.as_ref(), ov, &nodes, &stages)?;
    if let Some((i, message)) = super::gpu_violation(&stages, &nodes, &placement) {
        return Err(match (&ov.placement, raw.stages.value[i].device.as_ref()) {
            (Some(_), _) | (None, None) => SpecError::Override {
                flag: "--placement",
                message,
            },
            (None, Some(d)) => cx.at(d, format!("stages[{i}].device"), message),
        });
    }
    let watch = raw
        .stages
        .value
        .iter()
        .filter_map(|st| match st.weights.as_ref().map(|w| &w.value) {
            Some(super::raw::RawWeights::Npy(n)) if n.watch => Some(super::Watched {
                stage: st.id.value.clone(),
                path: cx.base_dir().join(&n.path),
            }),
            _ => None,
        })
        .collect();
    let model_files = model_files(&cx, &raw.stages.value);
    Ok(Pipeline {
        name: raw.name.value,
        file: file.to_path_buf(),
        source,
        extra_sources,
        stages,
        sink,
        nodes,
        placement,
        fusion: ov.fusion.or(raw.fusion).unwrap_or_default(),
        watch,
        model_files,
        admins,
    })
}

/// The first source, the others, and where each other one is in the file.
type Sources = (SourceConfig, Vec<SourceConfig>, Vec<Position>);

/// `source:` or `sources:` (exactly one of them).
fn resolve_sources(
    cx: &Ctx<'_>,
    one: Option<Spanned<RawSource>>,
    many: Option<Spanned<Vec<Spanned<RawSource>>>>,
    ov: &Overrides,
) -> Result<Sources, SpecError> {
    match (one, many) {
        (Some(s), None) => Ok((resolve_source(cx, s.value, ov)?, Vec::new(), Vec::new())),
        (None, Some(list)) => {
            if list.value.is_empty() {
                return Err(cx.at(&list, "sources", "needs at least one source"));
            }
            let mut all = Vec::with_capacity(list.value.len());
            let mut at = Vec::with_capacity(list.value.len());
            for (k, s) in list.value.into_iter().enumerate() {
                at.push(Position::from_location(&s.referenced));
                all.push(
                    resolve_source(cx, s.value, ov)
                        .map_err(|e| e.with_field_prefix("source", &format!("sources[{k}]")))?,
                );
            }
            let first = all.remove(0);
            at.remove(0);
            Ok((first, all, at))
        }
        (Some(s), Some(_)) => Err(cx.at(
            &s,
            "source",
            "give `source` (one stream) or `sources` (a list, one stream each), not both",
        )),
        (None, None) => Err(SpecError::field(
            cx.file,
            Position { line: 0, column: 0 },
            "source",
            "missing: give `source` (one stream) or `sources` (a list, one stream each)",
        )),
    }
}

fn resolve_source(cx: &Ctx<'_>, raw: RawSource, ov: &Overrides) -> Result<SourceConfig, SpecError> {
    let s = match raw {
        RawSource::Synthetic(s) => s,
        RawSource::Npy(n) => return resolve_npy_source(cx, n, ov),
        RawSource::Video(v) => return media::video_source(cx, v, ov),
        RawSource::Camera(c) => return media::camera_source(cx, c, ov),
        RawSource::Images(i) => return media::images_source(cx, i, ov),
    };
    for (v, f) in [(&s.width, "width"), (&s.height, "height")] {
        if v.value == 0 {
            return Err(cx.at(v, format!("source.synthetic.{f}"), "must be at least 1"));
        }
    }
    if s.channels.value == 0 {
        return Err(cx.at(
            &s.channels,
            "source.synthetic.channels",
            "must be at least 1",
        ));
    }
    if let Some(fps) = &s.fps
        && !(fps.value.is_finite() && fps.value > 0.0)
    {
        return Err(cx.at(fps, "source.synthetic.fps", "must be a positive number"));
    }
    let (w, h) = ov.size.unwrap_or((s.width.value, s.height.value));
    if !within_limit(&[s.channels.value, h, w]) {
        return Err(cx.at(
            &s.width,
            "source.synthetic",
            format!(
                "{}x{h}x{w} (CxHxW) frames exceed {MAX_TENSOR_VALUES} values per frame",
                s.channels.value
            ),
        ));
    }
    Ok(SourceConfig::Synthetic(SyntheticSource {
        shape: Shape::new(s.channels.value, h, w),
        frames: ov.frames.unwrap_or(s.frames),
        seed: s.seed,
        fps: s.fps.map(|f| f.value),
    }))
}

fn resolve_npy_source(
    cx: &Ctx<'_>,
    n: super::raw::RawNpySource,
    ov: &Overrides,
) -> Result<SourceConfig, SpecError> {
    use crate::media::npy::{self, NpyInput};
    if ov.size.is_some() {
        return Err(SpecError::Override {
            flag: "--size",
            message: "does not apply to an npy source: its frames have the files' size".into(),
        });
    }
    let (input, shape, available, at, field) = match (&n.path, &n.dir) {
        (Some(p), None) => {
            let path = cx.base_dir().join(&p.value);
            let h = npy::header(&path).map_err(|e| cx.at(p, "source.npy.path", e.to_string()))?;
            let (shape, count) = npy::stacked_layout(&path, &h)
                .map_err(|e| cx.at(p, "source.npy.path", e.to_string()))?;
            (NpyInput::Stacked(path), shape, count, p, "source.npy.path")
        }
        (None, Some(d)) => {
            let dir = cx.base_dir().join(&d.value);
            let files =
                npy::dir_files(&dir).map_err(|e| cx.at(d, "source.npy.dir", e.to_string()))?;
            let h =
                npy::header(&files[0]).map_err(|e| cx.at(d, "source.npy.dir", e.to_string()))?;
            let (shape, count) = npy::stacked_layout(&files[0], &h)
                .map_err(|e| cx.at(d, "source.npy.dir", e.to_string()))?;
            if count != 1 || h.shape.len() != 3 {
                return Err(cx.at(
                    d,
                    "source.npy.dir",
                    format!(
                        "{}: shape {:?}; each file must be one [C, H, W] frame",
                        files[0].display(),
                        h.shape
                    ),
                ));
            }
            let n = files.len() as u64;
            (NpyInput::Files(files), shape, n, d, "source.npy.dir")
        }
        (Some(p), Some(_)) => {
            return Err(cx.at(
                p,
                "source.npy",
                "give `path` (one stacked file) or `dir` (a file per frame), not both",
            ));
        }
        (None, None) => {
            return Err(SpecError::field(
                cx.file,
                Position { line: 0, column: 0 },
                "source.npy",
                "needs `path` (a stacked file) or `dir` (a folder of frames)",
            ));
        }
    };
    let wanted = ov
        .frames
        .or(n.frames.as_ref().map(|f| f.value))
        .unwrap_or(available);
    if wanted > available {
        return Err(cx.at(
            at,
            field,
            format!("{wanted} frames asked for, the input holds {available}"),
        ));
    }
    Ok(SourceConfig::Npy {
        input,
        shape,
        frames: wanted,
    })
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && id.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn resolve_stages(
    cx: &Ctx<'_>,
    raw: &Spanned<Vec<RawStage>>,
    mut shape: Shape,
) -> Result<Vec<Stage>, SpecError> {
    if raw.value.is_empty() {
        return Err(cx.at(raw, "stages", "needs at least one stage"));
    }
    let mut out: Vec<Stage> = Vec::with_capacity(raw.value.len());
    for (i, st) in raw.value.iter().enumerate() {
        let id = &st.id.value;
        if !valid_id(id) {
            return Err(cx.at(
                &st.id,
                format!("stages[{i}].id"),
                format!("`{id}` is not a valid id (lower-case letter, then lower-case letters, digits, `_` or `-`; at most 63)"),
            ));
        }
        if id == "source" || id == "sink" {
            return Err(cx.at(
                &st.id,
                format!("stages[{i}].id"),
                format!("`{id}` is reserved"),
            ));
        }
        if let Some(j) = out.iter().position(|s| &s.id == id) {
            return Err(cx.at(
                &st.id,
                format!("stages[{i}].id"),
                format!("`{id}` is already the id of stages[{j}]"),
            ));
        }
        let op = resolve_op(cx, i, st, shape)?;
        let output = op.output_shape(shape).map_err(|e| {
            // Shape errors not caught field by field (should not happen) still get a location.
            cx.at(&st.op, format!("stages[{i}]"), e.to_string())
        })?;
        if !within_limit(&[output.c, output.h, output.w]) {
            return Err(cx.at(
                &st.op,
                format!("stages[{i}]"),
                format!(
                    "its {}x{}x{} (CxHxW) output exceeds {MAX_TENSOR_VALUES} values per frame",
                    output.c, output.h, output.w
                ),
            ));
        }
        let needs_gpu = match &st.device {
            None => false,
            Some(d) if d.value == "cuda" => true,
            Some(d) => {
                return Err(cx.at(
                    d,
                    format!("stages[{i}].device"),
                    format!(
                        "`{}`: a stage can only require `cuda` (a node with a GPU)",
                        d.value
                    ),
                ));
            }
        };
        out.push(Stage {
            id: id.clone(),
            op,
            fuse: st.fuse.unwrap_or(true),
            tap: st.tap.unwrap_or(false),
            input: shape,
            output,
            needs_gpu,
        });
        shape = output;
    }
    Ok(out)
}

/// Fields present in a raw stage, with their spans, for the "does not apply" check.
fn present_fields(st: &RawStage) -> Vec<(&'static str, Position)> {
    fn pos<T>(s: &Option<Spanned<T>>) -> Option<Position> {
        s.as_ref().map(|s| Position::from_location(&s.referenced))
    }
    [
        ("kernel", pos(&st.kernel)),
        ("stride", pos(&st.stride)),
        ("padding", pos(&st.padding)),
        ("in_channels", pos(&st.in_channels)),
        ("out_channels", pos(&st.out_channels)),
        ("bias", pos(&st.bias)),
        ("weights", pos(&st.weights)),
        ("size", pos(&st.size)),
        ("min", pos(&st.min)),
        ("max", pos(&st.max)),
        ("scale", pos(&st.scale)),
        ("shift", pos(&st.shift)),
        ("threshold", pos(&st.threshold)),
        ("value", pos(&st.value)),
        ("order", pos(&st.order)),
        ("mean", pos(&st.mean)),
        ("std", pos(&st.std)),
        ("width", pos(&st.width)),
        ("height", pos(&st.height)),
        ("sigma", pos(&st.sigma)),
        ("mode", pos(&st.mode)),
        ("dilation", pos(&st.dilation)),
        ("groups", pos(&st.groups)),
        ("algorithm", pos(&st.algorithm)),
        ("precision", pos(&st.precision)),
        ("ceil_mode", pos(&st.ceil_mode)),
        ("count_include_pad", pos(&st.count_include_pad)),
        ("alpha", pos(&st.alpha)),
        ("var", pos(&st.var)),
        ("epsilon", pos(&st.epsilon)),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.map(|p| (n, p)))
    .collect()
}

fn resolve_op(cx: &Ctx<'_>, i: usize, st: &RawStage, input: Shape) -> Result<Op, SpecError> {
    let Some(entry) = ops::lookup(&st.op.value) else {
        return Err(cx.at(
            &st.op,
            format!("stages[{i}].op"),
            format!("unknown op `{}` (known: {})", st.op.value, ops::names()),
        ));
    };
    for (name, pos) in present_fields(st) {
        if !entry.fields.contains(&name) {
            let list = if entry.fields.is_empty() {
                "none".to_owned()
            } else {
                entry.fields.join(", ")
            };
            return Err(SpecError::field(
                cx.file,
                pos,
                format!("stages[{i}].{name}"),
                format!("does not apply to op {} (its fields: {list})", st.op.value),
            ));
        }
    }
    (entry.build)(&StageCx { cx, i, st }, input)
}

/// A stage being resolved: names its fields and checks positive values.
struct StageCx<'a> {
    cx: &'a Ctx<'a>,
    i: usize,
    st: &'a RawStage,
}

impl StageCx<'_> {
    fn field(&self, name: &str) -> String {
        format!("stages[{}].{name}", self.i)
    }

    /// A value that must be at least 1; `default` when absent, else an error.
    fn positive(
        &self,
        v: &Option<Spanned<usize>>,
        name: &str,
        default: Option<usize>,
    ) -> Result<usize, SpecError> {
        match (v, default) {
            (Some(s), _) if s.value == 0 => {
                Err(self.cx.at(s, self.field(name), "must be at least 1"))
            }
            (Some(s), _) => Ok(s.value),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.cx.at(
                &self.st.op,
                self.field(name),
                format!("missing: op {} needs `{name}`", self.st.op.value),
            )),
        }
    }
}

trait Located {
    fn pos(&self) -> Position;
}

impl<T> Located for Spanned<T> {
    fn pos(&self) -> Position {
        Position::from_location(&self.referenced)
    }
}

fn explain(e: &KernelError, input: Shape) -> String {
    match e {
        KernelError::WindowTooLarge {
            window_h,
            window_w,
            padded_h,
            padded_w,
            ..
        } => format!(
            "window {window_h}x{window_w} is larger than this stage's input {input} (padded {padded_h}x{padded_w})"
        ),
        other => other.to_string(),
    }
}
