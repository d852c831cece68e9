//! Real video and image files through the `streamfuse` binary (the
//! `opencv` feature): a generated FFV1 video through `examples/vision.yaml`
//! (gray → Gaussian blur → Sobel magnitude) into an FFV1 video, checked
//! frame by frame against OpenCV's own `cvtColor`, `GaussianBlur`, `Sobel`
//! and `magnitude` on the decoded input; an image folder round trip; and
//! the run-time errors (a frame of another size, a missing camera).
#![cfg(feature = "opencv")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use opencv::core::{self as cv, Mat, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, videoio};

const W: i32 = 320;
const H: i32 = 240;
const FRAMES: usize = 30;
/// `sink.video.scale` of examples/vision.yaml.
const SCALE: f64 = 64.0;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamfuse"))
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start streamfuse: {e}"))
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "streamfuse {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn s(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", p.display()))
}

/// Seeded 8-bit noise (a counter hash, no crate).
fn noise(seed: u64, i: u64) -> u8 {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x & 0xff) as u8
}

/// Frame `k`: a horizontal gradient, a bright rectangle and a dark disc
/// moving across it, and some noise; BGR.
fn synth_frame(k: usize) -> Mat {
    let mut m = Mat::new_rows_cols_with_default(H, W, cv::CV_8UC3, cv::Scalar::all(0.0))
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = m.data_bytes_mut().unwrap_or_else(|e| panic!("{e}"));
    let (rx, ry) = (20 + 7 * k as i32, 40 + 2 * k as i32);
    let (cx, cy) = (W - 40 - 5 * k as i32, 150 - (k as i32));
    for y in 0..H {
        for x in 0..W {
            let i = ((y * W + x) * 3) as usize;
            let mut px = [
                (x * 255 / W) as u8,
                (y * 255 / H) as u8,
                ((x + y) % 256) as u8,
            ];
            if (rx..rx + 60).contains(&x) && (ry..ry + 40).contains(&y) {
                px = [230, 240, 250];
            }
            if (x - cx).pow(2) + (y - cy).pow(2) < 25 * 25 {
                px = [20, 10, 60];
            }
            for (c, v) in px.iter().enumerate() {
                let n = noise(k as u64, (i + c) as u64) % 16;
                bytes[i + c] = v.saturating_add(n).saturating_sub(8);
            }
        }
    }
    m
}

fn write_video(path: &Path, frames: &[Mat]) {
    let fourcc = videoio::VideoWriter::fourcc('F', 'F', 'V', '1').unwrap_or_else(|e| panic!("{e}"));
    let mut w = videoio::VideoWriter::new(s(path), fourcc, 30.0, Size::new(W, H), true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        w.is_opened().unwrap_or(false),
        "cannot write {}",
        path.display()
    );
    for f in frames {
        w.write(f).unwrap_or_else(|e| panic!("{e}"));
    }
    w.release().unwrap_or_else(|e| panic!("{e}"));
}

fn read_video(path: &Path) -> Vec<Mat> {
    let mut cap = videoio::VideoCapture::from_file(s(path), videoio::CAP_ANY)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cap.is_opened().unwrap_or(false),
        "cannot read {}",
        path.display()
    );
    let mut out = Vec::new();
    loop {
        let mut m = Mat::default();
        if !cap.read(&mut m).unwrap_or(false) || m.empty() {
            break;
        }
        out.push(m);
    }
    out
}

/// OpenCV's edge map of a decoded BGR frame, as streamfuse computes it:
/// levels / 255 as float32, BT.601 luma, 5x5 Gaussian (sigma from the
/// size), 3x3 Sobel dx and dy, magnitude, then `x * 64` rounded and
/// saturated to 8 bits.
fn reference_edges(bgr: &Mat) -> Mat {
    let ok = |r: opencv::Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
    let mut f = Mat::default();
    ok(bgr.convert_to(&mut f, cv::CV_32F, 1.0 / 255.0, 0.0));
    let mut gray = Mat::default();
    ok(imgproc::cvt_color(
        &f,
        &mut gray,
        imgproc::COLOR_BGR2GRAY,
        0,
    ));
    let mut blur = Mat::default();
    ok(imgproc::gaussian_blur(
        &gray,
        &mut blur,
        Size::new(5, 5),
        0.0,
        0.0,
        cv::BORDER_DEFAULT,
    ));
    let (mut dx, mut dy) = (Mat::default(), Mat::default());
    ok(imgproc::sobel(
        &blur,
        &mut dx,
        cv::CV_32F,
        1,
        0,
        3,
        1.0,
        0.0,
        cv::BORDER_DEFAULT,
    ));
    ok(imgproc::sobel(
        &blur,
        &mut dy,
        cv::CV_32F,
        0,
        1,
        3,
        1.0,
        0.0,
        cv::BORDER_DEFAULT,
    ));
    let mut mag = Mat::default();
    ok(cv::magnitude(&dx, &dy, &mut mag));
    let mut out = Mat::default();
    ok(mag.convert_to(&mut out, cv::CV_8U, SCALE, 0.0));
    out
}

