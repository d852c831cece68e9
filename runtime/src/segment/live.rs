//! Live weight updates: a conv stage's weights replaced while frames flow.
//!
//! The contract:
//! - An update names a `conv2d` stage and carries new weights of the very
//!   shape the stage has (`[out, in, kh, kw]`) and optionally a new bias
//!   (`[out]`). The geometry cannot change, so no frame shape, fusion group
//!   or downstream segment changes with it.
//! - It is validated (stage known, a conv, held by a segment of this
//!   process; shape; finite values; at most [`MAX_WEIGHTS_BYTES`]) and
//!   prepared off the hot path, by the caller's thread (the rpc handler or
//!   the file watcher): the segment's fusion groups are rebuilt with the new
//!   weights, exactly as the planner builds them. The CPU kernels read the
//!   weights in their stored `[out, in, kh, kw]` layout, so the groups are
//!   all they need; a CUDA segment uploads the new weights when it first
//!   submits a frame with them (a few KiB, between two frames).
//! - The prepared groups go to the segment's worker over a channel. The
//!   worker takes them **between two frames**: every frame is computed
//!   entirely with the old or entirely with the new groups (frames already
//!   submitted to a GPU lane keep the groups they were submitted with).
//! - The first frame the worker processes with them is reported
//!   ([`Applied`]): its stream and `seq`. Frames of that stream from that
//!   `seq` on use the new weights, frames before it the old ones.
//! - A refused update changes nothing: the old weights keep serving.
//!
//! [`LiveWeights`] is the hub one process holds: the pipeline as updated so
//! far, each stage's weights version, and a sender to each segment worker
//! that runs in this process.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use streamfuse_kernels::{Conv2d, Op};

pub use crate::exec::report::Applied;
use crate::frame::now_ns;
use crate::plan::{self, Group, Plan};
use crate::spec::Pipeline;
pub use crate::spec::Watched;

use crate::transport::control::ControlError;
pub use crate::transport::control::{MAX_WEIGHTS_BYTES, WeightsUpdate};

/// An update was refused; the old weights keep serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// No stage has this id.
    #[error("no stage `{stage}` in pipeline `{pipeline}` (stages: {known})")]
    UnknownStage {
        /// Stage asked for.
        stage: String,
        /// Pipeline name.
        pipeline: String,
        /// The stage ids, comma-separated.
        known: String,
    },
    /// The stage has no weights.
    #[error(
        "stage `{stage}` is a {op}, which has no weights; only conv2d stages take weight updates"
    )]
    NotConv {
        /// Stage.
        stage: String,
        /// Its op.
        op: String,
    },
    /// The stage runs in another process.
    #[error(
        "stage `{stage}` runs in segment {segment}, which this process does not run; send the update to that segment's server"
    )]
    NotHere {
        /// Stage.
        stage: String,
        /// The segment that runs it.
        segment: usize,
    },
    /// The weights' shape is not the stage's.
    #[error(
        "stage `{stage}`: weights of shape {got:?}, the stage needs {expected:?} (the geometry cannot change)"
    )]
    Shape {
        /// Stage.
        stage: String,
        /// Shape given.
        got: Vec<u64>,
        /// Shape required.
        expected: Vec<u64>,
    },
    /// The values do not fill the shape (a truncated upload).
    #[error("stage `{stage}`: {what} has {got} values, its shape needs {expected}")]
    Length {
        /// Stage.
        stage: String,
        /// `weights` or `bias`.
        what: &'static str,
        /// Values given.
        got: usize,
        /// Values required.
        expected: usize,
    },
    /// A NaN or infinity.
    #[error("stage `{stage}`: {what} holds a non-finite value ({value}) at index {index}")]
    NonFinite {
        /// Stage.
        stage: String,
        /// `weights` or `bias`.
        what: &'static str,
        /// Flat index.
        index: usize,
        /// The value, printed.
        value: String,
    },
    /// Over [`MAX_WEIGHTS_BYTES`].
    #[error("stage `{stage}`: update of {bytes} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Stage.
        stage: String,
        /// Bytes given.
        bytes: usize,
        /// Limit.
        limit: usize,
    },
    /// The file could not be read or parsed.
    #[error("{0}")]
    File(String),
    /// The segment has finished; there are no more frames to use them.
    #[error("segment {segment} has stopped taking frames; the update was not applied")]
    Stopped {
        /// Segment.
        segment: usize,
    },
}

