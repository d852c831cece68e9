//! The sending side of a link: keeps every frame until downstream has
//! acknowledged it, sends within the receiver's credits, and after a
//! broken call reconnects with exponential backoff and replays what is
//! unacknowledged.
//!
//! Each frame goes out with the stream's `first_unacked`: the highest of
//! what downstream acknowledged and what this segment's own senders
//! declared delivered ([`Floors`]), never above the frame's seq. Frames
//! below what downstream acknowledged (a replay from upstream of frames a
//! restarted downstream already has) are dropped, not sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamfuse_proto::v1;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use super::Limits;
use super::metrics::SegmentMetrics;
use super::push;
use super::server::{AckBoard, AckMap, Delivered, Floors};
use crate::frame::now_ns;

/// First wait before reconnecting; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_START: Duration = Duration::from_millis(20);
/// Longest wait between reconnection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The downstream address is not a valid URI.
    #[error("downstream address {addr}: {source}")]
    Address {
        /// The address.
        addr: String,
        /// Cause.
        source: tonic::transport::Error,
    },
}

/// The client end of the link to the next segment.
pub struct Forwarder {
    endpoint: Endpoint,
    limits: Limits,
    /// Most frames kept unacknowledged (memory bound of this link).
    max_unacked: usize,
    metrics: Arc<SegmentMetrics>,
    acks_up: AckBoard,
    floors: Floors,
    tls: Option<super::tls::ClientTls>,
}

/// `addr` as a URI: `host:port` becomes `http://host:port`.
pub fn uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// The HTTP/2 endpoint for `addr` (`host:port` or a URI) tuned for `limits`.
///
/// # Errors
/// [`ForwardError::Address`] when `addr` is not a valid URI.
pub fn endpoint(addr: &str, limits: &Limits) -> Result<Endpoint, ForwardError> {
    let e = Endpoint::from_shared(uri(addr)).map_err(|source| ForwardError::Address {
        addr: addr.to_owned(),
        source,
    })?;
    Ok(e.initial_stream_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
        .max_frame_size(limits.h2_frame)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5)))
}

impl Forwarder {
    /// A forwarder to `addr`; what downstream acknowledges is published on
    /// `acks_up` (the upstream acks of a middle segment); `floors` holds what
    /// upstream declared delivered (see the module docs).
    ///
    /// # Errors
    /// [`ForwardError::Address`] when `addr` is not a valid URI.
    pub fn new(
        addr: &str,
        limits: Limits,
        metrics: Arc<SegmentMetrics>,
        acks_up: AckBoard,
        floors: Floors,
    ) -> Result<Self, ForwardError> {
        Ok(Self {
            endpoint: endpoint(addr, &limits)?,
            max_unacked: limits.max_unacked,
            limits,
            metrics,
            acks_up,
            floors,
            tls: None,
        })
    }

    /// Connects through mutual TLS with `tls` (this segment's certificate,
    /// and the CA downstream's must be signed by).
    #[must_use]
    pub fn with_tls(mut self, tls: Option<super::tls::ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Sends every frame of `input` downstream until `input` closes and
    /// everything sent is acknowledged. Never gives up on a broken link:
    /// it retries with backoff (bounded memory: at most `max_unacked`
    /// frames are kept).
    pub async fn run(self, mut input: mpsc::Receiver<v1::Frame>) {
        let m = &self.metrics;
        let mut unacked: VecDeque<v1::Frame> = VecDeque::new();
        let mut input_done = false;
        let mut backoff = BACKOFF_START;
        let mut connected_before = false;
        let mut acked = AckMap::new();
        let mut ended = std::collections::BTreeSet::new();
        loop {
            if input_done && unacked.is_empty() {
                return;
            }
            let call = async {
                let channel = super::tls::connect(&self.endpoint, self.tls.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
                push::open(channel, self.endpoint.uri(), self.limits.max_message)
                    .await
                    .map_err(|s| s.to_string())
            };
            let (tx, mut acks) = match call.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, wait_ms = backoff.as_millis() as u64, "downstream not reachable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            if connected_before {
                m.reconnects.inc();
                m.replays.inc_by(unacked.len() as u64);
                tracing::info!(replay = unacked.len(), "reconnected downstream");
            }
            connected_before = true;
            backoff = BACKOFF_START;
            let mut sent = 0u64;
            let mut credit = 0u64;
            let mut next = 0usize; // index in `unacked` of the next frame to send on this call
            loop {
                while sent < credit && next < unacked.len() {
                    let mut f = unacked[next].clone();
                    f.sent_ns = now_ns();
                    let floor = self
                        .floors
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&f.stream_id).copied())
                        .unwrap_or(0);
                    let acked_here = acked.get(&f.stream_id).copied().unwrap_or(0);
                    f.first_unacked = floor.max(acked_here).min(f.seq);
                    let t0 = Instant::now();
                    if tx.send(f).await.is_err() {
                        break;
                    }
                    m.send_seconds.inc_by(t0.elapsed().as_secs_f64());
                    sent += 1;
                    next += 1;
                }
                m.credits.set(credit.saturating_sub(sent) as i64);
                m.unacked.set(unacked.len() as i64);
                if input_done && unacked.is_empty() {
                    return;
                }
                let room = !input_done && unacked.len() < self.max_unacked;
                tokio::select! {
                    a = acks.next::<v1::Ack>() => match a {
                        Ok(Some(a)) => {
                            credit = a.credit_total;
                            // The first ack makes the positions known.
                            let mut changed = !self.acks_up.borrow().known;
                            for s in a.streams {
                                let e = acked.entry(s.stream_id).or_insert(0);
                                if s.next_seq > *e {
                                    *e = s.next_seq;
                                    changed = true;
                                }
                                if s.ended && ended.insert(s.stream_id) {
                                    changed = true;
                                }
                            }
                            if changed {
                                let mut i = 0usize;
                                let sent_here = next;
                                unacked.retain(|f| {
                                    let keep = acked.get(&f.stream_id).is_none_or(|&n| f.seq >= n);
                                    if !keep && i < sent_here {
                                        next -= 1;
                                    }
                                    i += 1;
                                    keep
                                });
                                self.acks_up.send_replace(Delivered {
                                    known: true,
                                    next: acked.clone(),
                                    ended: ended.clone(),
                                });
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            if status.code() == tonic::Code::InvalidArgument {
                                // Downstream refused a frame as malformed: a
                                // bug upstream, not a transient fault. Keep
                                // it (no loss) and say so loudly.
                                tracing::error!(%status, "downstream refused a frame");
                            } else {
                                tracing::debug!(%status, "downstream call ended");
                            }
                            break;
                        }
                    },
                    f = input.recv(), if room => match f {
                        Some(f) if acked.get(&f.stream_id).is_some_and(|&n| f.seq < n) => {
                            // Downstream has it already (it restarted after
                            // delivering it; upstream replayed it here).
                            m.duplicates_dropped.inc();
                        }
                        Some(f) => {
                            m.frames_out.inc();
                            m.bytes_out.inc_by(f.payload.len() as u64);
                            unacked.push_back(f);
                        }
                        None => input_done = true,
                    },
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}
