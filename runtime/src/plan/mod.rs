//! Placement → segments → fusion groups.
//!
//! Rules:
//! - The elements are the source, then each stage, each placed on a node.
//! - A **segment** is a maximal run of adjacent elements on one node. A new
//!   segment also starts at a stage with `fuse: false`, and with
//!   `fusion: off` every element is its own segment (the microservice
//!   baseline: stages run as separate pipelined tasks).
//! - Within a segment, `chain` runs each stage as its own **group**, back to
//!   back on each frame; `kernel` also merges a `conv2d` with an immediately
//!   following `relu` and then `maxpool` into one fused group (one pass over
//!   the image, bit-identical results). A group never spans segments.
//! - Each link between segments carries the last element's output frame.

use std::ops::Range;

use streamfuse_kernels::{FusedChain, Op, Shape};

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

fn groups(p: &Pipeline, stages: Range<usize>) -> Vec<Group> {
    let mut out = Vec::new();
    let mut i = stages.start;
    while i < stages.end {
        let st = &p.stages[i];
        let mut end = i + 1;
        let mut op = st.op.clone();
        if p.fusion == FusionMode::Kernel
            && let Op::Conv2d(conv) = &st.op
        {
            let mut relu = false;
            let mut pool = None;
            if end < stages.end && p.stages[end].op == Op::Relu {
                relu = true;
                end += 1;
            }
            if end < stages.end
                && let Op::MaxPool(mp) = p.stages[end].op
            {
                pool = Some(mp);
                end += 1;
            }
            if end > i + 1 {
                op = Op::Fused(FusedChain {
                    conv: conv.clone(),
                    relu,
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