/// Prepared groups on their way to a segment's worker.
pub struct Swap {
    /// Stage updated.
    pub stage: String,
    /// Its new version.
    pub version: u64,
    /// The segment's fusion groups with the new weights.
    pub groups: Vec<Group>,
    /// Told once the first frame used them.
    pub reply: Option<tokio::sync::oneshot::Sender<Applied>>,
}

/// What a worker holds: swaps to take between frames, and swaps taken but
/// not yet seen on a frame.
pub struct SwapInbox {
    segment: usize,
    rx: Receiver<Swap>,
    taken: Vec<Swap>,
    /// Every swap this worker applied, in order.
    pub applied: Vec<Applied>,
}

impl SwapInbox {
    /// Takes the swaps waiting: returns the newest groups to run with (none
    /// waiting: `None`). Call between two frames.
    pub fn take(&mut self) -> Option<Vec<Group>> {
        let mut newest = None;
        while let Ok(mut s) = self.rx.try_recv() {
            newest = Some(std::mem::take(&mut s.groups));
            self.taken.push(s);
        }
        newest
    }

    /// Records that the frame `(stream_id, seq)` is the first computed with
    /// the swaps taken since the last frame, and tells their senders.
    pub fn first_frame(&mut self, stream_id: u32, seq: u64) {
        for s in self.taken.drain(..) {
            let a = Applied {
                stage: s.stage,
                version: s.version,
                segment: self.segment,
                stream_id,
                first_seq: seq,
                at_ns: now_ns(),
            };
            tracing::info!(stage = %a.stage, version = a.version, stream = stream_id, seq, "new weights in use");
            if let Some(r) = s.reply {
                let _ = r.send(a.clone());
            }
            self.applied.push(a);
        }
    }
}

struct State {
    pipeline: Pipeline,
    versions: BTreeMap<String, u64>,
}

/// One process's live weights: validates and prepares updates and hands
/// them to the segment workers it runs.
pub struct LiveWeights {
    state: Mutex<State>,
    /// Stage range of each segment of the plan.
    segments: Vec<std::ops::Range<usize>>,
    /// Sender to each segment's worker run here.
    senders: Vec<Option<Sender<Swap>>>,
}

impl LiveWeights {
    /// A hub for `plan`'s segments `local` (the ones this process runs);
    /// returns it and each local segment's inbox (`None` elsewhere).
    pub fn new(p: &Pipeline, plan: &Plan, local: &[usize]) -> (Self, Vec<Option<SwapInbox>>) {
        let mut senders = Vec::with_capacity(plan.segments.len());
        let mut inboxes = Vec::with_capacity(plan.segments.len());
        for seg in &plan.segments {
            if local.contains(&seg.index) {
                let (tx, rx) = crossbeam_channel::unbounded();
                senders.push(Some(tx));
                inboxes.push(Some(SwapInbox {
                    segment: seg.index,
                    rx,
                    taken: Vec::new(),
                    applied: Vec::new(),
                }));
            } else {
                senders.push(None);
                inboxes.push(None);
            }
        }
        let versions = p
            .stages
            .iter()
            .filter(|s| matches!(s.op, Op::Conv2d(_)))
            .map(|s| (s.id.clone(), 1))
            .collect();
        let hub = Self {
            state: Mutex::new(State {
                pipeline: p.clone(),
                versions,
            }),
            segments: plan.segments.iter().map(|s| s.stages.clone()).collect(),
            senders,
        };
        (hub, inboxes)
    }

    /// Each conv stage's current weights version (1: the spec's).
    pub fn versions(&self) -> BTreeMap<String, u64> {
        self.state
            .lock()
            .map(|s| s.versions.clone())
            .unwrap_or_default()
    }