fn bytes(m: &Mat) -> Vec<u8> {
    m.data_bytes().unwrap_or_else(|e| panic!("{e}")).to_vec()
}

#[test]
fn vision_example_on_a_real_video_matches_opencv() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spec = dir.path().join("vision.yaml");
    std::fs::copy(repo("examples/vision.yaml"), &spec).unwrap_or_else(|e| panic!("{e}"));
    // The example reads `input.mkv` and writes `edges.mkv` next to itself.
    let input = dir.path().join("input.mkv");
    let output = dir.path().join("edges.mkv");
    let frames: Vec<Mat> = (0..FRAMES).map(synth_frame).collect();
    write_video(&input, &frames);

    let v = run_json(&["run", s(&spec), "--device", "cpu", "--json"]);
    assert_eq!(v["frames"], FRAMES as u64, "{v}");
    let digest = v["output_digest"].as_str().unwrap_or_default().to_owned();
    assert!(digest.starts_with("xxh3-128:"), "{v}");

    let decoded = read_video(&input);
    assert_eq!(decoded.len(), FRAMES, "FFV1 input read back");
    for (a, b) in decoded.iter().zip(&frames) {
        assert_eq!(bytes(a), bytes(b), "FFV1 is lossless");
    }
    let edges = read_video(&output);
    assert_eq!(
        edges.len(),
        decoded.len(),
        "one output frame per input frame"
    );

    // Every pixel within one 8-bit level of OpenCV's result: both compute
    // in float32 (within 1e-4 relative, tests/vision), and the final
    // rounding may fall on either side of a half. Few pixels differ at all.
    let (mut differ, mut total) = (0usize, 0usize);
    for (k, (out, inp)) in edges.iter().zip(&decoded).enumerate() {
        assert_eq!((out.cols(), out.rows()), (W, H), "frame {k}");
        // A gray video is read back as BGR with three equal planes.
        let mut g = Mat::default();
        imgproc::cvt_color(out, &mut g, imgproc::COLOR_BGR2GRAY, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let want = bytes(&reference_edges(inp));
        let got = bytes(&g);
        let ob = bytes(out);
        for (i, px) in ob.chunks_exact(3).enumerate() {
            assert!(
                px[0] == px[1] && px[1] == px[2],
                "frame {k} pixel {i}: {px:?} is not gray"
            );
            let d = (i16::from(px[0]) - i16::from(want[i])).abs();
            assert!(
                d <= 1,
                "frame {k} pixel {i}: {} vs OpenCV {}",
                px[0],
                want[i]
            );
            differ += usize::from(d != 0);
            total += 1;
        }
        assert_eq!(got.len(), want.len());
        assert!(want.iter().any(|&x| x > 64), "frame {k} has edges");
    }
    eprintln!("{differ} of {total} pixels differ from OpenCV by one level");
    assert!(
        differ * 1000 <= total,
        "{differ} of {total} pixels differ by one level"
    );

    // The same pipeline as separate processes (`serve`'s sink writes the
    // video): same digest, same file content.
    std::fs::remove_file(&output).unwrap_or_else(|e| panic!("{e}"));
    let v2 = run_json(&[
        "run",
        s(&spec),
        "--device",
        "cpu",
        "--fusion",
        "off",
        "--local",
        "--json",
    ]);
    assert_eq!(v2["frames"], FRAMES as u64, "{v2}");
    assert_eq!(v2["output_digest"].as_str(), Some(digest.as_str()), "{v2}");
    let again = read_video(&output);
    assert_eq!(again.len(), FRAMES);
    for (a, b) in again.iter().zip(&edges) {
        assert_eq!(bytes(a), bytes(b));
    }

    // `--frames` takes the first frames only.
    let v3 = run_json(&[
        "run",
        s(&spec),
        "--device",
        "cpu",
        "--frames",
        "7",
        "--json",
    ]);
    assert_eq!(v3["frames"], 7, "{v3}");
    let first = read_video(&output);
    assert_eq!(first.len(), 7);
    for (a, b) in first.iter().zip(&edges) {
        assert_eq!(bytes(a), bytes(b));
    }
}

