//! Stride-2 gathers: a row's even and odd values, as the stride-2
//! convolution's phase rows and the stride-2 pools' windows need them.
//! A plain `dst[t] = src[2 * t]` loop does not vectorise; here AVX-512
//! splits 32 values from two loads with two two-source permutes, AVX2 16
//! with two shuffles and lane permutes, NEON's de-interleaving load 8, and
//! the stride-2 max windows pick theirs with AVX-512's permute, AVX2's
//! shuffles or NEON's load.

use super::simd::{Level, level};

/// `even[t] = src[2 * t]` and `odd[t] = src[2 * t + 1]` for every `t` of
/// each: a row split into its even and odd columns in one pass, each
/// load feeding both (a stride-2 convolution's phase rows).
///
/// At level `lvl` (a level this CPU supports), inlined into callers
/// that split many rows and look the level up once.
///
/// # Panics
/// When `even` is longer than `src.len().div_ceil(2)` or `odd` longer
/// than `src.len() / 2`.
#[inline(always)]
pub(crate) fn split2_at(lvl: Level, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(
        even.len() <= src.len().div_ceil(2) && odd.len() <= src.len() / 2,
        "split2: {} values for {} even and {} odd picks",
        src.len(),
        even.len(),
        odd.len()
    );
    let done = match lvl {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            // SAFETY: `Level::Avx512` is only chosen when the CPU has
            // AVX-512F.
            unsafe { split2_avx512(src, even, odd) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => {
            // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has AVX2.
            unsafe { split2_avx2(src, even, odd) };
            return;
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of the aarch64 base ISA.
        Level::Neon => unsafe { split2_neon(src, even, odd) },
        _ => 0,
    };
    for (t, e) in even.iter_mut().enumerate().skip(done) {
        *e = src[2 * t];
    }
    for (t, o) in odd.iter_mut().enumerate().skip(done) {
        *o = src[2 * t + 1];
    }
}

/// Writes one input row `src` into the two phase rows of its padded form
/// (`padding` zeros before it) for a column stride of 2: `phases[r]`
/// holds padded column `2t + r` at `t` (both rows as long as the shorter).
/// Only the input's values are written (the even columns into one phase,
/// the odd into the other, by [`split2_at`]); returns, per phase, the range
/// of `t` written. At level `lvl` (a level this CPU supports), inlined into
/// callers that split many rows and look the level up once.
#[inline(always)]
pub(crate) fn split_phases_at(
    lvl: Level,
    phases: [&mut [f32]; 2],
    src: &[f32],
    padding: usize,
) -> [std::ops::Range<usize>; 2] {
    let (even, odd, ranges) = phase_picks(phases, src.len(), padding);
    split2_at(lvl, src, even, odd);
    ranges
}

/// Where a row of `n` input values lands in its two phase rows after
/// `padding` zeros (both rows as long as the shorter): the slices its even
/// and its odd values go to (in phase `padding % 2` and the other phase;
/// at most `n.div_ceil(2)` and `n / 2` values), and per phase the range
/// written.
#[inline(always)]
fn phase_picks(
    phases: [&mut [f32]; 2],
    n: usize,
    padding: usize,
) -> (&mut [f32], &mut [f32], [std::ops::Range<usize>; 2]) {
    let [p0, p1] = phases;
    let pl = p0.len().min(p1.len());
    // Input column `2s` is padded column `2s + padding`: phase
    // `padding % 2`, value `s + padding / 2`; column `2s + 1` the other
    // phase, value `s + (padding + 1) / 2`.
    let (oe, oo) = ((padding / 2).min(pl), (padding.div_ceil(2)).min(pl));
    let re = oe..oe + n.div_ceil(2).min(pl - oe);
    let ro = oo..oo + (n / 2).min(pl - oo);
    if padding.is_multiple_of(2) {
        let ranges = [re.clone(), ro.clone()];
        (&mut p0[re], &mut p1[ro], ranges)
    } else {
        let ranges = [ro.clone(), re.clone()];
        (&mut p1[re], &mut p0[ro], ranges)
    }
}

/// [`split_phases_at`] for every row of a block: `src` holds whole input
/// rows of `w` values, `dst` as many padded rows of `pw` values (each the
/// two phase rows of `pw / 2`); only the input's values are written. The
/// level is dispatched once for the block, not once per row.
pub(crate) fn split_rows_at(
    lvl: Level,
    src: &[f32],
    w: usize,
    dst: &mut [f32],
    pw: usize,
    padding: usize,
) {
    if w == 0 || pw == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if lvl == Level::Avx512 {
        // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F.
        unsafe { split_rows_avx512(src, w, dst, pw, padding) };
        return;
    }
    for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(pw)) {
        let (p0, p1) = d.split_at_mut(pw / 2);
        split_phases_at(lvl, [p0, p1], s, padding);
    }
}

/// [`split_rows_at`] with AVX-512 ([`split2_avx512`] inlined per row).
///
/// # Safety
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn split_rows_avx512(src: &[f32], w: usize, dst: &mut [f32], pw: usize, padding: usize) {
    for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(pw)) {
        let (p0, p1) = d.split_at_mut(pw / 2);
        let (even, odd, _) = phase_picks([p0, p1], s.len(), padding);
        // SAFETY: AVX-512F is enabled here; `phase_picks` keeps the even
        // picks within `s.len().div_ceil(2)` and the odd within `s.len() / 2`.
        unsafe { split2_avx512(s, even, odd) };
    }
}

