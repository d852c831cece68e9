//! Run-time choice of the instruction set for the hot loops.
//!
//! [`level`] is the level the kernels dispatch to: the best one the CPU
//! supports, capped by the `STREAMFUSE_CPU_LEVEL` environment variable, or a
//! lower one inside [`with_level`], which runs code at any level of
//! [`levels`] without restarting the process (tests check every dispatch
//! path in one run this way).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::KernelError;

/// The instruction-set level the CPU kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// The level the CPU kernels dispatch to on this thread: the one
/// [`with_level`] set, when running inside it, else [`best`].
#[inline]
pub fn level() -> Level {
    OVERRIDE.with(Cell::get).unwrap_or_else(best)
}

/// The best level this CPU supports, detected once. Setting the environment
/// variable `STREAMFUSE_CPU_LEVEL` to `portable`, `avx2` or `avx512` caps it
/// (to test the other paths on one machine); a level the CPU lacks is ignored.
pub fn best() -> Level {
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

/// Every level this process can run, best first: [`best`] and each lower
/// level of its architecture (AVX-512, AVX2, portable on x86-64; NEON,
/// portable on aarch64). `STREAMFUSE_CPU_LEVEL` caps it as it caps [`best`].
/// Only levels the CPU supports: the kernels' dispatch relies on it.
pub fn levels() -> Vec<Level> {
    let chain: &[Level] = match best() {
        Level::Avx512 => &[Level::Avx512, Level::Avx2Fma, Level::Portable],
        Level::Avx2Fma => &[Level::Avx2Fma, Level::Portable],
        Level::Neon => &[Level::Neon, Level::Portable],
        Level::Portable => &[Level::Portable],
    };
    chain.to_vec()
}

thread_local! {
    /// The level [`with_level`] set for this thread (its pools' threads).
    static OVERRIDE: Cell<Option<Level>> = const { Cell::new(None) };
}

/// Runs `f` with the CPU kernels dispatching at `level` instead of
/// [`best`], and returns its result: every kernel `f` runs, on the calling
/// thread's behalf or on the kernel threads, uses `level`'s code paths.
///
/// `f` runs on a rayon thread pool kept for `level` (as many threads as the
/// current pool, created on first use and kept for the life of the
/// process) whose threads all dispatch at `level`; nothing outside `f` is
/// affected, so other threads keep running at their own level meanwhile.
///
/// # Errors
/// [`KernelError::BadParam`] when `level` is not one of [`levels`] (the CPU
/// lacks it, or `STREAMFUSE_CPU_LEVEL` caps it away), or its thread pool
/// cannot be started.
pub fn with_level<R, F>(level: Level, f: F) -> Result<R, KernelError>
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    let bad = |what: String| KernelError::BadParam {
        op: "cpu level",
        what,
    };
    if !levels().contains(&level) {
        return Err(bad(format!(
            "{} is not available here (best {}; STREAMFUSE_CPU_LEVEL caps it)",
            level.name(),
            best().name()
        )));
    }
    static POOLS: OnceLock<Mutex<HashMap<Level, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pool = {
        let mut pools = POOLS
            .get_or_init(Mutex::default)
            .lock()
            .map_err(|_| bad("the level pools' lock is poisoned".into()))?;
        match pools.get(&level) {
            Some(p) => p.clone(),
            None => {
                let p = rayon::ThreadPoolBuilder::new()
                    .num_threads(rayon::current_num_threads().max(1))
                    .thread_name(move |i| format!("sf-{}-{i}", level.name()))
                    .start_handler(move |_| OVERRIDE.with(|o| o.set(Some(level))))
                    .build()
                    .map_err(|e| bad(format!("starting a pool for {}: {e}", level.name())))?;
                let p = Arc::new(p);
                pools.insert(level, p.clone());
                p
            }
        }
    };
    Ok(pool.install(f))
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

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    use super::*;

    #[test]
    fn with_level_reaches_every_kernel_thread_and_nothing_else() {
        let outside = level();
        for l in levels() {
            let seen = with_level(l, || {
                let mut seen: Vec<Level> = (0..64).into_par_iter().map(|_| level()).collect();
                seen.push(level());
                seen
            })
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(seen.iter().all(|&s| s == l), "{l:?}: {seen:?}");
            assert_eq!(level(), outside, "the caller's level changed");
        }
        assert_eq!(levels().first(), Some(&best()));
        assert_eq!(levels().last(), Some(&Level::Portable));
    }

    #[test]
    fn a_level_this_process_cannot_run_is_refused() {
        let foreign = if cfg!(target_arch = "aarch64") {
            Level::Avx512
        } else {
            Level::Neon
        };
        let err = with_level(foreign, || ()).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("is not available here")),
            "{err:?}"
        );
    }
}
