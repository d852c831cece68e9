//! Stride-2 gathers: the even or odd values of a row, as the stride-2
//! convolution's phase rows and the stride-2 pools' windows need them.
//! A plain `dst[t] = src[2 * t]` loop does not vectorise; here AVX-512
//! picks 16 values from two loads with one permute, and NEON's
//! de-interleaving load splits 8 values into even and odd.

use super::simd::{Level, level};

/// `dst[t] = src[2 * t]` for every `t` of `dst`.
///
/// # Panics
/// When `src` is shorter than `2 * dst.len() - 1`.
pub(crate) fn stride2(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    assert!(
        n == 0 || src.len() > 2 * (n - 1),
        "stride2: {} values for {n} picks",
        src.len()
    );
    let done = match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F.
        Level::Avx512 => unsafe { stride2_avx512(dst, src) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 base ISA.
        Level::Neon => unsafe { stride2_neon(dst, src) },
        _ => 0,
    };
    for (d, x) in dst[done..]
        .iter_mut()
        .zip(src[2 * done..].iter().step_by(2))
    {
        *d = *x;
    }
}

/// The first vectors' worth of [`stride2`]; returns how many values of
/// `dst` it wrote (the rest is the caller's).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stride2_avx512(dst: &mut [f32], src: &[f32]) -> usize {
    use std::arch::x86_64::{
        _mm512_loadu_ps, _mm512_permutex2var_ps, _mm512_set_epi32, _mm512_storeu_ps,
    };
    let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let mut t = 0;
    // Two full vectors of `src` per 16 values of `dst`.
    while t + 16 <= dst.len() && 2 * t + 32 <= src.len() {
        // SAFETY: `src[2t .. 2t + 32]` and `dst[t .. t + 16]` are in
        // bounds by the loop condition.
        unsafe {
            let a = _mm512_loadu_ps(src.as_ptr().add(2 * t));
            let b = _mm512_loadu_ps(src.as_ptr().add(2 * t + 16));
            _mm512_storeu_ps(dst.as_mut_ptr().add(t), _mm512_permutex2var_ps(a, even, b));
        }
        t += 16;
    }
    t
}

/// As [`stride2_avx512`], with NEON's de-interleaving load.
///
/// # Safety
/// NEON (always present on aarch64).
#[cfg(target_arch = "aarch64")]
unsafe fn stride2_neon(dst: &mut [f32], src: &[f32]) -> usize {
    use std::arch::aarch64::{vld2q_f32, vst1q_f32};
    let mut t = 0;
    while t + 4 <= dst.len() && 2 * t + 8 <= src.len() {
        // SAFETY: `src[2t .. 2t + 8]` and `dst[t .. t + 4]` are in bounds
        // by the loop condition.
        unsafe {
            let v = vld2q_f32(src.as_ptr().add(2 * t));
            vst1q_f32(dst.as_mut_ptr().add(t), v.0);
        }
        t += 4;
    }
    t
}

/// The stride-2 max windows of a row: `out[j]` is the max of `v[2j + k]`
/// for taps `k = 0 .. kw` in tap order, each step `x > m ? x : m`
/// (`max2`, as every pool path). Returns how many leading values of
/// `out` it wrote, in whole vectors with AVX-512 or NEON and none at the
/// other levels; the caller computes the rest. AVX-512 writes all of
/// `out` when it holds at least 16 values (its last vector overlaps the
/// one before it).
pub(crate) fn stride2_max(out: &mut [f32], v: &[f32], kw: usize) -> usize {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F.
        Level::Avx512 => unsafe { stride2_max_avx512(out, v, kw) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 base ISA.
        Level::Neon => unsafe { stride2_max_neon(out, v, kw) },
        _ => 0,
    }
}