/// [`split_phases_at`], with every value of the two phase rows outside
/// the input's written as zero (the padding).
#[inline(always)]
pub(crate) fn fill_phase_rows(lvl: Level, phases: [&mut [f32]; 2], src: &[f32], padding: usize) {
    let [p0, p1] = phases;
    let ranges = split_phases_at(lvl, [&mut *p0, &mut *p1], src, padding);
    for (phase, r) in [p0, p1].into_iter().zip(ranges) {
        phase[..r.start].fill(0.0);
        phase[r.end..].fill(0.0);
    }
}

/// The first vectors' worth of [`split2_at`] with NEON's de-interleaving
/// load: 4 even and 4 odd values per load while both outputs take 4 more;
/// returns how many values of each it wrote (the rest is the caller's).
///
/// # Safety
/// NEON (always present on aarch64).
#[cfg(target_arch = "aarch64")]
unsafe fn split2_neon(src: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::aarch64::{vld2q_f32, vst1q_f32};
    let mut t = 0;
    while t + 4 <= even.len() && t + 4 <= odd.len() && 2 * t + 8 <= src.len() {
        // SAFETY: `src[2t .. 2t + 8]`, `even[t .. t + 4]` and
        // `odd[t .. t + 4]` are in bounds by the loop condition.
        unsafe {
            let v = vld2q_f32(src.as_ptr().add(2 * t));
            vst1q_f32(even.as_mut_ptr().add(t), v.0);
            vst1q_f32(odd.as_mut_ptr().add(t), v.1);
        }
        t += 4;
    }
    t
}

/// [`split2_at`] with AVX2: 8 even and 8 odd values per two loads; the
/// tail from masked loads, so a short row costs one more vector step.
///
/// # Safety
/// The CPU must support AVX2; the lengths as [`split2_at`] checks them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn split2_avx2(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, _mm256_castpd_ps, _mm256_castps_pd, _mm256_cmpgt_epi32, _mm256_loadu_ps,
        _mm256_maskload_ps, _mm256_permute4x64_pd, _mm256_set1_epi32, _mm256_setr_epi32,
        _mm256_shuffle_ps, _mm256_storeu_ps,
    };
    /// The even and odd values of `a` then `b`: `[a0 a2 b0 b2 | a4 a6
    /// b4 b6]` and `[a1 a3 b1 b3 | a5 a7 b5 b7]`, then the 64-bit lanes in
    /// order.
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    unsafe fn split(a: __m256, b: __m256) -> (__m256, __m256) {
        // SAFETY: the caller's contract.
        unsafe {
            let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
            (
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e))),
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o))),
            )
        }
    }
    let (ne, no) = (even.len(), odd.len());
    let mut t = 0;
    while t + 8 <= ne && t + 8 <= no && 2 * t + 16 <= src.len() {
        // SAFETY: `src[2t .. 2t + 16]`, `even[t .. t + 8]` and
        // `odd[t .. t + 8]` are in bounds by the loop condition.
        unsafe {
            let p = src.as_ptr().add(2 * t);
            let (e, o) = split(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            _mm256_storeu_ps(even.as_mut_ptr().add(t), e);
            _mm256_storeu_ps(odd.as_mut_ptr().add(t), o);
        }
        t += 8;
    }
    // The rest, under 8 of one of the two: masked loads of the source
    // values left.
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Lanes `i < n` set.
    let first = |n: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lanes);
    while t < ne.max(no) {
        let left = src.len() - 2 * t;
        // SAFETY: the masks keep the loads inside `src[2t ..]`.
        unsafe {
            let p = src.as_ptr().add(2 * t);
            let a = _mm256_maskload_ps(p, first(left));
            let b = _mm256_maskload_ps(p.add(8), first(left.saturating_sub(8)));
            let (e, o) = split(a, b);
            // Masked stores are microcoded on AMD's cores: stored whole
            // on the stack, then copied value by value.
            let mut v = [[0.0f32; 8]; 2];
            _mm256_storeu_ps(v[0].as_mut_ptr(), e);
            _mm256_storeu_ps(v[1].as_mut_ptr(), o);
            for (d, x) in even.iter_mut().skip(t).zip(v[0]) {
                *d = x;
            }
            for (d, x) in odd.iter_mut().skip(t).zip(v[1]) {
                *d = x;
            }
        }
        t += 8;
    }
}

