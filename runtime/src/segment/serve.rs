//! One segment as its own process (`streamfuse serve`): frames come from
//! the source (first segment) or from upstream over gRPC, run through the
//! segment's stages on its device, and go downstream over gRPC or into the
//! sink (last segment).
//!
//! Threads: a tokio runtime for the network (server, forwarder, metrics,
//! signals), one worker thread running the kernels, and for the first
//! segment one source thread per stream. They meet in bounded queues, so a slow
//! downstream slows everything upstream and memory stays bounded.
//!
//! With TLS (the node's `tls` in the spec, or flags) the server takes only
//! clients of the CA, the link downstream presents the node's certificate,
//! control calls need an admin identity, and `health_listen` serves
//! `grpc.health.v1` in plaintext for probes ([`crate::transport::tls`]).
//!
//! `SIGTERM` (or `SIGINT`) drains: new frames are refused (`Unavailable`,
//! the sender keeps and later replays them), queued frames are finished and
//! forwarded, and the process waits until downstream has acknowledged them
//! (at most `drain_timeout`) before it exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use streamfuse_proto::v1;
use tokio::sync::{mpsc, oneshot, watch};
use tonic_health::ServingStatus;

use super::live::{Applied, LiveWeights, Watched};
use super::worker::{Inlet, LoopConfig, LoopResult, Outlet, SinkOutlet, run_segment};
use crate::exec::{self, Device, ExecError};
use crate::frame::Frame;
use crate::io::sinks::{Durability, SinkOutcome, Sinks};
use crate::io::source::stream_frames_from;
use crate::plan::Plan;
use crate::plan::addresses::{AddressError, segment_address};
use crate::spec::{DeviceChoice, Pipeline, SourceConfig};
use crate::transport::admins::Admins;
use crate::transport::forward::{ForwardError, Forwarder};
use crate::transport::metrics::{self, SegmentMetrics};
use crate::transport::push::StageRoutes;
use crate::transport::server::{Delivered, Floors, StageService, Work};
use crate::transport::tls::{self, ClientTls, ServerTls};
use crate::transport::{Limits, WINDOW, wire};

/// How to serve a segment.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Segment index.
    pub segment: usize,
    /// Address to listen on (gRPC and health).
    pub listen: SocketAddr,
    /// Next segment's address (default: from the spec's nodes).
    pub next: Option<String>,
    /// Prometheus metrics address.
    pub metrics: Option<SocketAddr>,
    /// Exit once every stream has ended and been delivered.
    pub once: bool,
    /// Device override.
    pub device: Option<DeviceChoice>,
    /// Longest wait for in-flight frames on `SIGTERM`.
    pub drain_timeout: Duration,
    /// Extra time per frame in the worker (experiments and tests: a
    /// deliberately slow stage), counted as compute time of the segment's
    /// first group.
    pub delay: Duration,
    /// How the sink (last segment) keeps what it committed across a
    /// restart.
    pub durability: Durability,
    /// Who may make control calls (`UpdateWeights`, `Probe`) on a
    /// plaintext server.
    pub control: crate::transport::control::ControlAccess,
    /// Mutual TLS: this segment's certificate, key and CA, for its server
    /// and its link downstream; `None`: plaintext.
    pub tls: Option<crate::spec::TlsFiles>,
    /// Client identities allowed to make control calls (TLS only).
    pub admins: Vec<String>,
    /// A plaintext address serving only `grpc.health.v1` (for probes that
    /// cannot present a client certificate, such as the kubelet's).
    pub health_listen: Option<SocketAddr>,
}

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No such segment.
    #[error("segment {segment} does not exist: the plan has {segments} segment(s)")]
    NoSegment {
        /// Asked for.
        segment: usize,
        /// Available.
        segments: usize,
    },
    /// The next segment's address cannot be worked out.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The worker failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The link could not be set up.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// Network setup failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    /// A TLS file cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
    /// Settings that contradict each other.
    #[error("{0}")]
    Settings(String),
    /// A thread died.
    #[error("{0} thread panicked")]
    Panicked(&'static str),
}

