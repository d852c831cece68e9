//! The `Push` call below tonic's codec, on both ends, so a frame's payload
//! is neither copied into an encode buffer on send nor gathered into a
//! decode buffer on receipt (see [`super::framing`]).
//!
//! - [`open`]: the client side of a call over a tonic `Channel` (HTTP/2,
//!   the same connection settings as any tonic client).
//! - [`StageRoutes`]: the server side: `/streamfuse.v1.Stage/Push` is
//!   served here; every other method of the service goes to the generated
//!   tonic server, control calls once their caller is admitted from the
//!   headers and `Info` with its request body capped.
//!
//! Both speak standard gRPC (prefix-framed protobuf messages, status in the
//! trailers), so a generated client or server of `stage.proto` talks to
//! them unchanged.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use streamfuse_proto::v1;
use streamfuse_proto::v1::stage_server::{SERVICE_NAME, StageServer};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::Channel;

use super::framing::{AckBody, FrameBody, MessageReader};
use super::server::{ControlAdmitted, StageService};

/// Path of the `Push` method.
pub const PUSH_PATH: &str = "/streamfuse.v1.Stage/Push";
/// Path of the `Info` method.
const INFO_PATH: &str = "/streamfuse.v1.Stage/Info";
/// Paths of the control methods, and their names in refusals.
const CONTROL_PATHS: [(&str, &str); 2] = [
    ("/streamfuse.v1.Stage/UpdateWeights", "UpdateWeights"),
    ("/streamfuse.v1.Stage/Probe", "Probe"),
];

/// The response side of an open call: acks until the call ends.
pub type AckStream = MessageReader<Body>;

/// Opens a `Push` call to `origin` (`http://host:port`) on `channel`.
/// Frames sent into the returned sender go downstream in order; the
/// returned reader yields the acks.
///
/// # Errors
/// `Unavailable` when the call cannot be made, or the status downstream
/// answered it with at once.
pub async fn open(
    mut channel: Channel,
    origin: &http::Uri,
    max_message: usize,
) -> Result<(mpsc::Sender<v1::Frame>, AckStream), Status> {
    let (tx, rx) = mpsc::channel::<v1::Frame>(4);
    let mut parts = origin.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static(PUSH_PATH));
    let uri = http::Uri::from_parts(parts)
        .map_err(|e| Status::invalid_argument(format!("downstream address {origin}: {e}")))?;
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Body::new(FrameBody::new(rx)))
        .map_err(|e| Status::internal(format!("building the Push request: {e}")))?;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unavailable(format!("downstream not ready: {e}")))?;
    let resp = channel
        .call(req)
        .await
        .map_err(|e| Status::unavailable(format!("Push call: {e}")))?;
    // A call refused at once comes back with the status in the headers.
    if let Some(s) = Status::from_header_map(resp.headers())
        && s.code() != tonic::Code::Ok
    {
        return Err(s);
    }
    if resp.status() != http::StatusCode::OK {
        return Err(Status::unavailable(format!(
            "Push call answered HTTP {}",
            resp.status()
        )));
    }
    Ok((tx, MessageReader::new(resp.into_body(), max_message)))
}

/// Service `streamfuse.v1.Stage` for a tonic server: `Push` through
/// [`super::framing`], the rest through the generated server.
#[derive(Clone)]
pub struct StageRoutes {
    service: Arc<StageService>,
    generated: StageServer<StageService>,
    max_message: usize,
}

impl StageRoutes {
    /// Routes for `service`, taking messages of at most `max_message`
    /// bytes.
    pub fn new(service: StageService, max_message: usize) -> Self {
        let service = Arc::new(service);
        Self {
            // Info and UpdateWeights: a weight update may be larger than a
            // frame.
            generated: StageServer::from_arc(service.clone())
                .max_decoding_message_size(
                    max_message.max(super::control::MAX_WEIGHTS_BYTES + (64 << 10)),
                )
                .max_encoding_message_size(max_message),
            service,
            max_message,
        }
    }
}

