//! Measured machine limits, for stating how far a kernel is from its floor:
//! memory bandwidth (a parallel triad over buffers much larger than the
//! caches) and peak multiply-add throughput (independent FMA chains in
//! registers, at the dispatch [`Level`](super::simd::Level) the kernels use).

use std::time::Instant;

use rayon::prelude::*;

use super::simd::{Level, level};
use super::vector::{self, Vector};

/// Sustained bandwidth in bytes/s of `a[i] = b[i] + s * c[i]` over
/// `bytes_per_buffer`-sized buffers on all kernel threads (3 × 4 bytes moved
/// per element; best of `reps`).
pub fn triad_bandwidth(bytes_per_buffer: usize, reps: usize) -> f64 {
    let n = (bytes_per_buffer / 4).max(1 << 16);
    let mut a = vec![0.0f32; n];
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads().max(1) * 4);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) + 1 {
        let t0 = Instant::now();
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .zip(c.par_chunks(chunk))
            .for_each(|((a, b), c)| {
                for ((x, &y), &z) in a.iter_mut().zip(b).zip(c) {
                    *x = y + 0.5 * z;
                }
            });
        best = best.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(&a);
    }
    (3 * 4 * n) as f64 / best
}

/// Peak FLOP/s (a multiply-add counts 2) of independent FMA chains on all
/// kernel threads at once, each thread running one share (`broadcast`,
/// so no thread runs two while another idles): the best of five rounds
/// after at least 300 ms of the same work, since an idle core, a virtual
/// machine's in particular, takes some tens of milliseconds of work to
/// reach its steady speed.
pub fn peak_flops() -> f64 {
    const ITERS: usize = 2_000_000;
    let round = || {
        let per_thread = rayon::broadcast(|_| {
            let t0 = Instant::now();
            let f = fma_loop(ITERS);
            (f, t0.elapsed().as_secs_f64())
        });
        let flops: f64 = per_thread.iter().map(|r| r.0).sum();
        let secs = per_thread.iter().map(|r| r.1).fold(0.0f64, f64::max);
        flops / secs.max(f64::MIN_POSITIVE)
    };
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < 0.3 {
        round();
    }
    (0..5).map(|_| round()).fold(0.0, f64::max)
}

/// Runs `iters` rounds of 12 independent vector FMAs; returns FLOPs done.
fn fma_loop(iters: usize) -> f64 {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level is only chosen when the CPU has the features.
        Level::Avx512 => unsafe { fma_avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2Fma => unsafe { fma_avx2(iters) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 base ISA.
        Level::Neon => unsafe { chains::<vector::Neon>(iters) },
        // SAFETY: portable lanes need no CPU feature.
        _ => unsafe { chains::<vector::Portable>(iters) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn fma_avx512(iters: usize) -> f64 {
    // SAFETY: AVX-512F and FMA enabled here.
    unsafe { chains::<vector::Avx512>(iters) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: usize) -> f64 {
    // SAFETY: AVX2 and FMA enabled here.
    unsafe { chains::<vector::Avx2>(iters) }
}

/// # Safety
/// The CPU must support `V`.
#[inline(always)]
unsafe fn chains<V: Vector>(iters: usize) -> f64 {
    const CHAINS: usize = 12;
    // SAFETY (all vector ops): the caller guarantees the features; the
    // store targets a local buffer of LANES values.
    let w = unsafe { V::splat(std::hint::black_box(0.999_999)) };
    let x = unsafe { V::splat(std::hint::black_box(1e-7)) };
    let mut acc = [unsafe { V::splat(1.0) }; CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = unsafe { V::mul_add(w, *a, x) };
        }
    }
    let mut out = [0.0f32; 16];
    for a in &acc {
        unsafe { a.store(out.as_mut_ptr()) };
        std::hint::black_box(&out);
    }
    (iters * CHAINS * V::LANES * 2) as f64
}
