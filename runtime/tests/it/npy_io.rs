//! Tensor files in and out: an `npy` source (stacked file and folder forms)
//! through a conv → ReLU → pool pipeline into both `npy` sink forms, read
//! back and compared with the f64 reference.

use std::path::Path;
use std::process::Command;

use crate::common::write_npy;

use streamfuse_kernels::reference;
use streamfuse_kernels::{Conv2d, Conv2dParams, Pool2d, Shape};

fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(npy.dtype().descr().trim_matches('\''), "<f4");
    let shape = npy.shape().to_vec();
    (
        shape,
        npy.into_vec::<f32>().unwrap_or_else(|e| panic!("{e}")),
    )
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| streamfuse_kernels::random::symmetric_f32(seed, 1, i, 1.0))
        .collect()
}

#[test]
fn npy_frames_in_npy_frames_out_match_the_reference() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let (n, c, h, w) = (3usize, 2usize, 9usize, 13usize);
    let frames = values(n * c * h * w, 1);
    write_npy(
        &d.join("in.npy"),
        &[n as u64, c as u64, h as u64, w as u64],
        &frames,
    );
    std::fs::create_dir_all(d.join("in")).unwrap_or_else(|e| panic!("{e}"));
    for k in 0..n {
        let one = &frames[k * c * h * w..(k + 1) * c * h * w];
        write_npy(
            &d.join(format!("in/frame-{k:03}.npy")),
            &[c as u64, h as u64, w as u64],
            one,
        );
    }
    let weights = values(4 * c * 9, 2);
    write_npy(&d.join("w.npy"), &[4, c as u64, 3, 3], &weights);
    let bias = values(4, 3);
    write_npy(&d.join("b.npy"), &[4], &bias);

    let conv = Conv2d::new(
        Conv2dParams::square(c, 4, 3, 1, 1),
        weights.clone(),
        Some(bias.clone()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pool = Pool2d::max(2, 2);

    for (source, sink, out) in [
        (
            "{ npy: { path: in.npy } }",
            "{ npy: { path: out.npy } }",
            "out.npy",
        ),
        ("{ npy: { dir: in } }", "{ npy: { dir: out } }", "out"),
    ] {
        let spec = format!(
            "name: npy-io\nsource: {source}\nstages:\n  - {{ id: conv, op: conv2d, kernel: 3, padding: 1, out_channels: 4, weights: {{ npy: w.npy }}, bias: {{ npy: b.npy }} }}\n  - {{ id: relu, op: relu }}\n  - {{ id: pool, op: maxpool, size: 2 }}\nsink: {sink}\n"
        );
        let spec_path = d.join("spec.yaml");
        std::fs::write(&spec_path, spec).unwrap_or_else(|e| panic!("{e}"));
        let run = Command::new(env!("CARGO_BIN_EXE_streamfuse"))
            .args([
                "run",
                spec_path.to_str().unwrap_or_default(),
                "--fusion",
                "kernel",
                "--json",
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );

        let out_shape = Shape::new(4, h / 2, w / 2);
        let outputs: Vec<Vec<f32>> = if out.ends_with(".npy") {
            let (shape, data) = read_npy(&d.join(out));
            assert_eq!(shape, vec![n as u64, 4, (h / 2) as u64, (w / 2) as u64]);
            data.chunks(out_shape.len()).map(<[f32]>::to_vec).collect()
        } else {
            (0..n)
                .map(|k| {
                    let (shape, data) = read_npy(&d.join(out).join(format!("0-{k}.npy")));
                    assert_eq!(shape, vec![4, (h / 2) as u64, (w / 2) as u64]);
                    data
                })
                .collect()
        };
        assert_eq!(outputs.len(), n);
        for (k, got) in outputs.iter().enumerate() {
            let input = &frames[k * c * h * w..(k + 1) * c * h * w];
            let want = reference::conv2d(input, Shape::new(c, h, w), &conv)
                .map(|t| reference::relu(&t))
                .and_then(|t| reference::pool(&t, &pool))
                .unwrap_or_else(|| panic!("reference"));
            for (i, ((&g, &r), &m)) in got
                .iter()
                .zip(&want.values)
                .zip(&want.magnitude)
                .enumerate()
            {
                let tol = reference::tolerance(c * 9, m);
                assert!(
                    (f64::from(g) - r).abs() <= tol,
                    "{source} frame {k} value {i}: {g} vs {r}"
                );
            }
        }
    }
}

#[test]
fn a_source_file_of_the_wrong_rank_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    write_npy(&d.join("flat.npy"), &[10], &values(10, 4));
    let spec = "name: bad\nsource: { npy: { path: flat.npy } }\nstages:\n  - { id: relu, op: relu }\nsink: { stats: {} }\n";
    std::fs::write(d.join("spec.yaml"), spec).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_streamfuse"))
        .args(["run", d.join("spec.yaml").to_str().unwrap_or_default()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.yaml:2:24: source.npy.path:")
            && err.contains("shape [10]; expected [N, C, H, W] or [C, H, W]"),
        "{err}"
    );
}

/// A header may claim any shape: one claiming 3 × 1e16 values over a file
/// of a few bytes is a located error before anything is allocated, not an
/// aborted process.
#[test]
fn a_header_claiming_more_than_its_file_holds_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // A valid npy file of 12 values whose header claims (3, 1, 1e8, 1e8).
    let mut dict =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1, 99999999, 99999999), }"
            .to_owned();
    while !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(dict.len()).unwrap_or(0).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    for v in values(12, 5) {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(d.join("huge.npy"), &bytes).unwrap_or_else(|e| panic!("{e}"));
    let spec = "name: bad\nsource: { npy: { path: huge.npy } }\nstages:\n  - { id: relu, op: relu }\nsink: { stats: {} }\n";
    std::fs::write(d.join("spec.yaml"), spec).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_streamfuse"))
        .args(["run", d.join("spec.yaml").to_str().unwrap_or_default()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a clean error exit: {err}");
    assert!(
        err.contains("huge.npy") && err.contains("claims") && err.contains("the file holds"),
        "{err}"
    );
}
