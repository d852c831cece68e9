//! Kubernetes (k3s) manifests for a pipeline, built as typed `k8s-openapi`
//! objects and serialized to YAML (`streamfuse manifests`).
//!
//! For a placement the generator writes:
//! - `configmap.yaml`: a `ConfigMap` holding the spec file as written and
//!   the weights and bias files its stages name ([`model_files`]),
//!   mounted into every pod at [`SPEC_DIR`];
//! - `<segment>.yaml` per segment: a `Deployment` (one pod running
//!   `streamfuse serve --segment K`) and a `Service` of the same name. A
//!   segment's `--next` is the next segment's Service DNS name and port.
//!
//! What a pod gets follows its node's [`Machine`]:
//!
//! | machine | image | runtime class | `nvidia.com/gpu` | GPU toleration | arch |
//! |---|---|---|---|---|---|
//! | `gpu-server` | server (CUDA 12) | `nvidia` | 1 | yes | amd64 |
//! | `jetson` | jetson (L4T r35) | `nvidia` | none (the device plugin is not reliable on Xavier) | yes | arm64 |
//! | `cpu` | cpu (amd64 + arm64) | none | none | no | any |
//!
//! Every pod selects its node by the node's `labels` from the spec, runs as
//! a non-root user with a read-only root file system, has native gRPC
//! startup/liveness probes (health service `""`) and a readiness probe
//! (service `readiness`) on the numeric gRPC port, Prometheus scrape
//! annotations for the metrics port, and a termination grace period longer
//! than the drain timeout it passes to `serve`.
//!
//! [`policy`] checks these rules on generated (or checked-in) objects.

mod model_files;
pub mod policy;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::plan::Plan;
use crate::spec::{Machine, Pipeline};

pub use workload::SegmentObjects;

/// Name (and handler) of the NVIDIA container runtime class.
pub const RUNTIME_CLASS: &str = "nvidia";
/// Extended resource of the NVIDIA device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Taint key GPU nodes carry (`kubectl taint nodes N nvidia.com/gpu=present:NoSchedule`);
/// GPU pods tolerate it.
pub const GPU_TAINT: &str = "nvidia.com/gpu";
/// Where the spec is mounted in every pod.
pub const SPEC_DIR: &str = "/etc/streamfuse";
/// File name of the spec in the ConfigMap and in [`SPEC_DIR`].
pub const SPEC_FILE: &str = "spec.yaml";
/// Port of the Prometheus metrics endpoint in every pod.
pub const METRICS_PORT: u16 = 9090;
/// Port of the plaintext `grpc.health.v1` listener of a TLS pod
/// (`serve --health-listen`), which the kubelet's gRPC probes use: they
/// cannot present a client certificate.
pub const HEALTH_PORT: u16 = 50052;
/// Where a TLS pod's Secret (cert-manager's layout: `tls.crt`, `tls.key`,
/// `ca.crt`) is mounted.
pub const TLS_DIR: &str = "/etc/streamfuse-tls";
/// gRPC port of a segment whose node has no `address` in the spec.
pub const DEFAULT_GRPC_PORT: u16 = 50051;
/// Seconds the pod gets beyond the drain timeout before it is killed.
pub const GRACE_MARGIN_S: u32 = 5;
/// The largest ConfigMap the API server accepts.
const CONFIGMAP_MAX_BYTES: usize = 1 << 20;

/// Container images, one per [`Machine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// x86_64 server with an NVIDIA GPU (`containers/Dockerfile.server-cuda`).
    pub server: String,
    /// Jetson, L4T r35 (`containers/Dockerfile.jetson`).
    pub jetson: String,
    /// CPU only, amd64 and arm64 (`containers/Dockerfile.cpu`).
    pub cpu: String,
}

impl Default for Images {
    fn default() -> Self {
        let v = env!("CARGO_PKG_VERSION");
        Self {
            server: format!("streamfuse/server-cuda:{v}"),
            jetson: format!("streamfuse/jetson:{v}"),
            cpu: format!("streamfuse/cpu:{v}"),
        }
    }
}

impl Images {
    /// The image for a machine.
    pub fn for_machine(&self, m: Machine) -> &str {
        match m {
            Machine::GpuServer => &self.server,
            Machine::Jetson => &self.jetson,
            Machine::Cpu => &self.cpu,
        }
    }
}

