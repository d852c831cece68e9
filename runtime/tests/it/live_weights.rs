//! Live weight updates while 1000 frames flow: in process (a watched
//! weights file) and split over loopback (`streamfuse update-weights`).
//! Every frame arrives once; frames before the reported `seq` equal a run
//! with only the old weights, frames from it on a run with only the new
//! ones; refused updates leave the stream untouched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{values, write_npy};
use serde_json::Value;

/// The tests pace their sources; running them one at a time keeps their
/// latencies their own.
static SERIAL: Mutex<()> = Mutex::new(());

const FRAMES: usize = 1000;
const WEIGHTS: [u64; 4] = [4, 2, 3, 3];
/// Output frame: 4 x 32 x 48 f32.
const OUT_LEN: usize = 4 * 32 * 48;

fn spec(dir: &Path, name: &str, weights: &str, out: &str, fusion: &str) -> PathBuf {
    spec_paced(dir, name, weights, out, fusion, Some(400))
}

/// [`spec`] with the source paced at `fps`, or as fast as it goes (`None`).
fn spec_paced(
    dir: &Path,
    name: &str,
    weights: &str,
    out: &str,
    fusion: &str,
    fps: Option<u32>,
) -> PathBuf {
    let pace = fps.map(|f| format!(", fps: {f}")).unwrap_or_default();
    let text = format!(
        "name: live\n\
         source: {{ synthetic: {{ width: 96, height: 64, channels: 2, frames: {FRAMES}, seed: 5{pace} }} }}\n\
         stages:\n  \
           - {{ id: conv, op: conv2d, kernel: 3, padding: 1, out_channels: 4, weights: {{ npy: {weights} }}, bias: {{ npy: bias.npy }} }}\n  \
           - {{ id: relu, op: relu }}\n  \
           - {{ id: pool, op: maxpool, size: 2 }}\n\
         sink: {{ npy: {{ path: {out} }} }}\n\
         fusion: {fusion}\n"
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let n = WEIGHTS.iter().product::<u64>() as usize;
    write_npy(&d.path().join("a.npy"), &WEIGHTS, &values(n, 11, 0.4));
    write_npy(&d.path().join("b.npy"), &WEIGHTS, &values(n, 12, 0.4));
    write_npy(&d.path().join("bias.npy"), &[4], &values(4, 13, 0.1));
    d
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_streamfuse"));
    c.env("RUST_LOG", "warn");
    c
}

fn ok(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
}

/// The frames of a stacked `[N, C, H, W]` output file.
fn frames(path: &Path) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(npy.shape(), &[FRAMES as u64, 4, 32, 48][..]);
    let v = npy.into_vec::<f32>().unwrap_or_else(|e| panic!("{e}"));
    v.chunks_exact(OUT_LEN).map(<[f32]>::to_vec).collect()
}

/// The outputs of runs with only the old (`a.npy`) and only the new
/// (`b.npy`) weights, and the old run's digest.
fn references(d: &Path) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, String) {
    let mut digest = String::new();
    let mut outs = Vec::new();
    for w in ["a", "b"] {
        // Unpaced: the outputs do not depend on the pace.
        let s = spec_paced(
            d,
            &format!("{w}.yaml"),
            &format!("{w}.npy"),
            &format!("{w}-out.npy"),
            "kernel",
            None,
        );
        let r = ok(
            &bin()
                .arg("run")
                .arg(&s)
                .arg("--json")
                .output()
                .unwrap_or_else(|e| panic!("{e}")),
            w,
        );
        assert_eq!(r["frames"], FRAMES as u64, "{r}");
        if w == "a" {
            digest = r["output_digest"].as_str().unwrap_or_default().to_owned();
        }
        outs.push(frames(&d.join(format!("{w}-out.npy"))));
    }
    let b = outs.pop().unwrap_or_default();
    let a = outs.pop().unwrap_or_default();
    (a, b, digest)
}

/// Every frame before `seq` equals the old run's, every frame from it on
/// the new run's (and the two runs differ there, so the check can fail).
fn assert_split_at(got: &[Vec<f32>], old: &[Vec<f32>], new: &[Vec<f32>], seq: usize) {
    assert_eq!(got.len(), FRAMES);
    assert!(seq > 0 && seq < FRAMES, "swap at seq {seq}");
    assert_ne!(
        old[seq], new[seq],
        "the two weight sets give the same output"
    );
    assert_ne!(old[seq - 1], new[seq - 1]);
    for (k, g) in got.iter().enumerate() {
        let want = if k < seq { &old[k] } else { &new[k] };
        assert!(
            g == want,
            "frame {k} (swap at {seq}) used the wrong weights"
        );
    }
}