fn write_png(path: &Path, m: &Mat) {
    assert!(
        imgcodecs::imwrite(s(path), m, &Vector::<i32>::new()).unwrap_or(false),
        "cannot write {}",
        path.display()
    );
}

#[test]
fn image_folder_round_trips_through_an_images_sink() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let frames_dir = dir.path().join("in");
    std::fs::create_dir(&frames_dir).unwrap_or_else(|e| panic!("{e}"));
    // Name order, not creation order: 10 comes after 09.
    let names = ["f-00.png", "f-09.png", "f-10.png", "f-03.png"];
    let mut by_name: Vec<(String, Mat)> = Vec::new();
    for (k, n) in names.iter().enumerate() {
        let m = synth_frame(k * 3);
        let mut small = Mat::default();
        imgproc::resize(
            &m,
            &mut small,
            Size::new(64, 48),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        write_png(&frames_dir.join(n), &small);
        by_name.push(((*n).to_owned(), small));
    }
    // Not matched by the pattern.
    std::fs::write(frames_dir.join("notes.txt"), "x").unwrap_or_else(|e| panic!("{e}"));
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    let spec = dir.path().join("round.yaml");
    std::fs::write(
        &spec,
        "name: round\n\
         source: { images: { dir: in, pattern: \"f-*.png\" } }\n\
         stages: [ { id: keep, op: relu } ]\n\
         sink: { images: { dir: out } }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let v = run_json(&["run", s(&spec), "--device", "cpu", "--json"]);
    assert_eq!(v["frames"], names.len() as u64, "{v}");
    assert!(
        v["output_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("xxh3-128:")),
        "{v}"
    );
    for (seq, (name, want)) in by_name.iter().enumerate() {
        let path = dir.path().join(format!("out/0-{seq}.png"));
        let got = imgcodecs::imread(s(&path), imgcodecs::IMREAD_UNCHANGED)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.channels(), 3, "{}", path.display());
        assert_eq!(bytes(&got), bytes(want), "seq {seq} is {name}, unchanged");
    }

    // The digest does not depend on the sink: the stats sink over the
    // same frames gives the same one.
    let stats = dir.path().join("stats.yaml");
    std::fs::write(
        &stats,
        "name: round\n\
         source: { images: { dir: in, pattern: \"f-*.png\" } }\n\
         stages: [ { id: keep, op: relu } ]\n\
         sink: { stats: {} }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let v2 = run_json(&["run", s(&stats), "--device", "cpu", "--json"]);
    assert_eq!(v2["output_digest"], v["output_digest"]);
}

#[test]
fn a_frame_of_another_size_or_a_missing_camera_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let frames_dir = dir.path().join("in");
    std::fs::create_dir(&frames_dir).unwrap_or_else(|e| panic!("{e}"));
    let m = synth_frame(0);
    let mut a = Mat::default();
    imgproc::resize(&m, &mut a, Size::new(32, 24), 0.0, 0.0, imgproc::INTER_AREA)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b = Mat::default();
    imgproc::resize(&m, &mut b, Size::new(30, 24), 0.0, 0.0, imgproc::INTER_AREA)
        .unwrap_or_else(|e| panic!("{e}"));
    write_png(&frames_dir.join("a0.png"), &a);
    write_png(&frames_dir.join("a1.png"), &a);
    write_png(&frames_dir.join("a2.png"), &b);
    let spec = dir.path().join("sizes.yaml");
    std::fs::write(
        &spec,
        "name: sizes\nsource: { images: { dir: in } }\nstages: [ { id: g, op: gray } ]\nsink: { stats: {} }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = one_error(&run(&["run", s(&spec), "--device", "cpu"]));
    assert!(
        err.contains("a2.png: frame seq 2: shape [3, 24, 30]")
            && err.contains("differs from the first frame's [3, 24, 32]"),
        "{err}"
    );

    // A camera of a given size resolves without the device; the run then
    // fails opening it.
    let cam = dir.path().join("camera.yaml");
    std::fs::write(
        &cam,
        "name: cam\nsource: { camera: { index: 63, width: 64, height: 48, frames: 5 } }\nstages: [ { id: g, op: gray } ]\nsink: { stats: {} }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = one_error(&run(&["run", s(&cam), "--device", "cpu"]));
    assert!(
        err.contains("camera 63 (/dev/video63): no such device"),
        "{err}"
    );
}

/// The one `error:` line of a failed run (log lines come before it).
fn one_error(out: &Output) -> String {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        err.trim_end().ends_with(errors[0]),
        "the error is last: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    errors[0].to_owned()
}
