//! Sinks: where frames end. Both record end-to-end latency; the stats sink
//! also keeps a digest of every output tensor in sequence order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use twox_hash::XxHash3_128;

use crate::frame::Frame;

/// Digest of one stream's outputs, a chain over its frames in seq order:
/// `d_0 = 0`, `d_k = XXH3-128(d_{k-1} || XXH3-128(seq, shape, bytes))`,
/// every integer little-endian (`d` as 16 bytes, the seq and the three
/// dimensions as 8). The stream id is left out, so a stream's digest does
/// not depend on which other streams shared its pipeline. The state is one
/// 128-bit value, so a sink's journal keeps it with each committed frame
/// and a restarted sink goes on from where it was.
///
/// The digest answers one question — did two runs produce the same
/// outputs — so it is a fast non-cryptographic 128-bit hash (tens of GB/s
/// per core, with run-time AVX2/NEON dispatch) rather than a cryptographic
/// one: at 720p a cryptographic hash of every output costs a third of the
/// fused pipeline's frame time. The value is the same on every CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputDigest {
    state: u128,
}

impl OutputDigest {
    /// A digest that goes on from `state` ([`OutputDigest::state`]).
    pub fn resume(state: u128) -> Self {
        Self { state }
    }

    /// Adds one frame.
    pub fn update(&mut self, f: &Frame) {
        let s = f.tensor.shape();
        let mut h = XxHash3_128::new();
        h.write(&f.seq.to_le_bytes());
        for d in [s.c, s.h, s.w] {
            h.write(&(d as u64).to_le_bytes());
        }
        h.write(f.tensor.as_bytes());
        let mut link = [0u8; 32];
        link[..16].copy_from_slice(&self.state.to_le_bytes());
        link[16..].copy_from_slice(&h.finish_128().to_le_bytes());
        self.state = XxHash3_128::oneshot(&link);
    }

    /// The state after the frames so far.
    pub fn state(&self) -> u128 {
        self.state
    }

    /// `xxh3-128:<32 hex digits>`.
    pub fn finish(&self) -> String {
        format!("xxh3-128:{:032x}", self.state)
    }
}

/// The digest of a run from its streams' digests (`(stream id, digest)`):
/// with one stream, that stream's digest; with several, XXH3-128 over each
/// stream id and digest in stream order. `None` when there are none.
pub fn run_digest(streams: &[(u32, String)]) -> Option<String> {
    match streams {
        [] => None,
        [(_, d)] => Some(d.clone()),
        _ => {
            let mut sorted: Vec<&(u32, String)> = streams.iter().collect();
            sorted.sort_by_key(|(id, _)| *id);
            let mut h = XxHash3_128::new();
            for (id, d) in sorted {
                h.write(&id.to_le_bytes());
                h.write(d.as_bytes());
            }
            Some(format!("xxh3-128:{:032x}", h.finish_128()))
        }
    }
}

/// What the sink saw of one stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamTally {
    /// The stream.
    pub stream_id: u32,
    /// Seq of its first frame at this sink (0 unless the sink restarted).
    #[serde(default)]
    pub first_seq: u64,
    /// End-to-end latency of each of its frames, ns, in seq order (from
    /// `first_seq`).
    pub latencies_ns: Vec<u64>,
    /// Capture time of its first frame, ns (wall clock).
    pub first_capture_ns: u64,
    /// Arrival time of its last frame, ns (wall clock).
    pub last_ns: u64,
    /// Digest of its outputs (stats sink).
    pub digest: Option<String>,
}

impl StreamTally {
    /// The latencies of its frames with seq in `seqs`, ns.
    pub fn latencies_of(&self, seqs: std::ops::Range<u64>) -> &[u64] {
        let len = self.latencies_ns.len();
        let at =
            |q: u64| usize::try_from(q.saturating_sub(self.first_seq)).map_or(len, |i| i.min(len));
        &self.latencies_ns[at(seqs.start)..at(seqs.end).max(at(seqs.start))]
    }

    /// Its frames per second, first capture to last arrival.
    pub fn fps(&self) -> f64 {
        let span = self.last_ns.saturating_sub(self.first_capture_ns) as f64 / 1e9;
        if span > 0.0 {
            self.latencies_ns.len() as f64 / span
        } else {
            0.0
        }
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
    /// Wall-clock arrival time of every frame, ns, in arrival order.
    pub arrivals_ns: Vec<u64>,
    digest: bool,
    streams: BTreeMap<u32, StreamState>,
}

/// One stream's part of a [`SinkRecord`].
#[derive(Debug)]
struct StreamState {
    next_seq: u64,
    tally: StreamTally,
    digest: Option<OutputDigest>,
}

impl SinkRecord {
    /// A record; `digest` for the stats sink.
    pub fn new(digest: bool) -> Self {
        Self {
            latencies_ns: Vec::new(),
            arrivals_ns: Vec::new(),
            digest,
            streams: BTreeMap::new(),
        }
    }

    /// Each stream's tally, in stream order.
    pub fn streams(&self) -> Vec<StreamTally> {
        self.streams
            .values()
            .map(|st| StreamTally {
                digest: st.digest.as_ref().map(OutputDigest::finish),
                ..st.tally.clone()
            })
            .collect()
    }

    /// The run's digest ([`run_digest`] of the streams'); `None` without
    /// the stats sink or before any frame.
    pub fn digest(&self) -> Option<String> {
        let ds: Vec<(u32, String)> = self
            .streams
            .iter()
            .filter_map(|(&id, st)| Some((id, st.digest.as_ref()?.finish())))
            .collect();
        run_digest(&ds)
    }