/// A segment process's account of its run (printed as JSON with `--once`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SegmentOutcome {
    /// Segment index.
    pub segment: usize,
    /// Frames processed.
    pub frames: u64,
    /// Compute time per group, ns.
    pub group_compute_ns: Vec<u64>,
    /// Link transit time of received frames, ns.
    pub link_in_ns: u64,
    /// First frame's capture time (source segment), ns.
    pub first_capture_ns: Option<u64>,
    /// Device the stages ran on.
    pub device: String,
    /// The sink's record (last segment).
    pub sink: Option<SinkOutcome>,
    /// Downstream reconnections.
    pub reconnects: u64,
    /// Frames replayed downstream.
    pub replays: u64,
    /// Duplicates dropped on receipt.
    pub duplicates_dropped: u64,
    /// Frames lost: 0, except the frames of a live camera dropped while
    /// the pipeline was full (a slow or down downstream), counted here.
    pub frames_dropped: u64,
    /// Payloads copied on receipt (misaligned).
    pub payload_copies: u64,
    /// CPU time the whole process (every thread: source, kernels,
    /// transport) used from its first frame to its last, ns; what the
    /// segment cost its node. Absent where the platform does not tell.
    #[serde(default)]
    pub cpu_ns: Option<u64>,
    /// Time the segment's worker (the thread that runs its kernels, one
    /// frame after another) was busy from its first frame to its last,
    /// ns: all but the time it waited for input or for room downstream.
    #[serde(default)]
    pub busy_ns: Option<u64>,
    /// The process's CPU time along the run: `(frames done, CPU ns since
    /// the first frame)` every [`CPU_MARK_EVERY`] frames, so a steady-state
    /// cost per frame can be read without the run's start and end.
    #[serde(default)]
    pub cpu_marks: Vec<(u64, u64)>,
    /// The worker's busy time along the run: `(frames done, busy ns since
    /// the first frame)` every [`CPU_MARK_EVERY`] frames.
    #[serde(default)]
    pub busy_marks: Vec<(u64, u64)>,
    /// Weight updates this segment applied.
    #[serde(default)]
    pub weight_updates: Vec<Applied>,
    /// Weight updates of a watched file that were refused.
    #[serde(default)]
    pub weight_updates_refused: Vec<String>,
    /// Why `--device auto` ran this segment on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_fallback: Option<String>,
}

pub use super::worker::CPU_MARK_EVERY;

impl SegmentOutcome {
    /// CPU time the process used per frame, s, between its 10th and 90th
    /// percentile frames (steady state: no start-up, no drain) where it
    /// noted enough marks, else over its whole run; `None` where the
    /// platform does not tell or no frame passed.
    pub fn cpu_per_frame(&self) -> Option<f64> {
        steady_per_frame(self.frames, &self.cpu_marks, self.cpu_ns)
    }

    /// Time the worker was busy per frame, s, in the same steady window as
    /// [`SegmentOutcome::cpu_per_frame`] (else over its whole run).
    pub fn busy_per_frame(&self) -> Option<f64> {
        steady_per_frame(self.frames, &self.busy_marks, self.busy_ns)
    }
}

/// Time per frame, s, between the 10th and 90th percentile frames of
/// `frames` from `(frames done, ns so far)` marks, or `whole_ns` over every
/// frame where the marks do not span enough of the run.
fn steady_per_frame(frames: u64, marks: &[(u64, u64)], whole_ns: Option<u64>) -> Option<f64> {
    let whole = (frames > 0)
        .then(|| whole_ns.map(|ns| ns as f64 / 1e9 / frames as f64))
        .flatten();
    let lo = frames / 10;
    let hi = frames - lo;
    let a = marks.iter().find(|m| m.0 >= lo);
    let b = marks.iter().rev().find(|m| m.0 <= hi);
    match (a, b) {
        (Some(a), Some(b)) if b.0 >= a.0 + 4 * CPU_MARK_EVERY && b.1 >= a.1 => {
            Some((b.1 - a.1) as f64 / 1e9 / (b.0 - a.0) as f64)
        }
        _ => whole,
    }
}

/// Bytes of frames a segment process may hold in each of its queues
/// (received and waiting for the kernels; computed and waiting for the
/// link).
pub const QUEUE_BYTES: usize = 2 << 20;

/// How long a `--once` segment waits at its end for its upstream to hear
/// that every stream ended.
pub const UPSTREAM_WAIT: Duration = Duration::from_secs(10);

