//! The in-process executor: one task (thread) per segment, bounded channels
//! between segments, the source in the first segment's task and the sink in
//! the last one's.
//!
//! With `fusion: off` every stage is its own segment, so stages overlap
//! across frames like a microservice chain; with `chain`/`kernel` a
//! segment's groups run back to back on each frame (kernels are themselves
//! multi-threaded over row bands). Links hold at most [`LINK_CAPACITY`]
//! frames, so a slow stage slows the source and memory stays bounded.

pub mod device;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::frame::{Frame, now_ns};
use crate::io::npy::{NpySink, NpySource};
use crate::io::sink::{OrderError, SinkRecord};
use crate::io::synthetic::Synthetic;
use crate::io::video::{self, MediaSink};
use crate::metrics::Percentiles;
use crate::plan::{Plan, Segment};
use crate::spec::{DeviceChoice, Pipeline, SinkConfig, SourceConfig};
pub use device::Device;
use streamfuse_kernels::cuda::device::CudaDevice;

/// Frames a link buffers before the sender waits.
pub const LINK_CAPACITY: usize = 2;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Device for every node (overrides the spec's node devices).
    pub device: Option<DeviceChoice>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// A run failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No usable device.
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    /// A kernel rejected a frame.
    #[error("frame seq {seq}, stage {stage}: {source}")]
    Kernel {
        /// Frame.
        seq: u64,
        /// Stage id(s).
        stage: String,
        /// Cause.
        source: streamfuse_kernels::KernelError,
    },
    /// The CUDA device failed (opening it, or on a frame).
    #[error("segment {segment}{}: {source}", .seq.map(|s| format!(", frame seq {s}")).unwrap_or_default())]
    Cuda {
        /// Segment.
        segment: usize,
        /// Frame, when one was being processed.
        seq: Option<u64>,
        /// Cause.
        source: streamfuse_kernels::cuda::device::CudaError,
    },
    /// A tensor file could not be read or written.
    #[error(transparent)]
    Npy(#[from] crate::io::npy::NpyError),
    /// A video file, camera or image could not be read or written.
    #[error(transparent)]
    Media(#[from] crate::io::video::MediaError),
    /// Frames reached the sink out of order.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// A segment task panicked.
    #[error("segment {0} task panicked")]
    Panicked(usize),
    /// A thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
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
}

/// A weight update as the run saw it.
#[derive(Debug, Clone, Serialize)]
pub struct WeightUpdateReport {
    /// Where and from which frame the new weights were used.
    #[serde(flatten)]
    pub applied: crate::live::Applied,
    /// p99 end-to-end latency of the stream's frames around the swap (the
    /// [`AROUND_SWAP`] frames before and after `first_seq`), ms; null where
    /// the sink did not see them.
    pub p99_around_ms: Option<f64>,
}

/// Frames either side of a weight swap whose latency the report gives.
pub const AROUND_SWAP: u64 = 50;

struct Msg {
    frame: Frame,
    sent: Instant,
}

#[derive(Default)]
struct SegmentStats {
    applied: Vec<crate::live::Applied>,
    group_compute: Vec<Duration>,
    frames: u64,
    link_in: Duration,
    sink: Option<(SinkRecord, Instant)>,
}

/// Runs the whole pipeline in this process.
///
/// # Errors
/// [`ExecError`] when no device is usable, a kernel fails on a frame, or a
/// segment task dies.
pub fn run(p: &Pipeline, plan: &Plan, opts: &RunOptions) -> Result<RunReport, ExecError> {
    let mut devices = Vec::with_capacity(plan.segments.len());
    let mut resolved: Vec<(DeviceChoice, Device)> = Vec::new();
    for seg in &plan.segments {
        let choice = opts.device.unwrap_or(p.nodes[seg.node].device);
        let dev = match resolved.iter().find(|(c, _)| *c == choice) {
            Some(&(_, d)) => d,
            None => {
                let d = device::resolve(choice)?;
                resolved.push((choice, d));
                d
            }
        };
        devices.push(dev);
    }
    tracing::info!(
        cpu_features = streamfuse_kernels::cpu::simd::level().name(),
        threads = rayon::current_num_threads(),
        "CPU kernels"
    );
    let total = p.total_frames();
    let bar = progress_bar(opts.progress, total);
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
    let (live, inboxes) = crate::live::LiveWeights::new(p, plan, &all);
    let stop_watch = AtomicBool::new(false);
    let start = Instant::now();
    let (results, refused) = std::thread::scope(|s| {
        let watcher = (!p.watch.is_empty()).then(|| {
            std::thread::Builder::new()
                .name("weights-watch".into())
                .spawn_scoped(s, || crate::live::watch(&live, &p.watch, &stop_watch))
        });
        let handles: Vec<_> = plan
            .segments
            .iter()
            .zip(txs.into_iter().zip(rxs))
            .zip(devices.iter().zip(inboxes))
            .map(|((seg, (tx, rx)), (&device, swaps))| {
                let bar = bar.clone();
                let last = seg.index + 1 == nseg;
                let io = WorkerIo { rx, tx, swaps };
                std::thread::Builder::new()
                    .name(format!("segment-{}", seg.index))
                    .spawn_scoped(s, move || worker(p, seg, device, io, last, &bar))
            })
            .collect();
        let results: Vec<Result<SegmentStats, ExecError>> = handles
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
    let mut stats = Vec::with_capacity(nseg);
    for r in results {
        stats.push(r?);
    }
    let mut r = report(p, plan, &devices, stats, start);
    r.weight_updates_refused = refused;
    Ok(r)
}

/// A worker's channels: frames in and out, and new weights.
struct WorkerIo {
    rx: Option<Receiver<Msg>>,
    tx: Option<Sender<Msg>>,
    swaps: Option<crate::live::SwapInbox>,
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

fn worker(
    p: &Pipeline,
    seg: &Segment,
    device: Device,
    io: WorkerIo,
    last: bool,
    bar: &ProgressBar,
) -> Result<SegmentStats, ExecError> {
    let WorkerIo { rx, tx, mut swaps } = io;
    let mut st = SegmentStats::default();
    let mut source = seg.has_source.then(|| open_sources(p));
    let mut npy_sink = match (&p.sink, last) {
        (SinkConfig::Npy(out), true) => Some(NpySink::new(out.clone())?),
        _ => None,
    };
    let mut media_sink = if last {
        MediaSink::open(&p.sink, p.output_shape())?
    } else {
        None
    };
    let mut sink = last.then(|| SinkRecord::new(p.sink != SinkConfig::Null));
    let mut runner = SegmentRunner::new(p, seg, device)?;
    let mut last_at = Instant::now();
    loop {
        let frame = match (&mut source, &rx) {
            (Some(src), _) => match src.next() {
                Some(f) => f?,
                None => break,
            },
            (None, Some(rx)) => {
                let waiting = Instant::now();
                match rx.recv() {
                    Ok(msg) => {
                        let got = Instant::now();
                        st.link_in += got.saturating_duration_since(msg.sent.max(waiting));
                        msg.frame
                    }
                    Err(_) => break,
                }
            }
            (None, None) => break,
        };
        // New weights are taken between two frames: this frame is the
        // first computed with them.
        if let Some(inbox) = swaps.as_mut() {
            if let Some(groups) = inbox.take() {
                runner.set_groups(groups);
            }
            inbox.first_frame(frame.stream_id, frame.seq);
        }
        let done = runner.push(frame)?;
        let mut out = Outlet {
            sink: &mut sink,
            npy: &mut npy_sink,
            media: &mut media_sink,
            tx: tx.as_ref(),
            bar,
        };
        if !emit(done, &mut st, &mut out, &mut last_at)? {
            st.group_compute = runner.group_compute;
            st.applied = swaps.map(|i| i.applied).unwrap_or_default();
            finish_media(media_sink)?;
            return finish(st, sink, npy_sink, last_at);
        }
    }
    let done = runner.drain()?;
    let mut out = Outlet {
        sink: &mut sink,
        npy: &mut npy_sink,
        media: &mut media_sink,
        tx: tx.as_ref(),
        bar,
    };
    emit(done, &mut st, &mut out, &mut last_at)?;
    st.group_compute = runner.group_compute;
    st.applied = swaps.map(|i| i.applied).unwrap_or_default();
    finish_media(media_sink)?;
    finish(st, sink, npy_sink, last_at)
}

fn finish_media(media: Option<MediaSink>) -> Result<(), ExecError> {
    if let Some(m) = media {
        m.finish()?;
    }
    Ok(())
}

fn finish(
    mut st: SegmentStats,
    sink: Option<SinkRecord>,
    npy: Option<NpySink>,
    last_at: Instant,
) -> Result<SegmentStats, ExecError> {
    if let Some(mut n) = npy {
        n.finish()?;
    }
    st.sink = sink.map(|s| (s, last_at));
    Ok(st)
}

/// Frames a source thread may have ready ahead of its segment.
const SOURCE_AHEAD: usize = 2;

/// The source's frames, produced on their own thread (`source`) up to
/// [`SOURCE_AHEAD`] frames ahead of the caller, as a camera delivers frames
/// while the previous ones are processed: producing the next frame overlaps
/// processing this one. Each frame's `capture_ns` is stamped when it is
/// produced, so time spent waiting for the segment counts as latency.
pub fn open_source(
    src: &SourceConfig,
) -> Box<dyn Iterator<Item = Result<Frame, ExecError>> + Send> {
    let inner = open_source_inline(src);
    let (tx, rx) = bounded(SOURCE_AHEAD);
    let spawned = std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            for item in inner {
                let stop = item.is_err();
                if tx.send(item).is_err() || stop {
                    break;
                }
            }
        });
    match spawned {
        Ok(_) => Box::new(rx.into_iter()),
        Err(e) => {
            tracing::warn!(error = %e, "no source thread; producing frames inline");
            open_source_inline(src)
        }
    }
}

/// Every source's frames, each stream produced on its own thread (so a
/// slow or ended stream does not hold back the others) and interleaved as
/// they come; with one source, [`open_source`].
pub fn open_sources(p: &Pipeline) -> Box<dyn Iterator<Item = Result<Frame, ExecError>> + Send> {
    if p.extra_sources.is_empty() {
        return open_source(&p.source);
    }
    let (tx, rx) = bounded(SOURCE_AHEAD);
    for (stream, src) in p.sources().enumerate() {
        let to_thread = tx.clone();
        let src = src.clone();
        let stream_id = u32::try_from(stream).unwrap_or(u32::MAX);
        let spawned = std::thread::Builder::new()
            .name(format!("source-{stream}"))
            .spawn(move || {
                for item in stream_frames(&src, stream_id) {
                    let stop = item.is_err();
                    if to_thread.send(item).is_err() || stop {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            let _ = tx.send(Err(ExecError::Thread {
                what: format!("source (stream {stream})"),
                source: e,
            }));
        }
    }
    Box::new(rx.into_iter())
}

/// One source's frames as stream `stream_id`, on the caller's thread.
pub fn stream_frames(
    src: &SourceConfig,
    stream_id: u32,
) -> impl Iterator<Item = Result<Frame, ExecError>> + Send + use<> {
    open_source_inline(src).map(move |f| f.map(|f| Frame { stream_id, ..f }))
}

/// The source's frames, produced on the caller's thread.
pub fn open_source_inline(
    src: &SourceConfig,
) -> Box<dyn Iterator<Item = Result<Frame, ExecError>> + Send> {
    match src {
        SourceConfig::Synthetic(s) => Box::new(Synthetic::new(s.clone()).map(Ok)),
        SourceConfig::Npy {
            input,
            shape,
            frames,
        } => Box::new(
            NpySource::new(input.clone(), *shape, *frames).map(|r| r.map_err(ExecError::from)),
        ),
        SourceConfig::Video(_) | SourceConfig::Camera(_) | SourceConfig::Images(_) => {
            media_source(src)
        }
    }
}

/// A video, camera or image-folder source's frames; one error item when it
/// cannot be opened.
fn media_source(src: &SourceConfig) -> Box<dyn Iterator<Item = Result<Frame, ExecError>> + Send> {
    let opened = match src {
        SourceConfig::Video(v) => video::open_video(v),
        SourceConfig::Camera(c) => video::open_camera(c),
        SourceConfig::Images(i) => video::open_images(i),
        SourceConfig::Synthetic(_) | SourceConfig::Npy { .. } => {
            return Box::new(std::iter::empty());
        }
    };
    match opened {
        Ok(frames) => Box::new(frames.map(|r| r.map_err(ExecError::from))),
        Err(e) => Box::new(std::iter::once(Err(ExecError::from(e)))),
    }
}

/// The stage ids a group covers, joined by `+`.
pub fn stage_ids(p: &Pipeline, g: &crate::plan::Group) -> String {
    p.stages[g.stages.clone()]
        .iter()
        .map(|s| s.id.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

/// Runs one segment's fusion groups on its device, frame by frame, timing
/// each group. On a GPU frames overlap (two lanes), so a frame may come
/// out of a later [`SegmentRunner::push`] or of [`SegmentRunner::drain`];
/// frames always leave in the order they went in.
pub struct SegmentRunner<'p> {
    p: &'p Pipeline,
    seg: &'p Segment,
    /// The groups run on each frame: the segment's, until new weights
    /// replace them ([`SegmentRunner::set_groups`]).
    groups: Vec<crate::plan::Group>,
    gpu: Option<GpuLanes>,
    /// Compute time per group so far.
    pub group_compute: Vec<Duration>,
}

impl<'p> SegmentRunner<'p> {
    /// Opens `device` for `seg`.
    ///
    /// # Errors
    /// [`ExecError::Cuda`] when the CUDA device cannot be opened.
    pub fn new(p: &'p Pipeline, seg: &'p Segment, device: Device) -> Result<Self, ExecError> {
        let gpu = match device {
            Device::Cpu => None,
            Device::Cuda(n) => Some(GpuLanes {
                dev: CudaDevice::open(n).map_err(|source| ExecError::Cuda {
                    segment: seg.index,
                    seq: None,
                    source,
                })?,
                in_flight: std::collections::VecDeque::new(),
                next_lane: 0,
            }),
        };
        Ok(Self {
            p,
            seg,
            groups: seg.groups.clone(),
            gpu,
            group_compute: vec![Duration::ZERO; seg.groups.len()],
        })
    }

    /// Runs the frames pushed from now on with `groups` (the segment's
    /// groups rebuilt with new weights: same stages, same shapes). Frames
    /// already on a GPU lane finish with the groups they were submitted with.
    pub fn set_groups(&mut self, groups: Vec<crate::plan::Group>) {
        if groups.len() == self.groups.len() {
            self.groups = groups;
        } else {
            tracing::error!(
                segment = self.seg.index,
                "new groups do not match the segment's; kept the old ones"
            );
        }
    }

    /// Processes `frame`; returns the frames that are finished.
    ///
    /// # Errors
    /// [`ExecError`] when a kernel or the device fails on a frame.
    pub fn push(&mut self, frame: Frame) -> Result<Vec<Frame>, ExecError> {
        match &mut self.gpu {
            None => Ok(vec![run_cpu(
                self.p,
                &self.groups,
                frame,
                &mut self.group_compute,
            )?]),
            Some(g) => g.push(self.seg, &self.groups, frame, &mut self.group_compute),
        }
    }

    /// Finishes every frame still in flight.
    ///
    /// # Errors
    /// [`ExecError`] when the device fails.
    pub fn drain(&mut self) -> Result<Vec<Frame>, ExecError> {
        match &mut self.gpu {
            None => Ok(Vec::new()),
            Some(g) => g.drain(self.seg, &mut self.group_compute),
        }
    }
}

/// Runs a segment's groups on the CPU, timing each.
fn run_cpu(
    p: &Pipeline,
    groups: &[crate::plan::Group],
    mut frame: Frame,
    times: &mut [Duration],
) -> Result<Frame, ExecError> {
    for (g, group) in groups.iter().enumerate() {
        let t0 = Instant::now();
        let seq = frame.seq;
        let out = group
            .op
            .run_cpu_owned(frame.tensor)
            .map_err(|source| ExecError::Kernel {
                seq,
                stage: stage_ids(p, group),
                source,
            })?;
        times[g] += t0.elapsed();
        frame = Frame {
            tensor: out,
            ..frame
        };
    }
    Ok(frame)
}

/// Hands processed frames to the sink or the next segment; `false` when
/// downstream is gone (it failed and reports why).
/// Where a segment's processed frames go.
struct Outlet<'a> {
    sink: &'a mut Option<SinkRecord>,
    npy: &'a mut Option<NpySink>,
    media: &'a mut Option<MediaSink>,
    tx: Option<&'a Sender<Msg>>,
    bar: &'a ProgressBar,
}

fn emit(
    frames: Vec<Frame>,
    st: &mut SegmentStats,
    out: &mut Outlet<'_>,
    last_at: &mut Instant,
) -> Result<bool, ExecError> {
    for frame in frames {
        st.frames += 1;
        if let Some(sink) = out.sink.as_mut() {
            sink.accept(&frame, now_ns())?;
            if let Some(n) = out.npy.as_mut() {
                n.write(&frame)?;
            }
            if let Some(m) = out.media.as_mut() {
                m.write(&frame)?;
            }
            *last_at = Instant::now();
            out.bar.inc(1);
        } else if let Some(tx) = out.tx
            && tx
                .send(Msg {
                    frame,
                    sent: Instant::now(),
                })
                .is_err()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What identifies a frame whose data is on the device.
struct FrameId {
    stream_id: u32,
    seq: u64,
    capture_ns: u64,
}

/// Frames in flight on a CUDA device: two lanes (stream + pinned buffers),
/// so one frame's copies overlap the other's kernels; frames leave in order.
struct GpuLanes {
    dev: CudaDevice,
    /// Frames submitted and not yet completed, oldest first, with their lane.
    in_flight: std::collections::VecDeque<(usize, FrameId)>,
    next_lane: usize,
}

impl GpuLanes {
    const LANES: usize = 2;

    fn err(
        seg: &Segment,
        seq: u64,
    ) -> impl Fn(streamfuse_kernels::cuda::device::CudaError) -> ExecError {
        let segment = seg.index;
        move |source| ExecError::Cuda {
            segment,
            seq: Some(seq),
            source,
        }
    }

    /// Submits `frame`; returns the frames that completed to make room.
    fn push(
        &mut self,
        seg: &Segment,
        groups: &[crate::plan::Group],
        frame: Frame,
        times: &mut [Duration],
    ) -> Result<Vec<Frame>, ExecError> {
        let mut done = Vec::new();
        let lane = self.next_lane;
        if self.dev.lane_busy(lane) {
            done.push(self.complete_oldest(seg, times)?);
        }
        let ops: Vec<&streamfuse_kernels::Op> = groups.iter().map(|g| &g.op).collect();
        self.dev
            .submit(lane, &ops, &frame.tensor)
            .map_err(Self::err(seg, frame.seq))?;
        // The host copy is no longer needed: keep only the frame's identity.
        let id = FrameId {
            stream_id: frame.stream_id,
            seq: frame.seq,
            capture_ns: frame.capture_ns,
        };
        self.in_flight.push_back((lane, id));
        self.next_lane = (lane + 1) % Self::LANES;
        // Frames that already finished leave now rather than when their lane
        // is needed again, so latency does not include the next frames' wait.
        while self
            .in_flight
            .front()
            .is_some_and(|&(l, _)| self.dev.lane_done(l))
        {
            done.push(self.complete_oldest(seg, times)?);
        }
        Ok(done)
    }

    fn complete_oldest(
        &mut self,
        seg: &Segment,
        times: &mut [Duration],
    ) -> Result<Frame, ExecError> {
        let Some((lane, id)) = self.in_flight.pop_front() else {
            return Err(ExecError::Cuda {
                segment: seg.index,
                seq: None,
                source: streamfuse_kernels::cuda::device::CudaError::Driver(
                    "no frame in flight".into(),
                ),
            });
        };
        let (tensor, ms) = self.dev.complete(lane).map_err(Self::err(seg, id.seq))?;
        for (t, m) in times.iter_mut().zip(ms) {
            *t += Duration::from_secs_f64(f64::from(m.max(0.0)) / 1e3);
        }
        Ok(Frame {
            stream_id: id.stream_id,
            seq: id.seq,
            capture_ns: id.capture_ns,
            tensor,
        })
    }

    /// Completes every frame still in flight, in order.
    fn drain(&mut self, seg: &Segment, times: &mut [Duration]) -> Result<Vec<Frame>, ExecError> {
        let mut done = Vec::new();
        while !self.in_flight.is_empty() {
            done.push(self.complete_oldest(seg, times)?);
        }
        Ok(done)
    }
}

fn report(
    p: &Pipeline,
    plan: &Plan,
    devices: &[Device],
    stats: Vec<SegmentStats>,
    start: Instant,
) -> RunReport {
    let mut totals = Vec::with_capacity(stats.len());
    let mut record = None;
    for st in stats {
        totals.push(SegmentTotals {
            frames: st.frames,
            group_compute: st.group_compute,
            link_in: st.link_in,
            weight_updates: st.applied,
        });
        if st.sink.is_some() {
            record = st.sink;
        }
    }
    let (sink, end) = record.unwrap_or_else(|| (SinkRecord::new(false), start));
    let elapsed = end.saturating_duration_since(start).as_secs_f64();
    let devices: Vec<String> = devices.iter().map(ToString::to_string).collect();
    let seen = crate::serve::SinkOutcome {
        digest: sink.digest(),
        streams: sink.streams(),
        latencies_ns: sink.latencies_ns,
        arrivals_ns: sink.arrivals_ns,
        last_ns: 0,
    };
    assemble(p, plan, &totals, &seen, elapsed, &devices)
}

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
    pub weight_updates: Vec<crate::live::Applied>,
}

/// Builds the run's report from per-segment totals (in plan order), what
/// the sink saw (latencies, arrivals, streams, digest), the run's wall time
/// and the devices used.
pub fn assemble(
    p: &Pipeline,
    plan: &Plan,
    totals: &[SegmentTotals],
    sink: &crate::serve::SinkOutcome,
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
    }
}
