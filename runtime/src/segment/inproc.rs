//! The whole pipeline in this process: one thread per segment running
//! [`run_segment`], bounded channels between segments, the source in the
//! first segment's inlet and the sinks in the last one's outlet.
//!
//! With `fusion: off` every stage is its own segment, so stages overlap
//! across frames like a microservice chain; with `chain`/`kernel` a
//! segment's groups run back to back on each frame (kernels are themselves
//! multi-threaded over row bands). Links hold at most [`LINK_CAPACITY`]
//! frames, so a slow stage slows the source and memory stays bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use indicatif::{ProgressBar, ProgressStyle};

use super::live::{LiveWeights, SwapInbox, watch};
use super::worker::{Inlet, LoopConfig, LoopResult, Outlet, SinkOutlet, run_segment};
use crate::exec::{Device, ExecError, RunReport, SegmentTotals, assemble, device};
use crate::frame::{Frame, now_ns};
use crate::io::journal::SyncPolicy;
use crate::io::sinks::{Durability, SinkOutcome, Sinks};
use crate::io::source::{SourceError, open_sources};
use crate::plan::{Plan, Segment};
use crate::spec::{DeviceChoice, Pipeline};
use crate::transport::metrics::SegmentMetrics;
use crate::transport::server::Work;

/// Frames a link buffers before the sender waits.
pub const LINK_CAPACITY: usize = 2;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Device for every node (overrides the spec's node devices).
    pub device: Option<DeviceChoice>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// When the sink forces its commits to disk.
    pub sync: SyncPolicy,
}

/// A frame on an in-process link, with when it was sent.
struct Msg {
    frame: Frame,
    sent: Instant,
}

/// The first segment's inlet: the sources' frames.
struct SourceInlet(Box<dyn Iterator<Item = Result<Frame, SourceError>> + Send>);

impl Inlet for SourceInlet {
    fn recv(&mut self) -> Result<Option<Work>, ExecError> {
        match self.0.next() {
            Some(f) => Ok(Some(Work::Frame(f?, 0))),
            None => Ok(None),
        }
    }
}

/// A later segment's inlet: the in-process link from the segment before.
struct ChannelInlet(Receiver<Msg>);

impl Inlet for ChannelInlet {
    fn recv(&mut self) -> Result<Option<Work>, ExecError> {
        let waiting = Instant::now();
        Ok(self.0.recv().ok().map(|msg| {
            // Transit: from send to receipt, not counting time the frame
            // waited for this busy segment.
            let got = Instant::now();
            let transit = got.saturating_duration_since(msg.sent.max(waiting));
            Work::Frame(
                msg.frame,
                u64::try_from(transit.as_nanos()).unwrap_or(u64::MAX),
            )
        }))
    }

    fn queued(&self) -> usize {
        self.0.len()
    }

    fn idle(&self) -> bool {
        self.0.is_empty()
    }
}

/// A segment's outlet to the next one in this process.
struct ChannelOutlet(Sender<Msg>);

impl Outlet for ChannelOutlet {
    fn send(&mut self, frame: Frame) -> Result<bool, ExecError> {
        Ok(self
            .0
            .send(Msg {
                frame,
                sent: Instant::now(),
            })
            .is_ok())
    }

    fn end_stream(&mut self, _stream_id: u32, _frames: u64) -> Result<(), ExecError> {
        Ok(())
    }

    fn finish(self) -> Result<Option<SinkOutcome>, ExecError> {
        Ok(None)
    }
}

