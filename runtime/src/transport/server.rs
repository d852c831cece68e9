//! The receiving side of a link: service `streamfuse.v1.Stage`.
//!
//! Each `Push` call reads frames, checks them ([`super::wire::decode`]),
//! drops replayed duplicates by `(stream_id, seq)`, and queues the rest for
//! the segment's worker. The response stream carries [`v1::Ack`]s: the
//! cumulative delivered position per stream (from the segment's
//! [`AckBoard`]: downstream's acks for a middle segment, the sink's for the
//! last) and a running credit total that lets the sender have at most
//! `window` frames beyond what this call has queued.
//!
//! Within one call a stream's seq must increase; a call that sends a seq
//! that is not above its previous one is answered `InvalidArgument`.
//! Across calls (a replay after reconnecting) a seq below the stream's next
//! one is a duplicate and dropped; a seq above it is a gap and refused.

use super::control::{ControlError, WeightsControl, WeightsUpdate};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use streamfuse_kernels::Shape;
use streamfuse_proto::v1;
use streamfuse_proto::v1::stage_server::Stage;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::metrics::SegmentMetrics;
use super::wire::{self, Incoming};
use crate::frame::now_ns;

/// Delivered position per stream: every seq below the value is done.
pub type AckMap = BTreeMap<u32, u64>;

/// Where a segment publishes what it has delivered, for its upstream acks.
pub type AckBoard = watch::Sender<AckMap>;

/// Work for a segment's worker.
#[derive(Debug)]
pub enum Work {
    /// A frame to process, with its link transit time in ns.
    Frame(crate::frame::Frame, u64),
    /// A stream ended after `frames` frames.
    End {
        /// Stream.
        stream_id: u32,
        /// Frames in the stream.
        frames: u64,
    },
    /// Stop after what is queued (drain).
    Stop,
}

/// The service's state, shared by its calls.
pub struct StageService {
    inbox: mpsc::Sender<Work>,
    next_seq: Arc<Mutex<HashMap<u32, u64>>>,
    acks: watch::Receiver<AckMap>,
    info: v1::InfoReply,
    inputs: Arc<[Shape]>,
    max_bytes: usize,
    window: u64,
    metrics: Arc<SegmentMetrics>,
    draining: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
    live: Option<Arc<dyn WeightsControl>>,
}

/// How long `UpdateWeights` waits for a frame to use the new weights before
/// answering that they wait for the next one.
pub const UPDATE_REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl StageService {
    /// Counts open `Push` calls in `active` (a segment waits for its
    /// upstream's calls to end before it exits, so its last acks arrive).
    #[must_use]
    pub fn with_active_calls(mut self, active: Arc<AtomicUsize>) -> Self {
        self.active = active;
        self
    }

    /// Takes weight updates (`UpdateWeights`) through `live`; without it
    /// they are refused as unimplemented.
    #[must_use]
    pub fn with_weights(mut self, live: Arc<dyn WeightsControl>) -> Self {
        self.live = Some(live);
        self
    }

    /// A service queuing accepted frames of the shape their stream takes
    /// (`inputs[stream_id]`; payload at most
    /// `max_bytes`) into `inbox`, acking from `acks`, granting `window`
    /// frames of credit per call.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inbox: mpsc::Sender<Work>,
        acks: watch::Receiver<AckMap>,
        info: v1::InfoReply,
        inputs: Vec<Shape>,
        max_bytes: usize,
        window: u64,
        metrics: Arc<SegmentMetrics>,
        draining: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inbox,
            next_seq: Arc::default(),
            acks,
            info,
            inputs: inputs.into(),
            max_bytes,
            window,
            metrics,
            draining,
            active: Arc::default(),
            live: None,
        }
    }
}

struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Decides what to do with seq `seq` of `stream`: `Ok(true)` take it,
/// `Ok(false)` a duplicate, `Err` a gap.
fn admit(next: &Mutex<HashMap<u32, u64>>, stream: u32, seq: u64) -> Result<bool, Status> {
    let mut next = next
        .lock()
        .map_err(|_| Status::internal("sequence table poisoned"))?;
    match next.get(&stream).copied() {
        Some(n) if seq < n => Ok(false),
        Some(n) if seq > n => Err(Status::invalid_argument(format!(
            "frame seq {seq} (stream {stream}): gap, expected seq {n}"
        ))),
        _ => {
            next.insert(stream, seq + 1);
            Ok(true)
        }
    }
}

