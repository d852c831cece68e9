//! The receiving side of a link: service `streamfuse.v1.Stage`.
//!
//! The protocol of a `Push` call is written out in `stage.proto`; this is
//! its server. Each call:
//! - sends its first [`v1::Ack`] once the segment knows what it has
//!   delivered ([`Delivered::known`]: its downstream answered, or, as the
//!   sink, it read back what it committed), with the first credit;
//! - checks every frame ([`super::wire::decode`]: protocol version, dtype,
//!   shape, size, `first_unacked`), then its order within the call, then
//!   [`admit`]s it against the stream's position;
//! - queues what it takes for the segment's worker, drops duplicates, and
//!   refuses anything else with a status naming the frame, before any state
//!   changes;
//! - acks the cumulative delivered position per stream (from the segment's
//!   [`AckBoard`]: downstream's acks for a middle segment, the sink's
//!   commits for the last) and a running credit total that lets the sender
//!   have at most `window` frames beyond what this call has queued;
//! - ends with a last ack (`final`): after the sender half-closed, once the
//!   frames it took are delivered (at most [`FINAL_ACK_WAIT`]); after a
//!   refusal, just before the error status.
//!
//! A stream's position is the seq it takes next: one past the last frame
//! taken, or, for a stream with no frame taken in this process, the
//! delivered position on the board. A stream with neither starts at the
//! first frame whose `seq` equals its `first_unacked`: the explicit start
//! (0) or a replay after a restart; the receiver never infers a start from
//! whatever seq comes first, so it never takes a frame that would make it
//! drop frames it has not seen.

use super::control::{ControlAccess, ControlError, WeightsControl, WeightsUpdate};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use streamfuse_kernels::Shape;
use streamfuse_proto::v1;
use streamfuse_proto::v1::stage_server::Stage;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::metrics::SegmentMetrics;
use super::wire::{self, Incoming};
use crate::frame::now_ns;

/// Delivered position per stream: every seq below the value is done.
pub type AckMap = BTreeMap<u32, u64>;

/// What a segment has delivered past itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Whether the positions are known: `false` until the segment's
    /// downstream first answered (or, for the sink, until it read back what
    /// it committed). Calls send no ack, and so no credit, before.
    pub known: bool,
    /// Per stream: every seq below the value has been delivered.
    pub next: AckMap,
    /// Streams whose end-of-stream marker has been delivered.
    pub ended: std::collections::BTreeSet<u32>,
}

impl Delivered {
    /// Known positions `next`.
    pub fn known(next: AckMap) -> Self {
        Self {
            known: true,
            next,
            ended: Default::default(),
        }
    }
}

/// Where a segment publishes what it has delivered, for its upstream acks.
pub type AckBoard = watch::Sender<Delivered>;

/// Per stream, the highest `first_unacked` its senders declared: every seq
/// below it was delivered past this segment (by this process or an earlier
/// one). The segment's forwarder passes it on downstream.
pub type Floors = Arc<Mutex<AckMap>>;

/// How long a call waits, after its sender half-closed, for the frames it
/// took to be delivered before its last ack.
pub const FINAL_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    floors: Floors,
    acks: watch::Receiver<Delivered>,
    info: v1::InfoReply,
    inputs: Arc<[Shape]>,
    max_bytes: usize,
    window: u64,
    metrics: Arc<SegmentMetrics>,
    draining: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
    told: Arc<watch::Sender<usize>>,
    live: Option<Arc<dyn WeightsControl>>,
    control: ControlAccess,
    admins: Option<super::admins::Admins>,
    control_slots: Arc<tokio::sync::Semaphore>,
}

