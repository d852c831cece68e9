//! THE frame loop of a segment, the same in-process and served: frames come
//! in through an [`Inlet`] (as the transport's [`Work`] items) (the source, an in-process channel, or the gRPC
//! service's queue), new weights are taken between two frames, the
//! segment's [`SegmentRunner`] computes them, and they leave through an
//! [`Outlet`] (an in-process channel, the gRPC forwarder, or the sinks).
//! The weight swap, the sink writes and finish, and the per-frame
//! accounting (compute per group, link transit, CPU and busy time, metrics)
//! exist here once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::live::SwapInbox;
use crate::exec::{Applied, Device, ExecError, SegmentRunner, stage_ids};
use crate::frame::Frame;
use crate::io::sinks::{SinkOutcome, Sinks};
use crate::plan::Segment;
use crate::spec::Pipeline;
use crate::sys::cputime;
use crate::transport::metrics::SegmentMetrics;
use crate::transport::server::{AckBoard, Work};

/// How often (in frames) a segment notes its CPU and busy time.
pub const CPU_MARK_EVERY: u64 = 8;

/// Where a segment's frames come from.
pub trait Inlet {
    /// The next input (a frame with its link transit time in ns, a
    /// stream's end, or a stop), blocking; `Ok(None)` when upstream is done.
    ///
    /// # Errors
    /// [`ExecError`] when a source fails.
    fn recv(&mut self) -> Result<Option<Work>, ExecError>;

    /// Inputs queued behind the one just received (the queue-depth gauge).
    fn queued(&self) -> usize {
        0
    }

    /// Whether nothing is waiting: the loop then finishes the frames still
    /// on the device at once instead of at the next input (a camera's next
    /// frame is a frame time away). `false` where unknown.
    fn idle(&self) -> bool {
        false
    }
}

impl<T: Inlet + ?Sized> Inlet for Box<T> {
    fn recv(&mut self) -> Result<Option<Work>, ExecError> {
        (**self).recv()
    }

    fn queued(&self) -> usize {
        (**self).queued()
    }

    fn idle(&self) -> bool {
        (**self).idle()
    }
}

/// Where a segment's processed frames go.
pub trait Outlet {
    /// Hands on one frame; `Ok(false)` when downstream is gone (it failed
    /// and reports why), and the loop stops.
    ///
    /// # Errors
    /// [`ExecError`] when a sink cannot take the frame.
    fn send(&mut self, frame: Frame) -> Result<bool, ExecError>;

    /// Whether [`Outlet::send`] may block waiting for room downstream:
    /// that time is waiting, not busy time. Sinks write: busy.
    fn blocks_for_room(&self) -> bool {
        true
    }

    /// Stream `stream_id` ended after `frames` frames.
    ///
    /// # Errors
    /// [`ExecError`] when a sink cannot commit the end.
    fn end_stream(&mut self, stream_id: u32, frames: u64) -> Result<(), ExecError>;

    /// Streams that ended before this process started (a resumed sink's).
    fn ended_before(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Ends the run: closes the sinks and returns what they saw (the last
    /// segment), else `None`.
    ///
    /// # Errors
    /// [`ExecError`] when a sink cannot be completed.
    fn finish(self) -> Result<Option<SinkOutcome>, ExecError>;
}

/// The last segment's outlet: the pipeline's sinks, with the cumulative
/// acks a served segment reports upstream and a progress bar in-process.
#[derive(Debug)]
pub struct SinkOutlet<'m> {
    sinks: Sinks,
    acks: Option<AckBoard>,
    bar: ProgressBar,
    metrics: &'m SegmentMetrics,
}

impl<'m> SinkOutlet<'m> {
    /// Writes into `sinks`; with `acks`, each frame is acknowledged
    /// upstream once written; `bar` counts frames.
    pub fn new(
        sinks: Sinks,
        acks: Option<AckBoard>,
        bar: ProgressBar,
        metrics: &'m SegmentMetrics,
    ) -> Self {
        Self {
            sinks,
            acks,
            bar,
            metrics,
        }
    }
}

impl Outlet for SinkOutlet<'_> {
    fn send(&mut self, f: Frame) -> Result<bool, ExecError> {
        let (stream, seq) = (f.stream_id, f.seq);
        self.sinks.write(&f)?;
        self.metrics.frames_out.inc();
        self.bar.inc(1);
        if let Some(acks) = &self.acks {
            acks.send_modify(|a| {
                a.next.insert(stream, seq + 1);
            });
        }
        Ok(true)
    }

