//! An emulated two-tier cluster on one Linux machine: an `edge` and a
//! `server` network namespace joined by a veth pair whose two ends are rate
//! limited with `tc` (HTB), and a CPU cgroup per tier, the edge's with a
//! CPU quota so that it is the slower device.
//!
//! The kernel this was built on has no `netem`, so link *delay* is not
//! emulated: only the rate.
//!
//! Everything created is recorded as it is created and removed again in
//! reverse order by [`Cluster::teardown`], which [`Drop`] also runs: after a
//! normal end, an error, or an interrupt (the bench turns `SIGINT`/`SIGTERM`
//! into a cancel, so the stack unwinds through the drop). Creating a
//! cluster needs root, `ip` and `tc`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::launch::local::Launcher;

/// Edge address on the veth pair.
pub const EDGE_ADDR: &str = "10.77.0.1";
/// Server address on the veth pair.
pub const SERVER_ADDR: &str = "10.77.0.2";
/// CFS period for the quotas, µs: short, so a throttled process runs in
/// 10 ms slices instead of stalling for most of a 100 ms default period.
const CFS_PERIOD_US: u64 = 10_000;

/// Setting up or removing the emulated cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr or the error starting it.
        detail: String,
    },
    /// A cgroup file could not be written.
    #[error("{what} {path}: {source}")]
    Cgroup {
        /// What was attempted.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// No CPU cgroup controller was found.
    #[error("no CPU cgroup controller mounted under /sys/fs/cgroup")]
    NoCpuController,
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Parameters of the emulated cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// CPUs the edge's processes may use together (0.5 = half a core).
    pub edge_cpu: f64,
    /// CPUs the server's processes may use (unlimited when `None`).
    pub server_cpu: Option<f64>,
    /// Link rate, in `tc` syntax (`1gbit`, `100mbit`).
    pub link: String,
}

/// The tier a node plays in the emulated cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The slower device next to the camera.
    Edge,
    /// The server.
    Server,
}

/// The tier of a node: `edge` when it is named `edge` or labelled
/// `streamfuse.io/tier: edge`, else `server`.
pub fn tier(node: &crate::spec::Node) -> Tier {
    let labelled = node
        .labels
        .iter()
        .any(|(k, v)| k == "streamfuse.io/tier" && v == "edge");
    if node.name == "edge" || labelled {
        Tier::Edge
    } else {
        Tier::Server
    }
}

#[derive(Debug)]
enum Resource {
    Netns(String),
    Link(String),
    Cgroup(PathBuf),
}

/// Which cgroup hierarchy holds the CPU controller.
#[derive(Debug, Clone)]
enum CpuCgroup {
    /// cgroup v1: `<root>/cpu.cfs_quota_us`.
    V1(PathBuf),
    /// cgroup v2: `<root>/cpu.max`.
    V2(PathBuf),
}