/// Where a call's frames come from: tonic's decoder, or
/// [`super::framing::MessageReader`] (no payload copy).
pub trait Inbound: Send + 'static {
    /// The next frame, `None` at the end of the call.
    fn next_frame(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<v1::Frame>, Status>> + Send;
}

impl Inbound for Streaming<v1::Frame> {
    async fn next_frame(&mut self) -> Result<Option<v1::Frame>, Status> {
        self.message().await
    }
}

impl<B> Inbound for super::framing::MessageReader<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async fn next_frame(&mut self) -> Result<Option<v1::Frame>, Status> {
        self.next::<v1::Frame>().await
    }
}

impl StageService {
    /// Starts serving one `Push` call reading frames from `inbound`;
    /// returns the call's acks (an `Err` item ends the call with that
    /// status).
    ///
    /// # Errors
    /// `Unavailable` while the segment drains.
    pub fn open_call<I: Inbound>(
        &self,
        mut inbound: I,
    ) -> Result<mpsc::Receiver<Result<v1::Ack, Status>>, Status> {
        if *self.draining.borrow() {
            return Err(Status::unavailable("segment is draining"));
        }
        let (tx, rx) = mpsc::channel(16);
        let (credit_tx, mut credit_rx) = watch::channel(self.window);
        // Acks: on every change of the delivered positions or the credit.
        let mut acks = self.acks.clone();
        let ack_tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let ack = v1::Ack {
                    streams: acks
                        .borrow_and_update()
                        .iter()
                        .map(|(&stream_id, &next_seq)| v1::StreamAck {
                            stream_id,
                            next_seq,
                        })
                        .collect(),
                    credit_total: *credit_rx.borrow_and_update(),
                };
                if ack_tx.send(Ok(ack)).await.is_err() {
                    break;
                }
                tokio::select! {
                    r = acks.changed() => if r.is_err() { break },
                    r = credit_rx.changed() => if r.is_err() { break },
                    () = ack_tx.closed() => break,
                }
            }
        });
        let inbox = self.inbox.clone();
        let next_seq = self.next_seq.clone();
        let (inputs, max_bytes, window) = (self.inputs.clone(), self.max_bytes, self.window);
        let metrics = self.metrics.clone();
        let draining = self.draining.clone();
        let active = self.active.clone();
        active.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _call = CallGuard(active);
            let mut last: HashMap<u32, u64> = HashMap::new();
            let mut queued = 0u64;
            let refuse = |status: Status| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Err(status)).await;
                }
            };
            loop {
                let m = match inbound.next_frame().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "push stream ended");
                        break;
                    }
                };
                if *draining.borrow() {
                    refuse(Status::unavailable("segment is draining")).await;
                    break;
                }
                let (stream, seq) = (m.stream_id, m.seq);
                if let Some(&prev) = last.get(&stream)
                    && seq <= prev
                {
                    metrics.frames_rejected.inc();
                    refuse(Status::invalid_argument(format!(
                        "frame seq {seq} (stream {stream}): seq goes backwards (after seq {prev})"
                    )))
                    .await;
                    break;
                }
                last.insert(stream, seq);
                let bytes = m.payload.len() as u64;
                let work = match wire::decode(m, &inputs, max_bytes) {
                    Ok(Incoming::Frame {
                        frame,
                        copied,
                        sent_ns,
                    }) => {
                        if copied {
                            metrics.payload_copies.inc();
                        }
                        // Unknown (0) send times count as no transit; clocks
                        // of different hosts may disagree, so this is a
                        // measure for loopback and synchronised clocks.
                        let transit = if sent_ns == 0 {
                            0
                        } else {
                            now_ns().saturating_sub(sent_ns)
                        };
                        Work::Frame(frame, transit)
                    }
                    Ok(Incoming::End { stream_id, seq }) => Work::End {
                        stream_id,
                        frames: seq,
                    },
                    Err(e) => {
                        metrics.frames_rejected.inc();
                        tracing::warn!(error = %e, "refused a frame");
                        refuse(Status::invalid_argument(e.to_string())).await;
                        break;
                    }
                };
                match admit(&next_seq, stream, seq) {
                    Ok(true) => {
                        metrics.frames_in.inc();
                        metrics.bytes_in.inc_by(bytes);
                        metrics.queue_depth.inc();
                        if inbox.send(work).await.is_err() {
                            refuse(Status::unavailable("segment worker stopped")).await;
                            break;
                        }
                    }
                    Ok(false) => {
                        metrics.duplicates_dropped.inc();
                    }
                    Err(status) => {
                        metrics.frames_rejected.inc();
                        refuse(status).await;
                        break;
                    }
                }
                queued += 1;
                credit_tx.send_replace(queued + window);
            }
        });
        Ok(rx)
    }
}