    fn blocks_for_room(&self) -> bool {
        false
    }

    fn end_stream(&mut self, stream_id: u32, frames: u64) -> Result<(), ExecError> {
        self.sinks.end_stream(stream_id, frames)?;
        if let Some(acks) = &self.acks {
            acks.send_modify(|a| {
                a.next.insert(stream_id, frames + 1);
                a.ended.insert(stream_id);
            });
        }
        Ok(())
    }

    fn ended_before(&self) -> Vec<u32> {
        self.sinks.ended().into_iter().collect()
    }

    fn finish(self) -> Result<Option<SinkOutcome>, ExecError> {
        Ok(Some(self.sinks.finish()?))
    }
}

/// How a segment's loop runs.
pub struct LoopConfig<'a> {
    /// The pipeline.
    pub p: &'a Pipeline,
    /// The segment.
    pub seg: &'a Segment,
    /// Its device.
    pub device: Device,
    /// Where its counters go (Prometheus in a served segment).
    pub metrics: &'a SegmentMetrics,
    /// New weights for its stages, when any can change.
    pub swaps: Option<SwapInbox>,
    /// Stop once every stream has ended (a served `--once` segment).
    pub once: bool,
    /// Extra time per frame (experiments: a deliberately slow stage),
    /// counted as compute time of the segment's first group.
    pub delay: Duration,
}

/// A segment's account of its loop.
#[derive(Debug, Default)]
pub struct LoopResult {
    /// Frames processed.
    pub frames: u64,
    /// Compute time per fusion group.
    pub group_compute: Vec<Duration>,
    /// Link transit time of the frames received, ns.
    pub link_in_ns: u64,
    /// What the sink saw (last segment).
    pub sink: Option<SinkOutcome>,
    /// CPU time of the process from the first frame to the last.
    pub cpu: Option<Duration>,
    /// Time the loop was busy from the first frame to the last.
    pub busy: Option<Duration>,
    /// `(frames done, CPU ns since the first frame)` every
    /// [`CPU_MARK_EVERY`] frames.
    pub cpu_marks: Vec<(u64, u64)>,
    /// `(frames done, busy ns since the first frame)` every
    /// [`CPU_MARK_EVERY`] frames.
    pub busy_marks: Vec<(u64, u64)>,
    /// Weight updates applied, in order.
    pub applied: Vec<Applied>,
}

/// Per-frame accounting of a loop.
#[derive(Default)]
struct Tally {
    frames: u64,
    link_in_ns: u64,
    cpu_start: Option<Duration>,
    cpu_marks: Vec<(u64, u64)>,
    busy_marks: Vec<(u64, u64)>,
    marked: u64,
    /// When the first frame came, and the time since spent waiting for
    /// input or for room downstream (the rest is busy time).
    first_at: Option<Instant>,
    waited: Duration,
}

impl Tally {
    fn mark(&mut self) {
        if self.frames < self.marked + CPU_MARK_EVERY {
            return;
        }
        self.marked = self.frames;
        if let (Some(t0), Some(now)) = (self.cpu_start, cputime::process_cpu()) {
            let ns = u64::try_from(now.saturating_sub(t0).as_nanos()).unwrap_or(u64::MAX);
            self.cpu_marks.push((self.frames, ns));
        }
        if let Some(t0) = self.first_at {
            let busy = t0.elapsed().saturating_sub(self.waited);
            self.busy_marks.push((
                self.frames,
                u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX),
            ));
        }
    }
}