impl CpuCgroup {
    fn find() -> Result<Self, ClusterError> {
        for root in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"] {
            if Path::new(root).join("cpu.cfs_quota_us").exists() {
                return Ok(Self::V1(root.into()));
            }
        }
        let v2 = Path::new("/sys/fs/cgroup");
        if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"))
        {
            return Ok(Self::V2(v2.into()));
        }
        Err(ClusterError::NoCpuController)
    }

    fn root(&self) -> &Path {
        match self {
            Self::V1(p) | Self::V2(p) => p,
        }
    }

    /// Limits the cgroup at `dir` to `cpus` CPUs (unlimited for `None`).
    fn limit(&self, dir: &Path, cpus: Option<f64>) -> Result<(), ClusterError> {
        let quota = cpus.map(|c| ((c * CFS_PERIOD_US as f64).round() as u64).max(1000));
        match self {
            Self::V1(_) => {
                write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                let q = quota.map_or_else(|| "-1".to_owned(), |q| q.to_string());
                write(&dir.join("cpu.cfs_quota_us"), &q)
            }
            Self::V2(_) => {
                let q = quota.map_or_else(|| "max".to_owned(), |q| q.to_string());
                write(&dir.join("cpu.max"), &format!("{q} {CFS_PERIOD_US}"))
            }
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), ClusterError> {
    std::fs::write(path, text).map_err(|source| ClusterError::Cgroup {
        what: "write",
        path: path.to_owned(),
        source,
    })
}

fn sh(args: &[&str]) -> Result<(), ClusterError> {
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| ClusterError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // `/proc/self/status`: "Uid: real effective saved fs".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Parses a `tc` rate (`1gbit`, `100mbit`, `500kbit`, `1000000bit`) into
/// bits per second.
///
/// # Errors
/// [`ClusterError::Invalid`] on anything else.
pub fn parse_rate(s: &str) -> Result<f64, ClusterError> {
    let bad = || {
        ClusterError::Invalid(format!(
            "--link: bad rate `{s}` (expected e.g. 1gbit, 100mbit)"
        ))
    };
    let lower = s.to_ascii_lowercase();
    let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(suf, m)| lower.strip_suffix(suf).map(|n| (n.to_owned(), *m)))
        .ok_or_else(bad)?;
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if v.is_finite() && v > 0.0 {
        Ok(v * mult)
    } else {
        Err(bad())
    }
}

/// The emulated cluster. Removed again when dropped.
#[derive(Debug)]
pub struct Cluster {
    id: String,
    edge_ns: String,
    server_ns: String,
    edge_cg: PathBuf,
    server_cg: PathBuf,
    cgroup: CpuCgroup,
    /// Link rate, bits per second.
    pub link_bps: f64,
    /// The options it was made with.
    pub options: ClusterOptions,
    /// CPUs (a `taskset` list) the edge's processes are pinned to; `None`
    /// when they may use every CPU.
    pub edge_affinity: Option<String>,
    created: Vec<Resource>,
}

impl Cluster {
    /// The names this process's cluster uses: netns `sfbench-<pid>-edge` and
    /// `sfbench-<pid>-server`, cgroup `sfbench-<pid>` (tests check that none
    /// is left behind).
    pub fn name_for(pid: u32) -> String {
        format!("sfbench-{pid}")
    }

    /// Creates the namespaces, the shaped veth pair and the cgroups.
    ///
    /// # Errors
    /// [`ClusterError`] when a step fails; whatever was created by then is
    /// removed again.
    pub fn create(options: &ClusterOptions) -> Result<Self, ClusterError> {
        if !(options.edge_cpu.is_finite() && options.edge_cpu > 0.0) {
            return Err(ClusterError::Invalid(format!(
                "--edge-cpu must be a positive number of CPUs, not {}",
                options.edge_cpu
            )));
        }
        if let Some(c) = options.server_cpu
            && !(c.is_finite() && c > 0.0)
        {
            return Err(ClusterError::Invalid(format!(
                "--server-cpu must be a positive number of CPUs, not {c}"
            )));
        }
        let link_bps = parse_rate(&options.link)?;
        let cgroup = CpuCgroup::find()?;
        let pid = std::process::id();
        let id = Self::name_for(pid);
        let mut c = Cluster {
            edge_ns: format!("{id}-edge"),
            server_ns: format!("{id}-server"),
            edge_cg: cgroup.root().join(&id).join("edge"),
            server_cg: cgroup.root().join(&id).join("server"),
            id,
            cgroup,
            link_bps,
            options: options.clone(),
            edge_affinity: edge_affinity(options.edge_cpu),
            created: Vec::new(),
        };
        c.build(pid)?;
        tracing::info!(
            edge = %c.edge_ns,
            server = %c.server_ns,
            edge_cpu = options.edge_cpu,
            edge_cpus = c.edge_affinity.as_deref().unwrap_or("all"),
            link = %options.link,
            "emulated cluster up (link rate only: no netem, so no link delay)"
        );
        Ok(c)
    }

    fn build(&mut self, pid: u32) -> Result<(), ClusterError> {
        let (e_if, s_if) = (format!("sfe{pid}"), format!("sfs{pid}"));
        for ns in [self.edge_ns.clone(), self.server_ns.clone()] {
            sh(&["ip", "netns", "add", &ns])?;
            self.created.push(Resource::Netns(ns));
        }
        sh(&[
            "ip", "link", "add", &e_if, "type", "veth", "peer", "name", &s_if,
        ])?;
        self.created.push(Resource::Link(e_if.clone()));
        sh(&["ip", "link", "set", &e_if, "netns", &self.edge_ns])?;
        sh(&["ip", "link", "set", &s_if, "netns", &self.server_ns])?;
        // Both ends now live (and die) with their namespaces.
        self.created.retain(|r| !matches!(r, Resource::Link(_)));
        let rate = self.options.link.clone();
        for (ns, dev, addr) in [
            (self.edge_ns.clone(), e_if, EDGE_ADDR),
            (self.server_ns.clone(), s_if, SERVER_ADDR),
        ] {
            let cidr = format!("{addr}/24");
            sh(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", &dev])?;
            sh(&["ip", "-n", &ns, "link", "set", &dev, "up"])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            // Egress of each end: HTB with one class at the link rate.
            let tc = ["ip", "netns", "exec", &ns, "tc"];
            let q = [
                &tc[..],
                &[
                    "qdisc", "add", "dev", &dev, "root", "handle", "1:", "htb", "default", "1",
                ],
            ]
            .concat();
            sh(&q)?;
            let cl = [
                &tc[..],
                &[
                    "class", "add", "dev", &dev, "parent", "1:", "classid", "1:1", "htb", "rate",
                    &rate, "ceil", &rate, "quantum", "60000",
                ],
            ]
            .concat();
            sh(&cl)?;
        }
        let parent = self.cgroup.root().join(&self.id);
        if let CpuCgroup::V2(root) = &self.cgroup {
            // Let children of the root and of ours have the cpu controller.
            let _ = write(&root.join("cgroup.subtree_control"), "+cpu");
        }
        std::fs::create_dir(&parent).map_err(|source| ClusterError::Cgroup {
            what: "create",
            path: parent.clone(),
            source,
        })?;
        self.created.push(Resource::Cgroup(parent.clone()));
        if matches!(self.cgroup, CpuCgroup::V2(_)) {
            write(&parent.join("cgroup.subtree_control"), "+cpu")?;
        }
        for (dir, cpus) in [
            (self.edge_cg.clone(), Some(self.options.edge_cpu)),
            (self.server_cg.clone(), self.options.server_cpu),
        ] {
            std::fs::create_dir(&dir).map_err(|source| ClusterError::Cgroup {
                what: "create",
                path: dir.clone(),
                source,
            })?;
            self.created.push(Resource::Cgroup(dir.clone()));
            self.cgroup.limit(&dir, cpus)?;
        }
        Ok(())
    }

    /// Removes everything the cluster created, newest first: processes
    /// still in its cgroups are killed, then the cgroups, links and
    /// namespaces removed. Safe to call more than once.
    ///
    /// # Errors
    /// The first step that failed (the others are still attempted).
    pub fn teardown(&mut self) -> Result<(), ClusterError> {
        let mut first = None;
        while let Some(r) = self.created.pop() {
            let result = match &r {
                Resource::Netns(ns) => sh(&["ip", "netns", "del", ns]),
                Resource::Link(dev) => sh(&["ip", "link", "del", dev]),
                Resource::Cgroup(dir) => remove_cgroup(dir),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "cluster teardown");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The netns and cgroup of a node's tier.
    fn place(&self, t: Tier) -> (&str, &Path) {
        match t {
            Tier::Edge => (&self.edge_ns, &self.edge_cg),
            Tier::Server => (&self.server_ns, &self.server_cg),
        }
    }
}

/// The CPUs the edge's processes are pinned to: as many as its quota
/// needs (one for a fraction of a core), as a `taskset` list, or `None`
/// when that is every CPU or `taskset` is missing.
///
/// A small board has one or a few cores, and pinning is also what makes the
/// quota exact: CFS hands a cgroup's quota to each CPU's run queue in 5 ms
/// slices, so a 5 ms quota per 10 ms period spread over two CPUs is often
/// held by one CPU's queue while the other's processes are throttled, and
/// a split edge pipeline got only about two thirds of its half core.
fn edge_affinity(edge_cpu: f64) -> Option<String> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let need = (edge_cpu.ceil() as usize).max(1);
    if need >= cpus {
        return None;
    }
    let have = Command::new("taskset")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        tracing::warn!("taskset not found: the edge's processes may use every CPU");
        return None;
    }
    Some(if need == 1 {
        "0".to_owned()
    } else {
        format!("0-{}", need - 1)
    })
}

/// Kills what is left in a cgroup (only processes this bench started go
/// there), then removes it.
fn remove_cgroup(dir: &Path) -> Result<(), ClusterError> {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    std::fs::remove_dir(dir).map_err(|source| ClusterError::Cgroup {
        what: "remove",
        path: dir.to_owned(),
        source,
    })
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "emulated cluster not fully removed");
        }
    }
}

