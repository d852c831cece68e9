//! Run-time choice of the instruction set for the hot loops.

use std::sync::OnceLock;

/// The instruction-set level the CPU kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// x86-64 with AVX-512F and FMA.
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2Fma,
    /// aarch64 (NEON and FMA are part of the base ISA).
    Neon,
    /// Anything else: portable code, separate multiply and add.
    Portable,
}

impl Level {
    /// Name for reports (`cpu_features` in the run summary).
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512f+fma",
            Level::Avx2Fma => "avx2+fma",
            Level::Neon => "neon",
            Level::Portable => "portable",
        }
    }

    /// Whether multiply-adds are fused (one rounding) at this level.
    pub fn fma(self) -> bool {
        !matches!(self, Level::Portable)
    }
}

/// The best level this CPU supports, detected once. Setting the environment
/// variable `STREAMFUSE_CPU_LEVEL` to `portable`, `avx2` or `avx512` caps it
/// (to test the other paths on one machine); a level the CPU lacks is ignored.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = detect();
        match std::env::var("STREAMFUSE_CPU_LEVEL").as_deref() {
            Ok("portable") => Level::Portable,
            Ok("avx2") if matches!(best, Level::Avx512 | Level::Avx2Fma) => Level::Avx2Fma,
            _ => best,
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        Level::Avx512
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        Level::Avx2Fma
    } else {
        Level::Portable
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> Level {
    Level::Neon
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> Level {
    Level::Portable
}

/// Defines a row loop (plain Rust that the compiler vectorises) compiled
/// once per [`Level`] and picked at run time: the body is an
/// `#[inline(always)]` function inlined into one `#[target_feature]`
/// wrapper per x86 level, so it uses 512- or 256-bit vectors instead of the
/// x86-64 baseline's 128-bit ones. Every lane computes the same scalar
/// expression (no contraction into FMA: Rust never contracts), so the
/// values do not depend on the level.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,fma")]
            fn avx512($($arg: $ty),*) {
                imp($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                imp($($arg),*)
            }
            match $crate::cpu::simd::level() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Level::Avx512` is only chosen when the CPU has
                // AVX-512F and FMA.
                $crate::cpu::simd::Level::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Level::Avx2Fma` is only chosen when the CPU has
                // AVX2 and FMA.
                $crate::cpu::simd::Level::Avx2Fma => unsafe { avx2($($arg),*) },
                _ => imp($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
