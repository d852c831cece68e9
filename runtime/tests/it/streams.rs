//! Several sources in one pipeline: each stream's outputs equal those of
//! the same source run alone, in process and split over loopback, and a
//! slow stream does not hold back the others.

use std::path::{Path, PathBuf};

use crate::support::{repo_root, run_json};

/// Three colour cameras of different sizes.
const CAMERAS: [&str; 3] = [
    "{ synthetic: { width: 200, height: 120, channels: 3, frames: 12, seed: 3 } }",
    "{ synthetic: { width: 96, height: 64, channels: 3, frames: 9, seed: 4 } }",
    "{ synthetic: { width: 64, height: 80, channels: 3, frames: 15, seed: 5 } }",
];

/// A spec with `sources` (YAML after `sources:` or `source:`) through gray,
/// blur, Sobel and a 3x3 convolution, on two nodes.
fn spec(dir: &Path, name: &str, sources: &str) -> PathBuf {
    let text = format!(
        "name: {name}\n{sources}\nstages:\n\
         \x20 - {{ id: gray, op: gray, order: bgr }}\n\
         \x20 - {{ id: blur, op: gaussian_blur, kernel: 5 }}\n\
         \x20 - {{ id: edges, op: sobel, mode: magnitude }}\n\
         \x20 - {{ id: conv, op: conv2d, kernel: 3, out_channels: 2, weights: {{ random: {{ seed: 1 }} }} }}\n\
         sink: {{ stats: {{}} }}\n\
         nodes:\n\
         \x20 edge: {{ letter: E, device: cpu }}\n\
         \x20 server: {{ letter: S, device: cpu }}\n\
         placement: SSSSS\n"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamfuse-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

#[test]
fn each_streams_digest_equals_its_source_run_alone() {
    let dir = temp_dir("streams");
    let list: String = CAMERAS.iter().map(|c| format!("\n  - {c}")).collect();
    let all = spec(&dir, "three", &format!("sources:{list}"));
    let alone: Vec<String> = CAMERAS
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let r = run_json(
                &spec(&dir, &format!("alone{k}"), &format!("source: {c}")),
                &[],
            );
            let d = r["output_digest"].as_str().unwrap_or_default().to_owned();
            assert!(d.starts_with("xxh3-128:"), "{r}");
            d
        })
        .collect();
    assert!(alone[0] != alone[1] && alone[1] != alone[2], "{alone:?}");
    let frames = [12, 9, 15];
    for (how, extra) in [
        ("in process, fused", vec!["--fusion", "kernel"]),
        ("in process, unfused", vec!["--fusion", "off"]),
        (
            "split over loopback",
            vec!["--placement", "EESSS", "--fusion", "kernel", "--local"],
        ),
        (
            "one process per stage",
            vec!["--placement", "EEESS", "--fusion", "off", "--local"],
        ),
    ] {
        let r = run_json(&all, &extra);
        assert_eq!(r["frames"], 36, "{how}: {r}");
        let streams = r["streams"].as_array().cloned().unwrap_or_default();
        assert_eq!(streams.len(), 3, "{how}: {r}");
        for (k, s) in streams.iter().enumerate() {
            assert_eq!(s["stream_id"], k, "{how}: {s}");
            assert_eq!(s["frames"], frames[k], "{how}: {s}");
            assert_eq!(s["output_digest"], alone[k].as_str(), "{how}: stream {k}");
        }
        let run_digest = r["output_digest"].as_str().unwrap_or_default();
        assert!(
            run_digest.starts_with("xxh3-128:") && !alone.iter().any(|d| d == run_digest),
            "{how}: {r}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_slow_stream_does_not_hold_back_the_others() {
    let dir = temp_dir("slow-stream");
    // Stream 0 is paced at 20 frames/s (1 s for its 20 frames); streams 1
    // and 2 are not paced and have 60 small frames each.
    let slow =
        "{ synthetic: { width: 64, height: 48, channels: 3, frames: 20, seed: 1, fps: 20 } }";
    let fast = |seed| {
        format!(
            "{{ synthetic: {{ width: 48, height: 32, channels: 3, frames: 60, seed: {seed} }} }}"
        )
    };
    let s = spec(
        &dir,
        "slow",
        &format!("sources:\n  - {slow}\n  - {}\n  - {}", fast(2), fast(3)),
    );
    for extra in [vec![], vec!["--placement", "ESSSS", "--local"]] {
        let r = run_json(&s, &extra);
        let streams = r["streams"].as_array().cloned().unwrap_or_default();
        assert_eq!(streams.len(), 3, "{r}");
        let fps = |k: usize| streams[k]["fps"].as_f64().unwrap_or(0.0);
        assert!(fps(0) < 25.0, "the slow stream keeps its pace: {r}");
        // Held back to the slow stream's pace, 60 frames would take 3 s
        // (20 fps); on their own they take milliseconds.
        for k in [1, 2] {
            assert_eq!(streams[k]["frames"], 60, "{r}");
            assert!(
                fps(k) > 100.0,
                "{extra:?}: stream {k} at {} fps: {r}",
                fps(k)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cameras_example_runs_every_stream() {
    let r = run_json(
        &repo_root().join("examples/cameras.yaml"),
        &["--frames", "4"],
    );
    let streams = r["streams"].as_array().cloned().unwrap_or_default();
    assert_eq!(streams.len(), 3, "{r}");
    assert!(streams.iter().all(|s| s["frames"] == 4), "{r}");
}