/// Runs the whole pipeline in this process.
///
/// # Errors
/// [`ExecError`] when no device is usable, a kernel fails on a frame, or a
/// segment task dies.
pub fn run(p: &Pipeline, plan: &Plan, opts: &RunOptions) -> Result<RunReport, ExecError> {
    let mut devices = Vec::with_capacity(plan.segments.len());
    let mut resolved: Vec<(DeviceChoice, Device)> = Vec::new();
    let mut fallback = None;
    for seg in &plan.segments {
        let choice = opts.device.unwrap_or(p.nodes[seg.node].device);
        let dev = match resolved.iter().find(|(c, _)| *c == choice) {
            Some(&(_, d)) => d,
            None => {
                let r = device::resolve_explained(choice)?;
                resolved.push((choice, r.device));
                fallback = fallback.or(r.fallback);
                r.device
            }
        };
        devices.push(dev);
    }
    tracing::info!(
        cpu_features = streamfuse_kernels::cpu::simd::level().name(),
        threads = rayon::current_num_threads(),
        "CPU kernels"
    );
    let bar = progress_bar(opts.progress, p.total_frames());
    let nseg = plan.segments.len();
    let mut txs: Vec<Option<Sender<Msg>>> = Vec::with_capacity(nseg);
    let mut rxs: Vec<Option<Receiver<Msg>>> = vec![None];
    for _ in 1..nseg {
        let (tx, rx) = bounded(LINK_CAPACITY);
        txs.push(Some(tx));
        rxs.push(Some(rx));
    }
    txs.push(None);
    // Every segment runs here: watched weights files reach them all.
    let all: Vec<usize> = (0..nseg).collect();
    let (live, inboxes) = LiveWeights::new(p, plan, &all);
    let stop_watch = AtomicBool::new(false);
    let start_ns = now_ns();
    let (results, refused) = std::thread::scope(|s| {
        let watcher = (!p.watch.is_empty()).then(|| {
            std::thread::Builder::new()
                .name("weights-watch".into())
                .spawn_scoped(s, || watch(&live, &p.watch, &stop_watch))
        });
        let handles: Vec<_> = plan
            .segments
            .iter()
            .zip(txs.into_iter().zip(rxs))
            .zip(devices.iter().zip(inboxes))
            .map(|((seg, (tx, rx)), (&device, swaps))| {
                let bar = bar.clone();
                std::thread::Builder::new()
                    .name(format!("segment-{}", seg.index))
                    .spawn_scoped(s, move || {
                        segment(p, seg, device, rx, tx, swaps, bar, opts.sync)
                    })
            })
            .collect();
        let results: Vec<Result<LoopResult, ExecError>> = handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| match h {
                Ok(h) => h.join().unwrap_or(Err(ExecError::Panicked(i))),
                Err(_) => Err(ExecError::Panicked(i)),
            })
            .collect();
        stop_watch.store(true, Ordering::Relaxed);
        let refused = match watcher {
            Some(Ok(h)) => h.join().unwrap_or_default(),
            _ => Vec::new(),
        };
        (results, refused)
    });
    bar.finish_and_clear();
    let mut totals = Vec::with_capacity(nseg);
    let mut seen = None;
    for r in results {
        let r = r?;
        totals.push(SegmentTotals {
            frames: r.frames,
            group_compute: r.group_compute,
            link_in: Duration::from_nanos(r.link_in_ns),
            weight_updates: r.applied,
        });
        if r.sink.is_some() {
            seen = r.sink;
        }
    }
    let seen = seen.unwrap_or_default();
    let elapsed = seen.last_ns.saturating_sub(start_ns) as f64 / 1e9;
    let devices: Vec<String> = devices.iter().map(ToString::to_string).collect();
    let mut r = assemble(p, plan, &totals, &seen, elapsed, &devices);
    r.weight_updates_refused = refused;
    r.device_fallback = fallback;
    Ok(r)
}

/// One segment's thread: its inlet (the sources, or the link from the
/// segment before) and outlet (the link to the next, or the sinks).
#[allow(clippy::too_many_arguments)]
fn segment(
    p: &Pipeline,
    seg: &Segment,
    device: Device,
    rx: Option<Receiver<Msg>>,
    tx: Option<Sender<Msg>>,
    swaps: Option<SwapInbox>,
    bar: ProgressBar,
    sync: SyncPolicy,
) -> Result<LoopResult, ExecError> {
    let metrics = SegmentMetrics::new(&p.name, seg.index);
    let cfg = LoopConfig {
        p,
        seg,
        device,
        metrics: &metrics,
        swaps,
        once: false,
        delay: Duration::ZERO,
    };
    let inlet: Box<dyn Inlet> = match (seg.has_source, rx) {
        (true, _) => Box::new(SourceInlet(open_sources(p))),
        (false, Some(rx)) => Box::new(ChannelInlet(rx)),
        (false, None) => Box::new(SourceInlet(Box::new(std::iter::empty()))),
    };
    match tx {
        Some(tx) => run_segment(cfg, inlet, ChannelOutlet(tx), |_| {}),
        None => {
            let sinks = Sinks::open(
                p,
                &Durability {
                    sync,
                    ..Durability::fresh()
                },
            )?;
            run_segment(
                cfg,
                inlet,
                SinkOutlet::new(sinks, None, bar, &metrics),
                |_| {},
            )
        }
    }
}

fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} frames {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
