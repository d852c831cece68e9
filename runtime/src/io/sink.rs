//! Sinks: where frames end. Both record end-to-end latency; the stats sink
//! also keeps a digest of every output tensor in sequence order.

use twox_hash::XxHash3_128;

use crate::frame::Frame;

/// Digest of a run's outputs: XXH3-128 over, for each frame in seq order,
/// the stream id, seq, shape and the tensor's bytes (all integers
/// little-endian).
///
/// The digest answers one question — did two runs produce the same
/// outputs — so it is a fast non-cryptographic 128-bit hash (tens of GB/s
/// per core, with run-time AVX2/NEON dispatch) rather than a cryptographic
/// one: at 720p a cryptographic hash of every output costs a third of the
/// fused pipeline's frame time. The value is the same on every CPU.
#[derive(Clone)]
pub struct OutputDigest {
    hasher: XxHash3_128,
}

impl std::fmt::Debug for OutputDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputDigest").finish_non_exhaustive()
    }
}

impl Default for OutputDigest {
    fn default() -> Self {
        Self {
            hasher: XxHash3_128::new(),
        }
    }
}

impl OutputDigest {
    /// Adds one frame.
    pub fn update(&mut self, f: &Frame) {
        let s = f.tensor.shape();
        self.hasher.write(&f.stream_id.to_le_bytes());
        self.hasher.write(&f.seq.to_le_bytes());
        for d in [s.c, s.h, s.w] {
            self.hasher.write(&(d as u64).to_le_bytes());
        }
        self.hasher.write(f.tensor.as_bytes());
    }

    /// `xxh3-128:<32 hex digits>`.
    pub fn finish(&self) -> String {
        format!("xxh3-128:{:032x}", self.hasher.finish_128())
    }
}

/// A frame arrived out of order or twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sink: stream {stream} expected seq {expected}, got seq {got}")]
pub struct OrderError {
    /// Stream.
    pub stream: u32,
    /// Expected seq.
    pub expected: u64,
    /// Received seq.
    pub got: u64,
}

/// The sink's record of a run.
#[derive(Debug, Default)]
pub struct SinkRecord {
    /// End-to-end latency of every frame, ns, in arrival order.
    pub latencies_ns: Vec<u64>,
    /// Digest (stats sink only).
    pub digest: Option<OutputDigest>,
    next_seq: std::collections::HashMap<u32, u64>,
}

impl SinkRecord {
    /// A record; `digest` for the stats sink.
    pub fn new(digest: bool) -> Self {
        Self {
            latencies_ns: Vec::new(),
            digest: digest.then(OutputDigest::default),
            next_seq: std::collections::HashMap::new(),
        }
    }

    /// Takes one frame at wall-clock time `now_ns`.
    ///
    /// # Errors
    /// [`OrderError`] when the frame is not the next of its stream. A
    /// stream's first frame may have any seq (a restarted sink process
    /// resumes where its upstream replays from); after it, seqs are gapless.
    pub fn accept(&mut self, f: &Frame, now_ns: u64) -> Result<(), OrderError> {
        let next = self.next_seq.entry(f.stream_id).or_insert(f.seq);
        if f.seq != *next {
            return Err(OrderError {
                stream: f.stream_id,
                expected: *next,
                got: f.seq,
            });
        }
        *next += 1;
        self.latencies_ns.push(now_ns.saturating_sub(f.capture_ns));
        if let Some(d) = &mut self.digest {
            d.update(f);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use streamfuse_kernels::{Shape, Tensor};

    use super::*;

    fn f(stream_id: u32, seq: u64) -> Frame {
        Frame {
            stream_id,
            seq,
            capture_ns: 0,
            tensor: Tensor::zeros(Shape::new(1, 1, 1)),
        }
    }

    #[test]
    fn streams_are_ordered_independently_and_gaps_are_refused() {
        let mut r = SinkRecord::new(true);
        for (s, q) in [(0, 0), (1, 7), (0, 1), (1, 8), (0, 2)] {
            assert!(r.accept(&f(s, q), 0).is_ok(), "stream {s} seq {q}");
        }
        let e = r.accept(&f(1, 10), 0).unwrap_err();
        assert_eq!((e.stream, e.expected, e.got), (1, 9, 10));
        assert!(r.accept(&f(0, 2), 0).is_err(), "a duplicate is refused");
        assert_eq!(r.latencies_ns.len(), 5);
    }
}
