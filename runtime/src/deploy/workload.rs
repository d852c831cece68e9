//! One segment's Deployment and Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    GRPCAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    DeployOptions, GPU_RESOURCE, GPU_TAINT, GRACE_MARGIN_S, HEALTH_PORT, METRICS_PORT, Names,
    RUNTIME_CLASS, SPEC_DIR, SPEC_FILE, TLS_DIR,
};
use crate::plan::Segment;
use crate::spec::{Machine, Pipeline};

/// The user (and group) the images create and the pods run as.
pub const RUN_AS: i64 = 10001;
/// Group that owns the Jetson GPU device nodes (`video` on L4T).
const JETSON_VIDEO_GID: i64 = 44;
/// Where compiled kernels are cached in a pod (an `emptyDir`).
const CACHE_DIR: &str = "/var/cache/streamfuse";
/// Where the sink's segment keeps its commit journal (an `emptyDir`: it
/// outlives a restart of the container, so a sink killed and restarted by
/// the kubelet resumes its record instead of starting a new one).
const STATE_DIR: &str = "/var/lib/streamfuse";
/// Frames of the segment's largest frame budgeted in its memory request.
const FRAMES_BUDGETED: u64 = 32;
/// Memory for the process itself, MiB.
const BASE_MIB: u64 = 128;

/// A segment's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentObjects {
    /// Segment index.
    pub index: usize,
    /// One pod running `streamfuse serve --segment K`.
    pub deployment: Deployment,
    /// The segment's stable address (same name as the Deployment).
    pub service: Service,
}

impl SegmentObjects {
    /// Name of the Deployment and the Service.
    pub fn name(&self) -> String {
        self.deployment.metadata.name.clone().unwrap_or_default()
    }
}

pub(super) struct SegmentInput<'a> {
    pub p: &'a Pipeline,
    pub seg: &'a Segment,
    pub names: &'a Names,
    pub port: u16,
    pub next: Option<String>,
    pub spec_digest: &'a str,
    /// Where the ConfigMap's keys go in the spec directory (empty: all
    /// keys, by their names).
    pub spec_items: &'a [KeyToPath],
    pub opts: &'a DeployOptions,
}

pub(super) fn segment(i: &SegmentInput<'_>) -> SegmentObjects {
    let k = i.seg.index;
    let node = &i.p.nodes[i.seg.node];
    let tls = node.tls.as_ref();
    let name = i.names.segments[k].clone();
    let selector = i.names.selector(k);
    let mut labels = i.names.common_labels();
    labels.extend(selector.clone());
    labels.insert(
        "streamfuse.io/node".into(),
        super::dns_label(&node.name, 63),
    );
    labels.insert("streamfuse.io/machine".into(), node.machine.name().into());

    let pod_labels = labels.clone();
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), METRICS_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
        (
            "streamfuse.io/placement".to_owned(),
            i.p.placement_letters(),
        ),
        ("streamfuse.io/spec-blake3".to_owned(), i.spec_digest.into()),
    ]);

    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // One pod per segment at a time: the old one drains before the
            // new one starts (two sources would emit every frame twice).
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec(i)),
            },
            ..Default::default()
        }),
        ..Default::default()
    };

    let service = Service {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("grpc".into()),
                    port: i32::from(i.port),
                    target_port: Some(IntOrString::Int(i32::from(i.port))),
                    protocol: Some("TCP".into()),
                    // HTTP/2 in plaintext; over TLS no standard name applies.
                    app_protocol: tls.is_none().then(|| "kubernetes.io/h2c".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: i32::from(METRICS_PORT),
                    target_port: Some(IntOrString::Int(i32::from(METRICS_PORT))),
                    protocol: Some("TCP".into()),
                    app_protocol: Some("http".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };

    SegmentObjects {
        index: k,
        deployment,
        service,
    }
}

/// `streamfuse serve` arguments of the segment (the image's entrypoint is
/// the binary).
fn serve_args(i: &SegmentInput<'_>) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "serve".into(),
        format!("{SPEC_DIR}/{SPEC_FILE}"),
        "--segment".into(),
        i.seg.index.to_string(),
        "--placement".into(),
        i.p.placement_letters(),
        "--fusion".into(),
        i.p.fusion.name().into(),
        "--listen".into(),
        format!("0.0.0.0:{}", i.port),
        "--metrics".into(),
        format!("0.0.0.0:{METRICS_PORT}"),
        "--drain-timeout".into(),
        i.opts.drain_timeout_s.to_string(),
    ];
    if i.p.nodes[i.seg.node].tls.is_some() {
        // Mutual TLS with the node's Secret (cert-manager's file names);
        // control calls from the spec's `tls.admins` identities; the
        // kubelet probes a plaintext port that serves health only.
        a.extend([
            "--tls-cert".into(),
            format!("{TLS_DIR}/tls.crt"),
            "--tls-key".into(),
            format!("{TLS_DIR}/tls.key"),
            "--tls-ca".into(),
            format!("{TLS_DIR}/ca.crt"),
            "--health-listen".into(),
            format!("0.0.0.0:{HEALTH_PORT}"),
        ]);
    } else {
        // Control calls (UpdateWeights, Probe) from the pod's own loopback
        // only: `kubectl port-forward` reaches it, other pods do not.
        a.extend(["--control".into(), "loopback".into()]);
    }
    if let Some(next) = &i.next {
        a.extend(["--next".into(), next.clone()]);
    } else {
        a.extend(["--journal".into(), format!("{STATE_DIR}/sink.journal")]);
    }
    if let Some(f) = i.opts.frames {
        a.extend(["--frames".into(), f.to_string()]);
    }
    if let Some((w, h)) = i.opts.size {
        a.extend(["--size".into(), format!("{w}x{h}")]);
    }
    if let Some(t) = i.opts.threads {
        a.extend(["--threads".into(), t.to_string()]);
    }
    a
}

