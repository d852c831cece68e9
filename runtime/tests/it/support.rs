//! Helpers for end-to-end tests that start real `streamfuse` processes
//! (several segments on loopback, later in network namespaces and
//! containers).

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path to the `streamfuse` binary cargo built for these tests (no
/// nested build: the binary is a target of this package).
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_streamfuse"))
}

/// A free loopback port (bound, then released for a process to take).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    streamfuse::launch::ports::free_loopback_port().unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until every loopback port of `ports` accepts connections (a
/// fixed sleep is too short on a loaded machine).
///
/// # Panics
/// When one does not within 30 s.
pub fn wait_listening(ports: &[u16]) {
    let t0 = std::time::Instant::now();
    for &p in ports {
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "port {p} never listened"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// `GET /metrics` from a segment's metrics port; empty when unreachable.
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of the first sample of metric `name` (e.g.
/// `streamfuse_frames_out_total`) in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The last line of a process's stdout parsed as JSON.
///
/// # Panics
/// When it is not JSON.
pub fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `streamfuse run SPEC --threads 1 --json EXTRA...`: its report.
///
/// # Panics
/// When the run fails.
pub fn run_json(spec: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(binary())
        .arg("run")
        .arg(spec)
        .args(["--threads", "1", "--json"])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "run {} {extra:?}: {}",
        spec.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out.stdout)
}

/// Orders the tests that load the machine with many processes (the chaos
/// tests) against those that assert timings (latency around a weight swap,
/// recovery times, a stage's rate): see [`heavy`] and [`quiet`].
static LOAD: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held by a test that loads the machine with many processes: such tests
/// run together, never beside one holding [`quiet`].
pub fn heavy() -> std::sync::RwLockReadGuard<'static, ()> {
    LOAD.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Held by a test that asserts timings: it runs beside no [`heavy`] test
/// and no other such test, only beside light ones (the test command runs
/// three tests at a time: most multi-process tests wait on their
/// children).
pub fn quiet() -> std::sync::RwLockWriteGuard<'static, ()> {
    LOAD.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
