//! The `streamfuse` command as a user runs it: the run contract, identical
//! outputs across fusion modes, placements and thread counts, and one-line
//! located errors for bad specs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamfuse"))
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn run_ok(args: &[&str]) -> Output {
    let out = bin()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start streamfuse: {e}"));
    assert!(
        out.status.success(),
        "streamfuse {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs with `--json` and parses the last stdout line.
fn run_json(args: &[&str]) -> Value {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run_ok(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn thesis_run_follows_the_contract_and_fusion_modes_agree() {
    let spec = repo("examples/thesis.yaml");
    let spec = spec.to_str().unwrap_or_default();
    let mut digests = Vec::new();
    for fusion in ["off", "chain", "kernel"] {
        let v = run_json(&[
            spec, "--frames", "200", "--device", "cpu", "--fusion", fusion,
        ]);
        assert_eq!(v["frames"], 200, "{v}");
        assert_eq!(v["fusion"], fusion);
        assert_eq!(v["device"], "cpu");
        assert!(v["fps"].as_f64().is_some_and(|f| f > 0.0), "{v}");
        let l = &v["latency_ms"];
        let (p50, p95, p99, max) = (
            l["p50"].as_f64().unwrap_or(-1.0),
            l["p95"].as_f64().unwrap_or(-1.0),
            l["p99"].as_f64().unwrap_or(-1.0),
            l["max"].as_f64().unwrap_or(-1.0),
        );
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{l}");
        assert!(v["ccr"].as_f64().is_some_and(|c| c >= 0.0));
        assert!(v["segments"].as_u64().is_some_and(|s| s >= 1));
        assert!(v["cpu_features"].is_string());
        digests.push(v["output_digest"].as_str().unwrap_or_default().to_owned());
    }
    assert!(digests[0].starts_with("xxh3-128:"), "{digests:?}");
    assert!(digests.iter().all(|d| d == &digests[0]), "{digests:?}");
}

#[test]
fn outputs_do_not_depend_on_placement_threads_or_fusion() {
    let spec = repo("examples/cnn.yaml");
    let spec = spec.to_str().unwrap_or_default();
    let base = run_json(&[
        spec, "--frames", "4", "--size", "96x64", "--fusion", "kernel",
    ]);
    assert_eq!(base["segments"], 1);
    let one_thread = run_json(&[
        spec,
        "--frames",
        "4",
        "--size",
        "96x64",
        "--fusion",
        "off",
        "--threads",
        "1",
    ]);
    assert_eq!(one_thread["segments"], 4);
    assert_eq!(one_thread["threads"], 1);
    assert_eq!(base["output_digest"], one_thread["output_digest"]);
    let other = run_json(&[
        spec, "--frames", "4", "--size", "96x64", "--fusion", "chain",
    ]);
    assert_eq!(base["output_digest"], other["output_digest"]);
    // A different input gives a different digest: the digest sees the data.
    let bigger = run_json(&[spec, "--frames", "4", "--size", "98x64"]);
    assert_ne!(base["output_digest"], bigger["output_digest"]);
}

#[test]
fn split_placement_reports_links_and_a_ccr() {
    let spec = repo("examples/thesis.yaml");
    let v = run_json(&[
        spec.to_str().unwrap_or_default(),
        "--frames",
        "20",
        "--size",
        "256",
        "--placement",
        "EESS",
    ]);
    assert_eq!(v["segments"], 2);
    assert_eq!(v["placement"], "EESS");
    let links = v["links"].as_array().cloned().unwrap_or_default();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["bytes_per_frame"], 254 * 254 * 4);
    assert!(v["ccr"].as_f64().is_some_and(|c| c > 0.0), "{v}");
}

#[test]
fn bad_specs_exit_non_zero_with_one_located_line_and_no_panic() {
    let cases = [
        (
            "invalid-unknown-field.yaml",
            ":6:29: stages[0].kernal: unknown field",
        ),
        (
            "invalid-placement-letter.yaml",
            ":13:12: placement: letter `X`",
        ),
        (
            "invalid-kernel-too-large.yaml",
            ":5:37: stages[0].kernel: window 9x9",
        ),
        (
            "invalid-weights-shape.yaml",
            ":6:66: stages[0].weights.npy:",
        ),
    ];
    for (file, want) in cases {
        let path = repo("runtime/tests/fixtures/spec").join(file);
        let out = bin()
            .args(["run", path.to_str().unwrap_or_default(), "--device", "cpu"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.status.success(), "{file} ran");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{file}: {err}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(file),
            "{err}"
        );
        assert!(lines[0].contains(want), "{file}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

#[test]
fn cuda_on_a_machine_without_a_cuda_backend_is_a_clear_error() {
    let spec = repo("examples/thesis.yaml");
    let out = bin()
        .args([
            "run",
            spec.to_str().unwrap_or_default(),
            "--frames",
            "1",
            "--device",
            "cuda",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("device cuda:0 requested"), "{err}");
}

#[test]
fn device_auto_without_cuda_runs_on_the_cpu_and_says_so() {
    if streamfuse_kernels::cuda::device::device_count() > 0 {
        return; // a machine with a GPU picks CUDA: covered by scripts/gpu-check.sh
    }
    let spec = repo("examples/thesis.yaml");
    let out = run_ok(&[
        "run",
        spec.to_str().unwrap_or_default(),
        "--frames",
        "3",
        "--size",
        "64",
        "--device",
        "auto",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("device auto: using the CPU"), "{err}");
    let v = run_json(&[
        spec.to_str().unwrap_or_default(),
        "--frames",
        "3",
        "--size",
        "64",
        "--device",
        "auto",
    ]);
    assert_eq!(v["device"], "cpu");
}

#[test]
fn plan_json_lists_segments_groups_and_link_bytes() {
    let spec = repo("examples/thesis.yaml");
    let out = run_ok(&[
        "plan",
        spec.to_str().unwrap_or_default(),
        "--placement",
        "EEEE",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["segments"].as_array().map(Vec::len), Some(1));
    let g = &v["segments"][0]["groups"][0];
    assert_eq!(g["kernel"], "fused(conv2d+relu+maxpool)");
    assert_eq!(g["output"], serde_json::json!([1, 359, 639]));
    // 1278 * 718 conv outputs * (9 MACs * 2) + ReLU + 3 comparisons per pooled value.
    let flops = 1278u64 * 718 * 18 + 1278 * 718 + 359 * 639 * 3;
    assert_eq!(g["flops"], flops);
}

#[test]
fn a_long_chain_fuses_into_one_generated_group_and_fusion_modes_agree() {
    let spec = repo("examples/chain.yaml");
    let spec = spec.to_str().unwrap_or_default();
    let mut digests = Vec::new();
    for fusion in ["off", "chain", "kernel"] {
        let v = run_json(&[
            spec, "--frames", "6", "--size", "70x45", "--device", "cpu", "--fusion", fusion,
        ]);
        assert_eq!(v["frames"], 6, "{v}");
        digests.push(v["output_digest"].as_str().unwrap_or_default().to_owned());
    }
    assert!(digests.iter().all(|d| d == &digests[0]), "{digests:?}");

    let out = run_ok(&["plan", spec, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let groups = v["segments"][0]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(groups.len(), 2, "{v}");
    assert_eq!(
        groups[0]["kernel"],
        "fused(conv2d+affine+relu+clip+maxpool)"
    );
    assert_eq!(groups[0]["stages"].as_array().map(Vec::len), Some(5));
    assert!(
        groups[0]["cuda_kernel"]
            .as_str()
            .is_some_and(|k| k.starts_with("sf_chain_")),
        "{v}"
    );
    assert_eq!(groups[1]["kernel"], "threshold");
}

#[test]
fn plan_names_the_segments_and_the_fused_group_of_each() {
    let spec = repo("examples/thesis.yaml");
    let out = run_ok(&[
        "plan",
        spec.to_str().unwrap_or_default(),
        "--placement",
        "EESS",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let segs = v["segments"].as_array().cloned().unwrap_or_default();
    assert_eq!(segs.len(), 2, "{v}");
    assert_eq!(segs[0]["node"], "edge");
    assert_eq!(segs[1]["node"], "server");
    assert_eq!(segs[0]["groups"][0]["kernel"], "conv2d");
    assert_eq!(segs[1]["groups"][0]["kernel"], "fused(load+relu+maxpool)");
    assert_eq!(segs[1]["groups"][0]["fused"], true);
    assert_eq!(v["links"][0]["bytes_per_frame"], 718 * 1278 * 4);
}

#[test]
fn plan_advise_ranks_every_placement_and_names_what_bounds_each() {
    let thesis = repo("examples/thesis.yaml");
    let thesis = thesis.to_str().unwrap_or_default();
    let out = run_ok(&[
        "plan",
        thesis,
        "--advise",
        "--json",
        "--size",
        "128x96",
        "--iters",
        "3",
        "--run-secs",
        "0.05",
        "--link",
        "100mbit",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let ps = v["placements"].as_array().cloned().unwrap_or_default();
    // The source stays on the edge; each of 3 stages on either node.
    assert_eq!(ps.len(), 8, "{v}");
    for x in &ps {
        assert!(
            x["placement"]
                .as_str()
                .is_some_and(|s| s.starts_with('E') && s.len() == 4)
        );
        assert!(x["fps"].as_f64().is_some_and(|f| f > 0.0), "{x}");
        assert!(x["latency_ms"].as_f64().is_some_and(|l| l > 0.0), "{x}");
        assert!(x["bound_by"].as_str().is_some_and(|b| !b.is_empty()), "{x}");
    }
    // Ranked by predicted fps, best first; the best is named.
    let fps: Vec<f64> = ps.iter().filter_map(|x| x["fps"].as_f64()).collect();
    assert!(fps.windows(2).all(|w| w[0] >= w[1]), "{fps:?}");
    assert_eq!(v["best"], ps[0]);
    // Both nodes stand for this machine here, so the one-process placement
    // (no hand-off, no link) is predicted best.
    assert_eq!(ps[0]["placement"], "EEEE", "{v}");
    // manifests --placement auto deploys the advisor's first choice.
    let m = run_ok(&[
        "manifests",
        thesis,
        "--placement",
        "auto",
        "--size",
        "128x96",
        "--iters",
        "3",
        "--run-secs",
        "0.05",
        "--link",
        "100mbit",
    ]);
    let err = String::from_utf8_lossy(&m.stderr);
    assert!(err.contains("placement auto: EEEE"), "{err}");
    let objects = String::from_utf8_lossy(&m.stdout);
    assert!(
        objects.contains("streamfuse.io/placement: EEEE"),
        "{objects}"
    );
    // A profile of another size is refused, naming both shapes.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let prof = dir.path().join("p.json");
    run_ok(&[
        "profile",
        thesis,
        "--size",
        "64x64",
        "--iters",
        "2",
        "--run-secs",
        "0.05",
        "--out",
        prof.to_str().unwrap_or_default(),
    ]);
    let bad = bin()
        .args(["plan", thesis, "--advise", "--profile"])
        .arg(&prof)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && e.contains("measured frames [1, 64, 64]"),
        "{e}"
    );
}

/// Each node profiled on itself, the edge probing the link to the server's
/// `serve` process; the two profiles merged by `plan --advise`.
#[test]
fn per_node_profiles_with_a_probed_link_merge_into_one_advice() {
    let thesis = repo("examples/thesis.yaml");
    let thesis = thesis.to_str().unwrap_or_default();
    let port = streamfuse::launch::ports::free_loopback_port().unwrap_or_else(|e| panic!("{e}"));
    let addr = format!("127.0.0.1:{port}");
    // The server's segment of ESSS (every stage), as deployed.
    let mut server = bin()
        .args([
            "serve",
            thesis,
            "--size",
            "64x48",
            "--placement",
            "ESSS",
            "--segment",
            "1",
            "--listen",
            &addr,
            "--control",
            "loopback",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (edge, srv) = (dir.path().join("edge.json"), dir.path().join("server.json"));
    let common = [
        "--size",
        "64x48",
        "--iters",
        "3",
        "--run-secs",
        "0.05",
        "--probe-secs",
        "0.2",
    ];
    let peer = format!("server={addr}");
    let mut args = vec![
        "profile", thesis, "--node", "edge", "--cpus", "0.5", "--peer", &peer,
    ];
    args.extend(common);
    args.extend(["--out", edge.to_str().unwrap_or_default()]);
    let probed = bin().args(&args).output().unwrap_or_else(|e| panic!("{e}"));
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        probed.status.success(),
        "{}",
        String::from_utf8_lossy(&probed.stderr)
    );
    let mut args = vec!["profile", thesis, "--node", "server"];
    args.extend(common);
    args.extend(["--out", srv.to_str().unwrap_or_default()]);
    run_ok(&args);
    let e: Value = serde_json::from_slice(&std::fs::read(&edge).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    // Only the edge is described, with the CPUs it was given.
    let nodes = e["nodes"].as_object().cloned().unwrap_or_default();
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["edge"], "{e}");
    assert_eq!(e["nodes"]["edge"]["cpus"], 0.5);
    // Its stage ranges ran on its device (no GPU here).
    assert!(
        e["nodes"]["edge"]["device"]
            .as_str()
            .is_some_and(|d| d.starts_with("cpu")),
        "{e}"
    );
    assert!(
        e["nodes"]["edge"]["source"]["cpu_ms"]
            .as_f64()
            .is_some_and(|c| c > 0.0)
    );
    // The link was probed with every size a frame can have on it: the
    // source's 64x48 and conv's 62x46 (relu's is the same), pool's 31x23,
    // as f32.
    let link = &e["links"][0];
    assert_eq!(link["measured"], true, "{link}");
    let sizes: Vec<u64> = link["samples"]
        .as_array()
        .map(|v| v.iter().filter_map(|s| s["bytes"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(sizes, [64 * 48 * 4, 62 * 46 * 4, 31 * 23 * 4], "{link}");
    for s in link["samples"].as_array().cloned().unwrap_or_default() {
        assert!(s["frames"].as_u64().is_some_and(|f| f >= 3), "{s}");
        assert!(s["bytes_per_s"].as_f64().is_some_and(|b| b > 0.0), "{s}");
        assert!(s["rtt_ms"].as_f64().is_some_and(|r| r > 0.0), "{s}");
    }
    // Merged, the two profiles rank every placement.
    let out = run_ok(&[
        "plan",
        thesis,
        "--size",
        "64x48",
        "--advise",
        "--json",
        "--profile",
        edge.to_str().unwrap_or_default(),
        "--profile",
        srv.to_str().unwrap_or_default(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["placements"].as_array().map(Vec::len), Some(8), "{v}");
    // The edge's profile alone does not describe the server: refused.
    let alone = bin()
        .args(["plan", thesis, "--size", "64x48", "--advise", "--profile"])
        .arg(&edge)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&alone.stderr);
    assert!(
        !alone.status.success() && err.contains("no measurements of node `server`"),
        "{err}"
    );
    // A peer that is not listening is a clear error.
    let closed = streamfuse::launch::ports::free_loopback_port().unwrap_or_else(|e| panic!("{e}"));
    let bad = bin()
        .args([
            "profile",
            thesis,
            "--size",
            "64x48",
            "--node",
            "edge",
            "--run-secs",
            "0.05",
        ])
        .args(["--peer", &format!("server=127.0.0.1:{closed}")])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("cannot connect"),
        "{err}"
    );
}

/// A command whose stdout is closed (`streamfuse manifests ... | head -0`)
/// ends as other command-line tools do, killed by `SIGPIPE`, with nothing
/// on stderr, instead of panicking on the broken pipe.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
    drop(reader);
    let out = bin()
        .args(["manifests", "examples/thesis.yaml", "--placement", "EESS"])
        .current_dir(repo(""))
        .stdout(writer)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // SIGPIPE is 13 on Linux and the BSDs.
    assert_eq!(out.status.signal(), Some(13), "{:?} {stderr}", out.status);
}

/// `serve --cpus 0` runs every thread of the segment process on CPU 0;
/// a bad list is refused, naming the flag.
#[cfg(target_os = "linux")]
#[test]
fn serve_cpus_pins_every_thread() {
    let serve = |cpus: &str| {
        let mut c = bin();
        c.args(["serve", "examples/thesis.yaml", "--segment", "1"])
            .args(["--listen", "127.0.0.1:0", "--cpus", cpus])
            .current_dir(repo(""));
        c
    };
    let mut child = serve("0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let task = PathBuf::from(format!("/proc/{}/task", child.id()));
    // Wait for the runtime's threads (network, worker) to exist.
    let mut lists = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        lists = std::fs::read_dir(&task)
            .map(|d| {
                d.filter_map(|e| {
                    let status = std::fs::read_to_string(e.ok()?.path().join("status")).ok()?;
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                        .map(|v| v.trim().to_owned())
                })
                .collect()
            })
            .unwrap_or_default();
        if lists.len() >= 4 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lists.len() >= 4, "threads: {lists:?}");
    assert!(lists.iter().all(|l| l == "0"), "{lists:?}");

    let out = serve("3-1").output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--cpus") && stderr.contains("3-1"),
        "{stderr}"
    );
}

#[test]
fn cnn_layers_fuse_in_plan_and_give_the_unfused_digest() {
    // Every CNN layer field (non-square kernel, strides per axis, padding
    // per side and `same`, dilation, groups, batch norm, leaky ReLU, clip,
    // average pool in ceil mode, global pool): the planner fuses the conv
    // variants with their epilogues and pools, and the fused run gives the
    // digest of the unfused one. The ResNet stem and the depthwise layer
    // likewise, at reduced sizes.
    let cases: [(&str, Option<&str>, &[&str]); 3] = [
        (
            "runtime/tests/fixtures/spec/valid-cnn-layers.yaml",
            None,
            &[
                "fused(conv2d+batchnorm+leaky_relu+maxpool)",
                "fused(dwconv2d+clip+avgpool)",
                "avgpool",
            ],
        ),
        (
            "examples/resnet-stem.yaml",
            Some("160x96"),
            &["fused(conv2d+batchnorm+relu+maxpool)"],
        ),
        (
            "examples/depthwise.yaml",
            Some("56"),
            &["fused(dwconv2d+batchnorm+clip)"],
        ),
    ];
    for (spec, size, groups) in cases {
        let path = repo(spec);
        let path = path.to_str().unwrap_or_default();
        let mut plan_args = vec!["plan", path, "--json"];
        if let Some(s) = size {
            plan_args.extend(["--size", s]);
        }
        let out = run_ok(&plan_args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let plan: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{spec}: plan is not JSON: {e}"));
        let kernels: Vec<&str> = plan["segments"][0]["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .map(|x| x["kernel"].as_str().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(kernels, groups, "{spec}");
        let mut digests = Vec::new();
        for fusion in ["off", "kernel"] {
            let mut args = vec![path, "--frames", "3", "--device", "cpu", "--fusion", fusion];
            if let Some(s) = size {
                args.extend(["--size", s]);
            }
            let v = run_json(&args);
            assert_eq!(v["frames"], 3, "{v}");
            digests.push(v["output_digest"].as_str().unwrap_or_default().to_owned());
        }
        assert!(digests[0].starts_with("xxh3-128:"), "{digests:?}");
        assert_eq!(
            digests[0], digests[1],
            "{spec}: fused and unfused digests differ"
        );
    }
}