fn grpc_probe(port: u16, service: &str, period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: i32::from(port),
            service: Some(service.into()),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, String)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity(v.clone())))
        .collect()
}

/// Memory request and limit in MiB: the process, plus
/// [`FRAMES_BUDGETED`] of the largest frame the segment receives or emits
/// (of any stream).
fn memory_mib(i: &SegmentInput<'_>) -> (u64, u64) {
    let largest = |stage: usize| {
        i.p.stream_shapes(stage)
            .iter()
            .map(|s| s.bytes())
            .max()
            .unwrap_or(0)
    };
    let frame = largest(i.seg.stages.start)
        .max(largest(i.seg.stages.end))
        .max(i.seg.output.bytes()) as u64;
    let frames_mib = (frame * FRAMES_BUDGETED).div_ceil(1 << 20);
    let request = BASE_MIB + frames_mib;
    (request, 2 * request)
}

fn pod_spec(i: &SegmentInput<'_>) -> PodSpec {
    let node = &i.p.nodes[i.seg.node];
    let machine = node.machine;
    let tls = node.tls.is_some();
    // The kubelet probes the plaintext health port of a TLS pod.
    let probe_port = if tls { HEALTH_PORT } else { i.port };
    let mut ports = vec![
        ContainerPort {
            name: Some("grpc".into()),
            container_port: i32::from(i.port),
            protocol: Some("TCP".into()),
            ..Default::default()
        },
        ContainerPort {
            name: Some("metrics".into()),
            container_port: i32::from(METRICS_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "spec".into(),
            mount_path: SPEC_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "cache".into(),
            mount_path: CACHE_DIR.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "state".into(),
            mount_path: STATE_DIR.into(),
            ..Default::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "spec".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: i.names.config_map.clone(),
                items: (!i.spec_items.is_empty()).then(|| i.spec_items.to_vec()),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "cache".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "state".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    if tls {
        ports.push(ContainerPort {
            name: Some("health".into()),
            container_port: i32::from(HEALTH_PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
        // Mounted as a directory (no subPath), so the kubelet's updates of
        // a renewed certificate reach the files the server re-reads.
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(i.names.tls_secret(&node.name)),
                // Readable by the pod's group (fsGroup) only.
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let mut node_selector: BTreeMap<String, String> = node.labels.iter().cloned().collect();
    match machine {
        Machine::GpuServer => {
            node_selector.insert("kubernetes.io/arch".into(), "amd64".into());
        }
        Machine::Jetson => {
            node_selector.insert("kubernetes.io/arch".into(), "arm64".into());
        }
        // The CPU image is built for amd64 and arm64.
        Machine::Cpu => {}
    }

    let (mem_req, mem_lim) = memory_mib(i);
    let mut limits = vec![("cpu", "4".to_owned()), ("memory", format!("{mem_lim}Mi"))];
    if machine == Machine::GpuServer {
        limits.push((GPU_RESOURCE, "1".into()));
    }
    let resources = ResourceRequirements {
        requests: Some(quantities(&[
            ("cpu", "1".into()),
            ("memory", format!("{mem_req}Mi")),
        ])),
        limits: Some(quantities(&limits)),
        ..Default::default()
    };

    let container = Container {
        name: "streamfuse".into(),
        image: Some(i.opts.images.for_machine(machine).to_owned()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(serve_args(i)),
        env: Some(vec![
            EnvVar {
                name: "RUST_LOG".into(),
                value: Some("info".into()),
                ..Default::default()
            },
            EnvVar {
                name: "STREAMFUSE_CACHE_DIR".into(),
                value: Some(CACHE_DIR.into()),
                ..Default::default()
            },
        ]),
        ports: Some(ports),
        // Serving once the device is up and the kernels are compiled
        // (NVRTC on a Jetson takes a while the first time): up to 5 min.
        startup_probe: Some(grpc_probe(probe_port, "", 2, 150)),
        liveness_probe: Some(grpc_probe(probe_port, "", 10, 3)),
        readiness_probe: Some(grpc_probe(probe_port, "readiness", 5, 1)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    let tolerations = machine.has_gpu().then(|| {
        vec![Toleration {
            key: Some(GPU_TAINT.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]
    });

    PodSpec {
        runtime_class_name: machine.has_gpu().then(|| RUNTIME_CLASS.to_owned()),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations,
        termination_grace_period_seconds: Some(i64::from(
            i.opts.drain_timeout_s.saturating_add(GRACE_MARGIN_S),
        )),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            supplemental_groups: (machine == Machine::Jetson).then(|| vec![JETSON_VIDEO_GID]),
            // The TLS Secret's files belong to this group.
            fs_group: tls.then_some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    }
}