impl NamedService for StageRoutes {
    const NAME: &'static str = SERVICE_NAME;
}

fn grpc_response(body: Body) -> http::Response<Body> {
    let mut r = http::Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    r
}

impl Service<http::Request<Body>> for StageRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path();
        if let Some((_, method)) = CONTROL_PATHS.iter().find(|(p, _)| *p == path) {
            // Who may call is known from the connection and the headers:
            // refused before any of a (up to 64 MiB) body is buffered.
            return match self.service.admit_control_early(method, req.extensions()) {
                Ok(slot) => {
                    req.extensions_mut().insert(ControlAdmitted);
                    let call = self.generated.call(req);
                    Box::pin(async move {
                        let r = call.await;
                        drop(slot);
                        r
                    })
                }
                Err(s) => Box::pin(std::future::ready(Ok(s.into_http()))),
            };
        }
        if path == INFO_PATH {
            // An empty request: a body past the small-request limit ends
            // the call instead of growing the decode buffer.
            let (parts, body) = req.into_parts();
            let body = Body::new(http_body_util::Limited::new(
                body,
                super::caps::MAX_SMALL_REQUEST_BYTES,
            ));
            return self.generated.call(http::Request::from_parts(parts, body));
        }
        if path != PUSH_PATH {
            return self.generated.call(req);
        }
        let service = self.service.clone();
        let max = self.max_message;
        Box::pin(async move {
            let encoding = req
                .headers()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("identity");
            if encoding != "identity" {
                return Ok(Status::unimplemented(format!(
                    "grpc-encoding {encoding} is not supported (use identity)"
                ))
                .into_http());
            }
            let reader = MessageReader::new(req.into_body(), max);
            Ok(match service.open_call(reader) {
                Ok(acks) => grpc_response(Body::new(AckBody::new(acks))),
                Err(s) => s.into_http(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::metrics::SegmentMetrics;
    use crate::transport::server::{AckMap, Delivered, Work};
    use crate::transport::{Limits, WINDOW, wire};
    use bytes::Bytes;
    use streamfuse_kernels::Shape;
    use tokio::sync::watch;

    /// A server for `[1, 4, 8]` f32 frames, through [`StageRoutes`] or the
    /// generated tonic server; returns its origin and inbox.
    async fn server(routes: bool) -> (http::Uri, mpsc::Receiver<Work>, Limits) {
        let shape = Shape::new(1, 4, 8);
        let limits = Limits::for_frame(shape.bytes());
        let (inbox_tx, inbox_rx) = mpsc::channel(8);
        let (acks_tx, acks_rx) = watch::channel(Delivered::known(AckMap::new()));
        std::mem::forget(acks_tx);
        let (draining_tx, draining_rx) = watch::channel(false);
        std::mem::forget(draining_tx);
        let svc = StageService::new(
            inbox_tx,
            acks_rx,
            v1::InfoReply::default(),
            vec![shape],
            limits.max_frame_bytes,
            WINDOW,
            Arc::new(SegmentMetrics::new("test", 0)),
            draining_rx,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let builder = tonic::transport::Server::builder();
        if routes {
            let mut b = builder;
            tokio::spawn(
                b.add_service(StageRoutes::new(svc, limits.max_message))
                    .serve_with_incoming(incoming),
            );
        } else {
            let mut b = builder;
            tokio::spawn(
                b.add_service(StageServer::new(svc))
                    .serve_with_incoming(incoming),
            );
        }
        (format!("http://{addr}").parse().unwrap(), inbox_rx, limits)
    }

    fn frame(seq: u64) -> v1::Frame {
        let t = crate::frame::Frame {
            stream_id: 5,
            seq,
            capture_ns: 1000 + seq,
            tensor: streamfuse_kernels::Tensor::from_vec(
                Shape::new(1, 4, 8),
                (0..32).map(|i| (i as f32) * 0.5 + seq as f32).collect(),
            )
            .unwrap(),
        };
        wire::encode(t, 0)
    }

    /// The call below tonic's codec talks to the generated server (tonic's
    /// codec on the far end) and to [`StageRoutes`] alike.
    #[tokio::test]
    async fn push_interoperates_with_the_generated_server_and_with_routes() {
        for routes in [false, true] {
            let (origin, mut inbox, limits) = server(routes).await;
            let channel = tonic::transport::Endpoint::from(origin.clone())
                .connect()
                .await
                .unwrap();
            let (tx, mut acks) = open(channel, &origin, limits.max_message).await.unwrap();
            let first: v1::Ack = acks.next().await.unwrap().unwrap();
            assert_eq!(first.credit_total, WINDOW, "routes={routes}");
            for seq in 0..2 {
                let f = frame(seq);
                let want: Bytes = f.payload.clone();
                tx.send(f).await.unwrap();
                match inbox.recv().await.unwrap() {
                    Work::Frame(got, _) => {
                        assert_eq!((got.stream_id, got.seq), (5, seq));
                        let bytes: Vec<u8> = got
                            .tensor
                            .data()
                            .iter()
                            .flat_map(|v| v.to_le_bytes())
                            .collect();
                        assert_eq!(bytes, &want[..]);
                    }
                    other => panic!("routes={routes}: {other:?}"),
                }
            }
            // Credits follow what the receiver queued.
            let mut credit = 0;
            while credit < 2 + WINDOW {
                credit = acks.next::<v1::Ack>().await.unwrap().unwrap().credit_total;
            }
        }
    }

    /// Sends `method` a request announcing a message of `announced` bytes
    /// and `sent` of it, without ending it; returns the `grpc-status` the
    /// server answers with, within 5 s.
    async fn partial_request(
        origin: &http::Uri,
        method: &str,
        announced: u32,
        sent: usize,
    ) -> String {
        let authority = origin.authority().unwrap().as_str().to_owned();
        let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.unwrap();
        let req = http::Request::post(format!("http://{authority}/streamfuse.v1.Stage/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (resp, mut body) = client.send_request(req, false).unwrap();
        let mut data = vec![0u8];
        data.extend_from_slice(&announced.to_be_bytes());
        data.resize(5 + sent, 0);
        body.send_data(Bytes::from(data), false).unwrap();
        let resp = tokio::time::timeout(std::time::Duration::from_secs(5), resp)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer in 5 s"))
            .unwrap();
        if let Some(s) = resp.headers().get("grpc-status") {
            return s.to_str().unwrap().to_owned();
        }
        let mut rbody = resp.into_body();
        while let Some(d) = rbody.data().await {
            d.unwrap();
        }
        let trailers = tokio::time::timeout(std::time::Duration::from_secs(5), rbody.trailers())
            .await
            .unwrap_or_else(|_| panic!("{method}: no trailers in 5 s"))
            .unwrap()
            .unwrap();
        trailers["grpc-status"].to_str().unwrap().to_owned()
    }

    /// A control call from a caller the server does not admit is refused
    /// from its headers, while its (here 12 MiB) body is still arriving;
    /// an `Info` request past the small-request limit ends at once; an
    /// ordinary `Info` is answered.
    #[tokio::test]
    async fn control_and_oversized_info_calls_end_before_their_bodies_arrive() {
        let (origin, _inbox, _) = server(true).await;
        // PERMISSION_DENIED (7): control calls are off on this server.
        assert_eq!(
            partial_request(&origin, "UpdateWeights", 12 << 20, 64 << 10).await,
            "7"
        );
        assert_eq!(
            partial_request(&origin, "Probe", 12 << 20, 64 << 10).await,
            "7"
        );
        let status = partial_request(&origin, "Info", 1 << 20, 64 << 10).await;
        assert_ne!(status, "0", "an oversized Info request was answered");
        let channel = tonic::transport::Endpoint::from(origin)
            .connect()
            .await
            .unwrap();
        let mut client = streamfuse_proto::v1::stage_client::StageClient::new(channel);
        client.info(v1::InfoRequest {}).await.unwrap();
    }
}