/// Replaces `target` atomically (write, then rename), as a deployment would.
fn replace(target: &Path, from: &Path) {
    let tmp = target.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, target).unwrap_or_else(|e| panic!("{e}"));
}

/// Starts an in-process run whose conv weights are `w.npy` (the old
/// weights, to begin with), watched.
fn start_watched(dir: &Path) -> Child {
    std::fs::copy(dir.join("a.npy"), dir.join("w.npy")).unwrap_or_else(|e| panic!("{e}"));
    start_run(dir)
}

/// Starts an in-process run whose conv weights are `w.npy` as it is now,
/// watched.
fn start_run(dir: &Path) -> Child {
    let s = spec(
        dir,
        "watch.yaml",
        "{ path: w.npy, watch: true }",
        "out.npy",
        "kernel",
    );
    bin()
        .arg("run")
        .arg(s)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The report of a run started with [`start_watched`].
fn finish(child: Child) -> Value {
    ok(
        &child.wait_with_output().unwrap_or_else(|e| panic!("{e}")),
        "watched run",
    )
}

/// The report `r` of a watched run in `dir` has every frame, one update
/// of conv to version 2 and none refused, and its output switches from
/// `old` to `new` at that update's frame. Returns the updates.
fn assert_one_swap(r: &Value, dir: &Path, old: &[Vec<f32>], new: &[Vec<f32>]) -> Vec<Value> {
    assert_eq!(r["frames"], FRAMES as u64, "{r}");
    assert_eq!(r["weight_updates_refused"], serde_json::json!([]), "{r}");
    let ups = r["weight_updates"].as_array().cloned().unwrap_or_default();
    assert_eq!(ups.len(), 1, "{r}");
    assert_eq!(ups[0]["stage"], "conv");
    assert_eq!(ups[0]["version"], 2);
    let seq = ups[0]["first_seq"].as_u64().unwrap_or(0) as usize;
    assert_split_at(&frames(&dir.join("out.npy")), old, new, seq);
    ups
}

#[test]
fn a_watched_weights_file_swaps_between_two_frames_in_process() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _quiet = crate::support::quiet();
    let d = setup();
    let dir = d.path();
    let (old, new, _) = references(dir);
    let child = start_watched(dir);
    // At 400 fps, about frame 480.
    std::thread::sleep(Duration::from_millis(1200));
    replace(&dir.join("w.npy"), &dir.join("b.npy"));
    let r = finish(child);
    let ups = assert_one_swap(&r, dir, &old, &new);
    // Latency around the swap: no pause.
    let around = ups[0]["p99_around_ms"].as_f64().unwrap_or(f64::MAX);
    let p99 = r["latency_ms"]["p99"].as_f64().unwrap_or(0.0);
    assert!(
        no_pause(around, p99),
        "p99 around the swap {around} ms, run p99 {p99} ms"
    );
}

/// Projects `from` as `w.npy` in `dir` the way the kubelet projects a
/// ConfigMap key: `w.npy` links to `..data/w.npy`, and `..data` to a
/// directory of this version (`version`), swapped in by renaming a new
/// `..data` link over the old one, then the old version's directory removed.
#[cfg(unix)]
fn project(dir: &Path, from: &Path, version: u32) {
    use std::os::unix::fs::symlink;
    let versioned = dir.join(format!("..2026_11_24_{version}"));
    std::fs::create_dir(&versioned).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(from, versioned.join("w.npy")).unwrap_or_else(|e| panic!("{e}"));
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    symlink(versioned.file_name().unwrap_or_default(), &tmp).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, dir.join("..data")).unwrap_or_else(|e| panic!("{e}"));
    if !dir.join("w.npy").exists() {
        symlink("..data/w.npy", dir.join("w.npy")).unwrap_or_else(|e| panic!("{e}"));
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// `streamfuse manifests` ships a watched weights file in the ConfigMap;
/// applying a new ConfigMap makes the kubelet swap the projected file.
/// The watcher takes that swap as a new version, between two frames.
#[cfg(unix)]
#[test]
fn a_configmap_style_swap_of_a_watched_file_swaps_between_two_frames() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = setup();
    let dir = d.path();
    let (old, new, _) = references(dir);
    project(dir, &dir.join("a.npy"), 1);
    let child = start_run(dir);
    std::thread::sleep(Duration::from_millis(1200));
    project(dir, &dir.join("b.npy"), 2);
    assert_one_swap(&finish(child), dir, &old, &new);
}