/// Frames per queue for frames of `bytes`: [`QUEUE_BYTES`] worth, between 2
/// and 32. Large frames keep the queues short (memory, and latency when a
/// link is the bottleneck and every queue before it fills); small ones get
/// enough depth that processes sharing a node's CPUs keep them busy through
/// each other's scheduling delays, which last many frames when a frame
/// takes tens of microseconds.
pub fn queue_frames(bytes: usize) -> usize {
    (QUEUE_BYTES / bytes.max(1)).clamp(2, 32)
}

/// Frames a receiver lets its sender have in flight beyond what it has
/// queued for its worker: [`WINDOW`] for large frames, up to
/// [`queue_frames`] for small ones. Each credit takes a round trip between
/// the processes (tens of microseconds on loopback, more on a busy
/// machine), as long as several small frames take to compute: with two
/// credits the sender waited on them and the split ran well below what
/// its CPUs could do.
pub fn credit_window(bytes: usize) -> u64 {
    (queue_frames(bytes) as u64).max(WINDOW)
}

/// Serves segment `opts.segment` of `plan` until every stream has ended
/// (with `once`) or a termination signal, and returns its account.
///
/// # Errors
/// [`ServeError`] when the segment does not exist, an address cannot be
/// bound or resolved, the device cannot be opened, or a kernel fails.
pub fn serve(p: &Pipeline, plan: &Plan, opts: &ServeOptions) -> Result<SegmentOutcome, ServeError> {
    let seg = plan
        .segments
        .get(opts.segment)
        .ok_or(ServeError::NoSegment {
            segment: opts.segment,
            segments: plan.segments.len(),
        })?;
    let last = opts.segment + 1 == plan.segments.len();
    let next = match (&opts.next, last) {
        (_, true) => None,
        (Some(a), false) => Some(a.clone()),
        (None, false) => Some(segment_address(p, plan, opts.segment + 1)?),
    };
    let limits = Limits::for_plan(p, plan);
    let choice = opts.device.unwrap_or(p.nodes[seg.node].device);
    let resolved = exec::device::resolve_explained(choice).map_err(ExecError::from)?;
    let device = resolved.device;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("streamfuse-net")
        .build()
        .map_err(|source| ServeError::Io {
            what: "tokio runtime".into(),
            source,
        })?;
    let fallback = resolved.fallback;
    let tls = tls_of(opts)?;
    rt.block_on(serve_async(p, plan, opts, next, limits, device, tls))
        .map(|o| SegmentOutcome {
            device_fallback: fallback,
            ..o
        })
}

/// The server and client sides of `opts`'s TLS, loaded (every file
/// checked before anything listens).
fn tls_of(opts: &ServeOptions) -> Result<Option<(ServerTls, ClientTls)>, ServeError> {
    use crate::transport::control::ControlAccess;
    match &opts.tls {
        Some(files) => {
            if opts.control != ControlAccess::Off {
                return Err(ServeError::Settings(format!(
                    "`--control {}` applies to plaintext servers only: over TLS, control calls are accepted from the client identities in the admins list (`tls.admins` in the spec, `--admin NAME`)",
                    opts.control.name()
                )));
            }
            Ok(Some((ServerTls::load(files)?, ClientTls::load(files)?)))
        }
        None if !opts.admins.is_empty() => Err(ServeError::Settings(
            "an admins list needs TLS: without it the server cannot tell who a client is (give the spec a `tls` section or --tls-cert, --tls-key and --tls-ca)".into(),
        )),
        None => Ok(None),
    }
}

