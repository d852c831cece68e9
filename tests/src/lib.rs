//! Helpers for end-to-end tests that start real `streamfuse` processes
//! (several segments on loopback, later in network namespaces and
//! containers).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path to the `streamfuse` binary of this build profile, built on first
/// use with the same cargo and profile that built the tests (integration
/// tests of another package do not get `CARGO_BIN_EXE_*`).
///
/// # Panics
/// When the binary cannot be built: the tests cannot run without it.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-exe> -> target/<profile>
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("unexpected test path {}", exe.display()));
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root()).args([
            "build",
            "--quiet",
            "-p",
            "streamfuse",
            "--bin",
            "streamfuse",
        ]);
        if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
        assert!(status.success(), "building streamfuse failed");
        profile_dir.join(format!("streamfuse{}", std::env::consts::EXE_SUFFIX))
    })
    .clone()
}

/// A free loopback port (bound, then released for a process to take).
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    streamfuse::ports::free_loopback_port().unwrap_or_else(|e| panic!("no free port: {e}"))
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
