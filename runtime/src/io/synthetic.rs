//! The synthetic source: seeded frames, identical in every process.
//!
//! Value `i` of frame `seq` is `pixel(seed, seq, i)`, an 8-bit level scaled
//! to `[0, 1]`, from a counter-based hash: frames can be generated in
//! parallel and any process regenerates any frame exactly.

use std::time::{Duration, Instant};

use streamfuse_kernels::{Tensor, random};

use crate::frame::{Frame, now_ns};
use crate::spec::SyntheticSource;

/// Values per parallel chunk.
const CHUNK: usize = 1 << 16;

/// Produces the frames of a [`SyntheticSource`], paced when it has an `fps`.
#[derive(Debug)]
pub struct Synthetic {
    cfg: SyntheticSource,
    next: u64,
    first: u64,
    start: Option<Instant>,
}

impl Synthetic {
    /// A source at frame 0.
    pub fn new(cfg: SyntheticSource) -> Self {
        Self::starting_at(cfg, 0)
    }

    /// A source at frame `seq` (a resumed source: frame `seq` is the one a
    /// source from 0 gives as its `seq`th).
    pub fn starting_at(cfg: SyntheticSource, seq: u64) -> Self {
        Self {
            cfg,
            next: seq,
            first: seq,
            start: None,
        }
    }

    /// The tensor of frame `seq` (no pacing, no timestamp).
    pub fn tensor(cfg: &SyntheticSource, seq: u64) -> Tensor {
        let n = cfg.shape.len();
        let key = random::stream_key(cfg.seed, seq);
        let mut data: Vec<f32> = Vec::with_capacity(n);
        streamfuse_kernels::cpu::for_each_chunk(
            &mut data.spare_capacity_mut()[..n],
            CHUNK,
            |(c, chunk)| random::fill_pixels_uninit(key, (c * CHUNK) as u64, chunk),
        );
        // SAFETY: the chunks above cover all `n` values and each is written.
        unsafe { data.set_len(n) };
        match Tensor::from_vec(cfg.shape, data) {
            Ok(t) => t,
            // Unreachable: `data` has `shape.len()` values.
            Err(_) => Tensor::zeros(cfg.shape),
        }
    }
}

impl Iterator for Synthetic {
    type Item = Frame;

    fn next(&mut self) -> Option<Frame> {
        if self.next >= self.cfg.frames {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        if let Some(fps) = self.cfg.fps {
            let start = *self.start.get_or_insert_with(Instant::now);
            let due = start + Duration::from_secs_f64((seq - self.first) as f64 / fps);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let tensor = Self::tensor(&self.cfg, seq);
        Some(Frame {
            stream_id: 0,
            seq,
            capture_ns: now_ns(),
            tensor,
        })
    }
}