/// Hands `done` to `out`, counting frames and the time spent waiting for
/// room downstream; `false` when downstream is gone.
fn emit<O: Outlet>(out: &mut O, done: Vec<Frame>, t: &mut Tally) -> Result<bool, ExecError> {
    for f in done {
        t.frames += 1;
        let t0 = Instant::now();
        let open = out.send(f)?;
        if out.blocks_for_room() {
            t.waited += t0.elapsed();
        }
        if !open {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs a segment: opens its device, calls `ready` (with the error, if it
/// cannot be opened), then processes every input until the inlet is done,
/// a `Stop`, downstream going away, or (with `once`) every stream's end.
///
/// # Errors
/// [`ExecError`] when the device cannot be opened, a source, a kernel or a
/// sink fails.
pub fn run_segment<I: Inlet, O: Outlet>(
    cfg: LoopConfig<'_>,
    mut inlet: I,
    mut out: O,
    ready: impl FnOnce(Result<(), String>),
) -> Result<LoopResult, ExecError> {
    let LoopConfig {
        p,
        seg,
        device,
        metrics: m,
        mut swaps,
        once,
        delay,
    } = cfg;
    let mut runner = match SegmentRunner::new(p, seg, device) {
        Ok(r) => {
            ready(Ok(()));
            r
        }
        Err(e) => {
            ready(Err(e.to_string()));
            return Err(e);
        }
    };
    let counters: Vec<_> = seg
        .groups
        .iter()
        .map(|g| m.compute_counter(&stage_ids(p, g)))
        .collect();
    let streams = p.sources().count();
    // Compute time already added to the metrics, per group.
    let mut reported = vec![Duration::ZERO; counters.len()];
    let mut open: BTreeSet<u32> = BTreeSet::new();
    let mut ended: BTreeSet<u32> = BTreeSet::new();
    let mut t = Tally::default();
    let mut downstream = true;
    for s in out.ended_before() {
        open.insert(s);
        ended.insert(s);
    }
    let all_ended = |open: &BTreeSet<u32>, ended: &BTreeSet<u32>| {
        once && ended.len() == open.len() && ended.len() >= streams
    };
    while !all_ended(&open, &ended) {
        let t0 = Instant::now();
        let Some(input) = inlet.recv()? else {
            break;
        };
        if t.first_at.is_some() {
            t.waited += t0.elapsed();
        }
        m.queue_depth.set(inlet.queued() as i64);
        let (frame, transit_ns) = match input {
            Work::Frame(frame, transit_ns) => (frame, transit_ns),
            Work::End { stream_id, frames } => {
                let done = runner.drain()?;
                downstream = emit(&mut out, done, &mut t)?;
                out.end_stream(stream_id, frames)?;
                open.insert(stream_id);
                ended.insert(stream_id);
                // With `once`, stop after the last stream ended: every
                // stream this loop saw, and at least every source's (the
                // loop's condition).
                if !downstream {
                    break;
                }
                continue;
            }
            Work::Stop => break,
        };
        if t.frames == 0 && t.cpu_start.is_none() {
            t.cpu_start = cputime::process_cpu();
        }
        t.first_at.get_or_insert_with(Instant::now);
        open.insert(frame.stream_id);
        t.link_in_ns = t.link_in_ns.saturating_add(transit_ns);
        m.receive_seconds.inc_by(transit_ns as f64 / 1e9);
        let slowed = (!delay.is_zero()).then(|| {
            let t0 = Instant::now();
            std::thread::sleep(delay);
            t0.elapsed()
        });
        // New weights are taken between two frames: this frame is the
        // first computed with them.
        if let Some(inbox) = swaps.as_mut() {
            if let Some(groups) = inbox.take() {
                runner.set_groups(groups);
            }
            let before = inbox.applied.len();
            inbox.first_frame(frame.stream_id, frame.seq);
            for a in &inbox.applied[before..] {
                m.set_weights(&a.stage, a.version, a.at_ns);
            }
        }
        let done = runner.push(frame)?;
        // The deliberate delay is compute time of the segment's first
        // group: the slow stage, as the report shows it.
        if let (Some(d), Some(first)) = (slowed, runner.group_compute.first_mut()) {
            *first += d;
        }
        for ((counter, now), seen) in counters
            .iter()
            .zip(&runner.group_compute)
            .zip(&mut reported)
        {
            counter.inc_by(now.saturating_sub(*seen).as_secs_f64());
            *seen = *now;
        }
        downstream = emit(&mut out, done, &mut t)?;
        if downstream && runner.in_flight() > 0 && inlet.idle() {
            // Nothing else to overlap with: the frames on the device leave
            // as soon as they are done, not at the next input.
            let done = runner.drain()?;
            downstream = emit(&mut out, done, &mut t)?;
        }
        if !downstream {
            break;
        }
        m.set_device_allocations(runner.device_allocations());
        t.mark();
    }
    if downstream {
        let done = runner.drain()?;
        emit(&mut out, done, &mut t)?;
    }
    let sink = out.finish()?;
    let cpu = t
        .cpu_start
        .and_then(|t0| Some(cputime::process_cpu()?.saturating_sub(t0)));
    let busy = t.first_at.map(|t0| t0.elapsed().saturating_sub(t.waited));
    Ok(LoopResult {
        frames: t.frames,
        group_compute: runner.group_compute,
        link_in_ns: t.link_in_ns,
        sink,
        cpu,
        busy,
        cpu_marks: t.cpu_marks,
        busy_marks: t.busy_marks,
        applied: swaps.map(|i| i.applied).unwrap_or_default(),
    })
}