/// How to generate manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOptions {
    /// Images per machine kind.
    pub images: Images,
    /// `serve --drain-timeout`, seconds; the grace period adds
    /// [`GRACE_MARGIN_S`].
    pub drain_timeout_s: u32,
    /// `--frames` passed to every segment.
    pub frames: Option<u64>,
    /// `--size WxH` passed to every segment.
    pub size: Option<(usize, usize)>,
    /// `--threads` passed to every segment.
    pub threads: Option<usize>,
}

impl Default for DeployOptions {
    fn default() -> Self {
        Self {
            images: Images::default(),
            drain_timeout_s: 10,
            frames: None,
            size: None,
            threads: None,
        }
    }
}

/// Manifests cannot be generated.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A node address has no usable port (the one port rule,
    /// [`crate::plan::addresses`]).
    #[error(transparent)]
    Address(#[from] crate::plan::addresses::AddressError),
    /// A node label is not a valid Kubernetes label.
    #[error("node `{node}`: label `{key}: {value}` is not a valid Kubernetes label: {why}")]
    BadLabel {
        /// Node.
        node: String,
        /// Label key.
        key: String,
        /// Label value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A GPU node has no labels, so its pods could land on a node without the GPU.
    #[error(
        "node `{node}` is a {machine} machine but has no `labels` in the spec: its pods would not be pinned to it"
    )]
    Unlabelled {
        /// Node.
        node: String,
        /// Its machine kind.
        machine: Machine,
    },
    /// Two ports of a pod collide.
    #[error("segment {segment}: gRPC port {port} is also the {other} port")]
    PortClash {
        /// Segment.
        segment: usize,
        /// Port.
        port: u16,
        /// The other port's use (`metrics`, `health`).
        other: &'static str,
    },
    /// The spec is too large for a ConfigMap.
    #[error("the spec is {bytes} bytes; a ConfigMap holds at most {CONFIGMAP_MAX_BYTES}")]
    SpecTooLarge {
        /// Spec size.
        bytes: usize,
    },
    /// An object could not be serialized.
    #[error("cannot serialize {what} as YAML: {source}")]
    Yaml {
        /// Which object.
        what: String,
        /// Cause.
        source: serde_saphyr::SerializeError,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A manifest file could not be read back.
    #[error("{file}: {message}")]
    Parse {
        /// File.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// All objects of a pipeline's deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The spec, mounted into every pod.
    pub config_map: ConfigMap,
    /// Per segment, in order.
    pub segments: Vec<SegmentObjects>,
    /// Things the user should know (spec files that are not in the
    /// ConfigMap, ...).
    pub warnings: Vec<String>,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// File name (no directory).
    pub name: String,
    /// YAML, one document per object.
    pub text: String,
}

/// First line of every generated file.
pub const HEADER: &str = "# Generated by `streamfuse manifests`: do not edit, regenerate.\n";

/// Generates the objects for `p` with its placement and fusion mode;
/// `spec_text` is the spec file as written (it goes into the ConfigMap).
///
/// # Errors
/// [`DeployError`] when a node's address or labels cannot be used, a GPU
/// node has no labels, ports collide, or the spec is too large.
pub fn generate(
    p: &Pipeline,
    plan: &Plan,
    spec_text: &str,
    opts: &DeployOptions,
) -> Result<Manifests, DeployError> {
    if spec_text.len() > CONFIGMAP_MAX_BYTES {
        return Err(DeployError::SpecTooLarge {
            bytes: spec_text.len(),
        });
    }
    for node in &p.nodes {
        for (k, v) in &node.labels {
            policy::check_label(k, v).map_err(|why| DeployError::BadLabel {
                node: node.name.clone(),
                key: k.clone(),
                value: v.clone(),
                why,
            })?;
        }
    }
    let mut packed = model_files::pack(p, spec_text.len())?;
    // What rolls the pods when it changes: the spec and the model files
    // that are not watched (a watched one is swapped in live).
    let mut digest = blake3::Hasher::new();
    digest.update(spec_text.as_bytes());
    for f in packed
        .rolling
        .iter()
        .filter_map(|k| packed.binary_data.get(k))
    {
        digest.update(&(f.0.len() as u64).to_le_bytes());
        digest.update(&f.0);
    }
    let spec_digest = digest.finalize().to_hex().to_string();
    let binary_data = std::mem::take(&mut packed.binary_data);
    let names = Names::new(p, plan);
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(names.config_map.clone()),
            labels: Some(names.common_labels()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            SPEC_FILE.to_owned(),
            spec_text.to_owned(),
        )])),
        binary_data: (!binary_data.is_empty()).then_some(binary_data),
        ..Default::default()
    };
    let ports = (0..plan.segments.len())
        .map(|k| grpc_port(p, plan, k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut segments = Vec::with_capacity(plan.segments.len());
    for seg in &plan.segments {
        let node = &p.nodes[seg.node];
        if node.machine.has_gpu() && node.labels.is_empty() {
            return Err(DeployError::Unlabelled {
                node: node.name.clone(),
                machine: node.machine,
            });
        }
        if ports[seg.index] == METRICS_PORT {
            return Err(DeployError::PortClash {
                segment: seg.index,
                port: METRICS_PORT,
                other: "metrics",
            });
        }
        if node.tls.is_some() && ports[seg.index] == HEALTH_PORT {
            return Err(DeployError::PortClash {
                segment: seg.index,
                port: HEALTH_PORT,
                other: "health",
            });
        }
        let next = plan
            .segments
            .get(seg.index + 1)
            .map(|n| format!("{}:{}", names.segments[n.index], ports[n.index]));
        segments.push(workload::segment(&workload::SegmentInput {
            p,
            seg,
            names: &names,
            port: ports[seg.index],
            next,
            spec_digest: &spec_digest,
            spec_items: &packed.items,
            opts,
        }));
    }
    Ok(Manifests {
        config_map,
        segments,
        warnings: warnings(p).into_iter().chain(packed.warnings).collect(),
    })
}

fn warnings(p: &Pipeline) -> Vec<String> {
    use crate::spec::{SinkConfig, SourceConfig};
    let mut w = Vec::new();
    if p.sources().any(|s| matches!(s, SourceConfig::Npy { .. })) {
        w.push(format!(
            "source.npy reads files next to the spec; the pods see only the spec under {SPEC_DIR}: mount the frames there"
        ));
    }
    if matches!(p.source, SourceConfig::Video(_) | SourceConfig::Images(_)) {
        w.push(format!(
            "source.video/images read files next to the spec; the pods see only the spec under {SPEC_DIR}: mount the frames there"
        ));
    }
    if matches!(p.source, SourceConfig::Camera(_)) {
        w.push(
            "source.camera opens /dev/video<index> on the source's node: give its pod the device (a hostPath volume or a device plugin)".into(),
        );
    }
    if matches!(p.sink, SinkConfig::Video(_) | SinkConfig::Images(_)) {
        w.push(format!(
            "sink.video/images write next to the spec; {SPEC_DIR} is read-only in the pods: mount a writable volume there"
        ));
    }
    if matches!(p.sink, SinkConfig::Npy(_)) {
        w.push(format!(
            "sink.npy writes next to the spec; {SPEC_DIR} is read-only in the pods: mount a writable volume there"
        ));
    }
    w
}

impl Manifests {
    /// The files to write, in a fixed order: `configmap.yaml`, then one
    /// `<segment>.yaml` (Deployment, then Service) per segment.
    ///
    /// # Errors
    /// [`DeployError::Yaml`] when an object cannot be serialized.
    pub fn files(&self) -> Result<Vec<ManifestFile>, DeployError> {
        let mut out = vec![ManifestFile {
            name: "configmap.yaml".into(),
            text: format!("{HEADER}{}", to_yaml("ConfigMap", &self.config_map)?),
        }];
        for s in &self.segments {
            let name = s.name();
            let text = format!(
                "{HEADER}{}---\n{}",
                to_yaml(&format!("Deployment {name}"), &s.deployment)?,
                to_yaml(&format!("Service {name}"), &s.service)?,
            );
            out.push(ManifestFile {
                name: format!("{name}.yaml"),
                text,
            });
        }
        Ok(out)
    }
}

/// The `nvidia` RuntimeClass, for k3s versions that do not create it when
/// they detect the NVIDIA container runtime.
pub fn runtime_class() -> RuntimeClass {
    RuntimeClass {
        metadata: ObjectMeta {
            name: Some(RUNTIME_CLASS.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "streamfuse".to_owned(),
            )])),
            ..Default::default()
        },
        handler: RUNTIME_CLASS.into(),
        ..Default::default()
    }
}