#[allow(clippy::too_many_lines, clippy::too_many_arguments)]
async fn serve_async(
    p: &Pipeline,
    plan: &Plan,
    opts: &ServeOptions,
    next: Option<String>,
    limits: Limits,
    device: Device,
    tls: Option<(ServerTls, ClientTls)>,
) -> Result<SegmentOutcome, ServeError> {
    let (server_tls, client_tls) = match tls {
        Some((s, c)) => (Some(s), Some(c)),
        None => (None, None),
    };
    let seg = &plan.segments[opts.segment];
    let metrics = Arc::new(SegmentMetrics::new(&p.name, seg.index));
    if let Some(addr) = opts.metrics {
        let bound = metrics::serve(addr, metrics.clone())
            .await
            .map_err(|source| ServeError::Io {
                what: format!("metrics listener {addr}"),
                source,
            })?;
        tracing::info!(%bound, "metrics");
    }
    // The sinks first (last segment): what a restarted sink committed is
    // where its upstream goes on, known before any call is answered.
    let last = next.is_none();
    let sinks = if last {
        Some(Sinks::open(p, &opts.durability).map_err(ExecError::from)?)
    } else {
        None
    };
    let delivered = match &sinks {
        Some(s) => {
            if !s.durable() {
                tracing::warn!(
                    "the sink keeps no journal: a restart of this process starts a new record (give --journal, or use an npy or images sink)"
                );
            }
            Delivered {
                known: true,
                next: s.positions(),
                ended: s.ended(),
            }
        }
        None => Delivered::default(),
    };
    let (acks_tx, acks_rx) = watch::channel(delivered);
    let floors = Floors::default();
    let (draining_tx, draining_rx) = watch::channel(false);
    // What each stream's frames look like as they enter this segment.
    let inputs = p.stream_shapes(seg.stages.start);
    let input_shape = inputs.first().copied().unwrap_or_else(|| p.source.shape());
    let largest = inputs.iter().map(|s| s.bytes()).max().unwrap_or(0);
    let (inbox_tx, inbox_rx) = mpsc::channel::<Work>(queue_frames(largest));
    let info = v1::InfoReply {
        pipeline: p.name.clone(),
        segment: seg.index as u32,
        segments: plan.segments.len() as u32,
        node: p.nodes[seg.node].name.clone(),
        device: device.to_string(),
        stages: p.stages[seg.stages.clone()]
            .iter()
            .map(|s| s.id.clone())
            .collect(),
        kernels: seg.groups.iter().map(|g| g.op.label()).collect(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        max_frame_bytes: limits.max_frame_bytes as u64,
        input_shape: [input_shape.c, input_shape.h, input_shape.w]
            .iter()
            .map(|&d| u32::try_from(d).unwrap_or(u32::MAX))
            .collect(),
    };
    let active = Arc::new(AtomicUsize::new(0));
    // Live weights: this process runs one segment.
    let (live, mut inboxes) = LiveWeights::new(p, plan, &[seg.index]);
    let live = Arc::new(live);
    let swaps = inboxes.get_mut(seg.index).and_then(Option::take);
    for (stage, version) in live.versions() {
        if p.stages[seg.stages.clone()].iter().any(|s| s.id == stage) {
            metrics.set_weights(&stage, version, 0);
        }
    }
    let service = StageService::new(
        inbox_tx.clone(),
        acks_rx.clone(),
        info,
        inputs,
        limits.max_frame_bytes,
        credit_window(largest),
        metrics.clone(),
        draining_rx.clone(),
    )
    .with_active_calls(active.clone())
    .with_floors(floors.clone())
    .with_weights(live.clone())
    .with_control(opts.control);
    let service = if opts.tls.is_some() {
        service.with_admins(Admins::new(opts.admins.iter().cloned()))
    } else {
        service
    };
    let mut told = service.told();
    // Watched weights files of this segment's stages.
    let watched: Vec<Watched> = p
        .watch
        .iter()
        .filter(|w| p.stages[seg.stages.clone()].iter().any(|s| s.id == w.stage))
        .cloned()
        .collect();
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = if watched.is_empty() {
        None
    } else {
        let (live, stop, m) = (live.clone(), stop_watch.clone(), metrics.clone());
        Some(
            std::thread::Builder::new()
                .name("weights-watch".into())
                .spawn(move || {
                    let refused = super::live::watch(&live, &watched, &stop);
                    m.weights_refused.inc_by(refused.len() as u64);
                    refused
                })
                .map_err(|source| ServeError::Io {
                    what: "weights watcher thread".into(),
                    source,
                })?,
        )
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    // A health request is a service name: a larger body ends the call
    // instead of growing its decode buffer.
    let health = health.max_decoding_message_size(crate::transport::caps::MAX_SMALL_REQUEST_BYTES);
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("readiness", ServingStatus::NotServing)
        .await;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("listen on {}", opts.listen),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Io {
        what: "listener address".into(),
        source,
    })?;
    if opts.tls.is_some() {
        tracing::info!(segment = seg.index, %bound, ?next, %device, admins = ?opts.admins, "serving over mutual TLS");
    } else {
        tracing::info!(segment = seg.index, %bound, ?next, %device, control = opts.control.name(), "serving in plaintext: any peer that reaches this address can push frames and read Info (configure `tls` for mutual TLS)");
    }
    if opts.control == crate::transport::control::ControlAccess::Network {
        tracing::warn!(
            %bound,
            "control calls (UpdateWeights, Probe) are accepted from any peer that reaches this port, without authentication"
        );
    }
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    use crate::transport::caps;
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
        .max_frame_size(limits.h2_frame)
        .max_concurrent_streams(caps::MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(caps::MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(caps::MAX_PENDING_RESETS))
        .http2_keepalive_interval(Some(caps::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(caps::KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true)
        .add_service(health.clone())
        .add_service(StageRoutes::new(service, limits.max_message));
    // TcpIncoming sets TCP_NODELAY on accepted sockets (the builder's
    // `tcp_nodelay` applies only to listeners tonic binds itself):
    // without it small acks wait for Nagle and delayed ACKs.
    let incoming = caps::cap_connections(
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        metrics.capped.clone(),
    );
    let stopped = async {
        let _ = server_stopped.await;
    };
    let server = match server_tls {
        Some(t) => tokio::spawn(router.serve_with_incoming_shutdown(
            tls::accept(incoming, t, metrics.tls_refused.clone()),
            stopped,
        )),
        None => tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped)),
    };
    // The plaintext health port: `grpc.health.v1` only.
    let (stop_health, health_stopped) = oneshot::channel::<()>();
    if let Some(addr) = opts.health_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Io {
                what: format!("health listener {addr}"),
                source,
            })?;
        let bound = l.local_addr().map_err(|source| ServeError::Io {
            what: "health listener address".into(),
            source,
        })?;
        tracing::info!(%bound, "plaintext health (grpc.health.v1 only)");
        let h = tonic::transport::Server::builder()
            .max_concurrent_streams(caps::MAX_STREAMS_PER_CONNECTION)
            .http2_max_header_list_size(caps::MAX_HEADER_LIST_BYTES)
            .http2_max_pending_accept_reset_streams(Some(caps::MAX_PENDING_RESETS))
            .add_service(health)
            .serve_with_incoming_shutdown(
                caps::cap_connections(
                    tonic::transport::server::TcpIncoming::from(l),
                    metrics.capped.clone(),
                ),
                async {
                    let _ = health_stopped.await;
                },
            );
        tokio::spawn(async move {
            if let Err(e) = h.await {
                tracing::warn!(error = %e, "health server stopped");
            }
        });
    }

    // Downstream link, or the sinks.
    let (downstream, forwarder) = match (&next, sinks) {
        (Some(addr), _) => {
            let (tx, rx) = mpsc::channel::<v1::Frame>(queue_frames(seg.output.bytes()));
            let f = Forwarder::new(addr, limits, metrics.clone(), acks_tx.clone(), floors)?
                .with_tls(client_tls.clone());
            (Downstream::Forward(tx), Some(tokio::spawn(f.run(rx))))
        }
        (None, Some(sinks)) => (Downstream::Sinks(sinks), None),
        (None, None) => return Err(ServeError::Panicked("sink")),
    };

    // Source.
    let first_capture = Arc::new(std::sync::Mutex::new(None::<u64>));
    // One thread per source, so a slow or ended stream does not hold back
    // the others; each ends its own stream.
    let mut sources = Vec::new();
    if seg.has_source {
        for (stream, src) in p.sources().enumerate() {
            let tx = inbox_tx.clone();
            let src = src.clone();
            let draining = draining_rx.clone();
            let first = first_capture.clone();
            let m = metrics.clone();
            let stream_id = u32::try_from(stream).unwrap_or(u32::MAX);
            let mut board = acks_rx.clone();
            sources.push(
                std::thread::Builder::new()
                    .name(format!("source-{stream}"))
                    .spawn(move || -> Result<(), ExecError> {
                        // Start where downstream says the stream was
                        // delivered to (a restarted source segment resumes
                        // there; a new run starts at 0).
                        let start = loop {
                            let d = board.borrow_and_update().clone();
                            if d.known {
                                break d.next.get(&stream_id).copied().unwrap_or(0);
                            }
                            if *draining.borrow() {
                                return Ok(());
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        };
                        let frames = src.frames();
                        if start > 0 {
                            tracing::info!(
                                stream = stream_id,
                                start,
                                "source resumes where downstream delivered to"
                            );
                        }
                        // A camera is live: while the pipeline is full
                        // (a slow or down downstream) its frames are
                        // dropped and counted, not queued; the frames that
                        // enter are numbered without gaps.
                        let live = matches!(src, SourceConfig::Camera(_));
                        let mut n = start.min(frames);
                        for f in stream_frames_from(&src, stream_id, n) {
                            if *draining.borrow() {
                                break;
                            }
                            let mut f = f?;
                            if let Ok(mut g) = first.lock() {
                                let t = g.map_or(f.capture_ns, |t: u64| t.min(f.capture_ns));
                                *g = Some(t);
                            }
                            f.seq = n;
                            let bytes = f.tensor.shape().bytes() as u64;
                            if live {
                                match tx.try_send(Work::Frame(f, 0)) {
                                    Ok(()) => {}
                                    Err(mpsc::error::TrySendError::Full(_)) => {
                                        m.frames_dropped.inc();
                                        continue;
                                    }
                                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                                }
                            } else if tx.blocking_send(Work::Frame(f, 0)).is_err() {
                                return Ok(());
                            }
                            n += 1;
                            m.frames_in.inc();
                            m.bytes_in.inc_by(bytes);
                        }
                        if !*draining.borrow() {
                            let _ = tx.blocking_send(Work::End {
                                stream_id,
                                frames: n,
                            });
                        }
                        Ok(())
                    })
                    .map_err(|source| ServeError::Io {
                        what: format!("source thread (stream {stream})"),
                        source,
                    })?,
            );
        }
    }
    let stop_tx = inbox_tx;
    // With `once`, a segment that is not the last stops once downstream
    // says every stream's end was delivered: a process restarted after its
    // streams ended has nothing left to do (its upstream may have finished
    // and gone, and would send nothing more).
    let streams = p.sources().count();
    if opts.once && !last {
        let mut board = acks_rx.clone();
        let stop = stop_tx.clone();
        tokio::spawn(async move {
            if board
                .wait_for(|d| d.known && d.ended.len() >= streams)
                .await
                .is_ok()
            {
                let _ = stop.send(Work::Stop).await;
            }
        });
    }

    // Worker.
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
    let worker = {
        let m = metrics.clone();
        let acks = acks_tx.clone();
        let once = opts.once;
        let delay = opts.delay;
        let p2 = p.clone();
        let plan2 = plan.clone();
        let index = seg.index;
        std::thread::Builder::new()
            .name(format!("segment-{index}"))
            .spawn(move || {
                let cfg = LoopConfig {
                    p: &p2,
                    seg: &plan2.segments[index],
                    device,
                    metrics: &m,
                    swaps,
                    once,
                    delay,
                };
                let inlet = InboxInlet(inbox_rx);
                let ready = |r| {
                    let _ = ready_tx.send(r);
                };
                match downstream {
                    Downstream::Forward(tx) => run_segment(
                        cfg,
                        inlet,
                        ForwardOutlet {
                            tx,
                            metrics: m.clone(),
                        },
                        ready,
                    ),
                    Downstream::Sinks(sinks) => {
                        let out = SinkOutlet::new(sinks, Some(acks), ProgressBar::hidden(), &m);
                        run_segment(cfg, inlet, out, ready)
                    }
                }
            })
            .map_err(|source| ServeError::Io {
                what: "worker thread".into(),
                source,
            })?
    };
    match ready_rx.await {
        Ok(Ok(())) => {
            reporter
                .set_service_status("", ServingStatus::Serving)
                .await;
            reporter
                .set_service_status("readiness", ServingStatus::Serving)
                .await;
        }
        _ => tracing::error!("segment worker failed to start"),
    }

    // Wait for the worker (all streams done) or a signal.
    let worker_done = tokio::task::spawn_blocking(move || worker.join());
    let drain = opts.drain_timeout;
    let mut worker_done = std::pin::pin!(worker_done);
    let signalled = tokio::select! {
        r = &mut worker_done => Some(r),
        () = termination() => None,
    };
    let result = match signalled {
        Some(r) => r,
        None => {
            tracing::info!("terminating: draining in-flight frames");
            draining_tx.send_replace(true);
            reporter
                .set_service_status("readiness", ServingStatus::NotServing)
                .await;
            let _ = tokio::time::timeout(drain, stop_tx.send(Work::Stop)).await;
            match tokio::time::timeout(drain, &mut worker_done).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("drain timed out");
                    return Ok(outcome(opts, device, &metrics, None, &first_capture));
                }
            }
        }
    };
    let worker_result = match result {
        Ok(Ok(r)) => r?,
        _ => return Err(ServeError::Panicked("worker")),
    };
    stop_watch.store(true, Ordering::Relaxed);
    let mut refused = Vec::new();
    if let Some(w) = watcher {
        refused = w.join().unwrap_or_default();
    }
    drop(stop_tx);
    if let Some(f) = forwarder {
        if *draining_tx.borrow() {
            if tokio::time::timeout(drain, f).await.is_err() {
                tracing::warn!("downstream did not acknowledge everything in time");
            }
        } else {
            let _ = f.await;
        }
    }
    for s in sources {
        if let Ok(Err(e)) = s.join() {
            return Err(e.into());
        }
    }
    // Let upstream read our last acks: with `once`, until an ack told it
    // every stream's end (a restarted upstream may still be on its way),
    // then until its calls end.
    if opts.once && !seg.has_source {
        let _ = tokio::time::timeout(UPSTREAM_WAIT, told.wait_for(|&n| n >= streams)).await;
    }
    let t0 = Instant::now();
    while active.load(Ordering::SeqCst) > 0 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_server.send(());
    let _ = stop_health.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(outcome(
        opts,
        device,
        &metrics,
        Some((worker_result, refused)),
        &first_capture,
    ))
}

