//! The client of `Probe`: measures the link to a segment server
//! (`streamfuse profile --peer`) with frames of the sizes a pipeline would
//! send over it.
//!
//! One probe opens a connection tuned as a pipeline link is
//! ([`super::forward::endpoint`]), times a few `Info` round trips (the
//! median is the round-trip time), then streams frames of one payload size
//! as fast as the link takes them for about the given duration. The server
//! answers when the first and the last frame arrived and the CPU time it
//! spent taking them; the client counts its own CPU time for sending them.

use std::time::{Duration, Instant};

use streamfuse_proto::v1;
use streamfuse_proto::v1::stage_client::StageClient;

use super::Limits;

/// How long a probe keeps trying to connect to a server that is starting.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(15);

/// What a probe of one payload size measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSample {
    /// Payload bytes per frame.
    pub bytes: usize,
    /// Frames that arrived.
    pub frames: u64,
    /// Payload bytes per second from the first arrival to the last.
    pub bytes_per_s: f64,
    /// Median `Info` round trip, ms.
    pub rtt_ms: f64,
    /// CPU time per frame of sending (this process), ms.
    pub send_cpu_ms: f64,
    /// CPU time per frame of receiving (the server's process), ms.
    pub recv_cpu_ms: f64,
}

/// A probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The address is not a valid URI.
    #[error("probe {addr}: {message}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The server could not be reached, or the call failed.
    #[error("probe {addr}: {message}")]
    Call {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// Too few frames arrived to time the link.
    #[error("probe {addr}: only {frames} frame(s) of {bytes} bytes arrived; cannot time the link")]
    TooFew {
        /// The address.
        addr: String,
        /// Frames that arrived.
        frames: u64,
        /// Payload bytes per frame.
        bytes: usize,
    },
}

/// Probes the segment server at `addr` with frames of `bytes` payload bytes
/// for about `duration` (at least 3 frames, at most `max_frames`).
///
/// # Errors
/// [`ProbeError`] when the server cannot be reached, answers with an error,
/// or too few frames arrived to time the link.
pub async fn probe(
    addr: &str,
    bytes: usize,
    duration: Duration,
    max_frames: u64,
    tls: Option<&super::tls::ClientTls>,
) -> Result<LinkSample, ProbeError> {
    let call = |e: String| ProbeError::Call {
        addr: addr.to_owned(),
        message: e,
    };
    let limits = Limits::for_frame(bytes);
    let endpoint = super::forward::endpoint(addr, &limits).map_err(|e| ProbeError::Address {
        addr: addr.to_owned(),
        message: e.to_string(),
    })?;
    // The server may still be starting: retry for a while.
    let t0 = Instant::now();
    let channel = loop {
        match super::tls::connect(&endpoint, tls).await {
            Ok(c) => break c,
            Err(e) if t0.elapsed() >= CONNECT_PATIENCE => {
                return Err(call(format!("cannot connect: {e}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut client = StageClient::new(channel)
        .max_encoding_message_size(limits.max_message)
        .max_decoding_message_size(1 << 20);
    let mut rtts = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        client
            .info(v1::InfoRequest {})
            .await
            .map_err(|s| call(s.message().to_owned()))?;
        rtts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    rtts.sort_by(f64::total_cmp);
    let rtt_ms = rtts[rtts.len() / 2];
    let payload = bytes::Bytes::from(vec![0u8; bytes]);
    let floats = u32::try_from(bytes / 4).unwrap_or(u32::MAX);
    let max_frames = max_frames.max(3);
    let (tx, rx) = tokio::sync::mpsc::channel::<v1::Frame>(2);
    let cpu0 = crate::sys::cputime::process_cpu();
    let feeder = tokio::spawn(async move {
        let start = Instant::now();
        let mut seq = 0u64;
        while seq < max_frames && (seq < 3 || start.elapsed() < duration) {
            let f = v1::Frame {
                stream_id: 0,
                seq,
                capture_ns: 0,
                sent_ns: crate::frame::now_ns(),
                shape: vec![1, 1, floats],
                dtype: v1::Dtype::F32.into(),
                end_of_stream: false,
                protocol: super::wire::PROTOCOL,
                first_unacked: 0,
                payload: payload.clone(),
            };
            if tx.send(f).await.is_err() {
                break;
            }
            seq += 1;
        }
        seq
    });
    let reply = client
        .probe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| call(s.message().to_owned()))?
        .into_inner();
    let sent = feeder.await.unwrap_or(0);
    let send_cpu = match (cpu0, crate::sys::cputime::process_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() * 1e3,
        _ => 0.0,
    };
    if reply.frames < 3 || reply.last_ns <= reply.first_ns {
        return Err(ProbeError::TooFew {
            addr: addr.to_owned(),
            frames: reply.frames,
            bytes,
        });
    }
    // Bytes after the first arrival over the time from it to the last.
    let span_s = (reply.last_ns - reply.first_ns) as f64 / 1e9;
    let after_first = reply.bytes as f64 * (reply.frames - 1) as f64 / reply.frames as f64;
    Ok(LinkSample {
        bytes,
        frames: reply.frames,
        bytes_per_s: after_first / span_s,
        rtt_ms,
        send_cpu_ms: send_cpu / sent.max(1) as f64,
        recv_cpu_ms: reply.cpu_ns as f64 / 1e6 / reply.frames as f64,
    })
}