/// Set in a control call's request extensions by the routes in front of
/// the generated server ([`super::push::StageRoutes`]) once the caller's
/// identity was admitted from its headers, before any of the body was
/// read; the handler then does not check (and count) it a second time.
#[derive(Debug, Clone, Copy)]
pub(super) struct ControlAdmitted;

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

    /// The most stream ends any ack of this service has told a sender of
    /// (a segment about to exit waits until its upstream heard them all).
    pub fn told(&self) -> watch::Receiver<usize> {
        self.told.subscribe()
    }

    /// Records the `first_unacked` senders declare in `floors` (for the
    /// segment's forwarder).
    #[must_use]
    pub fn with_floors(mut self, floors: Floors) -> Self {
        self.floors = floors;
        self
    }

    /// Takes weight updates (`UpdateWeights`) through `live`; without it
    /// they are refused as unimplemented.
    #[must_use]
    pub fn with_weights(mut self, live: Arc<dyn WeightsControl>) -> Self {
        self.live = Some(live);
        self
    }

    /// Who may make control calls (`UpdateWeights`, `Probe`); off by
    /// default.
    #[must_use]
    pub fn with_control(mut self, control: ControlAccess) -> Self {
        self.control = control;
        self
    }

    /// Authorises control calls by client identity: the server is served
    /// over mutual TLS, and a control call is accepted only from a client
    /// whose certificate names one of `admins` ([`super::admins`]);
    /// [`ControlAccess`] no longer applies.
    #[must_use]
    pub fn with_admins(mut self, admins: super::admins::Admins) -> Self {
        self.admins = Some(admins);
        self
    }

    /// Refuses control call `method` of `request` unless its client's
    /// identity is an admin (TLS, [`Self::with_admins`]) or, in plaintext,
    /// [`ControlAccess`] allows its peer: `UNAUTHENTICATED` or
    /// `PERMISSION_DENIED` with the reason, logged and counted. A call the
    /// routes already admitted ([`ControlAdmitted`]) passes.
    fn admit_control<T>(&self, method: &str, request: &Request<T>) -> Result<(), Status> {
        if request.extensions().get::<ControlAdmitted>().is_some() {
            return Ok(());
        }
        let peer = request.remote_addr();
        let verdict = match &self.admins {
            Some(admins) => {
                let from = peer.map_or_else(|| "an unknown address".to_owned(), |p| p.to_string());
                let certs = request.peer_certs();
                match admins.check(method, &from, certs.as_deref().map(Vec::as_slice)) {
                    Ok(who) => {
                        tracing::info!(method, peer = %from, %who, "control call from an admin");
                        Ok(())
                    }
                    Err(r) => Err((r.code, r.reason)),
                }
            }
            None => self
                .control
                .check(method, peer)
                .map_err(|why| (tonic::Code::PermissionDenied, why)),
        };
        verdict.map_err(|(code, why)| {
            self.metrics.control_refused.inc();
            tracing::warn!("{why}");
            Status::new(code, why)
        })
    }

    /// Admits control call `method` from the connection facts in
    /// `extensions` (peer address, client certificate), before any of its
    /// body is read, and takes one of the server's
    /// [`MAX_CONTROL_CALLS`](super::caps::MAX_CONTROL_CALLS) slots for it:
    /// so a peer without an admin identity cannot make the server buffer
    /// a weights message, and admins hold at most that many at once.
    ///
    /// # Errors
    /// The refusal of [`Self::admit_control`], or `RESOURCE_EXHAUSTED`
    /// (counted in `capped`) when every control slot is taken.
    pub(super) fn admit_control_early(
        &self,
        method: &str,
        extensions: &http::Extensions,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        let probe =
            Request::from_parts(tonic::metadata::MetadataMap::new(), extensions.clone(), ());
        self.admit_control(method, &probe)?;
        self.control_slots.clone().try_acquire_owned().map_err(|_| {
            self.metrics.capped.inc();
            let why = format!(
                "{method} refused: {} control calls are in progress on this server, the most it takes; try again later",
                super::caps::MAX_CONTROL_CALLS
            );
            tracing::warn!("{why}");
            Status::resource_exhausted(why)
        })
    }

    /// A service queuing accepted frames of the shape their stream takes
    /// (`inputs[stream_id]`; payload at most
    /// `max_bytes`) into `inbox`, acking from `acks`, granting `window`
    /// frames of credit per call.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inbox: mpsc::Sender<Work>,
        acks: watch::Receiver<Delivered>,
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
            floors: Arc::default(),
            acks,
            info,
            inputs: inputs.into(),
            max_bytes,
            window,
            metrics,
            draining,
            active: Arc::default(),
            told: Arc::new(watch::channel(0).0),
            live: None,
            control: ControlAccess::Off,
            admins: None,
            control_slots: Arc::new(tokio::sync::Semaphore::new(super::caps::MAX_CONTROL_CALLS)),
        }
    }
}

struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Decides what to do with frame `seq` of `stream`, whose sender's first
/// unacknowledged seq is `first_unacked`, given the streams' positions in
/// `next` (frames taken here) and `delivered` (the board): `Ok(true)` take
/// it, `Ok(false)` a duplicate; `Err` refuses it (no state changed). The
/// rules are `stage.proto`'s.
fn admit(
    next: &Mutex<HashMap<u32, u64>>,
    delivered: &AckMap,
    stream: u32,
    seq: u64,
    first_unacked: u64,
) -> Result<bool, Status> {
    let mut next = next
        .lock()
        .map_err(|_| Status::internal("sequence table poisoned"))?;
    let position = next
        .get(&stream)
        .copied()
        .or_else(|| delivered.get(&stream).copied());
    match position {
        Some(n) if first_unacked > n => Err(Status::invalid_argument(format!(
            "frame seq {seq} (stream {stream}): first_unacked {first_unacked} claims deliveries this receiver never made: it takes seq {n} next"
        ))),
        Some(n) if seq < n => Ok(false),
        Some(n) if seq > n => Err(Status::invalid_argument(format!(
            "frame seq {seq} (stream {stream}): gap, this receiver takes seq {n} next"
        ))),
        Some(_) => {
            next.insert(stream, seq + 1);
            Ok(true)
        }
        None if seq != first_unacked => Err(Status::invalid_argument(format!(
            "frame seq {seq} (stream {stream}): the stream has no position here, so its first frame must be seq first_unacked ({first_unacked}); seqs {first_unacked}..{seq} are missing"
        ))),
        None => {
            next.insert(stream, seq + 1);
            Ok(true)
        }
    }
}

