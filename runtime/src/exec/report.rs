//! A run's report: what the `--json` line of `run` holds, assembled from
//! per-segment totals and what the sink saw, the same way for an
//! in-process run and for a split one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::io::sinks::SinkOutcome;
use crate::percentiles::Percentiles;
use crate::plan::Plan;
use crate::spec::Pipeline;

/// A weight update as a segment applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Stage.
    pub stage: String,
    /// Its weights version from then on (1 = the spec's weights).
    pub version: u64,
    /// The segment.
    pub segment: usize,
    /// Stream of the first frame computed with the new weights.
    pub stream_id: u32,
    /// Seq of that frame: that stream's frames from it on use the new
    /// weights, those before it the old ones.
    pub first_seq: u64,
    /// When it was applied, ns since the Unix epoch.
    pub at_ns: u64,
}

/// One fusion group's timing.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Stage ids it covers.
    pub stages: Vec<String>,
    /// The kernel run.
    pub kernel: String,
    /// Segment index.
    pub segment: usize,
    /// Node name.
    pub node: String,
    /// Mean compute time per frame, ms.
    pub mean_ms: f64,
}

/// One link's timing.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// Upstream segment.
    pub from_segment: usize,
    /// Downstream segment.
    pub to_segment: usize,
    /// Bytes per frame crossing it.
    pub bytes_per_frame: u64,
    /// Mean transit time per frame, ms (time from send to receipt, not
    /// counting time the frame waited for a busy receiver).
    pub mean_ms: f64,
}

/// One stream of a run, as the sink saw it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// The stream (the source's index in `sources:`).
    pub stream_id: u32,
    /// Its frames that reached the sink.
    pub frames: u64,
    /// Its frames per second, first capture to last arrival.
    pub fps: f64,
    /// Its end-to-end latency.
    pub latency_ms: Percentiles,
    /// Digest of its outputs alone (stats sink): equal to the digest of a
    /// run of this source alone.
    pub output_digest: Option<String>,
}

/// The summary of a run (the `--json` line).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Pipeline name.
    pub name: String,
    /// Frames that reached the sink.
    pub frames: u64,
    /// Frames per second, first frame produced to last frame received.
    pub fps: f64,
    /// Frames per second in steady state, without the pipeline's fill and
    /// drain ([`crate::io::sink::steady_fps`]); null below 20 frames.
    pub steady_fps: Option<f64>,
    /// Each source's stream: its frames, rate, latency and digest.
    pub streams: Vec<StreamReport>,
    /// End-to-end latency (capture to sink).
    pub latency_ms: Percentiles,
    /// Communication / computation: link transit time over compute time.
    pub ccr: f64,
    /// Number of segments.
    pub segments: usize,
    /// Placement letters.
    pub placement: String,
    /// Device the stages ran on.
    pub device: String,
    /// Fusion mode.
    pub fusion: String,
    /// CPU instruction set the kernels used.
    pub cpu_features: String,
    /// Worker threads of the kernels.
    pub threads: usize,
    /// Digest of every output tensor in seq order (stats sink), else null.
    pub output_digest: Option<String>,
    /// Wall time of the run, s.
    pub elapsed_s: f64,
    /// Per group compute.
    pub groups: Vec<GroupReport>,
    /// Per link transit.
    pub links: Vec<LinkReport>,
    /// Weight updates applied during the run, in the order applied.
    pub weight_updates: Vec<WeightUpdateReport>,
    /// Weight updates refused (a watched file that did not validate); the
    /// old weights kept serving.
    pub weight_updates_refused: Vec<String>,
    /// Why `--device auto` ran on the CPU (no driver, no device, no NVRTC
    /// that targets it, a kernel that did not compile or load); absent when
    /// it did not fall back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_fallback: Option<String>,
}

/// A weight update as the run saw it.
#[derive(Debug, Clone, Serialize)]
pub struct WeightUpdateReport {
    /// Where and from which frame the new weights were used.
    #[serde(flatten)]
    pub applied: Applied,
    /// p99 end-to-end latency of the stream's frames around the swap (the
    /// [`AROUND_SWAP`] frames before and after `first_seq`), ms; null where
    /// the sink did not see them.
    pub p99_around_ms: Option<f64>,
}