/// [`stride2_max`] with AVX-512: per 16 outputs and tap, the even values
/// of two loads at the tap's offset, picked by one permute.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stride2_max_avx512(out: &mut [f32], v: &[f32], kw: usize) -> usize {
    use std::arch::x86_64::{
        __m512, _mm512_loadu_ps, _mm512_mask_loadu_ps, _mm512_max_ps, _mm512_permutex2var_ps,
        _mm512_set_epi32, _mm512_setzero_ps, _mm512_storeu_ps,
    };
    let m = out.len();
    // Outputs `j .. j + 16` read `v[2j .. 2j + kw - 1 + 31]`.
    let fits = |j: usize| 2 * j + kw + 30 <= v.len();
    if kw == 0 || m < 16 || !fits(m - 16) {
        return 0;
    }
    let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    // The even values of `v[at .. at + 31]` (the 32nd is not read).
    // SAFETY: the callers keep `at + 31 <= v.len()`.
    let evens = |at: usize| -> __m512 {
        unsafe {
            let p = v.as_ptr().add(at);
            let hi = _mm512_mask_loadu_ps(_mm512_setzero_ps(), 0x7fff, p.add(16));
            _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, hi)
        }
    };
    let mut j = 0;
    loop {
        // The last block overlaps the one before it (same values).
        let at = j.min(m - 16);
        // SAFETY: `fits(m - 16)` and `at <= m - 16`, so every tap's read
        // `v[2at + k .. 2at + k + 31]` is inside `v`; the store ends at
        // `at + 16 <= m`.
        unsafe {
            let mut acc = evens(2 * at);
            for k in 1..kw {
                // `x > acc ? x : acc`: NaN and equal values keep `acc`.
                acc = _mm512_max_ps(evens(2 * at + k), acc);
            }
            _mm512_storeu_ps(out.as_mut_ptr().add(at), acc);
        }
        if at + 16 >= m {
            return m;
        }
        j = at + 16;
    }
}

/// [`stride2_max`] with NEON: per 4 outputs and tap, the even half of a
/// de-interleaving load at the tap's offset.
///
/// # Safety
/// NEON (always present on aarch64).
#[cfg(target_arch = "aarch64")]
unsafe fn stride2_max_neon(out: &mut [f32], v: &[f32], kw: usize) -> usize {
    use std::arch::aarch64::{vbslq_f32, vcgtq_f32, vld2q_f32, vst1q_f32};
    let mut j = 0;
    // Tap `k` of outputs `j .. j + 4` loads `v[2j + k .. 2j + k + 8]`.
    while kw > 0 && j + 4 <= out.len() && 2 * j + kw + 7 <= v.len() {
        // SAFETY: the loads end at `2j + kw - 1 + 8 <= v.len()` and the
        // store at `j + 4 <= out.len()`, by the loop condition.
        unsafe {
            let p = v.as_ptr().add(2 * j);
            let mut acc = vld2q_f32(p).0;
            for k in 1..kw {
                let x = vld2q_f32(p.add(k)).0;
                // `x > acc ? x : acc`: NaN and equal values keep `acc`.
                acc = vbslq_f32(vcgtq_f32(x, acc), x, acc);
            }
            vst1q_f32(out.as_mut_ptr().add(j), acc);
        }
        j += 4;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::simd::{levels, with_level};

    #[test]
    fn stride2_picks_every_other_value_at_every_level_and_length() {
        for l in levels() {
            for len in 0..80usize {
                for extra in 0..2usize {
                    let src: Vec<f32> = (0..(2 * len + extra))
                        .map(|i| i as f32 * 0.5 - 3.0)
                        .collect();
                    let want: Vec<f32> = src.iter().step_by(2).copied().take(len).collect();
                    let mut got = vec![f32::NAN; len.min(want.len())];
                    with_level(l, || stride2(&mut got, &src)).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(got, want[..got.len()], "{l:?} len {len} extra {extra}");
                }
            }
        }
    }

    #[test]
    fn stride2_max_is_the_scalar_windows_max_with_nan_and_signed_zeros() {
        let specials = [f32::NAN, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1.0];
        for l in levels() {
            for kw in 1..5usize {
                for m in 0..70usize {
                    let n = 2 * m + kw + 40;
                    let v: Vec<f32> = (0..n)
                        .map(|i| {
                            if i % 7 == 3 {
                                specials[i % specials.len()]
                            } else {
                                ((i * 37) % 23) as f32 - 11.0
                            }
                        })
                        .collect();
                    let want: Vec<f32> = (0..m)
                        .map(|j| (1..kw).fold(v[2 * j], |a, k| crate::cpu::max2(a, v[2 * j + k])))
                        .collect();
                    let mut got = want.clone();
                    got.iter_mut().for_each(|x| *x = 12345.0);
                    let done = with_level(l, || stride2_max(&mut got, &v, kw))
                        .unwrap_or_else(|e| panic!("{e}"));
                    for j in 0..done {
                        assert_eq!(
                            got[j].to_bits(),
                            want[j].to_bits(),
                            "{l:?} kw {kw} m {m} j {j}"
                        );
                    }
                    assert!(done <= m);
                }
            }
        }
    }
}