#[test]
fn corrupt_weights_files_are_refused_and_the_stream_is_untouched() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = setup();
    let dir = d.path();
    let (_, _, digest) = references(dir);
    // A NaN, and a file cut short.
    let n = WEIGHTS.iter().product::<u64>() as usize;
    let mut w = values(n, 12, 0.4);
    w[7] = f32::NAN;
    write_npy(&dir.join("nan.npy"), &WEIGHTS, &w);
    let full = std::fs::read(dir.join("b.npy")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("cut.npy"), &full[..full.len() - 40]).unwrap_or_else(|e| panic!("{e}"));
    let child = start_watched(dir);
    std::thread::sleep(Duration::from_millis(800));
    replace(&dir.join("w.npy"), &dir.join("nan.npy"));
    std::thread::sleep(Duration::from_millis(500));
    replace(&dir.join("w.npy"), &dir.join("cut.npy"));
    let r = finish(child);
    assert_eq!(r["frames"], FRAMES as u64, "{r}");
    assert_eq!(r["weight_updates"], serde_json::json!([]), "{r}");
    let refused: Vec<String> = r["weight_updates_refused"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(refused.len(), 2, "{r}");
    assert!(
        refused[0].contains("non-finite value at index 7"),
        "{refused:?}"
    );
    assert!(refused[1].contains("w.npy"), "{refused:?}");
    assert_eq!(r["output_digest"], digest.as_str(), "the stream changed");
}

