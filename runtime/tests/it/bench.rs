//! `streamfuse bench`: the harness measures what it claims (a deliberately
//! slowed stage shows up as that stage's compute time and as the
//! pipeline's throughput bound), writes its files, and leaves nothing of
//! the emulated cluster behind — after a run, a failure or an interrupt.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{binary, last_json, repo_root};
use serde_json::Value;

fn thesis() -> PathBuf {
    repo_root().join("examples/thesis.yaml")
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("streamfuse-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn bench(args: &[&str], out: &Path) -> Output {
    Command::new(binary())
        .arg("bench")
        .arg(thesis())
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `stages@node=ms` entries of a row's `group_ms`.
fn group_ms(row: &Value, stage: &str) -> f64 {
    row["group_ms"]
        .as_str()
        .unwrap_or_default()
        .split(';')
        .find_map(|g| {
            let (name, ms) = g.split_once('=')?;
            (name.split('@').next() == Some(stage)).then(|| ms.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no group {stage} in {row}"))
}

#[test]
fn a_slowed_stage_is_its_compute_time_and_the_throughput_bound() {
    // Its rates are timings: no multi-process test alongside.
    let _quiet = crate::support::quiet();
    let out = out_dir("slow");
    let delay = 20.0;
    let o = bench(
        &[
            "--sizes",
            "128",
            "--placements",
            "SSSS",
            "--fusion",
            "off",
            "--stages",
            "4",
            "--frames",
            "40",
            "--slow",
            "relu:20",
            "--no-emulation",
            "--json",
        ],
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = last_json(&o.stdout);
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    let row = rows
        .iter()
        .find(|r| r["placement"] == "SSSS" && r["fusion"] == "off")
        .unwrap_or_else(|| panic!("no SSSS off row: {v}"));
    // The slowed stage's compute time is the delay (plus its own few µs).
    let relu = group_ms(row, "relu");
    assert!(
        (delay..delay * 1.2).contains(&relu),
        "relu {relu} ms: {row}"
    );
    for other in ["conv", "pool"] {
        let ms = group_ms(row, other);
        assert!(ms < delay / 4.0, "{other} {ms} ms: {row}");
    }
    // It is the slowest stage, it bounds the throughput (as the stage run
    // alone, or as its worker's busy time in the run: both about the
    // delay), and the pipeline runs at that bound.
    let expected = 1000.0 / delay;
    let slowest = row["slowest"].as_str().unwrap_or_default();
    assert!(
        slowest.starts_with("relu alone") || slowest.starts_with("relu's worker"),
        "{row}"
    );
    let bound = row["bound_fps"].as_f64().unwrap_or_default();
    assert!(
        (expected * 0.85..expected * 1.02).contains(&bound),
        "bound {bound}: {row}"
    );
    // In steady state (a 40-frame run's fill and drain are a large part
    // of it, so the whole run's rate is lower).
    let fps = row["steady_fps"].as_f64().unwrap_or_default();
    assert!(
        (expected * 0.85..expected * 1.02).contains(&fps),
        "steady fps {fps}: {row}"
    );
    let whole = row["fps"].as_f64().unwrap_or_default();
    assert!(
        whole > expected * 0.5 && whole <= fps * 1.05,
        "fps {whole}: {row}"
    );
    assert!(
        row["pipelining"].as_f64().unwrap_or_default() >= 0.85,
        "{row}"
    );
    // The files are there; the plots have labelled axes and legends.
    for f in [
        "results.csv",
        "latencies.csv",
        "summary.md",
        "throughput.svg",
        "stages.svg",
        "ccr.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(out.join("stages.svg")).unwrap_or_default();
    assert!(svg.contains("throughput (frames/s"), "y axis label");
    assert!(
        svg.contains("processes the pipeline is split into"),
        "x axis label"
    );
    assert!(svg.contains("server 128x128"), "legend");
    let lat = std::fs::read_to_string(out.join("latencies.csv")).unwrap_or_default();
    assert!(lat.lines().count() > 40, "every frame's latency");
    let _ = std::fs::remove_dir_all(&out);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// What of bench process `pid`'s cluster is still there.
fn leftovers(pid: u32) -> Vec<String> {
    let name = format!("sfbench-{pid}");
    let mut left = Vec::new();
    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    left.extend(
        ns.lines()
            .filter(|l| l.contains(&name))
            .map(|l| format!("netns {l}")),
    );
    for root in [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup",
    ] {
        let d = Path::new(root).join(&name);
        if d.exists() {
            left.push(format!("cgroup {}", d.display()));
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    left.extend(
        links
            .lines()
            .filter(|l| l.contains(&format!("sfe{pid}")) || l.contains(&format!("sfs{pid}")))
            .map(|l| format!("link {l}")),
    );
    left
}

fn cluster_up(pid: u32) -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("sfbench-{pid}-edge")))
}

#[test]
fn the_emulated_cluster_is_removed_after_a_run_a_failure_and_an_interrupt() {
    if !is_root() || Command::new("tc").arg("-V").output().is_err() {
        eprintln!("skipped: the emulated cluster needs root, ip and tc");
        return;
    }
    let small = [
        "--sizes",
        "64",
        "--placements",
        "EESS",
        "--fusion",
        "kernel",
        "--stages",
        "1",
    ];
    // A run.
    let out = out_dir("cluster-ok");
    let child = Command::new(binary())
        .arg("bench")
        .arg(thesis())
        .args(small)
        .args(["--frames", "10", "--json", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id();
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = last_json(&o.stdout);
    assert!(
        v["environment"]
            .as_str()
            .unwrap_or_default()
            .starts_with("emulated cluster"),
        "{v}"
    );
    assert_eq!(leftovers(pid), Vec::<String>::new(), "after a run");

    // A failure: a run that cannot finish in time.
    let child = Command::new(binary())
        .arg("bench")
        .arg(thesis())
        .args(small)
        .args(["--frames", "10000000", "--timeout", "1", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id();
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success(), "a timed-out run fails");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did not finish"), "{err}");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "after a failure");

    // An interrupt while frames are flowing.
    let mut child = Command::new(binary())
        .arg("bench")
        .arg(thesis())
        .args(small)
        .args(["--frames", "10000000", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id();
    let t0 = Instant::now();
    while !cluster_up(pid) && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cluster_up(pid), "the cluster came up");
    std::thread::sleep(Duration::from_millis(800));
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "bench did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "an interrupted bench fails");
    assert_eq!(leftovers(pid), Vec::<String>::new(), "after an interrupt");
    let _ = std::fs::remove_dir_all(&out);
}