/// [`runtime_class`] as a file, `runtimeclass.yaml`.
///
/// # Errors
/// [`DeployError::Yaml`] when it cannot be serialized.
pub fn runtime_class_file() -> Result<ManifestFile, DeployError> {
    Ok(ManifestFile {
        name: "runtimeclass.yaml".into(),
        text: format!("{HEADER}{}", to_yaml("RuntimeClass", &runtime_class())?),
    })
}

/// Writes `files` into `dir` (created if needed) and removes the
/// generated files (those starting with [`HEADER`]) of an earlier run that
/// are not among them, so that `kubectl apply -f DIR` deploys exactly
/// `files`. Returns the removed paths.
///
/// # Errors
/// [`DeployError::Io`] naming the path that cannot be read, written or
/// removed.
pub fn write_dir(dir: &Path, files: &[ManifestFile]) -> Result<Vec<PathBuf>, DeployError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DeployError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let ours = path.extension().is_some_and(|e| e == "yaml")
            && !files
                .iter()
                .any(|f| path.file_name().is_some_and(|n| n == f.name.as_str()))
            && std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(HEADER));
        if ours {
            stale.push(path);
        }
    }
    stale.sort();
    for path in &stale {
        std::fs::remove_file(path).map_err(io(path))?;
    }
    for f in files {
        let path = dir.join(&f.name);
        std::fs::write(&path, &f.text).map_err(io(&path))?;
    }
    Ok(stale)
}