fn port() -> u16 {
    streamfuse::launch::ports::free_loopback_port().unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn update(port: u16, stage: &str, weights: &Path) -> Output {
    bin()
        .args([
            "update-weights",
            &format!("127.0.0.1:{port}"),
            "--stage",
            stage,
            "--json",
        ])
        .arg("--weights")
        .arg(weights)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The p99 latency of the frames around a swap, `around` ms, shows no
/// pause next to the run's p99, `all` ms: within 2x of it, or within
/// 10 ms of it (4 frames at the tests' 400 fps). On a shared 2-vCPU test
/// machine one frame delayed by the scheduler is enough to set the p99 of
/// 100 frames: single frames 2.5, 5.2 and 7.8 ms late were seen next to a
/// run p99 of 0.4-1.5 ms, with the swap itself doing nothing on the frame
/// loop but replace its groups. A swap that loaded or prepared weights on
/// the frame loop, as the prototypes' 26-39 s reloads did, stalls longer.
fn no_pause(around: f64, all: f64) -> bool {
    around <= (2.0 * all).max(all + 10.0)
}

fn p99_ms(ns: &[u64]) -> f64 {
    let mut v = ns.to_vec();
    v.sort_unstable();
    let k = ((0.99 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[k - 1] as f64 / 1e6
}

#[test]
fn update_weights_swaps_a_split_pipeline_between_two_frames() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _quiet = crate::support::quiet();
    let d = setup();
    let dir = d.path();
    let (old, new, _) = references(dir);
    let n = WEIGHTS.iter().product::<u64>() as usize;
    write_npy(
        &dir.join("wide.npy"),
        &[4, 2, 5, 5],
        &values(n * 25 / 9, 3, 0.1),
    );
    // Fusion off: segment 0 the source, 1 conv, 2 relu, 3 pool and the sink.
    // Paced at 150 fps (6.7 s): room for three update calls, each a new
    // process, on a loaded machine.
    let s = spec_paced(dir, "split.yaml", "a.npy", "out.npy", "off", Some(150));
    let ports: Vec<u16> = (0..4).map(|_| port()).collect();
    let mut kids: Vec<Child> = (0..4)
        .map(|k| {
            let mut c = bin();
            c.arg("serve").arg(&s);
            c.args(["--segment", &k.to_string(), "--once", "--threads", "1"]);
            c.args(["--listen", &format!("127.0.0.1:{}", ports[k])]);
            c.args(["--control", "loopback"]);
            if k + 1 < 4 {
                c.args(["--next", &format!("127.0.0.1:{}", ports[k + 1])]);
            }
            c.stdout(Stdio::piped()).stderr(Stdio::inherit());
            c.spawn().unwrap_or_else(|e| panic!("segment {k}: {e}"))
        })
        .collect();
    crate::support::wait_listening(&ports);
    // Into the stream: about frame 75.
    std::thread::sleep(Duration::from_millis(500));
    // Refused: the wrong shape, and a segment that does not run the stage.
    let bad = update(ports[1], "conv", &dir.join("wide.npy"));
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{e}");
    assert!(
        e.contains("refused the update") && e.contains("the stage needs [4, 2, 3, 3]"),
        "{e}"
    );
    let elsewhere = update(ports[2], "conv", &dir.join("b.npy"));
    let e = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(
        !elsewhere.status.success() && e.contains("runs in segment 1"),
        "{e}"
    );
    // The update.
    let reply = ok(
        &update(ports[1], "conv", &dir.join("b.npy")),
        "update-weights",
    );
    assert_eq!(reply["applied"], true, "{reply}");
    assert_eq!(reply["version"], 2, "{reply}");
    let seq = reply["first_seq"].as_u64().unwrap_or(0) as usize;
    let mut outcomes = Vec::new();
    for (k, c) in kids.drain(..).enumerate() {
        outcomes.push(ok(
            &c.wait_with_output().unwrap_or_else(|e| panic!("{e}")),
            &format!("segment {k}"),
        ));
    }
    let conv = &outcomes[1];
    assert_eq!(conv["weight_updates"][0]["first_seq"], seq as u64, "{conv}");
    let sink = &outcomes[3]["sink"];
    let lat: Vec<u64> = sink["streams"][0]["latencies_ns"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert_eq!(lat.len(), FRAMES, "every frame reached the sink once");
    for o in &outcomes {
        assert_eq!(o["frames_dropped"], 0, "{o}");
    }
    assert_split_at(&frames(&dir.join("out.npy")), &old, &new, seq);
    let around = p99_ms(&lat[seq.saturating_sub(50)..(seq + 50).min(FRAMES)]);
    let all = p99_ms(&lat);
    assert!(
        no_pause(around, all),
        "p99 around the swap {around} ms, run p99 {all} ms"
    );
}

/// This machine's address on its default route (not a loopback one).
fn lan_ip() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("{e}"));
    // No packet is sent: connecting a UDP socket only picks the route.
    s.connect("10.255.255.254:9")
        .unwrap_or_else(|e| panic!("this test needs a non-loopback route: {e}"));
    let ip = s.local_addr().unwrap_or_else(|e| panic!("{e}")).ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address: {ip}"
    );
    ip
}

#[test]
fn control_calls_are_refused_unless_allowed_and_then_only_from_loopback() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let w = dir.path().join("w.npy");
    write_npy(&w, &[1, 1, 1, 1], &[0.5]);
    let thesis = crate::support::repo_root().join("examples/thesis.yaml");
    let serve = |listen: String, control: Option<&str>| {
        let mut c = bin();
        c.arg("serve").arg(&thesis);
        c.args(["--size", "64x48", "--placement", "ESSS", "--segment", "1"]);
        c.args(["--listen", &listen]);
        if let Some(a) = control {
            c.args(["--control", a]);
        }
        c.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn().unwrap_or_else(|e| panic!("{e}"))
    };
    let (off_port, lb_port) = (port(), port());
    let mut kids = [
        serve(format!("127.0.0.1:{off_port}"), None),
        serve(format!("0.0.0.0:{lb_port}"), Some("loopback")),
    ];
    crate::support::wait_listening(&[off_port, lb_port]);
    let update_at = |addr: String| {
        bin()
            .args([
                "update-weights",
                &addr,
                "--stage",
                "conv",
                "--json",
                "--weights",
            ])
            .arg(&w)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // No --control: refused even from loopback.
    let off = update_at(format!("127.0.0.1:{off_port}"));
    let e = String::from_utf8_lossy(&off.stderr);
    assert!(!off.status.success(), "{e}");
    assert!(
        e.contains("control calls are off") && e.contains("--control loopback"),
        "{e}"
    );
    // --control loopback, reached on the machine's LAN address: refused.
    let lan = update_at(format!("{}:{lb_port}", lan_ip()));
    let e = String::from_utf8_lossy(&lan.stderr);
    assert!(!lan.status.success(), "{e}");
    assert!(
        e.contains("UpdateWeights from") && e.contains("this host only"),
        "{e}"
    );
    // From loopback the call is admitted: the server itself then judges
    // the weights (here: the wrong shape, refused as such).
    let lo = update_at(format!("127.0.0.1:{lb_port}"));
    let e = String::from_utf8_lossy(&lo.stderr);
    assert!(!lo.status.success(), "{e}");
    assert!(
        !e.contains("refused: control") && e.contains("the stage needs"),
        "{e}"
    );
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
}