/// [`split2_at`] with AVX-512: per 16 values of each output, two loads
/// (masked past the source's end) and one two-source permute for each; the
/// last step's stores are masked to the outputs' ends (AVX-512's masked
/// stores are not microcoded, unlike AVX2's `vmaskmovps`).
///
/// # Safety
/// AVX-512F; `even.len() <= src.len().div_ceil(2)` and
/// `odd.len() <= src.len() / 2` (checked by `split2_at`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn split2_avx512(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    use std::arch::x86_64::{
        _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_permutex2var_ps, _mm512_setr_epi32,
    };
    /// Lanes `i < n` (n <= 16).
    fn first(n: usize) -> u16 {
        if n >= 16 { u16::MAX } else { (1u16 << n) - 1 }
    }
    let pick_even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let pick_odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (ne, no) = (even.len(), odd.len());
    let mut t = 0;
    while t < ne.max(no) {
        // `2t < src.len()`: `t < ne <= src.len().div_ceil(2)`, or
        // `t < no <= src.len() / 2`.
        let left = src.len() - 2 * t;
        // SAFETY: the masks keep the loads inside `src[2t ..]` and the
        // stores inside `even[t ..]` and `odd[t ..]` (masked-off lanes are
        // neither read nor written, and do not fault); the pointers past
        // the slices are formed with wrapping arithmetic and only used
        // under masks that exclude them.
        unsafe {
            let p = src.as_ptr().add(2 * t);
            let a = _mm512_maskz_loadu_ps(first(left), p);
            let b = _mm512_maskz_loadu_ps(first(left.saturating_sub(16)), p.wrapping_add(16));
            let e = _mm512_permutex2var_ps(a, pick_even, b);
            let o = _mm512_permutex2var_ps(a, pick_odd, b);
            _mm512_mask_storeu_ps(
                even.as_mut_ptr().wrapping_add(t),
                first(ne.saturating_sub(t)),
                e,
            );
            _mm512_mask_storeu_ps(
                odd.as_mut_ptr().wrapping_add(t),
                first(no.saturating_sub(t)),
                o,
            );
        }
        t += 16;
    }
}

