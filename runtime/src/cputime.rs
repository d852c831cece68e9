//! CPU time this process has used, all threads together: what a segment
//! process costs its node, beside the wall time its stages take.

use std::time::Duration;

/// CPU time used so far by every thread of this process; `None` where the
/// platform does not tell.
pub fn process_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the call writes only it.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        if rc != 0 {
            return None;
        }
        let secs = u64::try_from(ts.tv_sec).ok()?;
        let nanos = u32::try_from(ts.tv_nsec).ok()?;
        Some(Duration::new(secs, nanos))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_advances_the_clock() {
        let Some(t0) = process_cpu() else { return };
        let wall = std::time::Instant::now();
        let mut x = 0u64;
        let mut used = Duration::ZERO;
        while used < Duration::from_millis(20) && wall.elapsed() < Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            used = process_cpu().map_or(Duration::ZERO, |t| t.saturating_sub(t0));
        }
        assert!(
            used >= Duration::from_millis(20),
            "CPU time after 10 s busy: {used:?}"
        );
    }
}
