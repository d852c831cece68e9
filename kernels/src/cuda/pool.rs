//! Buffers reused frame after frame, so a device in steady state allocates
//! nothing: device buffers per stream (a buffer is reused only on the
//! stream that used it, so stream order keeps reuse safe), pinned host
//! buffers per lane, both by exact length (a camera whose frame size
//! changes gets one set per size).
//!
//! Each pool counts what it had to allocate; [`super::device::CudaDevice`]
//! reports the totals, and a device in steady state shows none per frame.

use std::collections::HashMap;

/// Free buffers by length, with a count of the allocations made.
#[derive(Debug)]
pub struct Pool<B> {
    free: HashMap<usize, Vec<B>>,
    /// Buffers of each length kept at most (beyond: dropped).
    keep: usize,
    /// Allocations made (taken buffers that were not free).
    pub allocated: u64,
    /// Buffers taken in all.
    pub taken: u64,
}

impl<B> Default for Pool<B> {
    fn default() -> Self {
        Self::new(8)
    }
}

impl<B> Pool<B> {
    /// A pool keeping at most `keep` free buffers of each length.
    pub fn new(keep: usize) -> Self {
        Self {
            free: HashMap::new(),
            keep,
            allocated: 0,
            taken: 0,
        }
    }

    /// A buffer of `len` values: a free one, else `alloc(len)`'s.
    ///
    /// # Errors
    /// `alloc`'s.
    pub fn take<E>(
        &mut self,
        len: usize,
        alloc: impl FnOnce(usize) -> Result<B, E>,
    ) -> Result<B, E> {
        self.taken += 1;
        if let Some(b) = self.free.get_mut(&len).and_then(Vec::pop) {
            return Ok(b);
        }
        self.allocated += 1;
        alloc(len)
    }

    /// Gives back a buffer of `len` values for a later [`Pool::take`].
    pub fn give(&mut self, len: usize, b: B) {
        let v = self.free.entry(len).or_default();
        if v.len() < self.keep {
            v.push(b);
        }
    }

    /// Free buffers held.
    pub fn held(&self) -> usize {
        self.free.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame loop as the device runs it: the input buffer, one output per
    /// op (each given back as the next op replaces it), the final output
    /// given back when the frame completes.
    fn frame(pool: &mut Pool<Vec<f32>>, sizes: &[usize], fresh: &mut u64) {
        let mut alloc = |n: usize| -> Result<Vec<f32>, ()> {
            *fresh += 1;
            Ok(vec![0.0; n])
        };
        let mut cur = pool.take(sizes[0], &mut alloc).unwrap_or_default();
        for &n in &sizes[1..] {
            let next = pool.take(n, &mut alloc).unwrap_or_default();
            let old = std::mem::replace(&mut cur, next);
            pool.give(old.len(), old);
        }
        pool.give(cur.len(), cur);
    }

    #[test]
    fn steady_frames_allocate_nothing_even_as_their_size_changes() {
        let mut pool = Pool::new(4);
        let mut fresh = 0;
        // conv (same size), pool (a quarter), as a chain of three ops.
        let chain = |n: usize| [n, n, n / 4];
        frame(&mut pool, &chain(1024), &mut fresh);
        let first = fresh;
        assert_eq!(first, 3, "the first frame allocates its buffers");
        for _ in 0..100 {
            frame(&mut pool, &chain(1024), &mut fresh);
        }
        assert_eq!(fresh, first, "no allocation in steady state");
        // A second frame size (a second camera): allocated once, then
        // reused alongside the first.
        frame(&mut pool, &chain(4096), &mut fresh);
        let both = fresh;
        for k in 0..100 {
            frame(
                &mut pool,
                &chain(if k % 2 == 0 { 1024 } else { 4096 }),
                &mut fresh,
            );
        }
        assert_eq!(fresh, both);
        assert_eq!(pool.allocated, both);
        assert!(pool.held() <= 8);
    }

    #[test]
    fn a_pool_keeps_at_most_its_bound_per_length() {
        let mut pool: Pool<Vec<u8>> = Pool::new(2);
        for _ in 0..5 {
            pool.give(3, vec![0; 3]);
        }
        assert_eq!(pool.held(), 2);
    }
}