/// The stride-2 max windows of a row: `out[j]` is the max of `v[2j + k]`
/// for taps `k = 0 .. kw` in tap order, each step `x > m ? x : m`
/// (`max2`, as every pool path). Returns how many leading values of
/// `out` it wrote, in whole vectors with AVX-512, AVX2 or NEON and none
/// at the portable level; the caller computes the rest. AVX-512 writes all of
/// `out` when it holds at least 16 values (its last vector overlaps the
/// one before it).
pub(crate) fn stride2_max(out: &mut [f32], v: &[f32], kw: usize) -> usize {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx512` is only chosen when the CPU has AVX-512F.
        Level::Avx512 => unsafe { stride2_max_avx512(out, v, kw) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has AVX2.
        Level::Avx2Fma => unsafe { stride2_max_avx2(out, v, kw) },
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

/// [`stride2_max`] with AVX2: per 8 outputs, each pair of taps `k, k + 1`
/// (`k` even) from one pair of loads at `2j + k`, tap `k` their even
/// values and tap `k + 1` their odd values, picked by in-lane shuffles
/// (`[a0 a2 b0 b2 | a4 a6 b4 b6]`, `[a1 a3 b1 b3 | ..]`). Every tap's
/// values come out in that same lane order, so the maxima are taken in it
/// and put in order by one lane permute at the end.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stride2_max_avx2(out: &mut [f32], v: &[f32], kw: usize) -> usize {
    use std::arch::x86_64::{
        _mm256_castpd_ps, _mm256_castps_pd, _mm256_loadu_ps, _mm256_max_ps, _mm256_permute4x64_pd,
        _mm256_shuffle_ps, _mm256_storeu_ps,
    };
    let mut j = 0;
    // Taps `k, k + 1` of outputs `j .. j + 8` load `v[2j + k .. 2j + k + 16]`
    // (`k` even, at most `kw - 1`).
    while kw > 0 && j + 8 <= out.len() && 2 * j + kw + 15 <= v.len() {
        // SAFETY: the loads end at `2j + k + 16 <= 2j + kw - 1 + 16 <=
        // v.len()` and the store at `j + 8 <= out.len()`, by the loop
        // condition.
        unsafe {
            let p = v.as_ptr().add(2 * j);
            let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            let mut acc = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let mut k = 0;
            while k < kw {
                if k > 0 {
                    let (a, b) = (_mm256_loadu_ps(p.add(k)), _mm256_loadu_ps(p.add(k + 8)));
                    // `x > acc ? x : acc`: NaN and equal values keep `acc`.
                    acc = _mm256_max_ps(_mm256_shuffle_ps::<0b10_00_10_00>(a, b), acc);
                    if k + 1 < kw {
                        acc = _mm256_max_ps(_mm256_shuffle_ps::<0b11_01_11_01>(a, b), acc);
                    }
                } else if kw > 1 {
                    acc = _mm256_max_ps(_mm256_shuffle_ps::<0b11_01_11_01>(a, b), acc);
                }
                k += 2;
            }
            let acc = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(acc));
            _mm256_storeu_ps(out.as_mut_ptr().add(j), _mm256_castpd_ps(acc));
        }
        j += 8;
    }
    j
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
    fn split2_splits_even_and_odd_values_at_every_level_and_length() {
        for l in levels() {
            for len in 0..70usize {
                let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.25 - 5.0).collect();
                let want_e: Vec<f32> = src.iter().step_by(2).copied().collect();
                let want_o: Vec<f32> = src.iter().skip(1).step_by(2).copied().collect();
                for (ne, no) in [
                    (want_e.len(), want_o.len()),
                    (want_e.len() / 2, want_o.len()),
                ] {
                    let (mut e, mut o) = (vec![f32::NAN; ne], vec![f32::NAN; no]);
                    with_level(l, || split2_at(level(), &src, &mut e, &mut o))
                        .unwrap_or_else(|err| panic!("{err}"));
                    assert_eq!(e, want_e[..ne], "{l:?} len {len} even");
                    assert_eq!(o, want_o[..no], "{l:?} len {len} odd");
                }
            }
        }
    }

    #[test]
    fn split_phases_is_the_padded_rows_even_and_odd_columns() {
        for l in levels() {
            for w in 0..40usize {
                for padding in 0..4usize {
                    for pl in [0, 1, w / 2, w / 2 + 2, w + 4] {
                        let src: Vec<f32> = (0..w).map(|i| i as f32 + 1.0).collect();
                        let mut padded = vec![0.0f32; padding];
                        padded.extend_from_slice(&src);
                        let mut got = vec![0.0f32; 2 * pl];
                        let ranges = with_level(l, || {
                            let (a, b) = got.split_at_mut(pl);
                            split_phases_at(level(), [a, b], &src, padding)
                        })
                        .unwrap_or_else(|e| panic!("{e}"));
                        for r in 0..2 {
                            for t in 0..pl {
                                let want = padded.get(2 * t + r).copied().unwrap_or(0.0);
                                let at =
                                    format!("{l:?} w {w} pad {padding} pl {pl} phase {r} t {t}");
                                assert_eq!(got[r * pl + t], want, "{at}");
                                assert_eq!(ranges[r].contains(&t), want != 0.0, "{at}");
                            }
                        }
                    }
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
