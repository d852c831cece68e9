//! Placement → segments → fusion groups.
//!
//! Segments:
//! - The elements are the source, then each stage, each placed on a node.
//! - A **segment** is a maximal run of adjacent elements on one node, run
//!   as one task (one process or pod when split); frames stay in process
//!   (and on the device) within it. A placement change (a different node,
//!   hence possibly a different device) always starts a new segment.
//! - A stage with `fuse: false` starts a new segment even on the same node,
//!   and with `fusion: off` every element is its own segment (the
//!   microservice baseline: stages run as separate pipelined tasks, a frame
//!   handed from task to task).
//! - Each link between segments carries the last element's output frame.
//!
//! Fusion groups, within a segment:
//! - `fusion: chain`: every stage is its own **group**, run back to back on
//!   each frame (no hand-off between tasks, no fused kernel).
//! - `fusion: kernel`: a group is a chain `producer → pointwise* → maxpool?`
//!   run as one kernel (one pass over the image; generated for the chain
//!   on CUDA, a fused loop nest on the CPU):
//!   - the producer is a `conv2d` (with its bias), or a pointwise op read
//!     straight from the input (a "load" producer);
//!   - any number of pointwise ops follow (`relu`, `clip`, `affine`,
//!     `threshold`), applied while values are in registers or cache;
//!   - an optional `maxpool` consumes the result and ends the group.
//! - What ends a group: the end of the segment (placement or device
//!   change, `fuse: false`); an op that is not pointwise after the
//!   producer (a second `conv2d`: a reshape the fused kernel cannot
//!   follow, since it needs the whole neighbourhood of each value); the
//!   `maxpool` consumer; and a stage marked `tap: true` (a metrics tap:
//!   its own output and time are observed, so it is a group of its own).
//! - Vision chains: a run of row-local vision ops (`gray`, `normalize`,
//!   `gaussian_blur`, `sobel`) and pointwise ops, with at least one vision
//!   op and two stages, is one group, run as one pass over row bands (each
//!   band's rows stay in cache from step to step). It ends where a stage is
//!   not row-local: `resize` (its rows are not its input's), `conv2d`,
//!   `maxpool`; and at a tap or the segment's end. A run of pointwise ops
//!   that leads into a vision op joins its chain; one that does not keeps
//!   the rules above.
//! - A group of one stage runs that stage's own kernel. Fused groups give
//!   bit-identical results to the stages run one by one.

pub mod addresses;

use std::ops::Range;

use streamfuse_kernels::{EpilogueOp, FusedChain, Op, Shape, Step};

use crate::spec::{FusionMode, Pipeline};

/// Stages run as one unit on each frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Stage indices covered.
    pub stages: Range<usize>,
    /// The op run (fused when it covers several stages).
    pub op: Op,
    /// Input shape.
    pub input: Shape,
    /// Output shape.
    pub output: Shape,
}

/// A run of elements on one node, executed as one task (one pod when split).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Position in the pipeline.
    pub index: usize,
    /// Node index.
    pub node: usize,
    /// Whether the segment holds the source.
    pub has_source: bool,
    /// Stage indices.
    pub stages: Range<usize>,
    /// Fusion groups in order.
    pub groups: Vec<Group>,
    /// Shape of the frames the segment emits.
    pub output: Shape,
}

/// The execution plan of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Segments in order.
    pub segments: Vec<Segment>,
    /// Fusion mode it was made with.
    pub fusion: FusionMode,
}

/// Plans `p` with its placement and fusion mode.
pub fn plan(p: &Pipeline) -> Plan {
    // Element k: 0 = source, k >= 1 = stage k - 1. Find segment starts.
    let n = p.stages.len() + 1;
    let mut starts = vec![0usize];
    for k in 1..n {
        let stage = &p.stages[k - 1];
        if p.fusion == FusionMode::Off || p.placement[k] != p.placement[k - 1] || !stage.fuse {
            starts.push(k);
        }
    }
    starts.push(n);
    let segments = starts
        .windows(2)
        .enumerate()
        .map(|(index, w)| {
            let (a, b) = (w[0], w[1]);
            let has_source = a == 0;
            let stages = a.max(1) - 1..b - 1;
            let groups = groups(p, stages.clone());
            let output = if stages.is_empty() {
                p.source.shape()
            } else {
                p.stages[stages.end - 1].output
            };
            Segment {
                index,
                node: p.placement[a],
                has_source,
                stages,
                groups,
                output,
            }
        })
        .collect();
    Plan {
        segments,
        fusion: p.fusion,
    }
}