async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn outcome(
    opts: &ServeOptions,
    device: Device,
    m: &SegmentMetrics,
    w: Option<(LoopResult, Vec<String>)>,
    first: &std::sync::Mutex<Option<u64>>,
) -> SegmentOutcome {
    let (w, refused) = w.unwrap_or_default();
    SegmentOutcome {
        segment: opts.segment,
        frames: w.frames,
        group_compute_ns: w
            .group_compute
            .iter()
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .collect(),
        link_in_ns: w.link_in_ns,
        first_capture_ns: first.lock().ok().and_then(|g| *g),
        device: device.to_string(),
        sink: w.sink,
        reconnects: m.reconnects.get(),
        replays: m.replays.get(),
        duplicates_dropped: m.duplicates_dropped.get(),
        frames_dropped: m.frames_dropped.get(),
        payload_copies: m.payload_copies.get(),
        cpu_ns: w
            .cpu
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        busy_ns: w
            .busy
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        cpu_marks: w.cpu_marks,
        busy_marks: w.busy_marks,
        weight_updates: w.applied,
        weight_updates_refused: refused,
        device_fallback: None,
    }
}

/// Where a served segment's frames go: the forwarder of its downstream
/// link, or (the last segment) the sinks.
#[allow(clippy::large_enum_variant)] // one per process, never moved per frame
enum Downstream {
    Forward(mpsc::Sender<v1::Frame>),
    Sinks(Sinks),
}

