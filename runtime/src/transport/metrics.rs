//! A segment's metrics in the Prometheus text format, served on
//! `--metrics ADDR` at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Seconds counter.
type Seconds = Counter<f64, AtomicU64>;
/// Labels of a fusion group.
type GroupLabels = Vec<(String, String)>;

/// Every metric of one segment process.
#[derive(Debug)]
pub struct SegmentMetrics {
    registry: Registry,
    /// Frames received (from upstream or the source).
    pub frames_in: Counter,
    /// Frames forwarded downstream or taken by the sink.
    pub frames_out: Counter,
    /// Payload bytes received.
    pub bytes_in: Counter,
    /// Payload bytes sent downstream.
    pub bytes_out: Counter,
    /// Compute time per fusion group.
    pub compute_seconds: Family<GroupLabels, Seconds>,
    /// Link transit time of received frames (sender's send to receipt).
    pub receive_seconds: Seconds,
    /// Time spent handing frames to the transport (encode and send).
    pub send_seconds: Seconds,
    /// Frames waiting for the segment's worker.
    pub queue_depth: Gauge,
    /// Device buffers the segment's CUDA device allocated so far (flat in
    /// steady state: buffers are reused frame after frame).
    pub device_allocations: Gauge,
    /// Pinned host buffers the segment's CUDA device allocated so far.
    pub pinned_allocations: Gauge,
    /// Frames sent downstream and not yet acknowledged.
    pub unacked: Gauge,
    /// Credits left on the downstream link.
    pub credits: Gauge,
    /// Connections to downstream re-established.
    pub reconnects: Counter,
    /// Frames sent again after a reconnect.
    pub replays: Counter,
    /// Received frames already seen (replays), dropped.
    pub duplicates_dropped: Counter,
    /// Frames lost: must stay 0.
    pub frames_dropped: Counter,
    /// Frames refused as invalid (answered with `InvalidArgument`).
    pub frames_rejected: Counter,
    /// Received payloads that had to be copied (misaligned).
    pub payload_copies: Counter,
    /// Weights version of each conv stage (1: the spec's weights).
    pub weights_version: Family<GroupLabels, Gauge>,
    /// When each stage last swapped in new weights, s since the Unix epoch.
    pub weights_swapped_at: Family<GroupLabels, Gauge<f64, AtomicU64>>,
    /// Weight updates refused (the old weights kept serving).
    pub weights_refused: Counter,
    /// Control calls (`UpdateWeights`, `Probe`) refused for their peer.
    pub control_refused: Counter,
    /// Connections and calls refused at a cap ([`super::caps`]).
    pub capped: Counter,
    /// Connections closed in or for their TLS handshake (plaintext, no or
    /// an unknown client certificate, no handshake in time).
    pub tls_refused: Counter,
}

