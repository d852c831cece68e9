//! A minimal SIMD vector abstraction for the hot loops: one implementation
//! per instruction set, all with the same semantics per lane, so one generic
//! loop body serves every [`Level`](super::simd::Level).
//!
//! Every method is `unsafe`: the caller guarantees the CPU has the feature
//! (the loop runs inside a matching `#[target_feature]` function) and that
//! pointers are valid for `LANES` values.

/// A vector of `f32` lanes.
pub(crate) trait Vector: Copy {
    /// Lanes per vector.
    const LANES: usize;
    /// All lanes set to `x`.
    unsafe fn splat(x: f32) -> Self;
    /// Unaligned load of `LANES` values.
    unsafe fn load(p: *const f32) -> Self;
    /// Unaligned store of `LANES` values.
    unsafe fn store(self, p: *mut f32);
    /// `w * x + acc`, rounded once where the level has FMA.
    unsafe fn mul_add(w: Self, x: Self, acc: Self) -> Self;
    /// `x > t ? x : t` per lane (a NaN `x` gives `t`): ReLU and a clip's
    /// lower bound, exactly as [`crate::op::Pointwise::apply`].
    unsafe fn keep_gt(x: Self, t: Self) -> Self;
    /// `x < t ? x : t` per lane: a clip's upper bound.
    unsafe fn keep_lt(x: Self, t: Self) -> Self;
    /// `a + b` per lane.
    unsafe fn add(a: Self, b: Self) -> Self;
    /// `a - b` per lane.
    unsafe fn sub(a: Self, b: Self) -> Self;
    /// The lanes of `a` and `b` interleaved, `a0 b0 a1 b1 ...`, as two
    /// vectors: the first half and the second.
    unsafe fn zip(a: Self, b: Self) -> (Self, Self);
}

/// Portable lanes: separate multiply and add, like a CPU without FMA.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 8]);

