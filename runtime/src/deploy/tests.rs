use std::path::Path;

use k8s_openapi::api::core::v1::PodSpec;

use super::*;
use crate::plan::plan;
use crate::spec::{self, Overrides};

const SPEC: &str = r#"name: Demo Pipe
source: { synthetic: { width: 64, height: 48, frames: 4 } }
stages:
  - { id: conv, op: conv2d, kernel: 3, out_channels: 1, weights: { random: { seed: 1 } } }
  - { id: relu, op: relu }
  - { id: pool, op: maxpool, size: 2 }
sink: { stats: {} }
nodes:
  pi:     { letter: P, device: cpu, labels: { streamfuse.io/tier: pi } }
  xavier: { letter: X, machine: jetson, address: "x:6000", labels: { streamfuse.io/tier: edge } }
  titan:  { letter: T, device: cuda, labels: { streamfuse.io/tier: server, gpu: titan-v } }
placement: PXTT
"#;

fn pipeline(placement: &str, fusion: Option<crate::spec::FusionMode>) -> Pipeline {
    let ov = Overrides {
        placement: Some(placement.into()),
        fusion,
        ..Default::default()
    };
    match spec::parse(SPEC, Path::new("demo.yaml"), &ov) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn gen_for(p: &Pipeline) -> Manifests {
    match generate(p, &plan(p), SPEC, &DeployOptions::default()) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

fn pod(m: &Manifests, k: usize) -> &PodSpec {
    let Some(pod) = m.segments[k]
        .deployment
        .spec
        .as_ref()
        .and_then(|d| d.template.spec.as_ref())
    else {
        panic!("no pod spec")
    };
    pod
}

#[test]
fn every_placement_passes_the_policy() {
    for placement in ["PPPP", "PXTT", "XXXX", "TTTT", "PTXT", "PPXT"] {
        for fusion in [None, Some(crate::spec::FusionMode::Off)] {
            let p = pipeline(placement, fusion);
            let pl = plan(&p);
            let m = gen_for(&p);
            let v = policy::check(&p, &pl, &m);
            assert!(v.is_empty(), "{placement} {fusion:?}: {v:#?}");
        }
    }
}

#[test]
fn names_ports_and_next_addresses() {
    let p = pipeline("PXTT", None);
    let m = gen_for(&p);
    let names: Vec<String> = m.segments.iter().map(SegmentObjects::name).collect();
    assert_eq!(
        names,
        [
            "demo-pipe-seg0-pi",
            "demo-pipe-seg1-xavier",
            "demo-pipe-seg2-titan"
        ]
    );
    let args = |k: usize| pod(&m, k).containers[0].args.clone().unwrap_or_default();
    let next = |k: usize| {
        let a = args(k);
        a.iter()
            .position(|x| x == "--next")
            .map(|i| a[i + 1].clone())
    };
    // xavier's address gives its port; the others default.
    assert_eq!(next(0).as_deref(), Some("demo-pipe-seg1-xavier:6000"));
    assert_eq!(next(1).as_deref(), Some("demo-pipe-seg2-titan:50051"));
    assert_eq!(next(2), None);
    assert!(args(1).contains(&"0.0.0.0:6000".to_owned()));
}

#[test]
fn machines_get_their_runtime_images_and_gpu_claims() {
    let p = pipeline("PXTT", None);
    let m = gen_for(&p);
    let images = Images::default();
    let expect = [
        (&images.cpu, None, None, None),
        (&images.jetson, Some("nvidia"), None, Some("arm64")),
        (&images.server, Some("nvidia"), Some("1"), Some("amd64")),
    ];
    for (k, (image, runtime, gpu, arch)) in expect.into_iter().enumerate() {
        let pod = pod(&m, k);
        let c = &pod.containers[0];
        assert_eq!(c.image.as_ref(), Some(image), "segment {k}");
        assert_eq!(pod.runtime_class_name.as_deref(), runtime, "segment {k}");
        let claim = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(GPU_RESOURCE))
            .map(|q| q.0.as_str());
        assert_eq!(claim, gpu, "segment {k}");
        let sel = pod.node_selector.clone().unwrap_or_default();
        assert_eq!(
            sel.get("kubernetes.io/arch").map(String::as_str),
            arch,
            "segment {k}"
        );
        assert!(sel.contains_key("streamfuse.io/tier"));
    }
}

fn tampered(fresh: &Manifests, k: usize, f: impl FnOnce(&mut PodSpec)) -> Manifests {
    let mut m = fresh.clone();
    match m.segments[k]
        .deployment
        .spec
        .as_mut()
        .and_then(|d| d.template.spec.as_mut())
    {
        Some(pod) => f(pod),
        None => panic!("no pod spec"),
    }
    m
}

#[test]
fn tampering_is_caught_by_the_policy() {
    let p = pipeline("PXTT", None);
    let pl = plan(&p);
    let fresh = gen_for(&p);
    let check = |k: usize, f: &dyn Fn(&mut PodSpec)| {
        policy::check(&p, &pl, &tampered(&fresh, k, f)).join("\n")
    };
    assert!(check(2, &|p| p.runtime_class_name = None).contains("without runtimeClassName"));
    assert!(
        check(0, &|p| p.runtime_class_name = Some("nvidia".into()))
            .contains("CPU segment with runtimeClassName")
    );
    assert!(check(1, &|p| p.tolerations = None).contains("does not tolerate"));
    assert!(check(2, &|p| p.node_selector = None).contains("lacks the node's label"));
    assert!(
        check(1, &|p| p.containers[0].args = Some(vec!["serve".into()])).contains("not HOST:PORT")
    );
    assert!(
        check(2, &|p| {
            if let Some(r) = p.containers[0].readiness_probe.as_mut()
                && let Some(g) = r.grpc.as_mut()
            {
                g.service = None;
            }
        })
        .contains("readiness probe asks for service")
    );
    assert!(
        check(0, &|p| p.termination_grace_period_seconds = Some(1))
            .contains("does not exceed --drain-timeout")
    );
    let mut m = fresh.clone();
    if let Some(s) = m.segments[0].service.spec.as_mut() {
        s.selector = Some([("app.kubernetes.io/name".to_owned(), "streamfuse".to_owned())].into());
    }
    let v = policy::check(&p, &pl, &m).join("\n");
    assert!(v.contains("also selects the pods of segment 1"), "{v}");
}

#[test]
fn yaml_round_trips_and_is_deterministic() {
    let p = pipeline("PXTT", None);
    let m = gen_for(&p);
    let files = match m.files() {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let again = match gen_for(&p).files() {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(files, again);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "configmap.yaml",
            "demo-pipe-seg0-pi.yaml",
            "demo-pipe-seg1-xavier.yaml",
            "demo-pipe-seg2-titan.yaml"
        ]
    );
    assert!(
        files[1]
            .text
            .starts_with(&format!("{HEADER}apiVersion: apps/v1\nkind: Deployment\n"))
    );
    assert!(
        files[1]
            .text
            .contains("\n---\napiVersion: v1\nkind: Service\n")
    );
    let pairs: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.name.clone(), f.text.clone()))
        .collect();
    let back = match policy::parse_files(&pairs) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(back.config_map, m.config_map);
    assert_eq!(back.segments, m.segments);
    let spec = back
        .config_map
        .data
        .as_ref()
        .and_then(|d| d.get(SPEC_FILE))
        .cloned();
    assert_eq!(spec.as_deref(), Some(SPEC));
}

