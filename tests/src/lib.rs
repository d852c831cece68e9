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
