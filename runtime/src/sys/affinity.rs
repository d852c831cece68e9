//! Pinning a process to CPUs (`serve --cpus 0,2-3`), as Kubernetes' static
//! CPU manager gives a Guaranteed pod exclusive cores: segment processes
//! that share a node then each keep their own CPUs, instead of the
//! scheduler moving their threads between CPUs frame by frame.

/// A CPU list that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    /// The list does not parse.
    #[error("CPU list `{list}`: {why}")]
    Parse {
        /// The list given.
        list: String,
        /// What is wrong.
        why: String,
    },
    /// The kernel refused the affinity (a CPU this process may not use).
    #[error("cannot pin thread {tid} to CPUs {cpus:?}: {source}")]
    Set {
        /// The thread.
        tid: i32,
        /// The CPUs.
        cpus: Vec<usize>,
        /// Cause.
        source: std::io::Error,
    },
    /// Pinning is not supported on this platform.
    #[error("pinning to CPUs is supported on Linux only")]
    Unsupported,
}

/// Parses a CPU list as `taskset -c` takes it: `0`, `0,2`, `1-3`, `0,2-3`.
///
/// # Errors
/// [`AffinityError::Parse`] for an empty list, a part that is not a
/// number or range, a range that runs backwards, or a CPU past 1023.
pub fn parse_list(list: &str) -> Result<Vec<usize>, AffinityError> {
    let bad = |why: String| AffinityError::Parse {
        list: list.to_owned(),
        why,
    };
    let num = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| bad(format!("`{}` is not a CPU number", s.trim())))
    };
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(bad(format!("range {lo}-{hi} runs backwards")));
        }
        if hi >= 1024 {
            return Err(bad(format!("CPU {hi} is past 1023")));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Pins every thread this process has now to `cpus`; threads it starts
/// later inherit the pinning from the thread that starts them.
///
/// # Errors
/// [`AffinityError::Set`] when the kernel refuses (for example a CPU this
/// process may not use); [`AffinityError::Unsupported`] off Linux.
pub fn pin_process(cpus: &[usize]) -> Result<(), AffinityError> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            // SAFETY: `c` < 1024 = CPU_SETSIZE (checked by parse_list; a
            // larger one is skipped here).
            if c < 1024 {
                unsafe { libc::CPU_SET(c, &mut set) };
            }
        }
        let mut tids: Vec<i32> = std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if tids.is_empty() {
            tids.push(0);
        }
        for tid in tids {
            // SAFETY: `set` is a valid cpu_set_t of the size passed.
            let rc = unsafe {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
            };
            if rc != 0 {
                return Err(AffinityError::Set {
                    tid,
                    cpus: cpus.to_vec(),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpus;
        Err(AffinityError::Unsupported)
    }
}

/// The CPUs this process may run on, in order (every CPU up to the
/// machine's count where that cannot be read).
pub fn allowed() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: cpu_set_t is plain data; the call writes only `set`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc == 0 {
            // SAFETY: `c` < CPU_SETSIZE.
            let cpus: Vec<usize> = (0..1024)
                .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                .collect();
            if !cpus.is_empty() {
                return cpus;
            }
        }
    }
    let n = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (0..n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_as_taskset_takes_them() {
        let ok = |s: &str| parse_list(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok("0"), [0]);
        assert_eq!(ok("0,2"), [0, 2]);
        assert_eq!(ok("1-3"), [1, 2, 3]);
        assert_eq!(ok("3,0-1,1"), [0, 1, 3]);
        for bad in ["", "a", "2-1", "0,,1", "1024", "-1"] {
            assert!(parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn this_process_may_run_somewhere() {
        let cpus = allowed();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
    }
}
