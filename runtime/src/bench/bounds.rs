//! Throughput bounds from the CPU time a split run's processes used
//! ([`cpu_bounds`]).

use super::cluster::ClusterOptions;

/// The CPUs of this machine (what the kernel lets this process use).
pub(super) fn machine_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// Throughput bounds from CPU time: processes that share CPUs cannot
/// together run faster than those CPUs supply the CPU time each frame costs
/// them, measured in the run itself (every thread of every process in
/// steady state, [`crate::segment::serve::SegmentOutcome::cpu_per_frame`]: kernels,
/// source, transport, and any time threads spin waiting for work). One bound per CPU pool: each emulated
/// tier with a CPU quota (`tiers[k]` is segment `k`'s tier), each CPU
/// that processes are pinned to (`pins[k]`, segment `k`'s CPU), and the
/// whole machine, which every process shares. A split on one node has no other
/// resource to wait for, so this is the bound a pipelined split should
/// reach there; the stages alone, each with every CPU to itself, overstate
/// it. On a virtual machine the hypervisor may take a share `steal` of the
/// machine's CPU time (`/proc/stat`); the machine's pool is what was left.
pub fn cpu_bounds(
    tiers: &[String],
    pins: &[Option<usize>],
    outcomes: &[crate::segment::serve::SegmentOutcome],
    cluster: Option<&ClusterOptions>,
    steal: f64,
) -> Vec<(String, f64)> {
    let mut pools: Vec<(String, f64, Vec<usize>)> = Vec::new();
    let steal = steal.clamp(0.0, 0.9);
    let mut pinned: Vec<usize> = pins.iter().flatten().copied().collect();
    pinned.sort_unstable();
    pinned.dedup();
    for cpu in pinned {
        let members: Vec<usize> = (0..pins.len()).filter(|&k| pins[k] == Some(cpu)).collect();
        pools.push((format!("CPU {cpu}"), 1.0 - steal, members));
    }
    if let Some(c) = cluster {
        for (tier, quota) in [("edge", Some(c.edge_cpu)), ("server", c.server_cpu)] {
            let members: Vec<usize> = (0..tiers.len()).filter(|&k| tiers[k] == tier).collect();
            if let (Some(q), false) = (quota, members.is_empty()) {
                pools.push((format!("{tier} CPU quota {q}"), q, members));
            }
        }
    }
    let cpus = machine_cpus();
    pools.push((
        if steal >= 0.005 {
            format!(
                "this machine's {cpus} CPUs less {:.0}% steal",
                steal * 100.0
            )
        } else {
            format!("this machine's {cpus} CPUs")
        },
        cpus * (1.0 - steal),
        (0..tiers.len()).collect(),
    ));
    let mut out = Vec::new();
    for (what, cpus, members) in pools {
        let mut demand = 0.0;
        let mut known = 0;
        for o in outcomes.iter().filter(|o| members.contains(&o.segment)) {
            if let Some(d) = o.cpu_per_frame() {
                demand += d;
                known += 1;
            }
        }
        if known == members.len() && demand > 0.0 {
            out.push((
                format!(
                    "{what} ({} process{})",
                    known,
                    if known == 1 { "" } else { "es" }
                ),
                cpus / demand,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::serve::SegmentOutcome;

    fn outcome(segment: usize, frames: u64, cpu_ms: Option<u64>) -> SegmentOutcome {
        SegmentOutcome {
            segment,
            frames,
            cpu_ns: cpu_ms.map(|ms| ms * 1_000_000),
            ..SegmentOutcome::default()
        }
    }

    #[test]
    fn steady_cpu_per_frame_leaves_out_start_and_end() {
        use crate::segment::serve::CPU_MARK_EVERY;
        // 1000 frames: 1 ms of CPU each in the middle, but a 200 ms start.
        let marks: Vec<(u64, u64)> = (1..=125u64)
            .map(|k| {
                (
                    k * CPU_MARK_EVERY,
                    200_000_000 + k * CPU_MARK_EVERY * 1_000_000,
                )
            })
            .collect();
        let o = SegmentOutcome {
            frames: 1000,
            cpu_ns: Some(1_200_000_000),
            cpu_marks: marks.clone(),
            // The worker's busy time: half the CPU time, the same shape.
            busy_ns: Some(600_000_000),
            busy_marks: marks.iter().map(|&(f, ns)| (f, ns / 2)).collect(),
            ..SegmentOutcome::default()
        };
        assert!(o.cpu_per_frame().is_some_and(|s| (s - 1e-3).abs() < 1e-12));
        assert!(
            o.busy_per_frame()
                .is_some_and(|s| (s - 0.5e-3).abs() < 1e-12)
        );
        // Without marks: the whole run's CPU over its frames.
        let whole = SegmentOutcome {
            cpu_marks: Vec::new(),
            ..o.clone()
        };
        assert!(
            whole
                .cpu_per_frame()
                .is_some_and(|s| (s - 1.2e-3).abs() < 1e-12)
        );
        assert_eq!(SegmentOutcome::default().cpu_per_frame(), None);
    }

    #[test]
    fn cpu_bounds_divide_each_pool_by_what_its_processes_used() {
        let tiers: Vec<String> = ["edge", "edge", "server"].map(String::from).to_vec();
        // 1000 frames: the edge's two processes used 1 s and 3 s of CPU
        // (4 ms a frame), the server's 2 s.
        let outs = [
            outcome(0, 1000, Some(1000)),
            outcome(1, 1000, Some(3000)),
            outcome(2, 1000, Some(2000)),
        ];
        let opts = ClusterOptions {
            edge_cpu: 0.5,
            server_cpu: None,
            link: "1gbit".into(),
        };
        let b = cpu_bounds(&tiers, &[], &outs, Some(&opts), 0.0);
        let edge = b
            .iter()
            .find(|(n, _)| n.starts_with("edge CPU quota 0.5 (2 processes)"));
        // 0.5 CPU / 4 ms per frame = 125 fps.
        assert!(edge.is_some_and(|(_, f)| (f - 125.0).abs() < 1e-9), "{b:?}");
        // The machine: its CPUs over 6 ms a frame; no server pool (no quota).
        let cpus = machine_cpus();
        let machine = b.iter().find(|(n, _)| n.contains("machine"));
        assert!(
            machine.is_some_and(
                |(n, f)| n.ends_with("(3 processes)") && (f - cpus / 0.006).abs() < 1e-6
            ),
            "{b:?}"
        );
        assert_eq!(b.len(), 2, "{b:?}");
    }

    #[test]
    fn each_pinned_cpu_is_a_pool_of_the_processes_on_it() {
        let tiers: Vec<String> = ["server"; 3].map(String::from).to_vec();
        // Segments 0 and 2 on CPU 0 (1 + 3 ms a frame), segment 1 on CPU 1 (2 ms).
        let pins = [Some(0), Some(1), Some(0)];
        let outs = [
            outcome(0, 1000, Some(1000)),
            outcome(1, 1000, Some(2000)),
            outcome(2, 1000, Some(3000)),
        ];
        let b = cpu_bounds(&tiers, &pins, &outs, None, 0.2);
        let find = |what: &str| b.iter().find(|(n, _)| n.starts_with(what)).map(|(_, f)| *f);
        // 0.8 of a CPU (20% steal) over 4 ms and over 2 ms.
        assert!(
            find("CPU 0 (2 processes)").is_some_and(|f| (f - 200.0).abs() < 1e-9),
            "{b:?}"
        );
        assert!(
            find("CPU 1 (1 process)").is_some_and(|f| (f - 400.0).abs() < 1e-9),
            "{b:?}"
        );
        assert_eq!(b.len(), 3, "{b:?}");
    }

    #[test]
    fn steal_shrinks_the_machine_pool_only() {
        let tiers: Vec<String> = ["edge", "server"].map(String::from).to_vec();
        let outs = [outcome(0, 1000, Some(1000)), outcome(1, 1000, Some(1000))];
        let opts = ClusterOptions {
            edge_cpu: 0.5,
            server_cpu: None,
            link: "1gbit".into(),
        };
        let none = cpu_bounds(&tiers, &[], &outs, Some(&opts), 0.0);
        let some = cpu_bounds(&tiers, &[], &outs, Some(&opts), 0.25);
        let find = |b: &[(String, f64)], what: &str| {
            b.iter().find(|(n, _)| n.contains(what)).map(|(_, f)| *f)
        };
        // The edge quota stays 0.5 CPU over 1 ms: 500 fps.
        assert_eq!(find(&none, "edge"), Some(500.0));
        assert_eq!(find(&some, "edge"), Some(500.0));
        // The machine keeps three quarters of its CPUs.
        let (Some(a), Some(b)) = (find(&none, "machine"), find(&some, "machine")) else {
            panic!("no machine pool: {none:?} {some:?}");
        };
        assert!((b / a - 0.75).abs() < 1e-12, "{a} {b}");
        assert!(
            some.iter().any(|(n, _)| n.contains("less 25% steal")),
            "{some:?}"
        );
    }

    #[test]
    fn a_process_that_did_not_report_cpu_time_leaves_its_pools_unbounded() {
        let tiers: Vec<String> = ["server", "server"].map(String::from).to_vec();
        let outs = [outcome(0, 100, Some(50)), outcome(1, 100, None)];
        assert!(cpu_bounds(&tiers, &[], &outs, None, 0.0).is_empty());
    }
}
