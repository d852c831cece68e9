//! The CUDA path's host side, on a machine without a GPU: `streamfuse run
//! --device cuda` against a counting stand-in for the CUDA driver
//! (`tests/cuda_shim/counting_driver.c`, built here and found first on
//! `LD_LIBRARY_PATH`). The kernels are compiled by the real NVRTC and
//! loaded as the runtime loads them; launches do nothing, so outputs are
//! not checked here (the emulator and device tests check those). What is
//! checked is what the driver sees: the allocations, frees and copies of
//! every frame, counted by the stand-in, not by the code under test.
//!
//! Like the NVRTC tests, these need NVRTC: without it they say SKIPPED,
//! unless `STREAMFUSE_REQUIRE_NVRTC=1` (the test command) fails them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{binary, last_json, repo_root};

/// Whether NVRTC can be loaded; when not, fails `test` under
/// `STREAMFUSE_REQUIRE_NVRTC=1`, else says it is skipped.
fn nvrtc_or_skip(test: &str) -> bool {
    if streamfuse_kernels::cuda::nvrtc::available() {
        return true;
    }
    assert!(
        std::env::var("STREAMFUSE_REQUIRE_NVRTC").as_deref() != Ok("1"),
        "{test}: STREAMFUSE_REQUIRE_NVRTC=1 but NVRTC cannot be loaded"
    );
    eprintln!("SKIPPED {test}: no NVRTC; scripts/test.sh installs it");
    false
}

/// Builds the counting driver into `dir` as `libcuda.so.1` and
/// `libcuda.so` (the names cudarc looks for).
fn build_driver(dir: &Path) {
    let src = repo_root().join("tests/cuda_shim/counting_driver.c");
    let lib = dir.join("libcuda.so.1");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-lpthread")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc} to build the counting driver: {e}"));
    assert!(
        out.status.success(),
        "building {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(&lib, dir.join("libcuda.so")).unwrap_or_else(|e| panic!("{e}"));
}

/// The folder of the counting driver, built once per run of these tests
/// (in the tests' temporary folder under `target/`), with the kernel cache
/// they share beside it.
fn driver_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cuda_shim");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        build_driver(&dir);
        dir
    })
}

/// `streamfuse ARGS` with the counting driver first on the library path,
/// the shared kernel cache, and `env`.
fn run_with_driver(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let dir = driver_dir();
    let path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", dir.display()),
        _ => dir.display().to_string(),
    };
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .current_dir(repo_root())
        .env("LD_LIBRARY_PATH", path)
        .env("STREAMFUSE_CACHE_DIR", dir.join("cache"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start streamfuse: {e}"))
}

/// One line of the driver's log: the running totals at a device-to-host
/// copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Totals {
    device_allocs: u64,
    device_frees: u64,
    pinned_allocs: u64,
    pinned_frees: u64,
    launches: u64,
}

fn parse_log(path: &Path) -> Vec<Totals> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the counting driver wrote no log {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let field = |name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in the log line {line:?}"))
            };
            Totals {
                device_allocs: field("device_allocs"),
                device_frees: field("device_frees"),
                pinned_allocs: field("pinned_allocs"),
                pinned_frees: field("pinned_frees"),
                launches: field("launches"),
            }
        })
        .collect()
}