    /// Validates `up`, prepares the segment's groups with it and hands them
    /// to the segment's worker. The returned receiver is told which frame
    /// first used them.
    ///
    /// # Errors
    /// [`UpdateError`] when the update is refused; nothing changed then.
    pub fn submit(
        &self,
        up: WeightsUpdate,
    ) -> Result<(u64, tokio::sync::oneshot::Receiver<Applied>), UpdateError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| UpdateError::File("the weights state is poisoned".into()))?;
        let p = &state.pipeline;
        let Some(index) = p.stages.iter().position(|s| s.id == up.stage) else {
            return Err(UpdateError::UnknownStage {
                stage: up.stage,
                pipeline: p.name.clone(),
                known: p
                    .stages
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let Op::Conv2d(old) = &p.stages[index].op else {
            return Err(UpdateError::NotConv {
                stage: up.stage,
                op: p.stages[index].op.name().to_owned(),
            });
        };
        let segment = self
            .segments
            .iter()
            .position(|r| r.contains(&index))
            .unwrap_or(0);
        let Some(tx) = self.senders.get(segment).and_then(Option::as_ref) else {
            return Err(UpdateError::NotHere {
                stage: up.stage,
                segment,
            });
        };
        let conv = validate(old, up)?;
        let stage = p.stages[index].id.clone();
        let mut next = p.clone();
        next.stages[index].op = Op::Conv2d(conv);
        let groups = plan::groups(&next, self.segments[segment].clone());
        let version = state.versions.get(&stage).copied().unwrap_or(1) + 1;
        let (reply, told) = tokio::sync::oneshot::channel();
        tx.send(Swap {
            stage: stage.clone(),
            version,
            groups,
            reply: Some(reply),
        })
        .map_err(|_| UpdateError::Stopped { segment })?;
        state.pipeline = next;
        state.versions.insert(stage, version);
        Ok((version, told))
    }
}

/// Checks `up` against the stage's current conv and builds the new one.
fn validate(old: &Conv2d, up: WeightsUpdate) -> Result<Conv2d, UpdateError> {
    let pm = old.params;
    let stage = up.stage;
    let bytes = (up.weights.len() + up.bias.as_ref().map_or(0, Vec::len)) * 4;
    if bytes > MAX_WEIGHTS_BYTES {
        return Err(UpdateError::TooLarge {
            stage,
            bytes,
            limit: MAX_WEIGHTS_BYTES,
        });
    }
    let expected: Vec<u64> = [
        pm.out_channels,
        pm.in_per_group(),
        pm.kernel_h(),
        pm.kernel_w(),
    ]
    .iter()
    .map(|&d| d as u64)
    .collect();
    if up.shape != expected {
        return Err(UpdateError::Shape {
            stage,
            got: up.shape,
            expected,
        });
    }
    if up.weights.len() != pm.weight_len() {
        return Err(UpdateError::Length {
            stage,
            what: "weights",
            got: up.weights.len(),
            expected: pm.weight_len(),
        });
    }
    finite(&stage, "weights", &up.weights)?;
    let bias = match up.bias {
        Some(b) => {
            if b.len() != pm.out_channels {
                return Err(UpdateError::Length {
                    stage,
                    what: "bias",
                    got: b.len(),
                    expected: pm.out_channels,
                });
            }
            finite(&stage, "bias", &b)?;
            Some(b)
        }
        None => old.bias.as_ref().map(|b| b.to_vec()),
    };
    Conv2d::new(pm, up.weights, bias)
        .map(|c| {
            c.with_algorithm(old.algorithm)
                .with_precision(old.precision)
        })
        .map_err(|e| UpdateError::File(format!("stage `{stage}`: {e}")))
}

fn finite(stage: &str, what: &'static str, v: &[f32]) -> Result<(), UpdateError> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(UpdateError::NonFinite {
            stage: stage.to_owned(),
            what,
            index,
            value: v[index].to_string(),
        }),
        None => Ok(()),
    }
}

/// Reads an update for `stage` from `.npy` files (float32 or float64).
///
/// # Errors
/// [`UpdateError::File`] when a file cannot be read or is not a C-ordered
/// float `.npy` file.
pub fn read_npy(
    stage: &str,
    weights: &Path,
    bias: Option<&Path>,
) -> Result<WeightsUpdate, UpdateError> {
    let (shape, values) =
        crate::media::npy::read_f32(weights).map_err(|e| UpdateError::File(e.to_string()))?;
    let bias = match bias {
        Some(b) => Some(
            crate::media::npy::read_f32(b)
                .map_err(|e| UpdateError::File(e.to_string()))?
                .1,
        ),
        None => None,
    };
    Ok(WeightsUpdate {
        stage: stage.to_owned(),
        shape,
        weights: values,
        bias,
    })
}