/// The ack of `delivered` with `credit_total`.
fn ack_of(delivered: &Delivered, credit_total: u64, last: bool) -> v1::Ack {
    v1::Ack {
        streams: delivered
            .next
            .iter()
            .map(|(&stream_id, &next_seq)| v1::StreamAck {
                stream_id,
                next_seq,
                ended: delivered.ended.contains(&stream_id),
            })
            .collect(),
        credit_total,
        r#final: last,
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
        let active = self.active.clone();
        if active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < super::caps::MAX_CALLS).then_some(n + 1)
            })
            .is_err()
        {
            self.metrics.capped.inc();
            let why = format!(
                "{} Push calls are open on this server, the most it takes; try again later",
                super::caps::MAX_CALLS
            );
            tracing::warn!("call refused: {why}");
            return Err(Status::resource_exhausted(why));
        }
        let (tx, rx) = mpsc::channel(16);
        let (credit_tx, credit_rx) = watch::channel(self.window);
        let (stop_acks, stop_rx) = oneshot::channel::<()>();
        let ack_task = tokio::spawn(ack_loop(
            self.acks.clone(),
            credit_rx,
            tx.clone(),
            stop_rx,
            self.told.clone(),
        ));
        let inbox = self.inbox.clone();
        let next_seq = self.next_seq.clone();
        let floors = self.floors.clone();
        let mut board = self.acks.clone();
        let (inputs, max_bytes, window) = (self.inputs.clone(), self.max_bytes, self.window);
        let metrics = self.metrics.clone();
        let draining = self.draining.clone();
        tokio::spawn(async move {
            let _call = CallGuard(active);
            let mut last: HashMap<u32, u64> = HashMap::new();
            // Per stream, one past the last frame this call took.
            let mut taken: HashMap<u32, u64> = HashMap::new();
            let mut queued = 0u64;
            let mut gone = false;
            let refused: Option<Status> = loop {
                let next = tokio::time::timeout(super::caps::CALL_IDLE, inbound.next_frame());
                let Ok(next) = next.await else {
                    metrics.capped.inc();
                    let why = format!(
                        "no whole frame for {} s: the call is ended (resume on a new one)",
                        super::caps::CALL_IDLE.as_secs()
                    );
                    tracing::warn!("{why}");
                    break Some(Status::deadline_exceeded(why));
                };
                let m = match next {
                    Ok(Some(m)) => m,
                    Ok(None) => break None,
                    Err(status) if answerable(&status) => {
                        metrics.frames_rejected.inc();
                        tracing::warn!(%status, "refused a message");
                        break Some(status);
                    }
                    Err(status) => {
                        tracing::debug!(%status, "push stream ended");
                        gone = true;
                        break None;
                    }
                };
                if *draining.borrow() {
                    break Some(Status::unavailable("segment is draining"));
                }
                let (stream, seq, first_unacked) = (m.stream_id, m.seq, m.first_unacked);
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
                        break Some(e.status());
                    }
                };
                if let Some(&prev) = last.get(&stream)
                    && seq <= prev
                {
                    metrics.frames_rejected.inc();
                    break Some(Status::invalid_argument(format!(
                        "frame seq {seq} (stream {stream}): seq goes backwards (after seq {prev} on this call)"
                    )));
                }
                // The board is read in place (no copy per frame), and
                // released before anything awaits.
                let admitted = admit(
                    &next_seq,
                    &board.borrow_and_update().next,
                    stream,
                    seq,
                    first_unacked,
                );
                match admitted {
                    Ok(true) => {
                        last.insert(stream, seq);
                        taken.insert(stream, seq + 1);
                        if let Ok(mut f) = floors.lock() {
                            let e = f.entry(stream).or_insert(0);
                            *e = (*e).max(first_unacked);
                        }
                        metrics.frames_in.inc();
                        metrics.bytes_in.inc_by(bytes);
                        metrics.queue_depth.inc();
                        if inbox.send(work).await.is_err() {
                            break Some(Status::unavailable("segment worker stopped"));
                        }
                    }
                    Ok(false) => {
                        last.insert(stream, seq);
                        metrics.duplicates_dropped.inc();
                    }
                    Err(status) => {
                        metrics.frames_rejected.inc();
                        tracing::warn!(%status, "refused a frame");
                        break Some(status);
                    }
                }
                queued += 1;
                credit_tx.send_replace(queued + window);
            };
            if gone {
                let _ = stop_acks.send(());
                return;
            }
            if refused.is_none() {
                // Half-closed: the last ack covers what this call took.
                let covered = |d: &Delivered| {
                    taken
                        .iter()
                        .all(|(s, n)| d.next.get(s).is_some_and(|got| got >= n))
                };
                let _ = tokio::time::timeout(FINAL_ACK_WAIT, board.wait_for(covered)).await;
            }
            let _ = stop_acks.send(());
            let _ = ack_task.await;
            let last_ack = ack_of(&board.borrow(), *credit_tx.borrow(), true);
            if tx.send(Ok(last_ack)).await.is_ok()
                && let Some(status) = refused
            {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(rx)
    }
}

