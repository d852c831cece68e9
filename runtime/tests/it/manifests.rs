//! `streamfuse manifests`: the checked-in `k3s/` tree is exactly what the
//! generator writes, and generated manifests follow the deployment rules
//! (`streamfuse::deploy::policy`). Regenerate the tree with
//! `scripts/gen-k3s.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{binary, repo_root};
use streamfuse::deploy::{self, Manifests, policy};
use streamfuse::plan::plan;
use streamfuse::spec::{self, Machine, Overrides, Pipeline};

/// The thesis placements checked in under `k3s/thesis/`.
const PLACEMENTS: [&str; 5] = ["SSSS", "ESSS", "EESS", "EEES", "EEEE"];
const REGENERATE: &str = "regenerate with scripts/gen-k3s.sh and commit the result";

fn thesis(placement: &str, fusion: Option<&str>) -> Pipeline {
    let ov = Overrides {
        placement: Some(placement.into()),
        fusion: fusion.map(|f| f.parse().unwrap_or_else(|e: String| panic!("{e}"))),
        ..Default::default()
    };
    spec::load(&repo_root().join("examples/thesis.yaml"), &ov).unwrap_or_else(|e| panic!("{e}"))
}

/// `*.yaml` files of a directory by name.
fn read_dir(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, text)
        })
        .collect()
}

/// Runs `streamfuse manifests` from the repository root.
fn manifests(args: &[&str]) -> std::process::Output {
    let out = Command::new(binary())
        .current_dir(repo_root())
        .arg("manifests")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "streamfuse manifests {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn parse(files: &BTreeMap<String, String>) -> Manifests {
    let pairs: Vec<(String, String)> = files.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
    policy::parse_files(&pairs).unwrap_or_else(|e| panic!("{e}"))
}

