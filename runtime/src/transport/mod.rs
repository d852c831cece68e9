//! gRPC frame streaming between segments.
//!
//! - [`wire`]: frames to and from protocol messages, the checks on receipt,
//!   and the copies that remain per frame.
//! - [`server`]: the receiving side (service `streamfuse.v1.Stage`).
//! - [`forward`]: the sending side (credits, acks, reconnect and replay).
//! - [`framing`], [`push`]: the `Push` call below tonic's codec, so
//!   payloads are not copied into encode or decode buffers.
//! - [`metrics`]: Prometheus text exposition of a segment.
//! - [`update`], [`probe`]: clients of `UpdateWeights` and `Probe`.
//! - [`caps`]: what one peer can make a server hold.
//! - [`tls`]: mutual TLS on links (certificates reloaded when they
//!   change); [`admins`]: which client identities may make control calls.
//!
//! Delivery is at-least-once per link and exactly-once at the sink, across
//! the loss of any process:
//! - a sender keeps each frame until the receiver acknowledges it, and a
//!   receiver acknowledges a frame only when it is delivered further on
//!   (its output acknowledged downstream, or committed by the sink);
//! - a restarted segment loses nothing: its upstream replays every frame it
//!   had not finished, and receivers drop the duplicates by
//!   `(stream_id, seq)`;
//! - a restarted sink reads back what it committed from its journal
//!   ([`crate::io::journal`]) and acknowledges it in its first ack, so
//!   upstream goes on from there and nothing is written twice;
//! - a restarted source segment waits for its downstream's first ack and
//!   starts each stream at the delivered position
//!   ([`crate::io::source::stream_frames_from`]).
//!
//! The protocol's rules (what a receiver takes, drops and refuses, and the
//! first and last acks of a call) are written out in `stage.proto` for
//! clients that do not use this crate, and enforced in [`server`].

pub mod admins;
pub mod caps;
pub mod control;
pub mod forward;
pub mod framing;
pub mod metrics;
pub mod probe;
pub mod push;
pub mod server;
pub mod tls;
pub mod update;
pub mod wire;

use crate::plan::Plan;
use crate::spec::Pipeline;

/// Frames a receiver lets a sender have in flight beyond what it queued.
pub const WINDOW: u64 = 2;

/// Bytes of frames a sender keeps for replay until they are acknowledged:
/// frames are acknowledged only once delivered downstream, so this caps
/// the frames in flight past the sender, and with them the rate: at most
/// this many frames per acknowledgement round trip. Small frames get more
/// than the floor of 8 (a 128x128 float frame: 64), so scheduling delays
/// of the processes downstream, which last many such frames, do not stall
/// the sender.
pub const UNACKED_BYTES: usize = 4 << 20;

/// Message and HTTP/2 sizes for a pipeline's links, computed from the
/// largest frame the plan can put on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload, bytes.
    pub max_frame_bytes: usize,
    /// gRPC message limit (payload plus framing), both directions.
    pub max_message: usize,
    /// HTTP/2 stream window.
    pub stream_window: u32,
    /// HTTP/2 connection window.
    pub connection_window: u32,
    /// HTTP/2 frame size.
    pub h2_frame: u32,
    /// Frames a sender keeps unacknowledged at most ([`UNACKED_BYTES`]
    /// worth, 8 to 64).
    pub max_unacked: usize,
}

impl Limits {
    /// Limits for payloads of at most `max_frame_bytes`.
    pub fn for_frame(max_frame_bytes: usize) -> Self {
        let max_message = max_frame_bytes + wire::MESSAGE_OVERHEAD;
        // Two whole frames per stream window so a sender never stalls on
        // WINDOW_UPDATE mid-frame; HTTP/2 caps windows at 2^31 - 1.
        let cap = (1u64 << 31) - 1;
        let stream = (2 * max_message as u64).clamp(1 << 20, cap);
        let conn = (2 * stream).min(cap);
        Self {
            max_frame_bytes,
            max_message,
            stream_window: stream as u32,
            connection_window: conn as u32,
            // 1 MiB DATA frames (HTTP/2 allows up to 16 MiB - 1; the default
            // 16 KiB costs a frame header and a wakeup per 16 KiB).
            h2_frame: 1 << 20,
            max_unacked: (UNACKED_BYTES / max_frame_bytes.max(1)).clamp(8, 64),
        }
    }

    /// Limits for every link of `plan`: the largest frame any segment takes
    /// or emits, of any stream.
    pub fn for_plan(p: &Pipeline, plan: &Plan) -> Self {
        let mut max = p.sources().map(|s| s.shape().bytes()).max().unwrap_or(0);
        for seg in &plan.segments {
            max = max.max(seg.output.bytes());
            for s in p.stream_shapes(seg.stages.end) {
                max = max.max(s.bytes());
            }
        }
        Self::for_frame(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_fit_the_largest_frame_and_stay_within_http2() {
        let l = Limits::for_frame(1280 * 720 * 4);
        assert!(l.max_message >= 1280 * 720 * 4 + 100);
        assert!(l.stream_window as usize >= 2 * l.max_message);
        assert_eq!(l.max_unacked, 8, "large frames keep the floor");
        assert_eq!(Limits::for_frame(128 * 128 * 4).max_unacked, 64);
        assert_eq!(
            Limits::for_frame(16).max_unacked,
            64,
            "and small ones the cap"
        );
        let huge = Limits::for_frame(4 << 30);
        assert_eq!(huge.stream_window, (1 << 31) - 1);
        assert_eq!(Limits::for_frame(10).stream_window, 1 << 20);
    }
}
