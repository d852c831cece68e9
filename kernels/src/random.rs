//! Counter-based deterministic values: the same `(seed, stream, index)`
//! gives the same value on every machine and in every process, and values can
//! be generated in parallel in any order (which a sequential RNG cannot).

use std::mem::MaybeUninit;

/// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit hash of `(seed, stream, index)`.
#[inline]
pub const fn hash3(seed: u64, stream: u64, index: u64) -> u64 {
    mix64(mix64(mix64(seed ^ 0x9e37_79b9_7f4a_7c15) ^ stream) ^ index)
}

/// A uniform `f32` in `[0, 1)` for `(seed, stream, index)` (24 random bits).
#[inline]
pub fn unit_f32(seed: u64, stream: u64, index: u64) -> f32 {
    (hash3(seed, stream, index) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A uniform `f32` in `[-bound, bound)`.
#[inline]
pub fn symmetric_f32(seed: u64, stream: u64, index: u64, bound: f32) -> f32 {
    (unit_f32(seed, stream, index) * 2.0 - 1.0) * bound
}

/// An 8-bit pixel value scaled to `[0, 1]` (`k / 255`), like a normalised
/// camera frame. Each 64-bit hash gives eight pixels: pixel `index` is
/// byte `index % 8` of `hash3(seed, stream, index / 8)`.
#[inline]
pub fn pixel_f32(seed: u64, stream: u64, index: u64) -> f32 {
    byte_f32(
        mix64(stream_key(seed, stream) ^ (index / 8)),
        (index % 8) as u32,
    )
}

#[inline(always)]
fn byte_f32(h: u64, byte: u32) -> f32 {
    ((h >> (8 * byte)) & 0xff) as u32 as f32 * (1.0 / 255.0)
}

/// The part of [`hash3`] that depends on `(seed, stream)` only: computed
/// once per frame.
#[inline]
pub const fn stream_key(seed: u64, stream: u64) -> u64 {
    mix64(mix64(seed ^ 0x9e37_79b9_7f4a_7c15) ^ stream)
}

/// Fills `out` with the pixels `first ..` of the frame whose
/// [`stream_key`] is `key` (the values of [`pixel_f32`]), one hash per
/// eight pixels, with the widest vectors the CPU has for the byte-to-float
/// conversion.
pub fn fill_pixels(key: u64, first: u64, out: &mut [f32]) {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and every value
    // written through it is a valid `f32`.
    let out = unsafe { &mut *(std::ptr::from_mut(out) as *mut [MaybeUninit<f32>]) };
    fill_pixels_uninit(key, first, out);
}

/// [`fill_pixels`] into memory that may be uninitialised (a new frame's
/// buffer, which then needs no zeroing first); every value is written.
pub fn fill_pixels_uninit(key: u64, first: u64, out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { fill_pixels_avx512(key, first, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            unsafe { fill_pixels_avx2(key, first, out) };
            return;
        }
    }
    fill_pixels_generic(key, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
fn fill_pixels_avx512(key: u64, first: u64, out: &mut [MaybeUninit<f32>]) {
    fill_pixels_generic(key, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fill_pixels_avx2(key: u64, first: u64, out: &mut [MaybeUninit<f32>]) {
    fill_pixels_generic(key, first, out);
}

#[inline(always)]
fn fill_pixels_generic(key: u64, first: u64, out: &mut [MaybeUninit<f32>]) {
    let mut i = 0usize;
    // Up to the next multiple of 8, then whole groups, then the rest.
    while i < out.len() && !(first + i as u64).is_multiple_of(8) {
        let idx = first + i as u64;
        out[i].write(byte_f32(mix64(key ^ (idx / 8)), (idx % 8) as u32));
        i += 1;
    }
    let group0 = (first + i as u64) / 8;
    let whole = (out.len() - i) / 8 * 8;
    let done = i + whole;
    // Blocks of 64 pixels: eight hashes, then 64 byte-to-float conversions
    // in one loop (both vectorise); then the remaining groups of eight.
    let mut blocks = out[i..done].chunks_exact_mut(64);
    let mut g = group0;
    for block in &mut blocks {
        let mut bytes = [0u8; 64];
        for (j, b8) in bytes.chunks_exact_mut(8).enumerate() {
            b8.copy_from_slice(&mix64(key ^ (g + j as u64)).to_le_bytes());
        }
        for (v, &b) in block.iter_mut().zip(&bytes) {
            v.write(f32::from(b) * (1.0 / 255.0));
        }
        g += 8;
    }
    for chunk in blocks.into_remainder().chunks_exact_mut(8) {
        let bytes = mix64(key ^ g).to_le_bytes();
        for (v, &b) in chunk.iter_mut().zip(&bytes) {
            v.write(f32::from(b) * (1.0 / 255.0));
        }
        g += 1;
    }
    for (j, v) in out[done..].iter_mut().enumerate() {
        let idx = first + (done + j) as u64;
        v.write(byte_f32(mix64(key ^ (idx / 8)), (idx % 8) as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_depend_on_every_coordinate_and_stay_in_range() {
        let a = unit_f32(1, 2, 3);
        assert_ne!(a, unit_f32(2, 2, 3));
        assert_ne!(a, unit_f32(1, 3, 3));
        assert_ne!(a, unit_f32(1, 2, 4));
        let mut sum = 0.0f64;
        for i in 0..10_000 {
            let v = unit_f32(7, 0, i);
            assert!((0.0..1.0).contains(&v));
            let p = pixel_f32(7, 0, i);
            assert!((0.0..=1.0).contains(&p));
            sum += f64::from(v);
        }
        let mean = sum / 10_000.0;
        let key = stream_key(7, 9);
        for (first, n) in [
            (77u64, 1000usize),
            (0, 64),
            (5, 2),
            (8, 13),
            (3, 200),
            (64, 130),
        ] {
            let mut filled = vec![0.0f32; n];
            fill_pixels(key, first, &mut filled);
            for (i, &v) in filled.iter().enumerate() {
                assert_eq!(v.to_bits(), pixel_f32(7, 9, first + i as u64).to_bits());
            }
        }
        for i in [0u64, 1, 12_345, u64::MAX] {
            let byte = (hash3(7, 9, i / 8) >> (8 * (i % 8))) & 0xff;
            assert_eq!(pixel_f32(7, 9, i), byte as f32 * (1.0 / 255.0));
        }
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
