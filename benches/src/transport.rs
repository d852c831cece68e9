//! Loopback links for the transport benches: the runtime's real gRPC path
//! (a [`Forwarder`] pushing into [`StageService`]s, relays forwarding as a
//! middle segment does), in plaintext or over mutual TLS ([`Tls`]), next
//! to a raw-TCP baseline moving the same bytes (length prefix + payload,
//! no acks, no flow control: the ceiling).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use streamfuse::transport::forward::Forwarder;
use streamfuse::transport::metrics::SegmentMetrics;
use streamfuse::transport::push::StageRoutes;
use streamfuse::transport::server::{AckMap, Delivered, Floors, StageService, Work};
use streamfuse::transport::tls::{self, ClientTls, ServerTls};
use streamfuse::transport::{Limits, WINDOW, wire};
use streamfuse_kernels::Shape;
use streamfuse_proto::v1;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

/// A `[1, H, W]` f32 shape of about `bytes` bytes (exact for multiples of 4).
pub fn shape_for(bytes: usize) -> Shape {
    let n = bytes / 4;
    // 1280x720 when it fits, else one row.
    if n == 1280 * 720 {
        Shape::new(1, 720, 1280)
    } else {
        Shape::new(1, 1, n)
    }
}

/// Mutual TLS for a bench chain: one CA, one certificate (for
/// `127.0.0.1`) every server and client of the chain uses, generated into
/// a temporary folder that lives as long as this.
pub struct Tls {
    server: ServerTls,
    client: ClientTls,
    _dir: tempfile::TempDir,
}

impl Tls {
    /// Generates the certificates and loads them.
    ///
    /// # Panics
    /// When they cannot be generated, written or loaded (the bench cannot
    /// run).
    pub fn generate() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair,
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let ca = CertifiedIssuer::self_signed(ca, ca_key).unwrap_or_else(|e| panic!("{e}"));
        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap_or_else(|e| panic!("{e}"));
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = leaf.signed_by(&key, &ca).unwrap_or_else(|e| panic!("{e}"));
        let files = streamfuse::spec::TlsFiles {
            cert: dir.path().join("node.pem"),
            key: dir.path().join("node.key"),
            ca: dir.path().join("ca.pem"),
        };
        for (path, text) in [
            (&files.cert, cert.pem()),
            (&files.key, key.serialize_pem()),
            (&files.ca, ca.pem()),
        ] {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
        }
        Self {
            server: ServerTls::load(&files).unwrap_or_else(|e| panic!("{e}")),
            client: ClientTls::load(&files).unwrap_or_else(|e| panic!("{e}")),
            _dir: dir,
        }
    }
}

/// A gRPC chain of `hops` links on loopback: a sender, `hops - 1` relays
/// and a receiving sink, all in one process on a tokio runtime.
pub struct GrpcChain {
    rt: Runtime,
    input: mpsc::Sender<v1::Frame>,
    delivered: watch::Receiver<Delivered>,
    payload: Bytes,
    shape: Shape,
    next_seq: u64,
}

fn metrics() -> Arc<SegmentMetrics> {
    Arc::new(SegmentMetrics::new("bench", 0))
}

/// Starts one receiving server for frames of `shape`; returns its address
/// and the inbox its frames arrive in, plus the ack board to publish on.
async fn server(
    shape: Shape,
    limits: Limits,
    sink: bool,
    tls: Option<ServerTls>,
) -> (SocketAddr, mpsc::Receiver<Work>, watch::Sender<Delivered>) {
    let (inbox_tx, inbox_rx) = mpsc::channel(2);
    // The sink knows what it delivered at once; a relay once its downstream
    // first answers.
    let board = if sink {
        Delivered::known(AckMap::new())
    } else {
        Delivered::default()
    };
    let (acks_tx, acks_rx) = watch::channel(board);
    let (_draining_tx, draining_rx) = watch::channel(false);
    std::mem::forget(_draining_tx);
    let svc = StageService::new(
        inbox_tx,
        acks_rx,
        v1::InfoReply::default(),
        vec![shape],
        limits.max_frame_bytes,
        WINDOW,
        metrics(),
        draining_rx,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("addr: {e}"));
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
        .max_frame_size(limits.h2_frame)
        .tcp_nodelay(true)
        .add_service(StageRoutes::new(svc, limits.max_message));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    match tls {
        Some(t) => {
            let refused = prometheus_client::metrics::counter::Counter::default();
            tokio::spawn(router.serve_with_incoming(tls::accept(incoming, t, refused)));
        }
        None => {
            tokio::spawn(router.serve_with_incoming(incoming));
        }
    }
    (addr, inbox_rx, acks_tx)
}

impl GrpcChain {
    /// Sets up `hops` plaintext links for payloads of `shape`.
    ///
    /// # Panics
    /// When loopback sockets cannot be bound (the bench cannot run).
    pub fn new(shape: Shape, hops: usize) -> Self {
        Self::with_tls(shape, hops, None)
    }

