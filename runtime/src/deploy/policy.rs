//! Rules every generated deployment must follow, checked on typed objects
//! (fresh from [`super::generate`] or read back from files with
//! [`parse_files`]):
//!
//! - one Deployment and one Service of the same name per segment, in order;
//! - a GPU segment (`gpu-server`, `jetson`) has the `nvidia` runtime class, a
//!   node selector holding its node's labels and a toleration of the GPU
//!   taint; a `gpu-server` segment also claims one `nvidia.com/gpu`, a
//!   `jetson` segment claims none; a CPU segment has none of these;
//! - startup, liveness and readiness probes are native gRPC probes on the
//!   numeric gRPC container port (a TLS pod: its plaintext `health` port,
//!   which `--health-listen` serves), readiness asking for service
//!   `readiness`;
//! - a node with TLS mounts its Secret and passes its files as
//!   `--tls-cert`, `--tls-key` and `--tls-ca`, and takes no `--control`;
//!   Service target ports and the Prometheus port annotation are numeric and
//!   match the container ports;
//! - every Service selects exactly its Deployment's pods;
//! - a segment's `--next` is the next segment's Service name and gRPC port,
//!   the last segment has none;
//! - the spec is mounted from the ConfigMap, the pod runs as non-root, and
//!   its termination grace period exceeds its drain timeout;
//! - every label is a valid Kubernetes label.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Probe, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    DeployError, GPU_RESOURCE, GPU_TAINT, Manifests, RUNTIME_CLASS, SPEC_DIR, SPEC_FILE,
    SegmentObjects,
};
use crate::plan::Plan;
use crate::spec::{Machine, Pipeline};