fn to_yaml<T: Serialize>(what: &str, v: &T) -> Result<String, DeployError> {
    let mut text = serde_saphyr::to_string(v).map_err(|source| DeployError::Yaml {
        what: what.to_owned(),
        source,
    })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// The gRPC port of segment `k`: the one port rule
/// ([`crate::plan::addresses::segment_port`]), with [`DEFAULT_GRPC_PORT`]
/// onwards where the node has no address.
///
/// # Errors
/// [`DeployError::Address`] when the address has no usable port.
pub fn grpc_port(p: &Pipeline, plan: &Plan, k: usize) -> Result<u16, DeployError> {
    Ok(crate::plan::addresses::segment_port(
        p,
        plan,
        k,
        Some(DEFAULT_GRPC_PORT),
    )?)
}

/// Object names and labels of a pipeline's deployment.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The pipeline name as a DNS label.
    pub instance: String,
    /// The ConfigMap.
    pub config_map: String,
    /// Deployment and Service name per segment.
    pub segments: Vec<String>,
}

impl Names {
    fn new(p: &Pipeline, plan: &Plan) -> Self {
        let instance = dns_label(&p.name, 40);
        let segments = plan
            .segments
            .iter()
            .map(|s| {
                let suffix = format!("-seg{}-{}", s.index, dns_label(&p.nodes[s.node].name, 16));
                format!("{instance}{suffix}")
            })
            .collect();
        Self {
            config_map: format!("{instance}-spec"),
            instance,
            segments,
        }
    }

    /// The Secret holding node `node`'s certificate, key and CA (for a
    /// cert-manager `Certificate` to write).
    pub fn tls_secret(&self, node: &str) -> String {
        format!("{}-{}-tls", self.instance, dns_label(node, 16))
    }

    /// Labels every object carries.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "streamfuse".to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                self.instance.clone(),
            ),
            (
                "app.kubernetes.io/part-of".to_owned(),
                "streamfuse".to_owned(),
            ),
        ])
    }

    /// Labels that select segment `k`'s pods (and only them).
    pub fn selector(&self, k: usize) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "streamfuse".to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                self.instance.clone(),
            ),
            ("streamfuse.io/segment".to_owned(), k.to_string()),
        ])
    }
}

/// `s` as an RFC 1035 label of at most `max` characters: lower-case
/// letters, digits and `-`, starting with a letter and ending with a letter
/// or digit.
fn dns_label(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "sf-");
    }
    out.truncate(max);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests;
