//! Bad input never takes a segment server down: each malformed,
//! mis-ordered, oversized or old-protocol frame gets a status naming its
//! seq (`stage.proto`'s rules), garbage on the port closes that connection,
//! and the server goes on serving other streams, the refused ones included.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{binary, free_port, repo_root};
use bytes::Bytes;
use streamfuse_proto::v1;
use streamfuse_proto::v1::stage_client::StageClient;
use tonic::Code;
use tonic::transport::Channel;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The last segment (ReLU and maxpool, with the sink) of the thesis
/// pipeline at 64x48 split EESS; it takes the conv's output frames.
fn start() -> (Server, u16) {
    let port = free_port();
    let child = Command::new(binary())
        .arg("serve")
        .arg(repo_root().join("examples/thesis.yaml"))
        .args([
            "--size",
            "64x48",
            "--fusion",
            "chain",
            "--placement",
            "EESS",
        ])
        .args(["--segment", "1", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    (Server(child), port)
}

/// A zero frame of the shape the server takes (`shape` from its Info).
fn frame_of(shape: &[u32], stream_id: u32, seq: u64) -> v1::Frame {
    let n: u32 = shape.iter().product();
    v1::Frame {
        stream_id,
        seq,
        shape: shape.to_vec(),
        dtype: v1::Dtype::F32 as i32,
        protocol: streamfuse::transport::wire::PROTOCOL,
        first_unacked: 0,
        payload: Bytes::from(vec![0u8; n as usize * 4]),
        ..v1::Frame::default()
    }
}

async fn client(port: u16) -> StageClient<Channel> {
    for _ in 0..200 {
        if let Ok(c) = StageClient::connect(format!("http://127.0.0.1:{port}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server on {port} never came up");
}

/// The credits the server grants beyond what it has queued, for frames of
/// `shape` (float32).
fn window(shape: &[u32]) -> u64 {
    streamfuse::segment::serve::credit_window(
        shape.iter().map(|&d| d as usize).product::<usize>() * 4,
    )
}

/// Pushes `frames` (of the server's input shape) on one call; the call's
/// error, or the acks' last credit total once the server has queued them
/// all.
async fn push(
    c: &mut StageClient<Channel>,
    shape: &[u32],
    frames: Vec<v1::Frame>,
) -> Result<u64, tonic::Status> {
    let n = frames.len() as u64;
    let window = window(shape);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for f in frames {
        tx.send(f).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let mut acks = c
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), acks.message()).await {
            // The server grants its window beyond what it has queued.
            Ok(Ok(Some(a))) if a.credit_total >= n + window => return Ok(a.credit_total),
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Err(tonic::Status::unknown("call ended")),
            Ok(Err(s)) => return Err(s),
            Err(_) => return Err(tonic::Status::deadline_exceeded("no ack")),
        }
    }
}

async fn input_shape(c: &mut StageClient<Channel>) -> Vec<u32> {
    let info = c
        .info(v1::InfoRequest {})
        .await
        .unwrap_or_else(|s| panic!("Info: {s}"))
        .into_inner();
    assert_eq!((info.segment, info.segments), (1, 2));
    assert_eq!(info.stages, ["relu", "pool"]);
    assert_eq!(info.input_shape.len(), 3);
    info.input_shape
}

async fn still_serving(c: &mut StageClient<Channel>, stream: u32) {
    let shape = input_shape(c).await;
    push(
        c,
        &shape,
        vec![frame_of(&shape, stream, 0), frame_of(&shape, stream, 1)],
    )
    .await
    .unwrap_or_else(|s| panic!("good frames after bad input: {s}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_frame_gets_a_status_naming_it_and_the_server_keeps_serving() {
    let (_server, port) = start();
    let mut c = client(port).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut ready = false;
    for _ in 0..100 {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "readiness".into(),
            })
            .await;
        if r.is_ok_and(|r| r.into_inner().status == 1) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "readiness never turned Serving");
    still_serving(&mut c, 100).await;
    let shape = input_shape(&mut c).await;
    let frame = |stream, seq| frame_of(&shape, stream, seq);

    let mut short = frame(1, 5);
    short.payload = Bytes::from(vec![0u8; 100]);
    let mut dtype = frame(2, 6);
    dtype.dtype = 7;
    let mut overflow = frame(3, 7);
    overflow.shape = vec![u32::MAX, u32::MAX, u32::MAX];
    let mut over_limit = frame(4, 8);
    over_limit.shape = vec![1, 4096, 4096];
    let mut wrong = frame(5, 9);
    wrong.shape = vec![shape[0], shape[2], shape[1] + 1];
    let mut empty = frame(7, 0);
    empty.shape = Vec::new();
    empty.payload = Bytes::new();
    let mut zero = frame(8, 0);
    zero.shape = vec![shape[0], 0, shape[2]];
    zero.payload = Bytes::new();
    let mut old_client = frame(9, 0);
    old_client.protocol = 0;
    let mut oversized = frame(10, 3);
    oversized.first_unacked = 3;
    oversized.payload = Bytes::from(vec![0u8; 4 << 20]);
    let invalid = Code::InvalidArgument;
    let cases: Vec<(Vec<v1::Frame>, Code, &str)> = vec![
        (
            vec![short],
            invalid,
            "frame seq 5 (stream 1): payload is 100 bytes",
        ),
        (
            vec![dtype],
            invalid,
            "frame seq 6 (stream 2): unsupported dtype 7",
        ),
        (vec![overflow], invalid, "frame seq 7 (stream 3): shape"),
        (vec![over_limit], invalid, "over this segment's limit"),
        (vec![wrong], invalid, "frame seq 9 (stream 5): payload is"),
        (
            vec![frame(6, 0), frame(6, 1), frame(6, 0)],
            invalid,
            "frame seq 0 (stream 6): seq goes backwards",
        ),
        (
            vec![empty],
            invalid,
            "frame seq 0 (stream 7): shape [] is not [C, H, W]",
        ),
        (vec![zero], invalid, "frame seq 0 (stream 8): shape"),
        (
            vec![old_client],
            Code::FailedPrecondition,
            "frame seq 0 (stream 9): protocol 0",
        ),
        (
            vec![oversized],
            Code::ResourceExhausted,
            "frame seq 3 (stream 10): message of",
        ),
        // A stream's first frame ahead of its sender's first unacknowledged
        // one: taking it would drop seqs 0-4 unseen.
        (
            vec![frame(11, 5)],
            invalid,
            "frame seq 5 (stream 11): the stream has no position",
        ),
        (
            vec![frame(12, 0), frame(12, 2)],
            invalid,
            "frame seq 2 (stream 12): gap",
        ),
    ];
    for (i, (frames, code, want)) in cases.into_iter().enumerate() {
        let status = push(&mut c, &shape, frames)
            .await
            .map(|_| ())
            .expect_err("a bad frame is refused");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(want),
            "{:?} lacks {want:?}",
            status.message()
        );
        still_serving(&mut c, 200 + i as u32).await;
    }
    // The refused stream loses nothing: it starts where it should.
    still_serving(&mut c, 11).await;

    // Garbage on the port: the connection is closed, the server lives on.
    let mut raw =
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    raw.write_all(b"\x00\x01garbage that is not HTTP/2 at all\r\n\r\n\xff\xfe")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            // Closed with a reset after its GOAWAY: closed all the same.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed: {e} (read {total} bytes)"),
        }
    }
    still_serving(&mut c, 300).await;
    let mut fresh = client(port).await;
    still_serving(&mut fresh, 301).await;
}
