//! `streamfuse plan`: a placement's segments, fusion groups and links; with
//! `--advise`, every placement ranked by the advisor.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use streamfuse::advise::{self, Objective, Prediction};
use streamfuse::plan::{Plan, plan};
use streamfuse::spec::Pipeline;
use streamfuse_kernels::Op;
use streamfuse_kernels::cuda::device::{kernel_of, producer_of};
use streamfuse_kernels::cuda::params::Producer;

use super::profile::{self, MeasureArgs};
use super::{SpecArgs, load};

/// `streamfuse plan`'s arguments.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Rank every placement by predicted throughput or latency (from
    /// --profile, or measured here first).
    #[arg(long)]
    pub advise: bool,
    /// A profile written by `streamfuse profile` (repeat to merge one
    /// profile per node).
    #[arg(long, requires = "advise")]
    pub profile: Vec<PathBuf>,
    /// What --advise ranks by: throughput or latency.
    #[arg(long, default_value = "throughput", requires = "advise")]
    pub objective: Objective,
    #[command(flatten)]
    pub measure: MeasureArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `plan --json` (fields in the order the JSON has them).
#[derive(Debug, Serialize)]
struct PlanReport {
    /// Fusion mode.
    fusion: &'static str,
    /// Every link between consecutive segments.
    links: Vec<LinkEntry>,
    /// Pipeline name.
    name: String,
    /// Placement letters.
    placement: String,
    /// The segments in order.
    segments: Vec<SegmentEntry>,
}

/// A link: it carries the sending segment's output.
#[derive(Debug, Serialize)]
struct LinkEntry {
    bytes_per_frame: usize,
    from: usize,
    to: usize,
}

/// A segment of `plan --json`.
#[derive(Debug, Serialize)]
struct SegmentEntry {
    /// Its node's device.
    device: String,
    groups: Vec<GroupEntry>,
    index: usize,
    /// Its node's name.
    node: String,
    /// Bytes of each frame it emits.
    output_bytes: usize,
    /// Whether it holds the source.
    source: bool,
}

/// A fusion group of `plan --json`.
#[derive(Debug, Serialize)]
struct GroupEntry {
    /// Minimum bytes per frame moved.
    bytes: u64,
    /// The CPU convolution algorithm (`rows`, `panel`, `depthwise`), for a
    /// group with a convolution.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_algorithm: Option<&'static str>,
    /// The CUDA kernel it runs as ([`kernel_of`]).
    cuda_kernel: String,
    /// How that kernel computes the convolution, where it is a generated
    /// one with a GEMM producer or the tiled one (`implicit GEMM f32`,
    /// `implicit GEMM f16 tensor cores`, `tiled`; [`producer_of`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    cuda_producer: Option<&'static str>,
    flops: u64,
    flops_per_byte: f64,
    /// Whether it is a fused chain.
    fused: bool,
    /// Input shape `[C, H, W]`.
    input: [usize; 3],
    /// The op's label.
    kernel: String,
    /// Output shape `[C, H, W]`.
    output: [usize; 3],
    /// Stage ids.
    stages: Vec<String>,
}

/// `--advise --json` (fields in the order the JSON has them).
#[derive(Debug, Serialize)]
struct AdviceReport<'a> {
    best: Option<&'a Prediction>,
    /// Where the costs came from.
    costs: String,
    objective: &'static str,
    pipeline: &'a str,
    placements: &'a [Prediction],
}

/// Prints the plan (or, with `--advise`, the ranked placements).
pub fn run(a: PlanArgs) -> Result<()> {
    let p = load(&a.spec)?;
    if a.advise {
        return advise(&a, &p);
    }
    let pl = plan(&p);
    if a.json {
        println!("{}", serde_json::to_string(&report(&p, &pl)?)?);
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
            let label = match cpu_algorithm(&g.op, g.input) {
                Some(a) => format!("{} [{a}]", g.op.label()),
                None => g.op.label(),
            };
            println!(
                "  {:<24} {:<36} {} -> {}  {:.1} MFLOP  {:.2} MB  {:.2} FLOP/B",
                ids.join("+"),
                label,
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

/// The CPU convolution algorithm of a group, where it has a convolution
/// (what a CPU node runs; a CUDA node runs [`kernel_of`]).
fn cpu_algorithm(op: &Op, input: streamfuse_kernels::Shape) -> Option<&'static str> {
    streamfuse_kernels::cpu::conv::op_algorithm(op, input).map(|a| a.name())
}

/// The plan as `--json` prints it.
fn report(p: &Pipeline, pl: &Plan) -> Result<PlanReport> {
    let mut segments = Vec::new();
    for seg in &pl.segments {
        let mut groups = Vec::new();
        for g in &seg.groups {
            let (flops, bytes) = (g.op.flops(g.input)?, g.op.min_bytes(g.input)?);
            groups.push(GroupEntry {
                bytes,
                cpu_algorithm: cpu_algorithm(&g.op, g.input),
                cuda_kernel: kernel_of(&g.op, g.input)?.to_string(),
                cuda_producer: producer_of(&g.op, g.input)?.map(Producer::name),
                flops,
                flops_per_byte: flops as f64 / bytes.max(1) as f64,
                fused: matches!(g.op, Op::Fused(_) | Op::VisionChain(_)),
                input: [g.input.c, g.input.h, g.input.w],
                kernel: g.op.label(),
                output: [g.output.c, g.output.h, g.output.w],
                stages: p.stages[g.stages.clone()]
                    .iter()
                    .map(|s| s.id.clone())
                    .collect(),
            });
        }
        segments.push(SegmentEntry {
            device: p.nodes[seg.node].device.to_string(),
            groups,
            index: seg.index,
            node: p.nodes[seg.node].name.clone(),
            output_bytes: seg.output.bytes(),
            source: seg.has_source,
        });
    }
    let links = pl
        .segments
        .windows(2)
        .map(|w| LinkEntry {
            bytes_per_frame: w[0].output.bytes(),
            from: w[0].index,
            to: w[1].index,
        })
        .collect();
    Ok(PlanReport {
        fusion: p.fusion.name(),
        links,
        name: p.name.clone(),
        placement: p.placement_letters(),
        segments,
    })
}

/// `plan --advise`: every placement ranked from the profile (given, or
/// measured here).
fn advise(a: &PlanArgs, p: &Pipeline) -> Result<()> {
    let prof = profile::from_files_or_measured(p, &a.profile, &a.measure)?;
    let from = if a.profile.is_empty() {
        format!(
            "measured here (every node as this machine; links {}, rtt {} ms)",
            a.measure.link, a.measure.rtt_ms
        )
    } else {
        format!(
            "profile {}",
            a.profile
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" + ")
        )
    };
    let ranked = advise::rank(p, &prof, a.objective);
    let objective = a.objective.name();
    if a.json {
        let r = AdviceReport {
            best: ranked.first(),
            costs: from,
            objective,
            pipeline: &p.name,
            placements: &ranked,
        };
        println!("{}", serde_json::to_string(&r)?);
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
