//! A misbehaving peer against a segment server that also serves a real
//! pipeline: once the pipeline streams, a thousand `Push` calls over more
//! connections than the server keeps, each trickling a frame's first bytes
//! and never reading its acks; `UpdateWeights` and `Info` calls without
//! credentials sending 8 MiB of a larger message; and requests with
//! oversized headers. The server must stay within its stated memory bound
//! (`caps::peer_memory_bound`), refuse and count the excess, and the
//! pipeline keep its throughput.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::{binary, free_port, metric, repo_root, scrape};

const FRAMES: &str = "6000";

fn segment(k: usize, port: u16, next: Option<u16>, metrics: u16) -> Child {
    let mut c = Command::new(binary());
    c.arg("serve")
        .arg(repo_root().join("examples/thesis.yaml"))
        .args(["--frames", FRAMES, "--size", "320x240", "--threads", "1"])
        .args(["--placement", "ESSS", "--segment", &k.to_string(), "--once"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(n) = next {
        c.args(["--next", &format!("127.0.0.1:{n}")]);
    }
    c.spawn().unwrap_or_else(|e| panic!("segment {k}: {e}"))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime and stime the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

struct Outcome {
    secs: f64,
    /// The sink segment's CPU time, clock ticks.
    cpu_ticks: u64,
    peak_rss_kib: u64,
    capped: f64,
    control_refused: f64,
    opened: u64,
}

/// The two-segment pipeline (source; conv, ReLU, pool and the stats
/// sink) over loopback, with `attack` run against the sink segment's port
/// while it streams.
fn pipeline(attack: bool) -> Outcome {
    let (p1, p0, m1, m0) = (free_port(), free_port(), free_port(), free_port());
    let mut sink = segment(1, p1, None, m1);
    let addr: SocketAddr = format!("127.0.0.1:{p1}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    crate::support::wait_listening(&[p1]);
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut source = segment(0, p0, Some(p1), m0);
    // The pipeline streaming first (its connection and call open), then
    // the attack for the rest of the run.
    while metric(&scrape(m1), "streamfuse_frames_out_total").unwrap_or(0.0) < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pipeline never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let attacker = attack.then(|| {
        let (stop, opened) = (stop.clone(), opened.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            rt.block_on(hostile(addr, stop, opened));
        })
    });
    let (mut peak, mut capped, mut control_refused, mut cpu) = (0, 0.0, 0.0, 0);
    let status = loop {
        peak = peak.max(rss_kib(sink.id()));
        cpu = cpu_ticks(sink.id()).unwrap_or(cpu);
        if let Some(s) = sink.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = sink.kill();
            panic!("the pipeline did not finish in 120 s (attack: {attack})");
        }
        // Read while the server runs: it exits with `--once`.
        let page = scrape(m1);
        if let Some(c) = metric(&page, "streamfuse_capped_total") {
            capped = c;
        }
        if let Some(c) = metric(&page, "streamfuse_control_refused_total") {
            control_refused = c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    if let Some(a) = attacker {
        let _ = a.join();
    }
    let src = source.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success() && src.success(),
        "attack {attack}: sink {status}, source {src}"
    );
    Outcome {
        secs,
        cpu_ticks: cpu,
        peak_rss_kib: peak,
        capped,
        control_refused,
        opened: opened.load(Ordering::SeqCst),
    }
}

/// 80 connections (more than the server's cap of 64), up to 13 `Push`
/// calls on each (1040 in all): each sends a gRPC prefix announcing a
/// 250 000-byte message and 192 KiB of it, then one byte every 200 ms, and
/// its responses (acks) are never read. The first 16 connections also make
/// 3 calls each, `UpdateWeights` (8 connections) or `Info` (8), sending
/// 8 MiB of a 12 MiB message: 24 calls of each, without credentials, that
/// a server must not buffer. Three more connections send a
/// request with a 64 KiB header. Runs until `stop`.
async fn hostile(addr: SocketAddr, stop: Arc<AtomicBool>, opened: Arc<AtomicU64>) {
    let mut bodies = Vec::new();
    let mut unread = Vec::new();
    for i in 0..80 {
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let Ok(Ok((client, conn))) =
            tokio::time::timeout(Duration::from_secs(2), h2::client::handshake(tcp)).await
        else {
            opened.fetch_add(13, Ordering::SeqCst);
            continue;
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client;
        // Per call: method, announced message bytes, bytes sent at once.
        let calls = match i {
            // 12 MiB announced (under the 64 MiB weights limit), 8 MiB sent.
            0..8 => vec![("UpdateWeights", 12 << 20, 8 << 20); 3],
            8..16 => vec![("Info", 12 << 20, 8 << 20); 3],
            _ => vec![],
        };
        // 250 000 bytes announced (under the segment's limit), 192 KiB
        // sent, the rest never.
        let pushes = vec![("Push", 250_000, 192 << 10); 13];
        for (method, announced, sent) in calls.into_iter().chain(pushes) {
            if method == "Push" {
                opened.fetch_add(1, Ordering::SeqCst);
            }
            let Ok(Ok(ready)) =
                tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
            else {
                continue;
            };
            client = ready;
            let req = http::Request::post(format!("http://{addr}/streamfuse.v1.Stage/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap_or_else(|e| panic!("{e}"));
            let Ok((resp, mut body)) = client.send_request(req, false) else {
                continue;
            };
            let mut head = vec![0u8];
            head.extend_from_slice(&u32::to_be_bytes(announced));
            head.resize(5 + sent, 0);
            let _ = body.send_data(Bytes::from(head), false);
            unread.push(resp);
            bodies.push(body);
        }
    }
    for _ in 0..3 {
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        if let Ok(Ok((mut client, conn))) =
            tokio::time::timeout(Duration::from_secs(2), h2::client::handshake(tcp)).await
        {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = http::Request::post(format!("http://{addr}/streamfuse.v1.Stage/Push"))
                .header("content-type", "application/grpc")
                .header("x-padding", "a".repeat(64 * 1024))
                .body(())
                .unwrap_or_else(|e| panic!("{e}"));
            if let Ok((resp, _body)) = client.send_request(req, true) {
                unread.push(resp);
            }
        }
    }
    while !stop.load(Ordering::SeqCst) {
        // A call the server ended (refused, reset) is not trickled on.
        bodies.retain_mut(|b| b.send_data(Bytes::from_static(&[7]), false).is_ok());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(unread);
}

#[test]
fn a_misbehaving_client_neither_grows_the_server_nor_slows_its_pipeline() {
    let _quiet = crate::support::quiet();
    // Alone, attacked, alone, attacked: each side's faster run is compared,
    // so one run slowed by something else on a 2-vCPU machine does not
    // decide the outcome; every attacked run is checked for the rest.
    let runs = [
        pipeline(false),
        pipeline(true),
        pipeline(false),
        pipeline(true),
    ];
    let alone = [&runs[0], &runs[2]];
    let attacked = [&runs[1], &runs[3]];
    let fastest = |v: &[&Outcome]| v.iter().map(|r| r.secs).fold(f64::INFINITY, f64::min);
    let (base_secs, hit_secs) = (fastest(&alone), fastest(&attacked));
    let least_cpu = |v: &[&Outcome]| v.iter().map(|r| r.cpu_ticks).min().unwrap_or(0);
    let (base_cpu, hit_cpu) = (least_cpu(&alone), least_cpu(&attacked));
    eprintln!(
        "pipeline alone: {:?} s, server CPU {:?} ticks, peak RSS {:?} KiB; under attack: {:?} s, server CPU {:?} ticks, peak RSS {:?} KiB, {:?} calls tried, {:?} refused at a cap",
        alone.map(|r| r.secs),
        alone.map(|r| r.cpu_ticks),
        alone.map(|r| r.peak_rss_kib),
        attacked.map(|r| r.secs),
        attacked.map(|r| r.cpu_ticks),
        attacked.map(|r| r.peak_rss_kib),
        attacked.map(|r| r.opened),
        attacked.map(|r| r.capped),
    );
    // The pipeline's own peak RSS moves by up to 38 MiB from one run alone
    // to the next (148-186 MiB in one test), so an attacked run is held to
    // the highest run alone, not to one chosen run, plus the request
    // memory the caps allow peers for this pipeline's links (320x240 f32
    // frames): about 125 MiB. With control calls admitted only after their
    // bodies were read, the same attack grew the server by 70 MiB and
    // refused none of them (the control-refused check fails).
    let base_rss = alone.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
    let limits = streamfuse::transport::Limits::for_frame(320 * 240 * 4);
    let bound_kib = (streamfuse::transport::caps::peer_memory_bound(&limits) / 1024) as u64;
    for hit in &attacked {
        assert!(
            hit.opened >= 1000,
            "the attack tried only {} calls",
            hit.opened
        );
        // The attack reached the caps (connections past 64, calls past 32).
        assert!(hit.capped > 0.0, "nothing was refused at a cap");
        // Every UpdateWeights without credentials was refused (and counted).
        assert!(
            hit.control_refused >= 24.0,
            "{} control calls refused, 24 made",
            hit.control_refused
        );
        assert!(
            hit.peak_rss_kib <= base_rss + bound_kib,
            "peak RSS {} KiB under attack, at most {base_rss} KiB alone plus the caps' bound of {bound_kib} KiB",
            hit.peak_rss_kib
        );
    }
    // What the attack costs the server: its CPU time for the same frames
    // within 25 % (the least of two runs each). On a real node the
    // attacker runs elsewhere; here it shares the two vCPUs with both
    // segments, so the pipeline's wall time is held to 1.5x.
    assert!(
        hit_cpu * 4 <= base_cpu * 5,
        "the server used {hit_cpu} CPU ticks under attack, {base_cpu} alone (the least of two runs each)"
    );
    assert!(
        hit_secs <= base_secs * 1.5,
        "under attack {hit_secs:.2} s, alone {base_secs:.2} s (the faster of two runs each)"
    );
}