/// Starts segment processes in the emulated cluster: each in its node's
/// tier's namespace and cgroup, listening on the tier's veth address.
pub struct ClusterLauncher<'a> {
    /// The cluster.
    pub cluster: &'a Cluster,
    /// Tier of each node, by node name.
    pub tiers: Vec<(String, Tier)>,
    /// Extra arguments per segment.
    pub extra: Vec<Vec<String>>,
}

impl ClusterLauncher<'_> {
    fn tier_of(&self, node: &str) -> Tier {
        self.tiers
            .iter()
            .find(|(n, _)| n == node)
            .map_or(Tier::Server, |&(_, t)| t)
    }
}

impl Launcher for ClusterLauncher<'_> {
    fn host(&self, node: &str) -> String {
        match self.tier_of(node) {
            Tier::Edge => EDGE_ADDR.into(),
            Tier::Server => SERVER_ADDR.into(),
        }
    }

    fn command(&self, node: &str, exe: &Path) -> Command {
        let tier = self.tier_of(node);
        let (ns, cg) = self.cluster.place(tier);
        let affinity = match tier {
            Tier::Edge => self.cluster.edge_affinity.clone().unwrap_or_default(),
            Tier::Server => String::new(),
        };
        // Join the cgroup first, then (on the edge) pin to its CPUs, then
        // the namespace, then become `exe`: the pid stays the same
        // throughout, so killing the child kills it.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(concat!(
                r#"echo $$ > "$0/cgroup.procs" && ns=$1 && cpus=$2 && shift 2 && "#,
                r#"if [ -n "$cpus" ]; then exec taskset -c "$cpus" ip netns exec "$ns" "$@"; "#,
                r#"else exec ip netns exec "$ns" "$@"; fi"#
            ))
            .arg(cg)
            .arg(ns)
            .arg(affinity)
            .arg(exe);
        cmd
    }

    fn segment_args(&self, segment: usize) -> Vec<String> {
        self.extra.get(segment).cloned().unwrap_or_default()
    }
}