/// How often a watched weights file is looked at.
pub const WATCH_EVERY: Duration = Duration::from_millis(50);

/// What identifies one version of a file: modification time, length, inode.
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// Watches `files` until `stop`, submitting each new version to `hub`
/// (every [`WATCH_EVERY`]). A version that is refused is logged and
/// counted in the returned list; the old weights keep serving. Replace a
/// watched file atomically (write a temporary file, then rename it over the
/// watched one) so the watcher never reads half a file.
pub fn watch(hub: &LiveWeights, files: &[Watched], stop: &AtomicBool) -> Vec<String> {
    let mut seen: Vec<_> = files.iter().map(|w| stamp(&w.path)).collect();
    let mut refused = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(WATCH_EVERY);
        for (w, last) in files.iter().zip(&mut seen) {
            let now = stamp(&w.path);
            if now.is_none() || now == *last {
                continue;
            }
            *last = now;
            let result = read_npy(&w.stage, &w.path, None).and_then(|up| hub.submit(up));
            match result {
                Ok((version, _)) => {
                    tracing::info!(stage = %w.stage, version, file = %w.path.display(), "weights file changed: new weights prepared");
                }
                Err(e) => {
                    let msg = format!("{}: {e}", w.path.display());
                    tracing::error!("weights update refused, old weights kept: {msg}");
                    refused.push(msg);
                }
            }
        }
    }
    refused
}