#[test]
fn bad_nodes_are_refused() {
    let text = SPEC.replace("gpu: titan-v", "gpu: titan v!");
    let p = match spec::parse(&text, Path::new("demo.yaml"), &Overrides::default()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let e = generate(&p, &plan(&p), &text, &DeployOptions::default())
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("node `titan`: label `gpu: titan v!`")),
        "{e:?}"
    );
    let text = SPEC.replace(
        "machine: jetson, address: \"x:6000\", labels: { streamfuse.io/tier: edge }",
        "machine: jetson",
    );
    let p = match spec::parse(&text, Path::new("demo.yaml"), &Overrides::default()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let e = generate(&p, &plan(&p), &text, &DeployOptions::default())
        .err()
        .map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("node `xavier` is a jetson machine but has no `labels`")),
        "{e:?}"
    );
}

#[test]
fn node_names_become_valid_label_values() {
    let text = SPEC.replace("  pi:", "  pi_4_:").replace("PXTT", "PXTT\n");
    let p = match spec::parse(&text, Path::new("demo.yaml"), &Overrides::default()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let pl = plan(&p);
    let m = match generate(&p, &pl, &text, &DeployOptions::default()) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let v = policy::check(&p, &pl, &m);
    assert!(v.is_empty(), "{v:#?}");
    assert_eq!(m.segments[0].name(), "demo-pipe-seg0-pi-4");
}

#[test]
fn labels_and_dns_names() {
    assert!(policy::check_label("streamfuse.io/tier", "edge").is_ok());
    assert!(policy::check_label("tier", "").is_ok());
    assert!(policy::check_label("Streamfuse.io/tier", "edge").is_err());
    assert!(policy::check_label("streamfuse.io/", "edge").is_err());
    assert!(policy::check_label("tier", "-edge").is_err());
    assert!(policy::check_label("tier", &"x".repeat(64)).is_err());
    assert_eq!(dns_label("Demo Pipe", 40), "demo-pipe");
    assert_eq!(dns_label("9lives__x", 40), "sf-9lives-x");
    assert_eq!(dns_label("a-b-", 3), "a-b");
    assert_eq!(dns_label(&"y".repeat(80), 40).len(), 40);
}

#[test]
fn runtime_class_is_the_nvidia_handler() {
    let f = match runtime_class_file() {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    assert!(f.text.starts_with(&format!(
        "{HEADER}apiVersion: node.k8s.io/v1\nkind: RuntimeClass\n"
    )));
    assert!(f.text.contains("handler: nvidia\n"));
}

/// Writes a little-endian f32 `.npy` file.
fn write_npy(path: &Path, shape: &[u64], data: &[f32]) {
    let mut out = crate::media::npy::header_bytes(shape, 0);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{e}"));
}

const MODEL_SPEC: &str = r#"name: Weighted
source: { synthetic: { width: 16, height: 12, frames: 4 } }
stages:
  - { id: conv, op: conv2d, kernel: 3, out_channels: 1, weights: { npy: { path: w.npy, watch: true } }, bias: { npy: m/b.npy } }
  - { id: conv2, op: conv2d, kernel: 3, out_channels: 1, weights: { npy: ../outside.npy } }
sink: { stats: {} }
nodes:
  pi: { letter: P, device: cpu, labels: { streamfuse.io/tier: pi } }
placement: PPP
"#;

/// The model files of [`MODEL_SPEC`] in `root/spec/` (and one outside it),
/// with `w` and `b` as the watched weights' and the bias's values.
fn model_manifests(root: &Path, w: f32, b: f32) -> (Pipeline, Manifests) {
    let dir = root.join("spec");
    write_npy(&dir.join("w.npy"), &[1, 1, 3, 3], &[w; 9]);
    write_npy(&dir.join("m/b.npy"), &[1], &[b]);
    write_npy(&root.join("outside.npy"), &[1, 1, 3, 3], &[0.5; 9]);
    let file = dir.join("weighted.yaml");
    let p = spec::parse(MODEL_SPEC, &file, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    let m = generate(&p, &plan(&p), MODEL_SPEC, &DeployOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    (p, m)
}

fn digest(m: &Manifests) -> String {
    m.segments[0]
        .deployment
        .spec
        .as_ref()
        .and_then(|d| d.template.metadata.as_ref())
        .and_then(|md| md.annotations.as_ref())
        .and_then(|a| a.get("streamfuse.io/spec-blake3"))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn model_files_inside_the_spec_directory_ship_in_the_configmap() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (p, m) = model_manifests(root.path(), 0.25, 1.0);
    let data = m.config_map.binary_data.clone().unwrap_or_default();
    // The two files inside the spec's directory, byte for byte; not the one outside.
    let on_disk = |rel: &str| std::fs::read(root.path().join("spec").join(rel)).unwrap_or_default();
    let mut shipped: Vec<(String, Vec<u8>)> = Vec::new();
    let pod = pod(&m, 0);
    let Some(items) = pod
        .volumes
        .as_ref()
        .and_then(|v| v.iter().find(|v| v.name == "spec"))
        .and_then(|v| v.config_map.as_ref())
        .and_then(|c| c.items.clone())
    else {
        panic!("the spec volume projects no items")
    };
    for it in &items {
        if it.key == SPEC_FILE {
            assert_eq!(it.path, SPEC_FILE);
            continue;
        }
        let Some(bytes) = data.get(&it.key) else {
            panic!("item {} has no binaryData", it.key)
        };
        shipped.push((it.path.clone(), bytes.0.clone()));
    }
    assert_eq!(items[0].key, SPEC_FILE, "the spec stays projected");
    assert_eq!(
        shipped,
        [
            ("w.npy".to_owned(), on_disk("w.npy")),
            ("m/b.npy".to_owned(), on_disk("m/b.npy"))
        ]
    );
    assert_eq!(data.len(), 2);
    // The file outside is named, with where the pods look for it.
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("stages[1].weights.npy")
                && w.contains("../outside.npy")
                && w.contains("mount it there")),
        "{:#?}",
        m.warnings
    );
    assert!(policy::check(&p, &plan(&p), &m).is_empty());
}

#[test]
fn new_watched_weights_keep_the_pods_and_other_new_files_roll_them() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_, first) = model_manifests(root.path(), 0.25, 1.0);
    let (_, watched) = model_manifests(root.path(), -0.5, 1.0);
    let (_, bias) = model_manifests(root.path(), -0.5, 2.0);
    assert_ne!(
        first.config_map.binary_data, watched.config_map.binary_data,
        "the ConfigMap carries the new weights"
    );
    assert_eq!(
        digest(&first),
        digest(&watched),
        "a watched file is swapped in live"
    );
    assert_ne!(digest(&watched), digest(&bias), "new bias rolls the pods");
    assert!(!digest(&first).is_empty());
}

#[test]
fn a_model_file_too_large_for_the_configmap_is_left_out_with_a_warning() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spec = "name: big
source: { synthetic: { width: 12, height: 12, channels: 64, frames: 2 } }
stages:
  - { id: conv, op: conv2d, kernel: 9, out_channels: 64, weights: { npy: big.npy } }
sink: { stats: {} }
";
    let n: usize = 64 * 64 * 9 * 9;
    write_npy(
        &root.path().join("big.npy"),
        &[64, 64, 9, 9],
        &vec![0.01; n],
    );
    let file = root.path().join("big.yaml");
    let p = spec::parse(spec, &file, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    let m =
        generate(&p, &plan(&p), spec, &DeployOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(m.config_map.binary_data.is_none());
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("stages[0].weights.npy")
                && w.contains(&format!("{} bytes", n * 4 + 128))
                && w.contains("/etc/streamfuse/big.npy")),
        "{:#?}",
        m.warnings
    );
}
