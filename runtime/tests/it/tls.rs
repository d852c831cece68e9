//! Mutual TLS between segments: a TLS server refuses plaintext and
//! unknown clients; control calls need an admin identity; a pipeline split
//! over mTLS gives the in-process digest; certificates and CAs are
//! reloaded when their files change; the plaintext health port answers.
//! Certificates are generated at test time ([`crate::certs`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::certs::{Certs, Pair};
use crate::common::write_npy;
use crate::support::{binary, free_port, last_json, metric, scrape, wait_listening};

/// A two-node spec (edge: source and conv; server: relu, pool and the
/// sink) with the pipeline's `tls` pointing at `certs` and
/// `ops.streamfuse.test` as the admin.
fn tls_spec(certs: &Certs, frames: u64, fps: Option<u32>) -> PathBuf {
    let dir = certs.dir.path();
    let fps = fps.map(|f| format!(", fps: {f}")).unwrap_or_default();
    let text = format!(
        "name: tls\n\
         source: {{ synthetic: {{ width: 64, height: 48, channels: 1, frames: {frames}, seed: 7{fps} }} }}\n\
         stages:\n  \
           - {{ id: conv, op: conv2d, kernel: 3, out_channels: 1, weights: {{ random: {{ seed: 1 }} }} }}\n  \
           - {{ id: relu, op: relu }}\n  \
           - {{ id: pool, op: maxpool, size: 2, stride: 2 }}\n\
         sink: {{ stats: {{}} }}\n\
         nodes:\n  \
           edge: {{ letter: E, device: cpu }}\n  \
           server: {{ letter: S, device: cpu }}\n\
         placement: EESS\n\
         tls: {{ cert: node.pem, key: node.key, ca: ca.pem, admins: [ops.streamfuse.test] }}\n"
    );
    let path = dir.join(format!("tls-{frames}.yaml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn update(addr: &str, tls: &[String], weights: &Path) -> Output {
    Command::new(binary())
        .args(["update-weights", addr, "--stage", "conv", "--json"])
        .args(tls)
        .arg("--weights")
        .arg(weights)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `grpc.health.v1.Health/Check` of service `""` at `addr`, in plaintext.
fn health(addr: &str) -> Result<i32, String> {
    rt().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
        c.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    })
}

#[test]
fn a_tls_segment_refuses_plaintext_unknown_and_non_admin_clients_and_takes_an_admins_update() {
    let certs = Certs::new();
    let spec = tls_spec(&certs, 1_000_000, Some(100));
    let ports = [free_port(), free_port()];
    let (metrics, health_port) = (free_port(), free_port());
    let serve = |k: usize, extra: &[String]| {
        let mut c = Command::new(binary());
        c.arg("serve").arg(&spec);
        c.args(["--segment", &k.to_string(), "--threads", "1"]);
        c.args(["--listen", &format!("127.0.0.1:{}", ports[k])]);
        c.args(extra);
        if k == 0 {
            c.args(["--next", &format!("127.0.0.1:{}", ports[1])]);
        }
        c.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c.spawn().unwrap_or_else(|e| panic!("segment {k}: {e}"))
    };
    let _kids = Kill(vec![
        serve(1, &[]),
        serve(
            0,
            &[
                "--metrics".into(),
                format!("127.0.0.1:{metrics}"),
                "--health-listen".into(),
                format!("127.0.0.1:{health_port}"),
            ],
        ),
    ]);
    wait_listening(&[ports[0], ports[1], metrics, health_port]);
    // Frames flow from segment 0 to segment 1 over mutual TLS.
    let t0 = Instant::now();
    while metric(&scrape(metrics), "streamfuse_frames_out_total").unwrap_or(0.0) < 5.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no frames went downstream over TLS: {}",
            scrape(metrics)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let addr = format!("127.0.0.1:{}", ports[0]);
    let good = certs.dir.path().join("w.npy");
    write_npy(&good, &[1, 1, 3, 3], &[0.25; 9]);

    // A plaintext client and a client of another CA never get a call in.
    let plain = update(&addr, &[], &good);
    assert!(!plain.status.success(), "{}", stderr(&plain));
    assert!(
        !stderr(&plain).contains("weights version"),
        "{}",
        stderr(&plain)
    );
    let rogue = update(&addr, &certs.flags(&certs.rogue), &good);
    let e = stderr(&rogue);
    assert!(!rogue.status.success(), "{e}");
    assert!(
        !e.contains("refused the update (PermissionDenied)") && !e.contains("weights version"),
        "the rogue certificate got as far as the call: {e}"
    );
    let text = scrape(metrics);
    assert!(
        metric(&text, "streamfuse_tls_refused_total").unwrap_or(0.0) >= 2.0,
        "{text}"
    );

    // A verified client that is not an admin: PERMISSION_DENIED, counted.
    let viewer = update(&addr, &certs.flags(&certs.viewer), &good);
    let e = stderr(&viewer);
    assert!(!viewer.status.success(), "{e}");
    assert!(
        e.contains("PermissionDenied") && e.contains("CN=viewer") && e.contains("names no admin"),
        "{e}"
    );
    let text = scrape(metrics);
    assert_eq!(
        metric(&text, "streamfuse_control_refused_total"),
        Some(1.0),
        "{text}"
    );

    // The admin (its DNS name is in the spec's admins): accepted, and the
    // version shows no update came before it.
    let admin = update(&addr, &certs.flags(&certs.admin), &good);
    assert!(admin.status.success(), "{}", stderr(&admin));
    let reply = last_json(&admin.stdout);
    assert_eq!(reply["version"], 2, "{reply}");
    assert_eq!(reply["applied"], true, "{reply}");

    // The kubelet-style probe: plaintext grpc.health.v1 on the health port
    // answers; the TLS port does not speak plaintext.
    assert_eq!(
        health(&format!("127.0.0.1:{health_port}")),
        Ok(1),
        "SERVING"
    );
    assert!(health(&addr).is_err(), "the TLS port answered plaintext");
}

#[test]
fn a_pipeline_split_over_mtls_gives_the_in_process_digest() {
    let certs = Certs::new();
    let spec = tls_spec(&certs, 40, None);
    let run = |extra: &[&str]| {
        let out = Command::new(binary())
            .arg("run")
            .arg(&spec)
            .args(["--threads", "1", "--json"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        last_json(&out.stdout)
    };
    let inproc = run(&[]);
    let split = run(&["--local"]);
    assert_eq!(split["frames"], 40, "{split}");
    assert_eq!(split["segments"], 2, "{split}");
    assert!(
        inproc["output_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("xxh3-128:")),
        "{inproc}"
    );
    assert_eq!(split["output_digest"], inproc["output_digest"]);
}

/// The certificate a TLS server at `port` presents to a client with
/// `client` (signed by the CA in `ca`), as DER.
#[allow(deprecated)] // the ring provider, as the server uses
fn served_cert(port: u16, ca: &Path, client: &Pair) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("{e}")) {
        roots
            .add(c.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&client.cert)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|c| c.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&client.key).unwrap_or_else(|e| panic!("{e}"));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap_or_else(|e| panic!("{e}"));
    rt().block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let name = ServerName::try_from("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("handshake: {e}"));
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    })
}

fn der(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(pem)
        .unwrap_or_else(|e| panic!("{e}"))
        .as_ref()
        .to_vec()
}

/// Replaces `to` with a copy of `from` as an orchestrator does: written
/// beside it, then renamed over it.
fn rotate(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, to).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn certificates_and_the_ca_are_reloaded_when_their_files_change() {
    let certs = Certs::new();
    let dir = certs.dir.path();
    let (cert, key, ca) = (
        dir.join("live.pem"),
        dir.join("live.key"),
        dir.join("live-ca.pem"),
    );
    rotate(&certs.node.cert, &cert);
    rotate(&certs.node.key, &key);
    rotate(&certs.ca.pem, &ca);
    let port = free_port();
    let thesis = crate::support::repo_root().join("examples/thesis.yaml");
    let mut c = Command::new(binary());
    c.arg("serve").arg(&thesis);
    c.args(["--size", "64x48", "--placement", "ESSS", "--segment", "1"]);
    c.args(["--listen", &format!("127.0.0.1:{port}"), "--admin", "ops"]);
    c.arg("--tls-cert").arg(&cert);
    c.arg("--tls-key").arg(&key);
    c.arg("--tls-ca").arg(&ca);
    c.env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let _kid = Kill(vec![c.spawn().unwrap_or_else(|e| panic!("{e}"))]);
    wait_listening(&[port]);
    assert!(
        served_cert(port, &certs.ca.pem, &certs.admin) == der(&certs.node.cert),
        "the server does not present its certificate"
    );

    // A wrong-shaped update from the admin: admitted, then refused for its
    // shape (nothing changes).
    let addr = format!("127.0.0.1:{port}");
    let wrong = dir.join("wrong.npy");
    write_npy(&wrong, &[1, 1, 1, 1], &[0.5]);
    let admitted = |o: &Output| stderr(o).contains("the stage needs");
    let o = update(&addr, &certs.flags(&certs.admin), &wrong);
    assert!(admitted(&o), "{}", stderr(&o));

    // A new certificate (the key first, as a non-atomic rotation may
    // leave them mismatched for a moment): new connections get it.
    let next = certs.ca.issue("node2", "segment-rotated", &["127.0.0.1"]);
    rotate(&next.key, &key);
    rotate(&next.cert, &cert);
    assert!(
        served_cert(port, &certs.ca.pem, &certs.admin) == der(&next.cert),
        "the rotated certificate is not served without a restart"
    );

    // A new CA: clients of the old one are refused, clients of the new
    // one admitted (the rogue certificate's CN is `ops`).
    rotate(&certs.rogue_ca, &ca);
    let o = update(&addr, &certs.flags(&certs.admin), &wrong);
    assert!(!o.status.success() && !admitted(&o), "{}", stderr(&o));
    let o = update(&addr, &certs.flags(&certs.rogue), &wrong);
    assert!(admitted(&o), "{}", stderr(&o));
}

#[test]
fn bad_tls_settings_are_refused_before_the_server_starts() {
    let certs = Certs::new();
    let dir = certs.dir.path();
    let thesis = crate::support::repo_root().join("examples/thesis.yaml");
    let serve = |tls: &[&Path], extra: &[&str]| {
        let mut c = Command::new(binary());
        c.arg("serve").arg(&thesis);
        c.args(["--size", "64x48", "--placement", "ESSS", "--segment", "1"]);
        c.args(["--listen", &format!("127.0.0.1:{}", free_port())]);
        c.arg("--tls-cert").arg(tls[0]);
        c.arg("--tls-key").arg(tls[1]);
        c.arg("--tls-ca").arg(tls[2]);
        c.args(extra);
        c.output().unwrap_or_else(|e| panic!("{e}"))
    };
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.join("missing.key");
    let (node, viewer, ca) = (&certs.node, &certs.viewer, certs.ca.pem.as_path());
    for (files, want) in [
        (
            [garbage.as_path(), node.key.as_path(), ca],
            format!("TLS certificate {}", garbage.display()),
        ),
        (
            [node.cert.as_path(), missing.as_path(), ca],
            format!("TLS key {}: cannot read", missing.display()),
        ),
        (
            [node.cert.as_path(), viewer.key.as_path(), ca],
            format!("does not match certificate {}", node.cert.display()),
        ),
        (
            [node.cert.as_path(), node.key.as_path(), garbage.as_path()],
            format!("TLS CA {}", garbage.display()),
        ),
    ] {
        let o = serve(&files, &[]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(&want), "want `{want}`: {}", stderr(&o));
    }
    let files = [node.cert.as_path(), node.key.as_path(), ca];
    let o = serve(&files, &["--control", "loopback"]);
    assert!(
        !o.status.success() && stderr(&o).contains("applies to plaintext servers only"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn spec_tls_errors_name_the_field() {
    let certs = Certs::new();
    let dir = certs.dir.path();
    let load = |tls: &str, nodes: &str| {
        let text = format!(
            "name: t\n\
             source: {{ synthetic: {{ width: 8, height: 8, channels: 1, frames: 1, seed: 1 }} }}\n\
             stages:\n  - {{ id: relu, op: relu }}\n\
             sink: {{ stats: {{}} }}\n\
             nodes:\n{nodes}\
             placement: ES\n{tls}"
        );
        let path = dir.join("t.yaml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        streamfuse::spec::load(&path, &Default::default())
    };
    let two = "  edge: { letter: E }\n  server: { letter: S }\n";
    let p = load(
        "tls: { cert: a.pem, key: a.key, ca: ca.pem, admins: [ops] }\n",
        two,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.nodes
            .iter()
            .all(|n| n.tls.as_ref().is_some_and(|t| t.ca == dir.join("ca.pem")))
    );
    assert_eq!(p.admins, ["ops"]);
    // A node's own files override the pipeline's.
    let own = "  edge: { letter: E, tls: { cert: e.pem, key: e.key } }\n  server: { letter: S }\n";
    let p = load("tls: { cert: a.pem, key: a.key, ca: ca.pem }\n", own)
        .unwrap_or_else(|e| panic!("{e}"));
    let edge = p.nodes[0].tls.clone().unwrap_or_else(|| panic!("no tls"));
    assert_eq!(
        (edge.cert, edge.ca),
        (dir.join("e.pem"), dir.join("ca.pem"))
    );
    for (tls, nodes, want) in [
        (
            "tls: { cert: a.pem, key: a.key }\n",
            two,
            "tls: node `edge` has no TLS `ca`",
        ),
        (
            "",
            "  edge: { letter: E, tls: { cert: e.pem, key: e.key, ca: c.pem } }\n  server: { letter: S }\n",
            "nodes.edge.tls: node `edge` has TLS but node `server` has none",
        ),
        (
            "tls: { cert: a.pem, key: a.key, ca: ca.pem, admins: [\"two words\"] }\n",
            two,
            "tls.admins[0]",
        ),
    ] {
        let e = load(tls, nodes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains(want) && e.contains("t.yaml:"),
            "want `{want}`: {e}"
        );
    }
}

#[test]
fn profile_probes_a_tls_server_with_an_admin_certificate_only() {
    let certs = Certs::new();
    let port = free_port();
    let thesis = crate::support::repo_root().join("examples/thesis.yaml");
    let mut c = Command::new(binary());
    c.arg("serve").arg(&thesis);
    c.args(["--size", "64x48", "--placement", "ESSS", "--segment", "1"]);
    c.args(["--listen", &format!("127.0.0.1:{port}"), "--admin", "ops"]);
    c.args(certs.flags(&certs.node));
    c.env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let _kid = Kill(vec![c.spawn().unwrap_or_else(|e| panic!("{e}"))]);
    wait_listening(&[port]);
    let out = certs.dir.path().join("edge.json");
    let profile = |pair: &Pair| {
        Command::new(binary())
            .arg("profile")
            .arg(&thesis)
            .args(["--node", "edge", "--cpus", "0.5"])
            .args(["--peer", &format!("server=127.0.0.1:{port}")])
            .args(["--size", "64x48", "--iters", "3", "--run-secs", "0.05"])
            .args(["--probe-secs", "0.2", "--repeats", "1"])
            .args(certs.flags(pair))
            .arg("--out")
            .arg(&out)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let viewer = profile(&certs.viewer);
    let e = stderr(&viewer);
    assert!(
        !viewer.status.success() && e.contains("Probe from") && e.contains("names no admin"),
        "{e}"
    );
    let admin = profile(&certs.admin);
    assert!(admin.status.success(), "{}", stderr(&admin));
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let link = &p["links"][0];
    assert_eq!(link["measured"], true, "{link}");
    assert!(
        link["samples"][0]["bytes_per_s"]
            .as_f64()
            .is_some_and(|b| b > 0.0),
        "{link}"
    );
}