    /// Sets up `hops` links for payloads of `shape`, over mutual TLS with
    /// `tls` (else plaintext).
    ///
    /// # Panics
    /// When loopback sockets cannot be bound (the bench cannot run).
    pub fn with_tls(shape: Shape, hops: usize, tls: Option<&Tls>) -> Self {
        let server_tls = tls.map(|t| t.server.clone());
        let client_tls = tls.map(|t| t.client.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let limits = Limits::for_frame(shape.bytes());
        let (input, delivered) = rt.block_on(async {
            // The sink: takes every frame and acknowledges it at once.
            let (mut addr, mut inbox, acks) = server(shape, limits, true, server_tls.clone()).await;
            tokio::spawn(async move {
                while let Some(w) = inbox.recv().await {
                    if let Work::Frame(f, _) = w {
                        acks.send_modify(|a| {
                            a.next.insert(f.stream_id, f.seq + 1);
                        });
                    }
                }
            });
            // Relays: receive, re-encode (the payload is shared), forward.
            for _ in 1..hops {
                let (raddr, mut rinbox, racks) =
                    server(shape, limits, false, server_tls.clone()).await;
                let (tx, rx) = mpsc::channel(2);
                let f = Forwarder::new(
                    &addr.to_string(),
                    limits,
                    metrics(),
                    racks,
                    Floors::default(),
                )
                .unwrap_or_else(|e| panic!("{e}"))
                .with_tls(client_tls.clone());
                tokio::spawn(f.run(rx));
                tokio::spawn(async move {
                    while let Some(w) = rinbox.recv().await {
                        if let Work::Frame(fr, _) = w
                            && tx.send(wire::encode(fr, 0)).await.is_err()
                        {
                            break;
                        }
                    }
                });
                addr = raddr;
            }
            let (board, delivered) = watch::channel(Delivered::default());
            let (tx, rx) = mpsc::channel(2);
            let f = Forwarder::new(
                &addr.to_string(),
                limits,
                metrics(),
                board,
                Floors::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .with_tls(client_tls.clone());
            tokio::spawn(f.run(rx));
            (tx, delivered)
        });
        let payload = Bytes::from(
            (0..shape.bytes())
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        Self {
            rt,
            input,
            delivered,
            payload,
            shape,
            next_seq: 0,
        }
    }

    /// Sends `n` frames and waits until the far end has taken them all.
    pub fn send(&mut self, n: u64) -> Duration {
        let t0 = Instant::now();
        let first = self.next_seq;
        self.next_seq += n;
        let target = self.next_seq;
        let (input, payload, shape) = (self.input.clone(), self.payload.clone(), self.shape);
        let mut delivered = self.delivered.clone();
        self.rt.block_on(async move {
            for seq in first..target {
                let f = v1::Frame {
                    stream_id: 0,
                    seq,
                    capture_ns: 0,
                    sent_ns: 0,
                    shape: vec![shape.c as u32, shape.h as u32, shape.w as u32],
                    dtype: v1::Dtype::F32 as i32,
                    end_of_stream: false,
                    protocol: wire::PROTOCOL,
                    first_unacked: 0,
                    payload: payload.clone(),
                };
                if input.send(f).await.is_err() {
                    panic!("forwarder stopped");
                }
            }
            while delivered
                .borrow_and_update()
                .next
                .get(&0)
                .copied()
                .unwrap_or(0)
                < target
            {
                if delivered.changed().await.is_err() {
                    panic!("forwarder stopped");
                }
            }
        });
        t0.elapsed()
    }
}

/// The raw-TCP baseline: `hops` loopback connections in a chain (relay
/// threads in between), each frame an 8-byte length and the payload, read
/// into a reused buffer at every hop.
pub struct TcpChain {
    out: TcpStream,
    received: std::sync::mpsc::Receiver<()>,
    payload: Vec<u8>,
}

fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut len = [0u8; 8];
    if s.read_exact(&mut len).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(len) as usize;
    buf.resize(n, 0);
    s.read_exact(buf).is_ok()
}

impl TcpChain {
    /// Sets up `hops` connections for payloads of `bytes`.
    ///
    /// # Panics
    /// When loopback sockets cannot be bound.
    pub fn new(bytes: usize, hops: usize) -> Self {
        // The far end reports each frame; the sender blocks on it (a spin
        // would take a core from the link on a small machine).
        let (done, received) = std::sync::mpsc::channel::<()>();
        let bind = || TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let last = bind();
        let mut addr = last.local_addr().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            let Ok((mut s, _)) = last.accept() else {
                return;
            };
            let mut buf = Vec::new();
            while read_frame(&mut s, &mut buf) {
                if done.send(()).is_err() {
                    return;
                }
            }
        });
        for _ in 1..hops {
            let l = bind();
            let next = addr;
            addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
            std::thread::spawn(move || {
                let Ok((mut s, _)) = l.accept() else { return };
                let Ok(mut out) = TcpStream::connect(next) else {
                    return;
                };
                let _ = out.set_nodelay(true);
                let mut buf = Vec::new();
                while read_frame(&mut s, &mut buf) {
                    let len = (buf.len() as u64).to_le_bytes();
                    if out.write_all(&len).is_err() || out.write_all(&buf).is_err() {
                        return;
                    }
                }
            });
        }
        let out = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
        let _ = out.set_nodelay(true);
        Self {
            out,
            received,
            payload: (0..bytes).map(|i| (i % 251) as u8).collect(),
        }
    }

    /// Sends `n` frames and waits until the far end has read them all.
    pub fn send(&mut self, n: u64) -> Duration {
        let t0 = Instant::now();
        let len = (self.payload.len() as u64).to_le_bytes();
        for _ in 0..n {
            if self.out.write_all(&len).is_err() || self.out.write_all(&self.payload).is_err() {
                panic!("raw TCP link broke");
            }
        }
        for _ in 0..n {
            if self.received.recv().is_err() {
                panic!("raw TCP receiver stopped");
            }
        }
        t0.elapsed()
    }
}
