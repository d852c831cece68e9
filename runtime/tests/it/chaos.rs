//! Exactly once across process loss: segments run as `serve` processes on
//! loopback, killed with SIGKILL and restarted as a supervisor would; the
//! sink's output must equal the in-process run's, byte for byte, with the
//! same digest, every frame once.
//!
//! - the sink's own process killed mid-stream (npy sink; stats sink with a
//!   journal): the restarted sink resumes its file and its record;
//! - a seeded schedule of kills over every segment, source and sink
//!   included, of a four-process split.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{binary, free_port, heavy, last_json, metric, repo_root, run_json, scrape};
use serde_json::Value;

/// A spec in `dir`: the thesis pipeline at 160x120, `frames` frames paced
/// at `fps`, with `sink`.
pub(crate) fn spec(dir: &Path, frames: u64, fps: u64, sink: &str) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("examples/thesis.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "source: { synthetic: { width: 1280, height: 720, channels: 1, frames: 1000, seed: 7 } }",
            &format!(
                "source: {{ synthetic: {{ width: 160, height: 120, channels: 1, frames: {frames}, seed: 7, fps: {fps} }} }}"
            ),
        )
        .replace("sink: { stats: {} }", &format!("sink: {sink}"));
    assert!(text.contains(&format!("frames: {frames}")), "{text}");
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// The processes of a split, restarted as a supervisor would.
struct Split {
    spec: PathBuf,
    ports: Vec<u16>,
    metrics: Vec<u16>,
    extra: Vec<String>,
    sink_extra: Vec<String>,
    procs: Vec<Option<Child>>,
}

impl Split {
    fn new(spec: PathBuf, segments: usize, extra: &[&str], sink_extra: &[&str]) -> Self {
        let mut s = Self {
            spec,
            ports: (0..segments).map(|_| free_port()).collect(),
            metrics: (0..segments).map(|_| free_port()).collect(),
            extra: extra.iter().map(ToString::to_string).collect(),
            sink_extra: sink_extra.iter().map(ToString::to_string).collect(),
            procs: Vec::new(),
        };
        s.procs = (0..segments).map(|k| Some(s.start(k))).collect();
        s
    }