impl crate::transport::control::WeightsControl for LiveWeights {
    fn submit(
        &self,
        up: WeightsUpdate,
    ) -> Result<(u64, tokio::sync::oneshot::Receiver<Applied>), ControlError> {
        LiveWeights::submit(self, up).map_err(|e| ControlError {
            precondition: matches!(e, UpdateError::NotHere { .. } | UpdateError::Stopped { .. }),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use streamfuse_kernels::{Shape, Tensor};

    use super::*;
    use crate::exec::{Device, SegmentRunner};
    use crate::frame::Frame;

    const SPEC: &str = "
name: t
source: { synthetic: { width: 12, height: 10, channels: 2, frames: 4, seed: 3 } }
stages:
  - { id: conv, op: conv2d, kernel: 3, out_channels: 2, bias: true, weights: { random: { seed: 1 } } }
  - { id: relu, op: relu }
  - { id: pool, op: maxpool, size: 2, stride: 2 }
sink: { stats: {} }
fusion: kernel
";

    fn pipeline(placement_off: bool) -> (Pipeline, Plan) {
        let mut p = crate::spec::parse(SPEC, Path::new("t.yaml"), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        if placement_off {
            p.fusion = crate::spec::FusionMode::Off;
        }
        let pl = plan::plan(&p);
        (p, pl)
    }

    fn update(weights: Vec<f32>) -> WeightsUpdate {
        WeightsUpdate {
            stage: "conv".into(),
            shape: vec![2, 2, 3, 3],
            weights,
            bias: None,
        }
    }

    fn frame(p: &Pipeline, seq: u64) -> Frame {
        let shape = p.source.shape();
        let v = (0..shape.len())
            .map(|i| ((i * 7 + seq as usize * 3) % 11) as f32 / 11.0 - 0.4)
            .collect();
        Frame {
            stream_id: 0,
            seq,
            capture_ns: 0,
            tensor: Tensor::from_vec(shape, v).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    #[test]
    fn refused_updates_name_what_is_wrong_and_change_nothing() {
        let (p, pl) = pipeline(false);
        let (hub, _inboxes) = LiveWeights::new(&p, &pl, &[0]);
        let good = vec![0.5; 36];
        let cases: Vec<(WeightsUpdate, &str)> = vec![
            (
                WeightsUpdate {
                    stage: "nope".into(),
                    ..update(good.clone())
                },
                "no stage `nope` in pipeline `t` (stages: conv, relu, pool)",
            ),
            (
                WeightsUpdate {
                    stage: "relu".into(),
                    ..update(good.clone())
                },
                "stage `relu` is a relu, which has no weights",
            ),
            (
                WeightsUpdate {
                    shape: vec![2, 2, 5, 5],
                    ..update(vec![0.5; 100])
                },
                "weights of shape [2, 2, 5, 5], the stage needs [2, 2, 3, 3]",
            ),
            (
                update(vec![0.5; 35]),
                "weights has 35 values, its shape needs 36",
            ),
            (
                {
                    let mut w = good.clone();
                    w[17] = f32::NAN;
                    update(w)
                },
                "weights holds a non-finite value (NaN) at index 17",
            ),
            (
                WeightsUpdate {
                    bias: Some(vec![1.0; 3]),
                    ..update(good.clone())
                },
                "bias has 3 values, its shape needs 2",
            ),
            (
                WeightsUpdate {
                    bias: Some(vec![1.0, f32::INFINITY]),
                    ..update(good.clone())
                },
                "bias holds a non-finite value (inf) at index 1",
            ),
        ];
        for (up, want) in cases {
            let e = hub.submit(up).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert_eq!(hub.versions().get("conv"), Some(&1), "nothing changed");
    }

    #[test]
    fn a_stage_run_by_another_process_is_refused() {
        let (p, pl) = pipeline(true);
        // Fusion off: conv is segment 1; this process runs segment 2.
        let (hub, _inboxes) = LiveWeights::new(&p, &pl, &[2]);
        let e = hub.submit(update(vec![0.5; 36])).map(|_| ()).unwrap_err();
        assert_eq!(
            e,
            UpdateError::NotHere {
                stage: "conv".into(),
                segment: 1
            }
        );
    }

    #[test]
    fn a_swap_takes_effect_at_a_frame_boundary_and_names_that_frame() {
        let (p, pl) = pipeline(false);
        let seg = &pl.segments[0];
        let (hub, mut inboxes) = LiveWeights::new(&p, &pl, &[0]);
        let mut inbox = inboxes[0].take().unwrap_or_else(|| panic!("no inbox"));
        let mut runner = SegmentRunner::new(&p, seg, Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        // The reference: the same pipeline with the new weights from the start.
        let new_w: Vec<f32> = (0..36).map(|i| (i as f32 - 18.0) / 40.0).collect();
        let mut q = p.clone();
        let Op::Conv2d(c) = &p.stages[0].op else {
            panic!("conv")
        };
        let c2 = Conv2d::new(c.params, new_w.clone(), c.bias.as_ref().map(|b| b.to_vec()))
            .unwrap_or_else(|e| panic!("{e}"));
        q.stages[0].op = Op::Conv2d(c2);
        let ql = plan::plan(&q);
        let mut new_runner =
            SegmentRunner::new(&q, &ql.segments[0], Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        let mut old_runner =
            SegmentRunner::new(&p, seg, Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
        let mut told = None;
        for seq in 0..6 {
            if seq == 3 {
                let (version, rx) = hub
                    .submit(update(new_w.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(version, 2);
                told = Some(rx);
            }
            let f = frame(&p, seq);
            if let Some(g) = inbox.take() {
                runner.set_groups(g);
            }
            inbox.first_frame(f.stream_id, f.seq);
            let out = runner.push(f.clone()).unwrap_or_else(|e| panic!("{e}"));
            let want = if seq < 3 {
                &mut old_runner
            } else {
                &mut new_runner
            };
            let reference = want.push(f).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(out[0].tensor, reference[0].tensor, "frame {seq}");
        }
        let a = told
            .and_then(|mut rx| rx.try_recv().ok())
            .unwrap_or_else(|| panic!("no reply"));
        assert_eq!(
            (a.stage.as_str(), a.version, a.stream_id, a.first_seq),
            ("conv", 2, 0, 3)
        );
        assert_eq!(inbox.applied, vec![a]);
        assert_eq!(hub.versions().get("conv"), Some(&2));
        // The new weights differ from the old: the check above could fail.
        let f = frame(&p, 9);
        let a = old_runner.push(f.clone()).unwrap_or_else(|e| panic!("{e}"));
        let b = new_runner.push(f).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a[0].tensor, b[0].tensor);
        assert_eq!(a[0].tensor.shape(), Shape::new(2, 4, 5));
    }
}