#[tonic::async_trait]
impl Stage for StageService {
    type PushStream = ReceiverStream<Result<v1::Ack, Status>>;

    /// Served by [`super::push::StageRoutes`] in the runtime (no payload
    /// copies); this tonic path is the same call through tonic's codec.
    async fn push(
        &self,
        request: Request<Streaming<v1::Frame>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let acks = self.open_call(request.into_inner())?;
        Ok(Response::new(ReceiverStream::new(acks)))
    }

    async fn info(
        &self,
        _request: Request<v1::InfoRequest>,
    ) -> Result<Response<v1::InfoReply>, Status> {
        Ok(Response::new(self.info.clone()))
    }

    async fn update_weights(
        &self,
        request: Request<v1::UpdateWeightsRequest>,
    ) -> Result<Response<v1::UpdateWeightsReply>, Status> {
        let Some(live) = &self.live else {
            return Err(Status::unimplemented(
                "this segment server takes no weight updates",
            ));
        };
        let r = request.into_inner();
        let refuse = |e: ControlError| {
            self.metrics.weights_refused.inc();
            tracing::warn!("weight update refused, old weights kept: {e}");
            if e.precondition {
                Status::failed_precondition(e.message)
            } else {
                Status::invalid_argument(e.message)
            }
        };
        let weights = f32s(&r.stage, "weights", &r.weights).map_err(refuse)?;
        let bias = match &r.bias {
            Some(b) => Some(f32s(&r.stage, "bias", b).map_err(refuse)?),
            None => None,
        };
        let stage = r.stage.clone();
        let (version, told) = live
            .submit(WeightsUpdate {
                stage: r.stage,
                shape: r.shape,
                weights,
                bias,
            })
            .map_err(refuse)?;
        let reply = match tokio::time::timeout(UPDATE_REPLY_WAIT, told).await {
            Ok(Ok(a)) => v1::UpdateWeightsReply {
                stage: a.stage,
                version: a.version,
                applied: true,
                stream_id: a.stream_id,
                first_seq: a.first_seq,
                applied_ns: a.at_ns,
            },
            // No frame used them yet (or the segment ended): they wait.
            _ => v1::UpdateWeightsReply {
                stage,
                version,
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn probe(
        &self,
        request: Request<Streaming<v1::Frame>>,
    ) -> Result<Response<v1::ProbeReply>, Status> {
        let mut frames = request.into_inner();
        let mut r = v1::ProbeReply::default();
        let mut cpu0 = None;
        while let Some(f) = frames.message().await? {
            let now = now_ns();
            if r.frames == 0 {
                r.first_ns = now;
                cpu0 = crate::sys::cputime::process_cpu();
            }
            r.frames += 1;
            r.bytes += f.payload.len() as u64;
            r.last_ns = now;
        }
        if let (Some(a), Some(b)) = (cpu0, crate::sys::cputime::process_cpu()) {
            r.cpu_ns = u64::try_from(b.saturating_sub(a).as_nanos()).unwrap_or(u64::MAX);
        }
        Ok(Response::new(r))
    }
}

/// Little-endian `f32` values of `bytes`.
fn f32s(stage: &str, what: &'static str, bytes: &[u8]) -> Result<Vec<f32>, ControlError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(ControlError {
            precondition: false,
            message: format!(
                "stage `{stage}`: {what} has {} bytes, not a whole number of float32 values",
                bytes.len()
            ),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
