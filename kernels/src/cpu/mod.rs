//! The CPU backend: one module per op family, mirroring the CUDA sources.
//!
//! Every kernel is multi-threaded over row bands (rayon) and written so the
//! inner loops vectorise; the hot loops are compiled several times with
//! `#[target_feature]` and picked at run time ([`simd::Level`]).
//!
//! Determinism: each output value is computed by the same sequence of
//! floating-point operations whatever the thread count or band split, and the
//! fused path reuses the unfused paths' row routines, so fused and unfused
//! outputs are bit-identical on one machine. Different [`simd::Level`]s may
//! differ in the last bits (FMA contraction vs separate multiply and add).

pub mod conv;
pub(crate) mod depthwise;
pub mod elementwise;
pub mod fused;
pub(crate) mod interleave;
pub(crate) mod panel;
pub mod pool;
pub mod roofline;
pub mod simd;
mod vector;
pub mod vision;
pub(crate) mod winograd;

pub use winograd::applies as winograd_applies;
pub use winograd::output_tile as winograd_tile;

use rayon::prelude::*;

/// Runs `f` on each `(index, band)`: on the kernel threads, or one after
/// another on the calling thread when there is a single kernel thread. A
/// pool of one thread would only take the work from the caller and hand it
/// back (two thread wake-ups per call, more than a small frame's kernel
/// costs): a process given one CPU runs its kernels on its own thread.
pub(crate) fn for_each_band<T, F>(bands: Vec<T>, f: F)
where
    T: Send,
    F: Fn((usize, T)) + Sync + Send,
{
    if rayon::current_num_threads() <= 1 {
        bands.into_iter().enumerate().for_each(f);
    } else {
        bands.into_par_iter().enumerate().for_each(f);
    }
}

/// Runs `f` on each `(index, chunk)` of `chunk` values of `data`, on the
/// kernel threads, or one after another on the calling thread when there is
/// a single kernel thread (as [`for_each_band`]).
pub fn for_each_chunk<T, F>(data: &mut [T], chunk: usize, f: F)
where
    T: Send,
    F: Fn((usize, &mut [T])) + Sync + Send,
{
    if rayon::current_num_threads() <= 1 {
        data.chunks_mut(chunk).enumerate().for_each(f);
    } else {
        data.par_chunks_mut(chunk).enumerate().for_each(f);
    }
}

/// Rows per band so that `rows` split into about `2 * threads` bands, at
/// least one row each. Two bands per thread leave room to balance a thread
/// that falls behind; more cost a fused convolution and pool the rows its
/// bands' edges compute twice (the ResNet-50 stem at 720p: about 3 % slower
/// with four per thread, BENCHMARKS.md).
pub(crate) fn band_rows(rows: usize) -> usize {
    let bands = 2 * rayon::current_num_threads().max(1);
    rows.div_ceil(bands).max(1)
}

/// Splits `c` planes of `rows * width` values into bands of `band` rows:
/// element `b` holds, for every plane, the mutable rows of band `b`.
pub(crate) fn plane_bands(
    data: &mut [f32],
    c: usize,
    rows: usize,
    width: usize,
    band: usize,
) -> Vec<Vec<&mut [f32]>> {
    let nbands = rows.div_ceil(band);
    let mut bands: Vec<Vec<&mut [f32]>> = (0..nbands).map(|_| Vec::with_capacity(c)).collect();
    if rows * width == 0 {
        return bands;
    }
    for plane in data.chunks_mut(rows * width).take(c) {
        for (b, chunk) in plane.chunks_mut(band * width).enumerate() {
            bands[b].push(chunk);
        }
    }
    bands
}

/// `max` as `b > a ? b : a`: one definition for every kernel so that ties
/// and NaNs resolve the same way in fused and unfused paths.
#[inline(always)]
pub(crate) fn max2(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// ReLU as `x > 0 ? x : 0` (NaN and -0.0 become +0.0).
#[inline(always)]
pub(crate) fn relu1(x: f32) -> f32 {
    if x > 0.0 { x } else { 0.0 }
}
