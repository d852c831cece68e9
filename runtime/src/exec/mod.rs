//! A segment's stages on one device: the [`SegmentRunner`] runs a
//! segment's fusion groups frame by frame (on the CPU, or on a CUDA device
//! with two lanes in flight), and [`report`] builds a run's report. This
//! layer knows no network and no threads of its own: the segment layer
//! runs the same runner in-process or behind a gRPC link.

pub mod device;
pub mod report;

use std::time::{Duration, Instant};

use crate::frame::Frame;
use crate::io::sinks::SinkError;
use crate::io::source::SourceError;
use crate::plan::Segment;
use crate::spec::Pipeline;
pub use device::Device;
pub use report::{
    AROUND_SWAP, Applied, GroupReport, LinkReport, RunReport, SegmentTotals, StreamReport,
    WeightUpdateReport, assemble,
};
use streamfuse_kernels::cuda::device::CudaDevice;

/// A segment failed.
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
    /// A source could not produce a frame.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A sink could not take a frame.
    #[error(transparent)]
    Sink(#[from] SinkError),
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
    /// Opens `device` for `seg`. A segment with no stages (a source alone
    /// on its node) passes frames through on the host: it opens no device
    /// and copies nothing to one.
    ///
    /// # Errors
    /// [`ExecError::Cuda`] when the CUDA device cannot be opened.
    pub fn new(p: &'p Pipeline, seg: &'p Segment, device: Device) -> Result<Self, ExecError> {
        let gpu = match device {
            Device::Cpu => None,
            Device::Cuda(_) if seg.groups.is_empty() => None,
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

    /// Frames submitted to the device and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.gpu.as_ref().map_or(0, |g| g.in_flight.len())
    }

    /// Device and pinned host buffers the device allocated so far (see
    /// `CudaDevice::allocations`); `(0, 0)` on the CPU.
    pub fn device_allocations(&self) -> (u64, u64) {
        self.gpu.as_ref().map_or((0, 0), |g| g.dev.allocations())
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