impl SegmentMetrics {
    /// A fresh set, labelled with the pipeline and segment.
    pub fn new(pipeline: &str, segment: usize) -> Self {
        let mut root = Registry::with_prefix_and_labels(
            "streamfuse",
            [
                ("pipeline".into(), pipeline.to_owned().into()),
                ("segment".into(), segment.to_string().into()),
            ]
            .into_iter(),
        );
        let m = Self {
            registry: Registry::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            compute_seconds: Family::default(),
            receive_seconds: Seconds::default(),
            send_seconds: Seconds::default(),
            queue_depth: Gauge::default(),
            device_allocations: Gauge::default(),
            pinned_allocations: Gauge::default(),
            unacked: Gauge::default(),
            credits: Gauge::default(),
            reconnects: Counter::default(),
            replays: Counter::default(),
            duplicates_dropped: Counter::default(),
            frames_dropped: Counter::default(),
            frames_rejected: Counter::default(),
            payload_copies: Counter::default(),
            weights_version: Family::default(),
            weights_swapped_at: Family::default(),
            weights_refused: Counter::default(),
            control_refused: Counter::default(),
            capped: Counter::default(),
            tls_refused: Counter::default(),
        };
        let r = &mut root;
        r.register("frames_in", "Frames received", m.frames_in.clone());
        r.register(
            "frames_out",
            "Frames sent on or taken by the sink",
            m.frames_out.clone(),
        );
        r.register("bytes_in", "Payload bytes received", m.bytes_in.clone());
        r.register(
            "bytes_out",
            "Payload bytes sent downstream",
            m.bytes_out.clone(),
        );
        r.register(
            "compute_seconds",
            "Compute time per fusion group",
            m.compute_seconds.clone(),
        );
        r.register(
            "receive_seconds",
            "Link transit time of received frames",
            m.receive_seconds.clone(),
        );
        r.register(
            "send_seconds",
            "Time handing frames to the transport",
            m.send_seconds.clone(),
        );
        r.register(
            "queue_depth",
            "Frames waiting for the worker",
            m.queue_depth.clone(),
        );
        r.register(
            "device_allocations",
            "Device buffers allocated so far (flat in steady state)",
            m.device_allocations.clone(),
        );
        r.register(
            "pinned_allocations",
            "Pinned host buffers allocated so far (flat in steady state)",
            m.pinned_allocations.clone(),
        );
        r.register(
            "unacked_frames",
            "Frames sent and not acknowledged",
            m.unacked.clone(),
        );
        r.register(
            "credits",
            "Credits left on the downstream link",
            m.credits.clone(),
        );
        r.register(
            "reconnects",
            "Downstream reconnections",
            m.reconnects.clone(),
        );
        r.register(
            "replays",
            "Frames sent again after a reconnect",
            m.replays.clone(),
        );
        r.register(
            "duplicates_dropped",
            "Received frames already seen, dropped",
            m.duplicates_dropped.clone(),
        );
        r.register(
            "frames_dropped",
            "Frames lost (must stay 0)",
            m.frames_dropped.clone(),
        );
        r.register(
            "frames_rejected",
            "Frames refused as invalid",
            m.frames_rejected.clone(),
        );
        r.register(
            "payload_copies",
            "Received payloads copied because misaligned",
            m.payload_copies.clone(),
        );
        r.register(
            "weights_version",
            "Weights version of each conv stage (1: the spec's)",
            m.weights_version.clone(),
        );
        r.register(
            "weights_swapped_at_seconds",
            "When each stage last swapped in new weights (Unix time)",
            m.weights_swapped_at.clone(),
        );
        r.register(
            "weights_refused",
            "Weight updates refused",
            m.weights_refused.clone(),
        );
        r.register(
            "capped",
            "Connections and calls refused at a cap (connections, calls, idle calls)",
            m.capped.clone(),
        );
        r.register(
            "control_refused",
            "Control calls (UpdateWeights, Probe) refused for their peer",
            m.control_refused.clone(),
        );
        r.register(
            "tls_refused",
            "Connections closed in their TLS handshake (plaintext, no or an unknown client certificate, no handshake in time)",
            m.tls_refused.clone(),
        );
        Self {
            registry: root,
            ..m
        }
    }

    /// Sets the device and pinned allocation gauges from
    /// `(device, pinned)` counts.
    pub fn set_device_allocations(&self, (device, pinned): (u64, u64)) {
        self.device_allocations
            .set(i64::try_from(device).unwrap_or(i64::MAX));
        self.pinned_allocations
            .set(i64::try_from(pinned).unwrap_or(i64::MAX));
    }

    /// Records a stage's weights version, and the time it took effect
    /// (`at_ns` since the Unix epoch; 0 for the spec's own weights).
    pub fn set_weights(&self, stage: &str, version: u64, at_ns: u64) {
        let labels = vec![("stage".to_owned(), stage.to_owned())];
        self.weights_version
            .get_or_create(&labels)
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        if at_ns > 0 {
            self.weights_swapped_at
                .get_or_create(&labels)
                .set(at_ns as f64 / 1e9);
        }
    }

    /// The compute-time counter of a group, to keep and add to per frame
    /// (a handle on the same counter: no label lookup per frame).
    pub fn compute_counter(&self, group: &str) -> Counter<f64, AtomicU64> {
        self.compute_seconds
            .get_or_create(&vec![("group".to_owned(), group.to_owned())])
            .clone()
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) on `addr` until the process ends.
///
/// # Errors
/// [`std::io::Error`] when `addr` cannot be bound.
pub async fn serve(addr: SocketAddr, m: Arc<SegmentMetrics>) -> std::io::Result<SocketAddr> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let m = m.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = m.render();
                    async move {
                        hyper::Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(local)
}
