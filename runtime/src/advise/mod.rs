//! The placement advisor: predicts every placement's throughput and
//! latency from measured costs ([`Profile`]) and ranks them.
//!
//! # The model
//!
//! A placement puts the source and each stage on a node; the planner makes
//! its segments (maximal same-node runs, every stage its own with `fusion:
//! off`), and each segment runs as one process. From the profile:
//!
//! - **Compute** of segment `s`, `c_s`: the measured wall time per frame of
//!   its stage range on its node's device, run as the executor runs it (one
//!   fused group where the fusion rules allow), with the node's kernel
//!   threads; and its CPU time per frame, `u_s`.
//! - **Source**: producing a frame on the node that holds the source, on
//!   the source's own thread: wall time `g` and CPU time per frame.
//! - **Hand-off** between two segments: the frame of `b` bytes costs CPU on
//!   both processes (encode, send, receive, check):
//!   `h(b) = hop.fixed_ms + hop.per_mb_ms * b / 1e6`, half on each side.
//! - **Link** between two nodes: `b / bandwidth` to cross, plus half the
//!   round trip.
//!
//! Throughput is what the executor's pipelining gives: every segment, link
//! and node works on a different frame at once, so the placement runs at
//! its tightest resource:
//!
//! - each segment's worker, which runs its kernels one frame after another:
//!   `1 / c_s`; and the source's thread, `1 / g`;
//! - each node's CPUs shared by its processes: `cpus_n / D_n`, with
//!   `D_n` the CPU time per frame of every segment on `n` (`u_s` plus its
//!   hand-offs' halves, plus the source's where it runs there);
//! - each link between nodes: `bandwidth / b`.
//!
//! Latency is one frame alone through the pipeline: `g + Σ c_s + Σ h(b) + Σ
//! (b / bandwidth + rtt / 2)` over the segments, hand-offs and links.
//! Frames queued before a bottleneck add to it under load; the prediction
//! is the unloaded latency.
//!
//! The source stays on the node the spec places it on (the node that owns
//! the camera); every stage may go on any node the profile measured it on,
//! except that a stage marked `device: cuda` only goes on nodes with a GPU
//! ([`crate::spec::Node::has_gpu`]).

//!
//! The module's parts: [`Profile`] and its parts (what a cluster costs,
//! read, merged and checked), [`rank`] and [`predict`] (the model above),
//! and [`measure`] and [`measure_links`] (how a profile is made on this
//! machine and across its links).

mod measurement;
mod profile;
mod ranking;
#[cfg(test)]
mod tests;

pub use measurement::{
    MeasureError, MeasureOptions, link_sizes, measure, measure_links, measure_with_links,
};
pub use profile::{
    AdviseError, HopProfile, LinkProfile, LinkSample, NodeProfile, PROFILE_VERSION, Profile,
    RangeCost, range_key,
};
pub use ranking::{Objective, Prediction, best_placement, predict, rank};