impl Vector for Portable {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees `p` is valid for 8 reads.
        Portable(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees `p` is valid for 8 writes.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(self.0) }
    }
    #[inline(always)]
    unsafe fn mul_add(w: Self, x: Self, acc: Self) -> Self {
        Portable(std::array::from_fn(|i| w.0[i] * x.0[i] + acc.0[i]))
    }
    #[inline(always)]
    unsafe fn keep_gt(x: Self, t: Self) -> Self {
        Portable(std::array::from_fn(|i| {
            if x.0[i] > t.0[i] { x.0[i] } else { t.0[i] }
        }))
    }
    #[inline(always)]
    unsafe fn keep_lt(x: Self, t: Self) -> Self {
        Portable(std::array::from_fn(|i| {
            if x.0[i] < t.0[i] { x.0[i] } else { t.0[i] }
        }))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i] + b.0[i]))
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i] - b.0[i]))
    }
    #[inline(always)]
    unsafe fn zip(a: Self, b: Self) -> (Self, Self) {
        let pick = |i: usize| {
            if i.is_multiple_of(2) {
                a.0[i / 2]
            } else {
                b.0[i / 2]
            }
        };
        (
            Portable(std::array::from_fn(pick)),
            Portable(std::array::from_fn(|i| pick(i + 8))),
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Vector;

    /// 16 lanes of AVX-512.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl Vector for Avx512 {
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller runs this with AVX-512F enabled.
            Avx512(unsafe { _mm512_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: AVX-512F enabled and `p` valid for 16 reads (caller).
            Avx512(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: AVX-512F enabled and `p` valid for 16 writes (caller).
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(w: Self, x: Self, acc: Self) -> Self {
            // SAFETY: the caller runs this with AVX-512F enabled.
            Avx512(unsafe { _mm512_fmadd_ps(w.0, x.0, acc.0) })
        }
        // vmaxps/vminps return the second operand when either is NaN or
        // both are zero: exactly `x > t ? x : t` and `x < t ? x : t`.
        #[inline(always)]
        unsafe fn keep_gt(x: Self, t: Self) -> Self {
            Avx512(unsafe { _mm512_max_ps(x.0, t.0) })
        }
        #[inline(always)]
        unsafe fn keep_lt(x: Self, t: Self) -> Self {
            Avx512(unsafe { _mm512_min_ps(x.0, t.0) })
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller runs this with the level's features enabled.
            Avx512(unsafe { _mm512_add_ps(a.0, b.0) })
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            // SAFETY: the caller runs this with the level's features enabled.
            Avx512(unsafe { _mm512_sub_ps(a.0, b.0) })
        }
        #[inline(always)]
        unsafe fn zip(a: Self, b: Self) -> (Self, Self) {
            // SAFETY: the caller runs this with the level's features enabled.
            // Index bit 4 picks `b`: 0, 16, 1, 17, ... and 8, 24, 9, 25, ...
            unsafe {
                let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
                let hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
                (
                    Avx512(_mm512_permutex2var_ps(a.0, lo, b.0)),
                    Avx512(_mm512_permutex2var_ps(a.0, hi, b.0)),
                )
            }
        }
    }

    /// 8 lanes of AVX2 with FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    impl Vector for Avx2 {
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller runs this with AVX enabled.
            Avx2(unsafe { _mm256_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: AVX enabled and `p` valid for 8 reads (caller).
            Avx2(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: AVX enabled and `p` valid for 8 writes (caller).
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(w: Self, x: Self, acc: Self) -> Self {
            // SAFETY: the caller runs this with FMA enabled.
            Avx2(unsafe { _mm256_fmadd_ps(w.0, x.0, acc.0) })
        }
        #[inline(always)]
        unsafe fn keep_gt(x: Self, t: Self) -> Self {
            Avx2(unsafe { _mm256_max_ps(x.0, t.0) })
        }
        #[inline(always)]
        unsafe fn keep_lt(x: Self, t: Self) -> Self {
            Avx2(unsafe { _mm256_min_ps(x.0, t.0) })
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller runs this with the level's features enabled.
            Avx2(unsafe { _mm256_add_ps(a.0, b.0) })
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            // SAFETY: the caller runs this with the level's features enabled.
            Avx2(unsafe { _mm256_sub_ps(a.0, b.0) })
        }
        #[inline(always)]
        unsafe fn zip(a: Self, b: Self) -> (Self, Self) {
            // SAFETY: the caller runs this with the level's features enabled.
            // Within 128-bit halves, then the halves in order.
            unsafe {
                let lo = _mm256_unpacklo_ps(a.0, b.0);
                let hi = _mm256_unpackhi_ps(a.0, b.0);
                (
                    Avx2(_mm256_permute2f128_ps(lo, hi, 0x20)),
                    Avx2(_mm256_permute2f128_ps(lo, hi, 0x31)),
                )
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::Vector;

    /// 4 lanes of NEON (base aarch64 ISA, with FMA).
    #[derive(Clone, Copy)]
    pub(crate) struct Neon(float32x4_t);

    impl Vector for Neon {
        const LANES: usize = 4;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: NEON is part of the aarch64 base ISA.
            Neon(unsafe { vdupq_n_f32(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: `p` valid for 4 reads (caller).
            Neon(unsafe { vld1q_f32(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: `p` valid for 4 writes (caller).
            unsafe { vst1q_f32(p, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(w: Self, x: Self, acc: Self) -> Self {
            // SAFETY: NEON is part of the aarch64 base ISA; vfmaq is acc + w * x, one rounding.
            Neon(unsafe { vfmaq_f32(acc.0, w.0, x.0) })
        }
        // NEON's vmax/vmin propagate NaN: compare and select instead.
        #[inline(always)]
        unsafe fn keep_gt(x: Self, t: Self) -> Self {
            Neon(unsafe { vbslq_f32(vcgtq_f32(x.0, t.0), x.0, t.0) })
        }
        #[inline(always)]
        unsafe fn keep_lt(x: Self, t: Self) -> Self {
            Neon(unsafe { vbslq_f32(vcltq_f32(x.0, t.0), x.0, t.0) })
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: NEON is part of the aarch64 base ISA.
            Neon(unsafe { vaddq_f32(a.0, b.0) })
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            // SAFETY: NEON is part of the aarch64 base ISA.
            Neon(unsafe { vsubq_f32(a.0, b.0) })
        }
        #[inline(always)]
        unsafe fn zip(a: Self, b: Self) -> (Self, Self) {
            // SAFETY: NEON is part of the aarch64 base ISA.
            unsafe { (Neon(vzip1q_f32(a.0, b.0)), Neon(vzip2q_f32(a.0, b.0))) }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

/// Lanes per vector of the type the kernels use at `level`.
pub(crate) fn lanes(level: super::simd::Level) -> usize {
    use super::simd::Level;
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => Avx512::LANES,
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => Avx2::LANES,
        #[cfg(target_arch = "aarch64")]
        Level::Neon => Neon::LANES,
        _ => Portable::LANES,
    }
}

/// Stores `vs` interleaved from `p`: value `l` of vector `k` at `p[l * N +
/// k]` (the pixels of a row of Winograd tiles, one vector per pixel, back
/// in column order): by zips for `N` of 2 and 4, value by value
/// otherwise.
///
/// # Safety
/// The CPU must support `V`; `p` is valid for `N * LANES` writes.
#[inline(always)]
pub(crate) unsafe fn store_zip<V: Vector, const N: usize>(vs: [V; N], p: *mut f32) {
    let l = V::LANES;
    // SAFETY (all accesses): forwarded from the caller.
    unsafe {
        match N {
            2 => {
                let (a, b) = V::zip(vs[0], vs[1]);
                a.store(p);
                b.store(p.add(l));
            }
            4 => {
                // (a c)(b d) zipped gives a b c d per lane.
                let (ac0, ac1) = V::zip(vs[0], vs[2]);
                let (bd0, bd1) = V::zip(vs[1], vs[3]);
                for (k, (x, y)) in [(ac0, bd0), (ac1, bd1)].into_iter().enumerate() {
                    let (lo, hi) = V::zip(x, y);
                    lo.store(p.add(2 * k * l));
                    hi.store(p.add((2 * k + 1) * l));
                }
            }
            _ => {
                let mut buf = [0.0f32; 16];
                for (k, v) in vs.iter().enumerate() {
                    v.store(buf.as_mut_ptr());
                    for (i, &x) in buf[..l].iter().enumerate() {
                        *p.add(i * N + k) = x;
                    }
                }
            }
        }
    }
}

/// `acc` through ReLU/clip `bounds`: `(lower, upper)` as
/// `x > lower ? x : lower`, then, unless `upper` is NaN (a ReLU),
/// `x < upper ? x : upper`: the pointwise ops' own expressions.
///
/// # Safety
/// The CPU must support `V`.
#[inline(always)]
pub(crate) unsafe fn apply_bounds<V: Vector>(mut acc: V, bounds: &[(f32, f32)]) -> V {
    for &(lo, hi) in bounds {
        // SAFETY: forwarded from the caller.
        unsafe {
            acc = V::keep_gt(acc, V::splat(lo));
            if !hi.is_nan() {
                acc = V::keep_lt(acc, V::splat(hi));
            }
        }
    }
    acc
}
