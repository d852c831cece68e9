//! Frames: a tensor with its stream, sequence number and capture time.

use std::time::{SystemTime, UNIX_EPOCH};

use streamfuse_kernels::Tensor;

/// One frame of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Stream (camera) id.
    pub stream_id: u32,
    /// Sequence number in the stream, gapless from 0.
    pub seq: u64,
    /// Wall-clock capture time, ns since the Unix epoch (carried end to end).
    pub capture_ns: u64,
    /// The data.
    pub tensor: Tensor,
}

/// Wall-clock now in ns since the Unix epoch (0 if the clock is before 1970).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