/// The fusion groups of the stages `stages` (one segment's).
pub fn groups(p: &Pipeline, stages: Range<usize>) -> Vec<Group> {
    let mut out = Vec::new();
    let mut i = stages.start;
    while i < stages.end {
        let st = &p.stages[i];
        if p.fusion == FusionMode::Kernel
            && let Some((end, steps)) = vision_chain(p, i, stages.end)
        {
            out.push(Group {
                stages: i..end,
                op: Op::VisionChain(steps),
                input: st.input,
                output: p.stages[end - 1].output,
            });
            i = end;
            continue;
        }
        let mut end = i + 1;
        let mut op = st.op.clone();
        // Fusion rules: a convolution (any kernel, stride, dilation,
        // padding or groups) or an epilogue op produces; pointwise ops and
        // per-channel affines (batch norm) follow as the epilogue; a max or
        // average pool (any window) consumes. A tap ends a group.
        let producer = match &st.op {
            Op::Conv2d(c) => Some(Some(c.clone())),
            o if o.epilogue().is_some() => Some(None),
            _ => None,
        };
        if p.fusion == FusionMode::Kernel
            && !st.tap
            && let Some(conv) = producer
        {
            let mut epilogue: Vec<EpilogueOp> = st.op.epilogue().into_iter().collect();
            let fusible = |k: usize| k < stages.end && !p.stages[k].tap;
            while fusible(end) {
                match p.stages[end].op.epilogue() {
                    Some(e) => {
                        epilogue.push(e);
                        end += 1;
                    }
                    None => break,
                }
            }
            let mut pool = None;
            if fusible(end)
                && let Op::Pool(pp) = p.stages[end].op
            {
                pool = Some(pp);
                end += 1;
            }
            if end > i + 1 {
                op = Op::Fused(FusedChain {
                    conv,
                    epilogue,
                    pool,
                });
            }
        }
        out.push(Group {
            stages: i..end,
            op,
            input: st.input,
            output: p.stages[end - 1].output,
        });
        i = end;
    }
    out
}

/// The stage as a step of a row chain: a vision op that keeps rows in
/// place, or a pointwise op.
fn row_step(op: &Op) -> Option<Step> {
    match op {
        Op::Vision(v) if v.reach().is_some() => Some(Step::Vision(v.clone())),
        Op::Pointwise(pw) => Some(Step::Pointwise(*pw)),
        _ => None,
    }
}

/// The vision chain starting at stage `i` (before `end`): the longest run
/// of row steps, not crossing a tap, that holds a vision op and at least
/// two stages. Returns where it ends and its steps.
fn vision_chain(p: &Pipeline, i: usize, end: usize) -> Option<(usize, Vec<Step>)> {
    let mut steps = Vec::new();
    let mut k = i;
    while k < end && !p.stages[k].tap {
        match row_step(&p.stages[k].op) {
            Some(s) => steps.push(s),
            None => break,
        }
        k += 1;
    }
    // Only a chain with a vision op in it: runs of pointwise ops keep the
    // conv/pool planner's rules (they may end in a pool).
    let has_vision = steps.iter().any(|s| matches!(s, Step::Vision(_)));
    (has_vision && steps.len() >= 2).then_some((k, steps))
}

/// A stage named for a cut does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--split: no stage `{id}` (stages: {known})")]
pub struct UnknownStage {
    /// The id asked for.
    pub id: String,
    /// The stage ids there are.
    pub known: String,
}

/// Starts a new segment at each stage in `ids`, as `fuse: false` on those
/// stages in the spec would.
///
/// # Errors
/// [`UnknownStage`] when an id names no stage.
pub fn cut_before(p: &mut Pipeline, ids: &[String]) -> Result<(), UnknownStage> {
    for id in ids {
        let known = || {
            p.stages
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(k) = p.stages.iter().position(|s| s.id == *id) else {
            return Err(UnknownStage {
                id: id.clone(),
                known: known(),
            });
        };
        p.stages[k].fuse = false;
    }
    Ok(())
}

/// Segment `k` of `plan` as a pipeline of its own: a synthetic source of
/// the segment's input shape (the pipeline's own source for the first
/// segment), the segment's stages as one segment on its node, fused as
/// they are in `plan`, and a null sink. Running it measures what the
/// segment does alone, without the links around it. `None` when `k` is not
/// a segment of `plan`.
pub fn solo(p: &Pipeline, plan: &Plan, k: usize) -> Option<Pipeline> {
    let seg = plan.segments.get(k)?;
    let mut out = p.clone();
    if !seg.has_source {
        let input = p.stages.get(seg.stages.start)?.input;
        out.source = crate::spec::SourceConfig::Synthetic(crate::spec::SyntheticSource {
            shape: input,
            frames: p.source.frames(),
            seed: 0,
            fps: None,
        });
        out.extra_sources.clear();
    }
    out.stages = p.stages[seg.stages.clone()].to_vec();
    for s in &mut out.stages {
        s.fuse = true;
    }
    out.placement = vec![seg.node; out.stages.len() + 1];
    out.sink = crate::spec::SinkConfig::Null;
    // One segment: with `off` each stage of the original was its own
    // segment already, so `chain` runs the same kernels.
    if out.fusion == FusionMode::Off {
        out.fusion = FusionMode::Chain;
    }
    Some(out)
}
