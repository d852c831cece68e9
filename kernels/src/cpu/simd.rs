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