/// Whether a call's read error is the sender's fault, to be answered with
/// it as the call's status (an oversized, undecodable or compressed
/// message), rather than the call going away.
fn answerable(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::ResourceExhausted
            | tonic::Code::OutOfRange
            | tonic::Code::InvalidArgument
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
    )
}

/// A call's acks until `stop`: the first once the segment knows what it
/// delivered, then one on every change of the delivered positions or the
/// credit.
async fn ack_loop(
    mut acks: watch::Receiver<Delivered>,
    mut credit: watch::Receiver<u64>,
    tx: mpsc::Sender<Result<v1::Ack, Status>>,
    mut stop: oneshot::Receiver<()>,
    told: Arc<watch::Sender<usize>>,
) {
    tokio::select! {
        r = acks.wait_for(|d| d.known) => if r.is_err() { return },
        _ = &mut stop => return,
        () = tx.closed() => return,
    }
    loop {
        let ack = ack_of(
            &acks.borrow_and_update(),
            *credit.borrow_and_update(),
            false,
        );
        let ends = ack.streams.iter().filter(|s| s.ended).count();
        if tx.send(Ok(ack)).await.is_err() {
            return;
        }
        told.send_if_modified(|t| {
            let more = ends > *t;
            *t = (*t).max(ends);
            more
        });
        tokio::select! {
            r = acks.changed() => if r.is_err() { return },
            r = credit.changed() => if r.is_err() { return },
            _ = &mut stop => return,
            () = tx.closed() => return,
        }
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
        self.admit_control("UpdateWeights", &request)?;
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
        self.admit_control("Probe", &request)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(u32, u64)]) -> Mutex<HashMap<u32, u64>> {
        Mutex::new(entries.iter().copied().collect())
    }

    #[test]
    fn a_new_stream_starts_only_where_its_sender_says() {
        let none = AckMap::new();
        // The explicit start, and a replay after a restart.
        assert_eq!(admit(&table(&[]), &none, 0, 0, 0).ok(), Some(true));
        assert_eq!(admit(&table(&[]), &none, 0, 40, 40).ok(), Some(true));
        // A first frame ahead of the sender's first unacknowledged one
        // would make the receiver drop frames it never saw.
        let e = admit(&table(&[]), &none, 0, 5, 0).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("frame seq 5 (stream 0)") && e.message().contains("0..5"),
            "{e:?}"
        );
    }

    #[test]
    fn a_known_stream_takes_its_next_seq_drops_duplicates_and_refuses_gaps() {
        let next = table(&[(3, 10)]);
        let none = AckMap::new();
        assert_eq!(admit(&next, &none, 3, 9, 2).ok(), Some(false));
        assert_eq!(admit(&next, &none, 3, 10, 2).ok(), Some(true));
        assert!(admit(&next, &none, 3, 12, 2).is_err(), "a gap");
        let e = admit(&next, &none, 3, 11, 20).unwrap_err();
        assert!(e.message().contains("never made"), "{e:?}");
        // Refusals change nothing.
        assert_eq!(admit(&next, &none, 3, 11, 11).ok(), Some(true));
    }

    #[test]
    fn the_delivered_position_is_the_position_of_a_stream_not_taken_here() {
        // A restarted sink read back 7 committed frames of stream 1.
        let delivered: AckMap = [(1, 7)].into_iter().collect();
        let next = table(&[]);
        assert_eq!(admit(&next, &delivered, 1, 4, 4).ok(), Some(false));
        assert!(admit(&next, &delivered, 1, 8, 8).is_err());
        assert_eq!(admit(&next, &delivered, 1, 7, 4).ok(), Some(true));
        assert_eq!(admit(&next, &delivered, 1, 8, 4).ok(), Some(true));
    }
}
