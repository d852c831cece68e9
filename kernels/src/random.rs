//! Counter-based deterministic values: the same `(seed, stream, index)`
//! gives the same value on every machine and in every process, and values can
//! be generated in parallel in any order (which a sequential RNG cannot).

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
/// camera frame.
#[inline]
pub fn pixel_f32(seed: u64, stream: u64, index: u64) -> f32 {
    pixel_f32_keyed(stream_key(seed, stream), index)
}

/// The part of [`hash3`] that depends on `(seed, stream)` only: computed
/// once per frame, it leaves one mix per value.
#[inline]
pub const fn stream_key(seed: u64, stream: u64) -> u64 {
    mix64(mix64(seed ^ 0x9e37_79b9_7f4a_7c15) ^ stream)
}

/// [`pixel_f32`] from a precomputed [`stream_key`].
#[inline]
pub fn pixel_f32_keyed(key: u64, index: u64) -> f32 {
    (mix64(key ^ index) >> 56) as f32 * (1.0 / 255.0)
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
        for i in [0u64, 1, 12_345, u64::MAX] {
            assert_eq!(
                pixel_f32_keyed(key, i),
                (hash3(7, 9, i) >> 56) as f32 / 255.0
            );
        }
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
