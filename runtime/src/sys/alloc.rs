//! Allocator tuning for frame-sized buffers.
//!
//! The `streamfuse` binary allocates with mimalloc. Frames of a few MB
//! (a 1280×720 f32 frame is 3.7 MB) are mimalloc "large" blocks; by
//! default mimalloc returns freed ones to the OS after 10 ms, so the next
//! frame's buffer (the gRPC receive and encode buffers are fresh each
//! frame) pays ~900 page faults again. Keeping freed memory instead took a
//! 3.7 MB loopback hop from ~41 % to ~80 % of raw TCP here (BENCHMARKS.md).
//! Memory stays bounded by the frames in flight, which the links bound.

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep freed memory for reuse rather than purge it.
/// Harmless when mimalloc is not the global allocator (it only configures
/// mimalloc's own heaps). Call once at start-up.
pub fn keep_freed_memory() {
    // SAFETY: sets a process-wide option; mimalloc documents it as safe to
    // call at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
