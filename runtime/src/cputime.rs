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

/// The machine's CPU time so far, all CPUs together, from `/proc/stat`:
/// the total and the part a hypervisor gave to other guests ("steal").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTimes {
    /// Every state's time together (user, system, idle, steal, ...), in
    /// the kernel's clock ticks.
    pub total: u64,
    /// Time stolen by the hypervisor, in clock ticks.
    pub steal: u64,
    /// Idle or waiting for I/O, in clock ticks.
    pub idle: u64,
}

impl MachineTimes {
    /// Reads them now; `None` where the platform has no `/proc/stat`.
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Parses the aggregate `cpu` line of a `/proc/stat` text.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice];
        // guest time is already counted in user and nice.
        let counted = fields.len().min(8);
        Some(Self {
            total: fields[..counted].iter().sum(),
            steal: fields.get(7).copied().unwrap_or(0),
            idle: fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0),
        })
    }

    /// The share of the machine's CPU time since `earlier` that was idle
    /// (or waiting for I/O): no thread of any process had work for it.
    pub fn idle_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.idle.saturating_sub(earlier.idle) as f64 / total as f64
    }

    /// The share of the machine's CPU time between `earlier` and `self`
    /// that the hypervisor took; 0 when no time passed.
    pub fn steal_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.steal.saturating_sub(earlier.steal) as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_steal_share() {
        let a = MachineTimes::parse("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1 2 3\n");
        let b = MachineTimes::parse("cpu  200 0 100 1600 0 0 0 100 7 0\n");
        assert_eq!(
            a,
            Some(MachineTimes {
                total: 1000,
                steal: 50,
                idle: 800
            })
        );
        let (Some(a), Some(b)) = (a, b) else { return };
        // 1000 ticks passed, 50 of them stolen, 800 idle.
        assert!((b.steal_since(&a) - 0.05).abs() < 1e-12);
        assert!((b.idle_since(&a) - 0.8).abs() < 1e-12);
        assert_eq!(a.steal_since(&a), 0.0);
        assert_eq!(MachineTimes::parse("intr 1 2\n"), None);
        assert_eq!(MachineTimes::parse("cpu  1 x 3\n"), None);
    }

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