    /// Takes back a frame committed by an earlier process of this sink
    /// (from its journal): its times and the stream's digest after it.
    ///
    /// # Errors
    /// [`OrderError`] when it is not the next of its stream.
    pub fn restore(
        &mut self,
        stream: u32,
        seq: u64,
        capture_ns: u64,
        arrival_ns: u64,
        digest: u128,
    ) -> Result<(), OrderError> {
        if let Some(d) = self.take(stream, seq, capture_ns, arrival_ns)? {
            *d = OutputDigest::resume(digest);
        }
        Ok(())
    }

    /// Records frame `seq` of `stream` (captured at `capture_ns`, arrived
    /// at `arrival_ns`) if it is the next of its stream; returns the
    /// stream's digest for the caller to update.
    fn take(
        &mut self,
        stream: u32,
        seq: u64,
        capture_ns: u64,
        arrival_ns: u64,
    ) -> Result<Option<&mut OutputDigest>, OrderError> {
        let with_digest = self.digest;
        let st = self.streams.entry(stream).or_insert_with(|| StreamState {
            next_seq: seq,
            tally: StreamTally {
                stream_id: stream,
                first_seq: seq,
                first_capture_ns: capture_ns,
                ..StreamTally::default()
            },
            digest: with_digest.then(OutputDigest::default),
        });
        if seq != st.next_seq {
            return Err(OrderError {
                stream,
                expected: st.next_seq,
                got: seq,
            });
        }
        st.next_seq += 1;
        let latency = arrival_ns.saturating_sub(capture_ns);
        st.tally.latencies_ns.push(latency);
        st.tally.last_ns = arrival_ns;
        self.latencies_ns.push(latency);
        self.arrivals_ns.push(arrival_ns);
        Ok(st.digest.as_mut())
    }

    /// The digest state of `stream` after its frames so far (0 without the
    /// stats sink or before its first frame).
    pub fn digest_state(&self, stream: u32) -> u128 {
        self.streams
            .get(&stream)
            .and_then(|st| st.digest.as_ref())
            .map_or(0, OutputDigest::state)
    }

    /// The seq `stream` takes next, where it has taken a frame.
    pub fn next_seq(&self, stream: u32) -> Option<u64> {
        self.streams.get(&stream).map(|st| st.next_seq)
    }

    /// Takes one frame at wall-clock time `now_ns`.
    ///
    /// # Errors
    /// [`OrderError`] when the frame is not the next of its stream. A
    /// stream's first frame may have any seq (a restarted sink process
    /// resumes where its upstream replays from); after it, seqs are gapless.
    pub fn accept(&mut self, f: &Frame, now_ns: u64) -> Result<(), OrderError> {
        if let Some(d) = self.take(f.stream_id, f.seq, f.capture_ns, now_ns)? {
            d.update(f);
        }
        Ok(())
    }
}

/// Frames per second in steady state: the sink's rate between its 10th
/// and 90th percentile arrivals, so the pipeline's fill (before its slowest
/// stage is busy) and drain (after the source ended) do not count. `None`
/// for fewer than 20 frames or arrivals that took no time.
pub fn steady_fps(arrivals_ns: &[u64]) -> Option<f64> {
    let n = arrivals_ns.len();
    if n < 20 {
        return None;
    }
    let mut t = arrivals_ns.to_vec();
    t.sort_unstable();
    let (lo, hi) = (n / 10, n - 1 - n / 10);
    let span = t[hi].saturating_sub(t[lo]);
    (span > 0).then(|| (hi - lo) as f64 / (span as f64 / 1e9))
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
    fn steady_rate_leaves_out_fill_and_drain() {
        // 100 frames 1 ms apart, after a 50 ms first frame and before a
        // 30 ms drain of the last one.
        let mut t: Vec<u64> = (0..100u64).map(|k| 50_000_000 + k * 1_000_000).collect();
        t[0] = 0;
        t[99] += 30_000_000;
        let fps = steady_fps(&t);
        assert!(fps.is_some_and(|f| (f - 1000.0).abs() < 1e-6), "{fps:?}");
        // Arrival order does not matter; too few frames give no rate.
        t.reverse();
        assert!(steady_fps(&t).is_some_and(|f| (f - 1000.0).abs() < 1e-6));
        assert_eq!(steady_fps(&t[..19]), None);
        assert_eq!(steady_fps(&[7; 40]), None);
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
        let t = r.streams();
        assert_eq!(t.iter().map(|t| t.stream_id).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(t[0].latencies_ns.len(), 3);
        assert_eq!(t[1].latencies_ns.len(), 2);
    }

    #[test]
    fn a_streams_digest_does_not_depend_on_its_id_or_its_neighbours() {
        let frame = |stream_id, seq: u64| Frame {
            tensor: Tensor::from_vec(Shape::new(1, 2, 2), vec![seq as f32; 4])
                .unwrap_or_else(|_| Tensor::zeros(Shape::new(1, 1, 1))),
            ..f(stream_id, seq)
        };
        let mut alone = SinkRecord::new(true);
        let mut mixed = SinkRecord::new(true);
        for q in 0..4 {
            assert!(alone.accept(&frame(0, q), 0).is_ok());
            assert!(mixed.accept(&frame(5, q), 0).is_ok());
            assert!(mixed.accept(&frame(2, 10 + q), 0).is_ok());
        }
        let a = alone.streams();
        let m = mixed.streams();
        assert_eq!(m[1].stream_id, 5);
        assert_eq!(a[0].digest, m[1].digest);
        assert_ne!(m[0].digest, m[1].digest);
        // One stream: the run's digest is the stream's; several: neither.
        assert_eq!(alone.digest(), a[0].digest);
        let run = mixed.digest();
        assert!(run.is_some() && run != m[0].digest && run != m[1].digest);
        assert_eq!(SinkRecord::new(false).digest(), None);
    }
}