fn spec(name: &str) -> String {
    repo_root()
        .join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Runs `spec` on the counting driver for `frames` frames per source (and
/// `extra` arguments); returns the report and the driver's log, one line
/// per frame copied back.
fn counted_run(spec: &str, frames: u64, extra: &[&str]) -> (serde_json::Value, Vec<Totals>) {
    let logs = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = logs.path().join("driver.log");
    let n = frames.to_string();
    let args = [
        &["run", spec, "--device", "cuda", "--frames", &n, "--json"][..],
        extra,
    ]
    .concat();
    let out = run_with_driver(&args, &[("STREAMFUSE_SHIM_LOG", &log)]);
    assert!(
        out.status.success(),
        "run on the counting driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = last_json(&out.stdout);
    assert_eq!(report["device"], "cuda:0", "{report}");
    // The placement (ESSS) makes two segments: the source's alone on its
    // node, which passes frames on from the host, and the stages', which
    // copies each frame back once.
    assert_eq!(report["segments"], 2, "{report}");
    let totals = parse_log(&log);
    assert_eq!(
        Some(totals.len() as u64),
        report["frames"].as_u64(),
        "one copy back per frame: {report}"
    );
    (report, totals)
}

/// One camera through a CUDA segment (`examples/edges.yaml`, its frames in
/// order over the segment's two lanes): once each lane has carried a frame,
/// the driver sees no allocation and no free, device or pinned, for the
/// rest of the run, while every frame still launches its kernels and
/// copies its output back.
#[test]
fn a_cuda_segment_in_steady_state_allocates_nothing_per_frame() {
    if !nvrtc_or_skip("a_cuda_segment_in_steady_state_allocates_nothing_per_frame") {
        return;
    }
    let (_, totals) = counted_run(&spec("edges.yaml"), 30, &["--size", "320x240"]);
    let first = totals[0];
    assert!(
        first.device_allocs > 0 && first.pinned_allocs > 0,
        "the first frame allocates its buffers: {first:?}"
    );
    // Frames alternate between two lanes: both are set up once the second
    // frame is back.
    let warm = totals[1];
    let last = totals[totals.len() - 1];
    assert_eq!(
        last,
        Totals {
            launches: last.launches,
            ..warm
        },
        "allocations or frees after both lanes carried a frame: {warm:?} then {last:?}"
    );
    let per_frame = (last.launches - warm.launches) as f64 / (totals.len() - 2) as f64;
    assert!(
        per_frame >= 1.0,
        "frames in steady state launched no kernels ({per_frame} per frame)"
    );
}

/// Three cameras of three frame sizes interleaved through the same CUDA
/// segment (`examples/cameras.yaml`; the order depends on the sources'
/// pace): each lane keeps its buffers of each size, so what the driver
/// allocates is bounded by lanes x sizes, not by frames, and nothing is
/// ever freed.
#[test]
fn frames_of_changing_sizes_reuse_their_buffers() {
    if !nvrtc_or_skip("frames_of_changing_sizes_reuse_their_buffers") {
        return;
    }
    let frames_per_camera = 40;
    let (_, totals) = counted_run(&spec("cameras.yaml"), frames_per_camera, &[]);
    let last = totals[totals.len() - 1];
    let (lanes, sizes) = (2, 3);
    // Per lane and frame size: the input and at most six buffers of the
    // chain (gray; the blur's two passes; Sobel's two gradients and its
    // output) on the device, and the input and output in pinned memory.
    let (device_bound, pinned_bound) = (lanes * sizes * 7, lanes * sizes * 2);
    assert!(
        last.device_allocs <= device_bound && last.pinned_allocs <= pinned_bound,
        "{} frames made {} device and {} pinned allocations (bounds {device_bound} and \
         {pinned_bound})",
        totals.len(),
        last.device_allocs,
        last.pinned_allocs
    );
    assert_eq!(
        (last.device_frees, last.pinned_frees),
        (0, 0),
        "buffers freed during the run"
    );
    assert!(
        last.launches >= totals.len() as u64,
        "frames launched no kernels: {last:?}"
    );
}

/// A module the driver refuses (as a driver too old for the compiled code
/// does): `--device auto` runs on the CPU with the driver's reason in the
/// report, and `--device cuda` fails with that reason.
#[test]
fn a_module_that_fails_to_load_makes_auto_fall_back_and_cuda_fail_with_the_reason() {
    if !nvrtc_or_skip(
        "a_module_that_fails_to_load_makes_auto_fall_back_and_cuda_fail_with_the_reason",
    ) {
        return;
    }
    let fail = PathBuf::from("module_load");
    let env = [("STREAMFUSE_SHIM_FAIL", fail.as_path())];
    let thesis = spec("thesis.yaml");
    let args = ["run", &thesis, "--frames", "2", "--size", "64", "--json"];
    let auto = run_with_driver(&[&args[..], &["--device", "auto"]].concat(), &env);
    assert!(
        auto.status.success(),
        "{}",
        String::from_utf8_lossy(&auto.stderr)
    );
    let report = last_json(&auto.stdout);
    assert_eq!(report["device"], "cpu", "{report}");
    let why = report["device_fallback"].as_str().unwrap_or_default();
    assert!(
        why.contains("UNSUPPORTED_PTX_VERSION") && why.contains("counting driver"),
        "the fallback names the device and the driver's error: {report}"
    );
    let cuda = run_with_driver(&[&args[..], &["--device", "cuda"]].concat(), &env);
    let stderr = String::from_utf8_lossy(&cuda.stderr);
    assert!(!cuda.status.success(), "--device cuda ran: {stderr}");
    assert!(
        stderr.contains("UNSUPPORTED_PTX_VERSION") && !stderr.contains("panicked"),
        "--device cuda fails with the driver's reason: {stderr}"
    );
}