/// Segment processes on loopback with extra arguments per segment.
pub struct LoopbackLauncher {
    /// Extra arguments per segment.
    pub extra: Vec<Vec<String>>,
}

impl Launcher for LoopbackLauncher {
    fn host(&self, _node: &str) -> String {
        "127.0.0.1".into()
    }
    fn command(&self, _node: &str, exe: &Path) -> Command {
        Command::new(exe)
    }
    fn segment_args(&self, segment: usize) -> Vec<String> {
        self.extra.get(segment).cloned().unwrap_or_default()
    }
}

/// Turns the first `SIGINT` or `SIGTERM` into a flag the runs poll (their
/// processes are then killed and the stack unwinds through the cluster's
/// drop). Later ones change nothing: the cleanup always runs.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn interrupt_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let f = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (mut int, mut term) = match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(i), Ok(t)) => (i, t),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                loop {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                    if f.swap(true, Ordering::SeqCst) {
                        tracing::warn!("still stopping and cleaning up");
                    } else {
                        tracing::warn!("interrupted: stopping the run and cleaning up");
                    }
                }
            });
        })?;
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("signal thread ended"))??;
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_like_tc() {
        let r = |s: &str| parse_rate(s).ok();
        assert_eq!(r("1gbit"), Some(1e9));
        assert_eq!(r("100mbit"), Some(1e8));
        assert_eq!(r("500kbit"), Some(5e5));
        assert_eq!(r("1000bit"), Some(1e3));
        assert_eq!(r("fast"), None);
        assert_eq!(r("0mbit"), None);
    }
}