/// Checks a Kubernetes label key and value.
///
/// # Errors
/// What is wrong with them.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "key prefix `{p}` is not a DNS subdomain (lower-case letters, digits, `-`, `.`)"
            ));
        }
    }
    if name.is_empty() || !label_text(name) {
        return Err(format!(
            "key name `{name}` must be 1-63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ));
    }
    if !value.is_empty() && !label_text(value) {
        return Err(format!(
            "value `{value}` must be at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn label_text(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads manifests back from files (`name`, `text`): `configmap.yaml` and
/// one file per segment holding its Deployment and Service. Segments are
/// ordered by their `streamfuse.io/segment` label.
///
/// # Errors
/// [`DeployError::Parse`] naming the file when it is not YAML, holds an
/// object of an unexpected kind, or a segment lacks its Deployment or
/// Service.
pub fn parse_files(files: &[(String, String)]) -> Result<Manifests, DeployError> {
    let mut config_map = None;
    let mut segments: BTreeMap<usize, (Option<Deployment>, Option<Service>, String)> =
        BTreeMap::new();
    for (file, text) in files {
        let bad = |message: String| DeployError::Parse {
            file: Path::new(file).to_path_buf(),
            message,
        };
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_str_multiple(text).map_err(|e| bad(e.to_string()))?;
        for doc in docs {
            let kind = doc
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            let segment_of = |labels: Option<&BTreeMap<String, String>>| {
                labels
                    .and_then(|l| l.get("streamfuse.io/segment"))
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or_else(|| bad(format!("{kind} without a streamfuse.io/segment label")))
            };
            match kind.as_str() {
                "ConfigMap" => {
                    let cm: ConfigMap =
                        serde_json::from_value(doc).map_err(|e| bad(e.to_string()))?;
                    config_map = Some(cm);
                }
                "Deployment" => {
                    let d: Deployment =
                        serde_json::from_value(doc).map_err(|e| bad(e.to_string()))?;
                    let k = segment_of(d.metadata.labels.as_ref())?;
                    let e = segments.entry(k).or_default();
                    e.2.clone_from(file);
                    e.0 = Some(d);
                }
                "Service" => {
                    let s: Service = serde_json::from_value(doc).map_err(|e| bad(e.to_string()))?;
                    let k = segment_of(s.metadata.labels.as_ref())?;
                    segments.entry(k).or_default().1 = Some(s);
                }
                other => return Err(bad(format!("unexpected object kind `{other}`"))),
            }
        }
    }
    let config_map = config_map.ok_or_else(|| DeployError::Parse {
        file: "configmap.yaml".into(),
        message: "no ConfigMap in the manifests".into(),
    })?;
    let segments = segments
        .into_iter()
        .map(|(index, (d, s, file))| match (d, s) {
            (Some(deployment), Some(service)) => Ok(SegmentObjects {
                index,
                deployment,
                service,
            }),
            _ => Err(DeployError::Parse {
                file: file.into(),
                message: format!("segment {index} needs a Deployment and a Service"),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Manifests {
        config_map,
        segments,
        warnings: Vec::new(),
    })
}

/// Checks every rule of this module on the manifests of `p` planned as
/// `plan`; returns one line per violation (empty when all hold).
pub fn check(p: &Pipeline, plan: &Plan, m: &Manifests) -> Vec<String> {
    let mut v = Vec::new();
    if m.segments.len() != plan.segments.len() {
        v.push(format!(
            "{} segment(s) in the manifests, {} in the plan",
            m.segments.len(),
            plan.segments.len()
        ));
        return v;
    }
    let cm_name = m.config_map.metadata.name.clone().unwrap_or_default();
    if !m
        .config_map
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(SPEC_FILE))
    {
        v.push(format!("ConfigMap {cm_name} has no `{SPEC_FILE}`"));
    }
    for (k, s) in m.segments.iter().enumerate() {
        let seg = &plan.segments[k];
        let machine = p.nodes[seg.node].machine;
        let name = s.name();
        let mut err = |msg: String| v.push(format!("segment {k} ({name}): {msg}"));
        if s.index != k {
            err(format!("found as segment {}", s.index));
        }
        if s.service.metadata.name.as_deref() != Some(name.as_str()) {
            err(format!(
                "Service is named {:?}, not after its Deployment",
                s.service.metadata.name
            ));
        }
        let Some((pod, c)) = pod_and_container(&s.deployment) else {
            err("Deployment has no pod template with one container".into());
            continue;
        };
        let template_labels = s
            .deployment
            .spec
            .as_ref()
            .and_then(|d| d.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref());
        for labels in [
            s.deployment.metadata.labels.as_ref(),
            template_labels,
            s.service.metadata.labels.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            for (key, value) in labels {
                if let Err(why) = check_label(key, value) {
                    err(format!("label {key}={value}: {why}"));
                }
            }
        }
        check_gpu(&p.nodes[seg.node].labels, machine, pod, c, &mut err);
        check_ports_and_probes(s, c, &mut err);
        check_args(p, k, pod, c, &cm_name, &mut err);
        check_next(m, k, c, &mut err);
        let non_root = pod
            .security_context
            .as_ref()
            .and_then(|sc| sc.run_as_non_root);
        if non_root != Some(true) {
            err("pod may run as root (runAsNonRoot is not true)".into());
        }
    }
    check_selectors(m, &mut v);
    v
}

fn pod_and_container(d: &Deployment) -> Option<(&PodSpec, &Container)> {
    let pod = d.spec.as_ref()?.template.spec.as_ref()?;
    match pod.containers.as_slice() {
        [c] => Some((pod, c)),
        _ => None,
    }
}

fn gpu_claim(c: &Container) -> Option<String> {
    let r = c.resources.as_ref()?;
    [r.limits.as_ref(), r.requests.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|m| m.get(GPU_RESOURCE).map(|q| q.0.clone()))
}

fn check_gpu(
    labels: &[(String, String)],
    machine: Machine,
    pod: &PodSpec,
    c: &Container,
    err: &mut impl FnMut(String),
) {
    let selector = pod.node_selector.clone().unwrap_or_default();
    for (key, value) in labels {
        if selector.get(key) != Some(value) {
            err(format!("nodeSelector lacks the node's label {key}={value}"));
        }
    }
    let tolerates = pod.tolerations.iter().flatten().any(|t| {
        t.key.as_deref() == Some(GPU_TAINT)
            && t.operator.as_deref() == Some("Exists")
            && t.effect.as_deref().is_none_or(|e| e == "NoSchedule")
    });
    let runtime = pod.runtime_class_name.as_deref();
    let claim = gpu_claim(c);
    if machine.has_gpu() {
        if runtime != Some(RUNTIME_CLASS) {
            err(format!(
                "{machine} segment without runtimeClassName {RUNTIME_CLASS} (has {runtime:?})"
            ));
        }
        if selector.is_empty() {
            err(format!("{machine} segment without a nodeSelector"));
        }
        if !tolerates {
            err(format!(
                "{machine} segment does not tolerate the {GPU_TAINT} taint"
            ));
        }
    } else {
        if runtime.is_some() {
            err(format!("CPU segment with runtimeClassName {runtime:?}"));
        }
        if tolerates {
            err(format!("CPU segment tolerates the {GPU_TAINT} taint"));
        }
    }
    match (machine, claim.as_deref()) {
        (Machine::GpuServer, Some("1")) | (Machine::Jetson | Machine::Cpu, None) => {}
        (m, q) => err(format!("{m} segment claims {GPU_RESOURCE} {q:?}")),
    }
}

fn container_port(c: &Container, name: &str) -> Option<i32> {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

fn check_ports_and_probes(s: &SegmentObjects, c: &Container, err: &mut impl FnMut(String)) {
    let Some(grpc) = container_port(c, "grpc") else {
        err("container has no port named grpc".into());
        return;
    };
    let metrics = container_port(c, "metrics");
    let health = container_port(c, "health");
    if let Some(h) = health {
        let listen = arg(c, "--health-listen").and_then(|a| a.rsplit_once(':'));
        if listen.and_then(|(_, port)| port.parse::<i32>().ok()) != Some(h) {
            err(format!(
                "--health-listen {:?} does not serve the health port {h}",
                arg(c, "--health-listen")
            ));
        }
    }
    // What the kubelet's probes reach: the health port where there is one.
    let grpc = health.unwrap_or(grpc);
    let probe = |p: &Option<Probe>| p.as_ref().and_then(|p| p.grpc.as_ref()).cloned();
    for (what, p, service) in [
        ("startup", &c.startup_probe, ""),
        ("liveness", &c.liveness_probe, ""),
        ("readiness", &c.readiness_probe, "readiness"),
    ] {
        match probe(p) {
            None => err(format!("no native gRPC {what} probe")),
            Some(g) => {
                if g.port != grpc {
                    err(format!(
                        "{what} probe on port {}, the gRPC (or health) port is {grpc}",
                        g.port
                    ));
                }
                if g.service.as_deref().unwrap_or_default() != service {
                    err(format!(
                        "{what} probe asks for service {:?}, not {service:?}",
                        g.service
                    ));
                }
            }
        }
    }
    let annotations = s
        .deployment
        .spec
        .as_ref()
        .and_then(|d| d.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    match annotations.get("prometheus.io/port") {
        Some(port) if port.parse::<i32>().ok() == metrics && metrics.is_some() => {}
        other => err(format!(
            "prometheus.io/port {other:?} is not the numeric metrics port {metrics:?}"
        )),
    }
    if annotations.get("prometheus.io/scrape").map(String::as_str) != Some("true") {
        err("pods are not marked prometheus.io/scrape: \"true\"".into());
    }
    let ports = s.service.spec.as_ref().and_then(|sp| sp.ports.clone());
    for sp in ports.iter().flatten() {
        let want = sp.name.as_deref().and_then(|n| container_port(c, n));
        match &sp.target_port {
            Some(IntOrString::Int(t)) if Some(*t) == want => {}
            t => err(format!(
                "Service port {:?} targets {t:?}, not the numeric container port {want:?}",
                sp.name
            )),
        }
    }
}

fn arg<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    let args = c.args.as_deref()?;
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn check_args(
    p: &Pipeline,
    k: usize,
    pod: &PodSpec,
    c: &Container,
    cm_name: &str,
    err: &mut impl FnMut(String),
) {
    let args = c.args.clone().unwrap_or_default();
    let spec_path = format!("{SPEC_DIR}/{SPEC_FILE}");
    if args.first().map(String::as_str) != Some("serve") || args.get(1) != Some(&spec_path) {
        err(format!("args do not start `serve {spec_path}`: {args:?}"));
    }
    if arg(c, "--segment") != Some(k.to_string().as_str()) {
        err(format!("--segment is {:?}", arg(c, "--segment")));
    }
    if arg(c, "--placement") != Some(p.placement_letters().as_str()) {
        err(format!(
            "--placement is {:?}, not {}",
            arg(c, "--placement"),
            p.placement_letters()
        ));
    }
    let mounted = pod.volumes.iter().flatten().any(|vol| {
        vol.config_map.as_ref().is_some_and(|cm| cm.name == cm_name)
            && c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == vol.name && m.mount_path == SPEC_DIR)
    });
    if !mounted {
        err(format!("ConfigMap {cm_name} is not mounted at {SPEC_DIR}"));
    }
    if p.nodes.iter().any(|n| n.tls.is_some()) {
        let secret_mounted = pod.volumes.iter().flatten().any(|vol| {
            vol.secret.is_some()
                && c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == vol.name && m.mount_path == super::TLS_DIR)
        });
        if !secret_mounted {
            err(format!("no TLS Secret mounted at {}", super::TLS_DIR));
        }
        for (flag, file) in [
            ("--tls-cert", "tls.crt"),
            ("--tls-key", "tls.key"),
            ("--tls-ca", "ca.crt"),
        ] {
            let want = format!("{}/{file}", super::TLS_DIR);
            if arg(c, flag) != Some(want.as_str()) {
                err(format!("{flag} is {:?}, not {want}", arg(c, flag)));
            }
        }
        if arg(c, "--control").is_some() {
            err("a TLS segment takes no --control (its admins decide)".into());
        }
    }
    let drain = arg(c, "--drain-timeout").and_then(|d| d.parse::<f64>().ok());
    let grace = pod.termination_grace_period_seconds;
    match (drain, grace) {
        (Some(d), Some(g)) if (g as f64) > d => {}
        _ => err(format!(
            "terminationGracePeriodSeconds {grace:?} does not exceed --drain-timeout {drain:?}"
        )),
    }
}

fn check_next(m: &Manifests, k: usize, c: &Container, err: &mut impl FnMut(String)) {
    let next = arg(c, "--next");
    let Some(downstream) = m.segments.get(k + 1) else {
        if next.is_some() {
            err(format!("last segment forwards to {next:?}"));
        }
        return;
    };
    let Some((host, port)) = next.and_then(|n| n.rsplit_once(':')) else {
        err(format!("--next is {next:?}, not HOST:PORT"));
        return;
    };
    if Some(host) != downstream.service.metadata.name.as_deref() {
        err(format!(
            "--next host {host} is not the next segment's Service {:?}",
            downstream.service.metadata.name
        ));
    }
    let grpc_port = downstream
        .service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some("grpc")))
        .map(|p| p.port);
    if port.parse::<i32>().ok() != grpc_port {
        err(format!(
            "--next port {port} is not the next Service's gRPC port {grpc_port:?}"
        ));
    }
}

fn check_selectors(m: &Manifests, v: &mut Vec<String>) {
    let pod_labels: Vec<BTreeMap<String, String>> = m
        .segments
        .iter()
        .map(|s| {
            s.deployment
                .spec
                .as_ref()
                .and_then(|d| d.template.metadata.as_ref())
                .and_then(|md| md.labels.clone())
                .unwrap_or_default()
        })
        .collect();
    for (k, s) in m.segments.iter().enumerate() {
        let name = s.name();
        let selector = s
            .service
            .spec
            .as_ref()
            .and_then(|sp| sp.selector.clone())
            .unwrap_or_default();
        if selector.is_empty() {
            v.push(format!("segment {k} ({name}): Service selects nothing"));
            continue;
        }
        let matches = |labels: &BTreeMap<String, String>| {
            selector
                .iter()
                .all(|(key, val)| labels.get(key) == Some(val))
        };
        let deployment_selector = s
            .deployment
            .spec
            .as_ref()
            .and_then(|d| d.selector.match_labels.clone())
            .unwrap_or_default();
        if deployment_selector != selector {
            v.push(format!(
                "segment {k} ({name}): Service selector {selector:?} differs from the Deployment's {deployment_selector:?}"
            ));
        }
        for (j, labels) in pod_labels.iter().enumerate() {
            if (j == k) != matches(labels) {
                v.push(format!(
                    "segment {k} ({name}): Service {} the pods of segment {j}",
                    if j == k {
                        "does not select"
                    } else {
                        "also selects"
                    }
                ));
            }
        }
    }
}
