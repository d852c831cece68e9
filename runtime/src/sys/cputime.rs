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

/// The CPUs this process can use: the CPUs it may run on, capped by the
/// tightest CPU quota of its cgroup and every parent (a container's or
/// pod's CPU limit, the emulated edge's quota; cgroup v2 `cpu.max` or v1
/// `cpu.cfs_quota_us`), as a fraction where the quota is one (0.5 = half a
/// CPU).
pub fn usable_cpus() -> f64 {
    let affinity = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let quota = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| cgroup_quota(&s, std::path::Path::new("/sys/fs/cgroup")));
    quota.map_or(affinity, |q| q.min(affinity))
}

/// The tightest CPU quota, in CPUs, on this process's cgroup path as
/// `/proc/self/cgroup` (`proc_cgroup`) gives it, the hierarchies mounted
/// under `root`: the v1 `cpu` controller's (`N:cpu,cpuacct:/a/b`) where
/// there is one, else the v2 entry's (`0::/a/b`). `None` when no level sets
/// one.
fn cgroup_quota(proc_cgroup: &str, root: &std::path::Path) -> Option<f64> {
    let v1 = proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctl.split(',')
            .any(|c| c == "cpu")
            .then(|| (ctl.to_owned(), path))
    });
    let (mount, rel, read): (std::path::PathBuf, &str, QuotaReader) = match v1 {
        Some((ctl, path)) => {
            let mount = [root.join(&ctl), root.join("cpu"), root.join("cpu,cpuacct")]
                .into_iter()
                .find(|m| m.join("cpu.cfs_quota_us").exists())?;
            (mount, path, read_v1)
        }
        None => (
            root.to_owned(),
            proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?,
            read_v2,
        ),
    };
    let mut dir = mount.join(rel.trim().trim_start_matches('/'));
    let mut best: Option<f64> = None;
    loop {
        if let Some(q) = read(&dir) {
            best = Some(best.map_or(q, |b: f64| b.min(q)));
        }
        if dir == mount || !dir.pop() || !dir.starts_with(&mount) {
            break;
        }
    }
    best
}

/// Reads one cgroup level's CPU quota, in CPUs.
type QuotaReader = fn(&std::path::Path) -> Option<f64>;

fn read_v2(dir: &std::path::Path) -> Option<f64> {
    parse_cpu_max(&std::fs::read_to_string(dir.join("cpu.max")).ok()?)
}

fn read_v1(dir: &std::path::Path) -> Option<f64> {
    let num = |f: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (quota, period) = (num("cpu.cfs_quota_us")?, num("cpu.cfs_period_us")?);
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `cpu.max` (`"50000 100000"`, or `"max 100000"` for none) as CPUs.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod quota_tests {
    use super::*;

    #[test]
    fn cpu_max_parses_a_quota_and_ignores_max() {
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max(""), None);
    }

    #[test]
    fn the_tightest_quota_on_the_cgroup_path_wins() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = d.path();
        let leaf = root.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("a/cpu.max"), "150000 100000\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cgroup_quota("0::/a/b\n", root), Some(1.5));
        std::fs::write(leaf.join("cpu.max"), "50000 100000\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cgroup_quota("0::/a/b\n", root), Some(0.5));
        assert_eq!(cgroup_quota("1:memory:/x\n", root), None);
    }

    #[test]
    fn a_v1_cpu_controller_quota_is_read_and_minus_one_is_none() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = d.path();
        let cg = root.join("cpu,cpuacct/edge");
        std::fs::create_dir_all(&cg).unwrap_or_else(|e| panic!("{e}"));
        let put = |dir: &std::path::Path, q: &str| {
            std::fs::write(dir.join("cpu.cfs_quota_us"), q).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dir.join("cpu.cfs_period_us"), "100000\n")
                .unwrap_or_else(|e| panic!("{e}"));
        };
        put(&root.join("cpu,cpuacct"), "-1\n");
        put(&cg, "50000\n");
        let text = "4:memory:/m\n2:cpu,cpuacct:/edge\n0::/\n";
        assert_eq!(cgroup_quota(text, root), Some(0.5));
        put(&cg, "-1\n");
        assert_eq!(cgroup_quota(text, root), None);
    }
}