    fn start(&self, k: usize) -> Child {
        let n = self.ports.len();
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg(&self.spec)
            .args(["--threads", "1", "--segment", &k.to_string(), "--once"])
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[k])])
            .args(["--metrics", &format!("127.0.0.1:{}", self.metrics[k])])
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("STREAMFUSE_CHAOS_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if k + 1 < n {
            cmd.args(["--next", &format!("127.0.0.1:{}", self.ports[k + 1])]);
        } else {
            cmd.args(&self.sink_extra);
        }
        cmd.spawn()
            .unwrap_or_else(|e| panic!("start segment {k}: {e}"))
    }

    /// Whether segment `k`'s process is still running.
    fn running(&mut self, k: usize) -> bool {
        self.procs[k]
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits (at most a minute) until segment `k`, the sink, has taken
    /// `frames` frames.
    fn wait_for_sink(&self, k: usize, frames: f64) {
        let t0 = Instant::now();
        while metric(&scrape(self.metrics[k]), "streamfuse_frames_out_total").unwrap_or(0.0)
            < frames
        {
            assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Resident memory of segment `k`'s process, bytes (0 when gone).
    fn rss(&self, k: usize) -> u64 {
        let Some(c) = &self.procs[k] else { return 0 };
        std::fs::read_to_string(format!("/proc/{}/status", c.id()))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// SIGKILL to segment `k`, left down.
    fn kill(&mut self, k: usize) {
        if let Some(mut c) = self.procs[k].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new process for segment `k`.
    fn restart(&mut self, k: usize) {
        self.procs[k] = Some(self.start(k));
    }

    /// SIGKILL to segment `k`, then a new process in its place.
    fn kill_and_restart(&mut self, k: usize) {
        if let Some(mut c) = self.procs[k].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.procs[k] = Some(self.start(k));
    }

    /// Waits for every process; their outcomes (last JSON line). Each
    /// process's output is read as it exits (a sink's account is larger
    /// than a pipe holds).
    fn finish(mut self, limit: Duration) -> Vec<Value> {
        let (tx, rx) = std::sync::mpsc::channel();
        let n = self.procs.len();
        for (k, p) in self.procs.iter_mut().enumerate() {
            let Some(c) = p.take() else {
                panic!("segment {k} has no process")
            };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send((k, c.wait_with_output()));
            });
        }
        let mut outs = vec![Value::Null; n];
        let t0 = Instant::now();
        for _ in 0..n {
            let left = limit.saturating_sub(t0.elapsed());
            let (k, out) = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the segments did not finish within {limit:?}"));
            let out = out.unwrap_or_else(|e| panic!("segment {k}: {e}"));
            assert!(out.status.success(), "segment {k}: {}", out.status);
            outs[k] = last_json(&out.stdout);
        }
        outs
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The longest time between two consecutive arrivals at the sink, ms.
fn longest_gap_ms(sink: &Value) -> f64 {
    let mut t: Vec<u64> = sink["arrivals_ns"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    t.sort_unstable();
    t.windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .fold(0.0, f64::max)
}

fn assert_sink_equals_reference(sink: &Value, reference: &Value, frames: u64) {
    assert_eq!(
        sink["latencies_ns"].as_array().map(Vec::len),
        Some(frames as usize),
        "the sink's record holds every frame once"
    );
    assert_eq!(sink["digest"], reference["output_digest"], "{sink}");
}

fn sink_kill(sink: &str, journal: bool, output: Option<&str>) {
    let _heavy = heavy();
    const FRAMES: u64 = 600;
    let ref_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let reference = run_json(&spec(ref_dir.path(), FRAMES, 100_000, sink), &[]);
    // EESS: the conv on the edge, ReLU, pool and the sink on the server.
    let journal_path = dir.path().join("stats.journal").display().to_string();
    let sink_extra: &[&str] = if journal {
        &["--journal", &journal_path]
    } else {
        &[]
    };
    let mut split = Split::new(spec(dir.path(), FRAMES, 200, sink), 2, &[], sink_extra);
    split.wait_for_sink(1, FRAMES as f64 / 2.0);
    split.kill_and_restart(1);
    let outs = split.finish(Duration::from_secs(120));
    let sink = &outs[1]["sink"];
    assert_sink_equals_reference(sink, &reference, FRAMES);
    let resumed = sink["resumed_frames"].as_u64().unwrap_or(0);
    assert!(
        (FRAMES / 2..FRAMES).contains(&resumed),
        "the restarted sink read back what it had committed: {resumed}"
    );
    if let Some(out) = output {
        let (got, want) = (dir.path().join(out), ref_dir.path().join(out));
        if got.is_dir() {
            // Every file of the folder (the journal aside), byte for byte.
            let files = |d: &Path| -> Vec<(String, Vec<u8>)> {
                let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
                    .unwrap_or_else(|e| panic!("{e}"))
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .map(|n| {
                        let b = std::fs::read(d.join(&n)).unwrap_or_else(|e| panic!("{e}"));
                        (n, b)
                    })
                    .collect();
                v.sort();
                v
            };
            let (g, w) = (files(&got), files(&want));
            assert_eq!(g.len(), FRAMES as usize, "one file per frame");
            assert!(g == w, "{out} differs from the in-process run's");
        } else {
            let g = std::fs::read(&got).unwrap_or_else(|e| panic!("{e}"));
            let w = std::fs::read(&want).unwrap_or_else(|e| panic!("{e}"));
            assert!(g == w, "{out} differs from the in-process run's");
        }
    }
    eprintln!(
        "sink killed at ~{} frames: resumed {resumed}, replays upstream {}, longest gap between sink arrivals {:.0} ms",
        FRAMES / 2,
        outs[0]["replays"],
        longest_gap_ms(sink)
    );
}

#[test]
fn a_killed_npy_sink_resumes_its_file_and_equals_the_in_process_output() {
    sink_kill("{ npy: { path: out.npy } }", false, Some("out.npy"));
}

#[test]
fn a_killed_npy_folder_sink_resumes_and_equals_the_in_process_output() {
    sink_kill("{ npy: { dir: frames/ } }", false, Some("frames"));
}

#[cfg(feature = "opencv")]
#[test]
fn a_killed_image_folder_sink_resumes_and_equals_the_in_process_output() {
    sink_kill("{ images: { dir: frames/ } }", false, Some("frames"));
}

#[test]
fn a_killed_stats_sink_with_a_journal_reports_as_if_it_never_died() {
    sink_kill("{ stats: {} }", true, None);
}

/// splitmix64: a seeded schedule, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A chaos run: `kills` SIGKILLs over the segments of a four-process split
/// (every segment, source and sink included, at least once), each followed
/// by an immediate restart; returns (kills done, longest gap ms).
fn chaos(frames: u64, fps: u64, kills: usize, seed: u64, every_ms: (u64, u64)) -> (usize, f64) {
    let _heavy = heavy();
    const SEGMENTS: usize = 4;
    let ref_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sink = "{ npy: { path: out.npy } }";
    let reference = run_json(
        &spec(ref_dir.path(), frames, 100_000, sink),
        &["--fusion", "off"],
    );
    let mut split = Split::new(
        spec(dir.path(), frames, fps, sink),
        SEGMENTS,
        &["--fusion", "off"],
        &[],
    );
    let mut rng = Rng(seed);
    // Rounds over a seeded order of the segments: each is hit once per
    // round.
    let mut order: Vec<usize> = Vec::new();
    while order.len() < kills {
        let mut round: Vec<usize> = (0..SEGMENTS).collect();
        for i in (1..round.len()).rev() {
            round.swap(i, rng.below(i as u64 + 1) as usize);
        }
        order.extend(round);
    }
    let mut done = 0usize;
    let mut hit = [0usize; SEGMENTS];
    for &k in order.iter().take(kills) {
        let (lo, hi) = every_ms;
        std::thread::sleep(Duration::from_millis(lo + rng.below(hi - lo)));
        if !split.running(SEGMENTS - 1) {
            break;
        }
        if !split.running(k) {
            continue;
        }
        split.kill_and_restart(k);
        done += 1;
        hit[k] += 1;
    }
    let outs = split.finish(Duration::from_secs(180));
    let sink = &outs[SEGMENTS - 1]["sink"];
    assert_sink_equals_reference(sink, &reference, frames);
    let got = std::fs::read(dir.path().join("out.npy")).unwrap_or_else(|e| panic!("{e}"));
    let want = std::fs::read(ref_dir.path().join("out.npy")).unwrap_or_else(|e| panic!("{e}"));
    assert!(got == want, "out.npy differs from the in-process run's");
    for (k, o) in outs.iter().enumerate() {
        assert_eq!(o["frames_dropped"], 0, "segment {k}: {o}");
    }
    assert!(
        hit.iter().all(|&h| h > 0),
        "every segment killed at least once: {hit:?}"
    );
    let gap = longest_gap_ms(sink);
    eprintln!(
        "chaos: {frames} frames, {done} kills {hit:?} (source .. sink), lost 0, duplicated 0, longest gap between sink arrivals {gap:.0} ms"
    );
    (done, gap)
}

#[test]
fn seeded_kills_of_every_segment_lose_nothing_and_duplicate_nothing() {
    let (kills, gap) = chaos(3000, 300, 12, 0x5EED, (150, 400));
    assert!(
        kills >= 10,
        "only {kills} kills landed before the run ended"
    );
    assert!(
        gap < 2000.0,
        "a restart took {gap:.0} ms to the next frame at the sink"
    );
}

/// The long run BENCHMARKS.md records: `cargo test --profile ci -p
/// streamfuse --test it -- --ignored chaos_long --nocapture` (10,000
/// frames, 50 kills spread over the run).
#[test]
#[ignore = "long (about 75 s): the figures in BENCHMARKS.md"]
fn chaos_long() {
    let (kills, gap) = chaos(10_000, 150, 50, 0xC4A05, (800, 1500));
    assert!(kills >= 50, "only {kills} kills landed");
    eprintln!("long chaos: {kills} kills, worst outage {gap:.0} ms");
}

/// How much more memory a process upstream of a down segment may take
/// while it is down: its queues (inbox, worker, outbox: a few frames each)
/// and its link's unacknowledged frames fill up to their bounds, and stay
/// there.
const OUTAGE_GROWTH_BOUND: u64 = 64 << 20;

#[test]
fn a_30_s_sink_outage_leaves_upstream_memory_bounded() {
    // Heavy while its processes start; not over the outage itself,
    // where the segments upstream only wait (about 1 % of a CPU), nor the
    // short drain after it.
    let heavy = heavy();
    const FRAMES: u64 = 900;
    const SEGMENTS: usize = 4;
    let outage = Duration::from_secs(30);
    let ref_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sink = "{ npy: { path: out.npy } }";
    let big = |d: &Path, fps: u64| {
        let path = spec(d, FRAMES, fps, sink);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .replace("width: 160, height: 120", "width: 640, height: 480");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let reference = run_json(&big(ref_dir.path(), 100_000), &["--fusion", "off"]);
    let mut split = Split::new(big(dir.path(), 60), SEGMENTS, &["--fusion", "off"], &[]);
    split.wait_for_sink(SEGMENTS - 1, 60.0);
    let before: Vec<u64> = (0..SEGMENTS - 1).map(|k| split.rss(k)).collect();
    split.kill(SEGMENTS - 1);
    let down = Instant::now();
    drop(heavy);
    let mut peak = before.clone();
    let mut at_half = vec![0u64; SEGMENTS - 1];
    while down.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(250));
        for (k, p) in peak.iter_mut().enumerate() {
            let r = split.rss(k);
            assert!(r > 0, "segment {k} died during the outage");
            *p = (*p).max(r);
        }
        if down.elapsed() < outage / 2 {
            at_half.clone_from(&peak);
        }
    }
    split.restart(SEGMENTS - 1);
    let outs = split.finish(Duration::from_secs(180));
    let sink_out = &outs[SEGMENTS - 1]["sink"];
    assert_sink_equals_reference(sink_out, &reference, FRAMES);
    let got = std::fs::read(dir.path().join("out.npy")).unwrap_or_else(|e| panic!("{e}"));
    let want = std::fs::read(ref_dir.path().join("out.npy")).unwrap_or_else(|e| panic!("{e}"));
    assert!(got == want, "out.npy differs from the in-process run's");
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    for k in 0..SEGMENTS - 1 {
        eprintln!(
            "segment {k}: RSS {:.1} MiB before the outage, peak {:.1} MiB ({:.1} MiB at its half)",
            mib(before[k]),
            mib(peak[k]),
            mib(at_half[k])
        );
        assert!(
            peak[k] <= before[k] + OUTAGE_GROWTH_BOUND,
            "segment {k} grew by {:.1} MiB during the outage (bound {:.0} MiB)",
            mib(peak[k] - before[k]),
            mib(OUTAGE_GROWTH_BOUND)
        );
        // Bounded, not merely slow: no growth over the outage's second half.
        assert!(
            peak[k] <= at_half[k] + (8 << 20),
            "segment {k} kept growing: {:.1} MiB at half the outage, {:.1} MiB at its end",
            mib(at_half[k]),
            mib(peak[k])
        );
    }
}

/// The durable video sink (fourcc MPNG in .avi): killed mid-stream and
/// restarted, it appends to its file, which ends byte for byte the
/// in-process run's, and OpenCV decodes every frame of it.
#[cfg(feature = "opencv")]
#[test]
fn a_killed_video_sink_resumes_its_avi_and_equals_the_in_process_file() {
    let _heavy = heavy();
    use opencv::prelude::*;
    const FRAMES: u64 = 400;
    let sink = "{ video: { path: out.avi, fourcc: MPNG, fps: 30, scale: 255 } }";
    let ref_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let reference = run_json(&spec(ref_dir.path(), FRAMES, 100_000, sink), &[]);
    let mut split = Split::new(spec(dir.path(), FRAMES, 200, sink), 2, &[], &[]);
    split.wait_for_sink(1, FRAMES as f64 / 2.0);
    split.kill_and_restart(1);
    let outs = split.finish(Duration::from_secs(120));
    assert_sink_equals_reference(&outs[1]["sink"], &reference, FRAMES);
    assert!(outs[1]["sink"]["resumed_frames"].as_u64() > Some(0));
    let got = std::fs::read(dir.path().join("out.avi")).unwrap_or_else(|e| panic!("{e}"));
    let want = std::fs::read(ref_dir.path().join("out.avi")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !got.is_empty() && got == want,
        "out.avi differs from the in-process run's"
    );
    let mut cap = opencv::videoio::VideoCapture::from_file(
        dir.path().join("out.avi").to_str().unwrap_or_default(),
        opencv::videoio::CAP_ANY,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut decoded = 0u64;
    let mut m = opencv::core::Mat::default();
    while cap.read(&mut m).unwrap_or(false) && !m.empty() {
        decoded += 1;
    }
    assert_eq!(
        decoded, FRAMES,
        "OpenCV decodes every frame of the resumed file"
    );
}

/// The thesis pipeline at 160×120 with `source` and `sink`, in `dir`.
fn spec_with_source(dir: &Path, source: &str, sink: &str) -> PathBuf {
    let path = spec(dir, 1, 1, sink);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "source: { synthetic: { width: 160, height: 120, channels: 1, frames: 1, seed: 7, fps: 1 } }",
            &format!("source: {source}"),
        );
    assert!(text.contains(source), "{text}");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// The source's segment killed mid-stream and restarted: it asks its
/// downstream where the stream was delivered to and reads on from there
/// (`frames` frames of `source`, written into both folders by `setup`).
fn source_kill(source: &str, frames: u64, setup: impl Fn(&Path)) {
    let _heavy = heavy();
    let ref_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    setup(ref_dir.path());
    setup(dir.path());
    let sink = "{ npy: { path: out.npy } }";
    let reference = run_json(&spec_with_source(ref_dir.path(), source, sink), &[]);
    // The sink slowed so the run lasts long enough to cut it.
    let mut split = Split::new(
        spec_with_source(dir.path(), source, sink),
        2,
        &[],
        &["--delay-ms", "4"],
    );
    split.wait_for_sink(1, frames as f64 / 3.0);
    assert!(split.running(0), "the source segment ended before the kill");
    split.kill_and_restart(0);
    let outs = split.finish(Duration::from_secs(120));
    assert_sink_equals_reference(&outs[1]["sink"], &reference, frames);
    let got = std::fs::read(dir.path().join("out.npy")).unwrap_or_else(|e| panic!("{e}"));
    let want = std::fs::read(ref_dir.path().join("out.npy")).unwrap_or_else(|e| panic!("{e}"));
    assert!(got == want, "out.npy differs from the in-process run's");
    // The restarted source started past frame 0: it resumed, it did not
    // replay the whole file (the frames it sent, less the duplicates the
    // receiver dropped, are what was left).
    let resent = outs[0]["frames"].as_u64().unwrap_or(u64::MAX);
    assert!(
        resent < frames,
        "the restarted source re-read {resent} of {frames} frames"
    );
}

#[test]
fn a_killed_npy_source_segment_resumes_where_downstream_delivered() {
    const FRAMES: u64 = 300;
    source_kill("{ npy: { path: in.npy } }", FRAMES, |d| {
        let values: Vec<f32> = (0..FRAMES * 160 * 120)
            .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0)
            .collect();
        crate::common::write_npy(&d.join("in.npy"), &[FRAMES, 1, 120, 160], &values);
    });
}

#[cfg(feature = "opencv")]
#[test]
fn a_killed_video_source_segment_resumes_where_downstream_delivered() {
    const FRAMES: u64 = 300;
    source_kill("{ video: { path: in.avi } }", FRAMES, |d| {
        // The input video: the pipeline's output through the durable writer.
        let made = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = spec(
            made.path(),
            FRAMES,
            100_000,
            "{ video: { path: in.avi, fourcc: MPNG, fps: 30, scale: 255 } }",
        );
        run_json(&path, &[]);
        std::fs::copy(made.path().join("in.avi"), d.join("in.avi"))
            .unwrap_or_else(|e| panic!("{e}"));
    });
}
