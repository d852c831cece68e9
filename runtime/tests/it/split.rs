//! The split layout: segments as separate processes streaming frames over
//! gRPC on loopback, compared with the in-process run; a middle segment
//! killed and restarted; a slow sink.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{binary, free_port, last_json, metric, repo_root, scrape};
use serde_json::Value;

fn thesis() -> PathBuf {
    repo_root().join("examples/thesis.yaml")
}

fn run(extra: &[&str]) -> Value {
    let out = Command::new(binary())
        .arg("run")
        .arg(thesis())
        .args(extra)
        .arg("--json")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "run {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out.stdout)
}

#[test]
fn every_placement_and_fusion_mode_split_gives_the_in_process_digest() {
    let common = ["--frames", "16", "--size", "160x120", "--threads", "1"];
    let reference = run(&common);
    let digest = reference["output_digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(digest.starts_with("xxh3-128:"), "{reference}");
    for placement in ["SSSS", "ESSS", "EESS", "EEES", "EEEE"] {
        for fusion in ["off", "chain", "kernel"] {
            let mut args = common.to_vec();
            args.extend(["--placement", placement, "--fusion", fusion, "--local"]);
            let r = run(&args);
            assert_eq!(r["frames"], 16, "{placement} {fusion}: {r}");
            assert_eq!(
                r["output_digest"],
                digest.as_str(),
                "{placement} {fusion}: {r}"
            );
            if fusion == "off" {
                assert_eq!(r["segments"], 4, "{r}");
            }
        }
    }
}

/// One `serve --once` process of the 4-segment split (fusion off).
fn segment(k: usize, ports: &[u16], metrics: &[u16], frames: &str, extra: &[&str]) -> Child {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg(thesis())
        .args(["--frames", frames, "--size", "320x240", "--threads", "1"])
        .args(["--fusion", "off", "--segment", &k.to_string(), "--once"])
        .args(["--listen", &format!("127.0.0.1:{}", ports[k])])
        .args(["--metrics", &format!("127.0.0.1:{}", metrics[k])])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if k + 1 < ports.len() {
        cmd.args(["--next", &format!("127.0.0.1:{}", ports[k + 1])]);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("start segment {k}: {e}"))
}

fn sink_frames(metrics_port: u16) -> f64 {
    metric(&scrape(metrics_port), "streamfuse_frames_out_total").unwrap_or(-1.0)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills (or terminates) segment 1 of 4 at about half the frames, restarts
/// it as a supervisor would, and checks the sink got every frame once, in
/// order, with the no-fault digest. Returns the recovery time.
fn fault_and_recover(signal: &str) -> Duration {
    let _quiet = crate::support::quiet();
    const FRAMES: f64 = 300.0;
    let frames = "300";
    let reference = run(&["--frames", frames, "--size", "320x240", "--threads", "1"]);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let metrics: Vec<u16> = (0..4).map(|_| free_port()).collect();
    // The sink is slowed a little so the run lasts long enough to cut it.
    let slow = ["--delay-ms", "3"];
    let mut procs: Vec<Child> = (0..4)
        .map(|k| {
            segment(
                k,
                &ports,
                &metrics,
                frames,
                if k == 3 { &slow } else { &[] },
            )
        })
        .collect();
    wait_until("half the frames", Duration::from_secs(60), || {
        sink_frames(metrics[3]) >= FRAMES / 2.0
    });
    let pid = procs[1].id().to_string();
    let st = Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(st.success());
    let status = procs[1].wait().unwrap_or_else(|e| panic!("{e}"));
    if signal == "-TERM" {
        assert!(
            status.success(),
            "a terminated segment drains and exits 0: {status}"
        );
    }
    // Frames already past the killed segment still reach the sink: wait
    // until it has taken them all (no change for 300 ms).
    let mut before = sink_frames(metrics[3]);
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(10));
        let now = sink_frames(metrics[3]);
        if now != before {
            before = now;
            still = Instant::now();
        }
    }
    assert!(before < FRAMES, "the run ended before the fault");
    let restarted = Instant::now();
    procs[1] = segment(1, &ports, &metrics, frames, &[]);
    wait_until(
        "the first frame after the restart",
        Duration::from_secs(30),
        || sink_frames(metrics[3]) > before,
    );
    let recovery = restarted.elapsed();
    let mut outs = Vec::new();
    for (k, p) in procs.into_iter().enumerate() {
        let out = p.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "segment {k}: {}", out.status);
        outs.push(last_json(&out.stdout));
    }
    let sink = &outs[3]["sink"];
    assert_eq!(
        sink["latencies_ns"].as_array().map(Vec::len),
        Some(300),
        "the sink saw every frame once"
    );
    assert_eq!(sink["digest"], reference["output_digest"]);
    for (k, o) in outs.iter().enumerate() {
        assert_eq!(o["frames_dropped"], 0, "segment {k}: {o}");
    }
    assert!(outs[0]["reconnects"].as_u64() >= Some(1), "{}", outs[0]);
    eprintln!(
        "{signal}: recovery {:.0} ms from restart to first frame through; replays {}, duplicates dropped {}",
        recovery.as_secs_f64() * 1e3,
        outs[0]["replays"],
        outs[2]["duplicates_dropped"]
    );
    recovery
}