/// Frames either side of a weight swap whose latency the report gives.
pub const AROUND_SWAP: u64 = 50;

/// One segment's totals over a run, what a [`RunReport`] is built from.
#[derive(Debug, Clone, Default)]
pub struct SegmentTotals {
    /// Frames the segment processed.
    pub frames: u64,
    /// Compute time per fusion group.
    pub group_compute: Vec<Duration>,
    /// Link transit time of the frames it received.
    pub link_in: Duration,
    /// Weight updates it applied.
    pub weight_updates: Vec<Applied>,
}

/// Builds the run's report from per-segment totals (in plan order), what
/// the sink saw (latencies, arrivals, streams, digest), the run's wall time
/// and the devices used.
pub fn assemble(
    p: &Pipeline,
    plan: &Plan,
    totals: &[SegmentTotals],
    sink: &SinkOutcome,
    elapsed: f64,
    devices: &[String],
) -> RunReport {
    let (latencies_ns, arrivals_ns) = (&sink.latencies_ns, &sink.arrivals_ns);
    let (streams, output_digest) = (&sink.streams, sink.digest.clone());
    let mut groups = Vec::new();
    let mut links = Vec::new();
    let mut compute = Duration::ZERO;
    let mut comm = Duration::ZERO;
    for (seg, st) in plan.segments.iter().zip(totals) {
        let per = |d: Duration| {
            if st.frames == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e3 / st.frames as f64
            }
        };
        for (g, d) in seg.groups.iter().zip(&st.group_compute) {
            compute += *d;
            groups.push(GroupReport {
                stages: p.stages[g.stages.clone()]
                    .iter()
                    .map(|s| s.id.clone())
                    .collect(),
                kernel: g.op.label(),
                segment: seg.index,
                node: p.nodes[seg.node].name.clone(),
                mean_ms: per(*d),
            });
        }
        if seg.index > 0 {
            comm += st.link_in;
            links.push(LinkReport {
                from_segment: seg.index - 1,
                to_segment: seg.index,
                bytes_per_frame: plan.segments[seg.index - 1].output.bytes() as u64,
                mean_ms: per(st.link_in),
            });
        }
    }
    let frames = latencies_ns.len() as u64;
    let mut weight_updates: Vec<WeightUpdateReport> = totals
        .iter()
        .flat_map(|t| t.weight_updates.iter().cloned())
        .map(|applied| {
            let q = applied.first_seq;
            let around = streams
                .iter()
                .find(|t| t.stream_id == applied.stream_id)
                .map(|t| {
                    t.latencies_of(q.saturating_sub(AROUND_SWAP)..q.saturating_add(AROUND_SWAP))
                })
                .filter(|l| !l.is_empty());
            WeightUpdateReport {
                p99_around_ms: around.map(|l| Percentiles::from_ns(l).p99),
                applied,
            }
        })
        .collect();
    weight_updates.sort_by_key(|u| u.applied.at_ns);
    let mut device_names = devices.to_vec();
    device_names.dedup();
    RunReport {
        name: p.name.clone(),
        frames,
        fps: if elapsed > 0.0 {
            frames as f64 / elapsed
        } else {
            0.0
        },
        steady_fps: crate::io::sink::steady_fps(arrivals_ns),
        streams: streams
            .iter()
            .map(|t| StreamReport {
                stream_id: t.stream_id,
                frames: t.latencies_ns.len() as u64,
                fps: t.fps(),
                latency_ms: Percentiles::from_ns(&t.latencies_ns),
                output_digest: t.digest.clone(),
            })
            .collect(),
        latency_ms: Percentiles::from_ns(latencies_ns),
        ccr: if compute.is_zero() {
            0.0
        } else {
            comm.as_secs_f64() / compute.as_secs_f64()
        },
        segments: plan.segments.len(),
        placement: p.placement_letters(),
        device: device_names.join(","),
        fusion: plan.fusion.name().to_owned(),
        cpu_features: streamfuse_kernels::cpu::simd::level().name().to_owned(),
        threads: rayon::current_num_threads(),
        output_digest,
        elapsed_s: elapsed,
        groups,
        links,
        weight_updates,
        weight_updates_refused: Vec::new(),
        device_fallback: None,
    }
}