/// A served segment's inlet: the queue the gRPC service and the source
/// threads fill.
struct InboxInlet(mpsc::Receiver<Work>);

impl Inlet for InboxInlet {
    fn recv(&mut self) -> Result<Option<Work>, ExecError> {
        Ok(self.0.blocking_recv())
    }

    fn queued(&self) -> usize {
        self.0.len()
    }

    fn idle(&self) -> bool {
        self.0.is_empty()
    }
}

/// A served segment's outlet to the forwarder of its downstream link. A
/// frame the forwarder can no longer take is counted as dropped.
struct ForwardOutlet {
    tx: mpsc::Sender<v1::Frame>,
    metrics: Arc<SegmentMetrics>,
}

impl Outlet for ForwardOutlet {
    fn send(&mut self, f: Frame) -> Result<bool, ExecError> {
        if self.tx.blocking_send(wire::encode(f, 0)).is_err() {
            self.metrics.frames_dropped.inc();
        }
        Ok(true)
    }

    fn end_stream(&mut self, stream_id: u32, frames: u64) -> Result<(), ExecError> {
        let _ = self
            .tx
            .blocking_send(wire::end_of_stream(stream_id, frames));
        Ok(())
    }

    fn finish(self) -> Result<Option<SinkOutcome>, ExecError> {
        Ok(None)
    }
}