#[test]
fn a_middle_segment_killed_and_restarted_loses_no_frame() {
    let r = fault_and_recover("-KILL");
    assert!(r < Duration::from_secs(2), "recovery took {r:?}");
}

#[test]
fn a_terminated_middle_segment_drains_and_its_replacement_resumes() {
    let r = fault_and_recover("-TERM");
    assert!(r < Duration::from_secs(2), "recovery took {r:?}");
}

#[test]
fn a_slow_sink_slows_the_source_and_frames_in_flight_stay_bounded() {
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let metrics: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let slow = ["--delay-ms", "20"];
    let procs: Vec<Child> = (0..4)
        .map(|k| segment(k, &ports, &metrics, "100", if k == 3 { &slow } else { &[] }))
        .collect();
    // The most frames a sender keeps for replay at this frame size.
    let unacked = streamfuse::transport::Limits::for_frame(320 * 240 * 4).max_unacked as f64;
    let mut worst = 0.0f64;
    let t0 = Instant::now();
    let mut samples = 0;
    while t0.elapsed() < Duration::from_secs(60) {
        let src = scrape(metrics[0]);
        let sink = scrape(metrics[3]);
        let (Some(made), Some(done)) = (
            metric(&src, "streamfuse_frames_in_total"),
            metric(&sink, "streamfuse_frames_out_total"),
        ) else {
            if samples > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        samples += 1;
        if let Some(u) = metric(&src, "streamfuse_unacked_frames") {
            assert!(
                u <= unacked,
                "source keeps {u} unacked frames (bound {unacked})"
            );
        }
        worst = worst.max(made - done);
        if done >= 100.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in procs {
        let out = p.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success());
    }
    assert!(samples > 10, "too few samples ({samples})");
    // The source may run ahead of the sink by what its process holds (its
    // inbox, its worker's frame, its outgoing queue) plus the source
    // link's unacked bound (checked above), and a few frames of skew
    // between the two scrapes.
    let q = streamfuse::segment::serve::queue_frames(320 * 240 * 4) as f64;
    let bound = 2.0 * q + 1.0 + unacked + 3.0;
    assert!(
        worst <= bound,
        "{worst} frames between source and sink (bound {bound})"
    );
    eprintln!("at most {worst} frames between source and slow sink");
}

/// `report` without what depends on timing (rates, latencies, compute and
/// link times): what an in-process run and a split run of the same
/// segments must agree on exactly.
fn structural(mut report: Value) -> Value {
    let Some(o) = report.as_object_mut() else {
        panic!("report is not an object: {report}");
    };
    for k in ["fps", "steady_fps", "latency_ms", "ccr", "elapsed_s"] {
        assert!(o.remove(k).is_some(), "report lacks `{k}`");
    }
    for s in o
        .get_mut("streams")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(s) = s.as_object_mut() {
            s.remove("fps");
            s.remove("latency_ms");
        }
    }
    for key in ["groups", "links"] {
        for g in o
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(g) = g.as_object_mut() {
                assert!(g.remove("mean_ms").is_some(), "{key} entry lacks mean_ms");
            }
        }
    }
    report
}

#[test]
fn the_same_segments_in_process_and_served_give_the_same_report() {
    // Segments run the one frame loop either way: frames, streams,
    // digests, groups (stages, kernels, segments, nodes) and links (which
    // segments, bytes per frame) are equal; only times differ.
    for (placement, fusion) in [("EESS", "kernel"), ("ESSS", "off"), ("EEEE", "chain")] {
        let common = [
            "--frames",
            "12",
            "--size",
            "96x64",
            "--threads",
            "1",
            "--placement",
            placement,
            "--fusion",
            fusion,
        ];
        let inproc = run(&common);
        let mut args = common.to_vec();
        args.push("--local");
        let served = run(&args);
        assert_eq!(inproc["frames"], 12, "{inproc}");
        assert!(
            inproc["links"].as_array().is_some_and(|l| !l.is_empty()) || inproc["segments"] == 1,
            "{inproc}"
        );
        assert_eq!(
            structural(inproc),
            structural(served),
            "{placement} {fusion}: in-process and served reports differ"
        );
    }
}