/// The pod spec of a segment's deployment.
fn pod_spec(objs: &deploy::SegmentObjects) -> &k8s_openapi::api::core::v1::PodSpec {
    objs.deployment
        .spec
        .as_ref()
        .and_then(|d| d.template.spec.as_ref())
        .unwrap_or_else(|| panic!("no pod spec"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

/// Names the first file of `want` that `got` lacks, has extra or differs in.
fn compare(label: &Path, got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) {
    for name in want.keys().chain(got.keys()) {
        let path = label.join(name);
        match (got.get(name), want.get(name)) {
            (Some(g), Some(w)) if g == w => {}
            (None, Some(_)) => panic!(
                "{} is checked in but no longer generated: {REGENERATE}",
                path.display()
            ),
            (Some(_), None) => panic!(
                "{} is generated but not checked in: {REGENERATE}",
                path.display()
            ),
            (Some(g), Some(w)) => {
                let line = g
                    .lines()
                    .zip(w.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| g.lines().count().min(w.lines().count()));
                panic!(
                    "{} differs from the generator at line {} (generated {:?}, checked in {:?}): {REGENERATE}",
                    path.display(),
                    line + 1,
                    g.lines().nth(line).unwrap_or("<end of file>"),
                    w.lines().nth(line).unwrap_or("<end of file>"),
                );
            }
            (None, None) => {}
        }
    }
}

#[test]
fn checked_in_k3s_tree_matches_the_generator() {
    let k3s = repo_root().join("k3s");
    let dirs: Vec<String> = std::fs::read_dir(k3s.join("thesis"))
        .unwrap_or_else(|e| panic!("k3s/thesis: {e}: {REGENERATE}"))
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    for d in &dirs {
        assert!(
            PLACEMENTS.contains(&d.as_str()),
            "k3s/thesis/{d} is not a thesis placement ({PLACEMENTS:?}): {REGENERATE}"
        );
    }
    for placement in PLACEMENTS {
        let tmp = tempdir();
        manifests(&[
            "examples/thesis.yaml",
            "--placement",
            placement,
            "-o",
            &tmp.path().display().to_string(),
        ]);
        let label = PathBuf::from("k3s/thesis").join(placement);
        compare(
            &label,
            &read_dir(tmp.path()),
            &read_dir(&k3s.join("thesis").join(placement)),
        );
    }
    let runtime_class = deploy::runtime_class_file().unwrap_or_else(|e| panic!("{e}"));
    let checked_in = std::fs::read_to_string(k3s.join(&runtime_class.name))
        .unwrap_or_else(|e| panic!("k3s/{}: {e}: {REGENERATE}", runtime_class.name));
    assert!(
        checked_in == runtime_class.text,
        "k3s/{} differs from the generator: {REGENERATE}",
        runtime_class.name
    );
}

#[test]
fn checked_in_manifests_follow_the_deployment_rules() {
    for placement in PLACEMENTS {
        let p = thesis(placement, None);
        let pl = plan(&p);
        let dir = repo_root().join("k3s/thesis").join(placement);
        let m = parse(&read_dir(&dir));
        let v = policy::check(&p, &pl, &m);
        assert!(
            v.is_empty(),
            "k3s/thesis/{placement}:\n  {}",
            v.join("\n  ")
        );
        // The thesis edge is a Jetson: runtime class, no device-plugin GPU;
        // the server claims one GPU.
        for (seg, objs) in pl.segments.iter().zip(&m.segments) {
            let pod = pod_spec(objs);
            let limits = pod.containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.limits.clone())
                .unwrap_or_default();
            assert_eq!(pod.runtime_class_name.as_deref(), Some("nvidia"));
            match p.nodes[seg.node].machine {
                Machine::Jetson => assert!(!limits.contains_key("nvidia.com/gpu")),
                Machine::GpuServer => assert!(limits.contains_key("nvidia.com/gpu")),
                Machine::Cpu => panic!("the thesis has no CPU-only node"),
            }
        }
    }
}

#[test]
fn manifests_for_eess_follow_the_rules_and_stdout_matches_the_files() {
    let p = thesis("EESS", None);
    let pl = plan(&p);
    let tmp = tempdir();
    let out = tmp.path().join("out");
    manifests(&[
        "examples/thesis.yaml",
        "--placement",
        "EESS",
        "-o",
        &out.display().to_string(),
    ]);
    let files = read_dir(&out);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [
            "configmap.yaml",
            "thesis-seg0-edge.yaml",
            "thesis-seg1-server.yaml"
        ]
    );
    let m = parse(&files);
    let v = policy::check(&p, &pl, &m);
    assert!(v.is_empty(), "{}", v.join("\n"));

    // Without -o: the same objects as one stream for `kubectl apply -f -`.
    let stdout = manifests(&["examples/thesis.yaml", "--placement", "EESS"]).stdout;
    let stream = String::from_utf8(stdout).unwrap_or_else(|e| panic!("{e}"));
    let from_stdout = parse(&BTreeMap::from([("stdout".to_owned(), stream)]));
    assert_eq!(from_stdout.config_map, m.config_map);
    assert_eq!(from_stdout.segments, m.segments);
}

#[test]
fn a_new_placement_replaces_the_old_segment_files() {
    let tmp = tempdir();
    let dir = tmp.path().display().to_string();
    std::fs::write(tmp.path().join("mine.yaml"), "kind: ConfigMap\n")
        .unwrap_or_else(|e| panic!("{e}"));
    manifests(&["examples/thesis.yaml", "--placement", "EESS", "-o", &dir]);
    let out = manifests(&["examples/thesis.yaml", "--placement", "EEEE", "-o", &dir]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("thesis-seg1-server.yaml"), "{stderr}");
    let names: Vec<String> = read_dir(tmp.path()).into_keys().collect();
    assert_eq!(
        names,
        ["configmap.yaml", "mine.yaml", "thesis-seg0-edge.yaml"],
        "generated files of the earlier placement are removed, others kept"
    );
}

#[test]
fn fusion_off_puts_each_stage_in_its_own_pod_with_consecutive_ports() {
    let p = thesis("SSSS", Some("off"));
    let pl = plan(&p);
    assert_eq!(pl.segments.len(), 4);
    let tmp = tempdir();
    manifests(&[
        "examples/thesis.yaml",
        "--placement",
        "SSSS",
        "--fusion",
        "off",
        "--frames",
        "100000",
        "--image-server",
        "registry.local/streamfuse:test",
        "-o",
        &tmp.path().display().to_string(),
    ]);
    let m = parse(&read_dir(tmp.path()));
    let v = policy::check(&p, &pl, &m);
    assert!(v.is_empty(), "{}", v.join("\n"));
    for (k, s) in m.segments.iter().enumerate() {
        let c = &pod_spec(s).containers[0];
        let args = c.args.clone().unwrap_or_default();
        assert!(args.contains(&format!("0.0.0.0:{}", 50051 + k)), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--frames", "100000"]));
        assert!(args.windows(2).any(|w| w == ["--fusion", "off"]));
        assert_eq!(c.image.as_deref(), Some("registry.local/streamfuse:test"));
    }
}

#[test]
fn a_cpu_only_spec_gets_no_gpu_runtime() {
    let tmp = tempdir();
    let spec = tmp.path().join("pi.yaml");
    let text = std::fs::read_to_string(repo_root().join("examples/thesis.yaml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("machine: jetson,    ", "machine: cpu,       ");
    std::fs::write(&spec, &text).unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("out");
    manifests(&[
        &spec.display().to_string(),
        "--placement",
        "EEES",
        "-o",
        &out.display().to_string(),
    ]);
    let ov = Overrides {
        placement: Some("EEES".into()),
        ..Default::default()
    };
    let p = spec::load(&spec, &ov).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.nodes[0].machine, Machine::Cpu);
    let pl = plan(&p);
    let m = parse(&read_dir(&out));
    let v = policy::check(&p, &pl, &m);
    assert!(v.is_empty(), "{}", v.join("\n"));
    let pod = |k: usize| pod_spec(&m.segments[k]);
    assert_eq!(pod(0).runtime_class_name, None);
    assert_eq!(pod(0).tolerations, None);
    assert_eq!(
        pod(0).containers[0].image.as_deref(),
        Some(deploy::Images::default().cpu.as_str())
    );
    assert_eq!(pod(1).runtime_class_name.as_deref(), Some("nvidia"));
}

/// The mutual-TLS variant (`examples/thesis-tls.yaml`): the checked-in
/// `k3s/thesis-tls/EESS` is what the generator writes, follows the rules,
/// mounts each node's Secret and probes the plaintext health port.
#[test]
fn tls_manifests_mount_the_node_secret_and_probe_the_health_port() {
    let dir = tempdir();
    let out = dir.path().join("EESS");
    let out_s = out.display().to_string();
    manifests(&[
        "examples/thesis-tls.yaml",
        "--placement",
        "EESS",
        "-o",
        &out_s,
    ]);
    let generated = read_dir(&out);
    let label = PathBuf::from("k3s/thesis-tls/EESS");
    compare(&label, &generated, &read_dir(&repo_root().join(&label)));
    let p = spec::load(
        &repo_root().join("examples/thesis-tls.yaml"),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pl = plan(&p);
    let m = parse(&generated);
    let v = policy::check(&p, &pl, &m);
    assert!(v.is_empty(), "{label:?}:\n  {}", v.join("\n  "));
    for (seg, objs) in pl.segments.iter().zip(&m.segments) {
        let pod = pod_spec(objs);
        let secret = pod
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.clone());
        assert_eq!(
            secret,
            Some(format!("thesis-{}-tls", p.nodes[seg.node].name)),
            "segment {}",
            seg.index
        );
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap_or_default();
        assert!(!args.iter().any(|a| a == "--control"), "{args:?}");
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.grpc.as_ref())
            .map(|g| g.port);
        assert_eq!(probe, Some(i32::from(deploy::HEALTH_PORT)));
    }
    // Without TLS in the spec nothing of it appears.
    let plain = deploy::generate(
        &thesis("EESS", None),
        &plan(&thesis("EESS", None)),
        "name: thesis\n",
        &deploy::DeployOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for objs in &plain.segments {
        let pod = pod_spec(objs);
        assert!(pod.volumes.iter().flatten().all(|v| v.secret.is_none()));
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap_or_default();
        assert!(
            !args
                .iter()
                .any(|a| a.starts_with("--tls") || a == "--health-listen"),
            "{args:?}"
        );
        assert!(
            c.ports
                .iter()
                .flatten()
                .all(|p| p.name.as_deref() != Some("health"))
        );
    }
}
