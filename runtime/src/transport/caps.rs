//! Caps on what one peer, hostile or broken, can make a segment server
//! hold: connections, calls, HTTP/2 streams and headers, and idle time.
//! Each is a stated number (README, "What a segment server exposes"); with
//! them the request memory a server can be made to hold is bounded
//! whatever its peers do: [`peer_memory_bound`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Open connections a server keeps; one more is closed as soon as it is
/// accepted (and counted).
pub const MAX_CONNECTIONS: usize = 64;
/// Concurrent `Push` calls a server takes, over all connections; one more
/// is refused with `RESOURCE_EXHAUSTED`.
pub const MAX_CALLS: usize = 32;
/// Concurrent control calls (`UpdateWeights`, `Probe`) a server takes, from
/// admitted callers; one more is refused with `RESOURCE_EXHAUSTED`. A
/// caller is admitted from its headers (address, client certificate)
/// before any of its request body is read.
pub const MAX_CONTROL_CALLS: usize = 2;
/// Largest request message of the small methods (`Info`, `grpc.health.v1`):
/// their requests are empty or a service name; a larger body ends the call.
pub const MAX_SMALL_REQUEST_BYTES: usize = 4 << 10;
/// Concurrent HTTP/2 streams (calls of any method) per connection
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// Largest request header list (names, values and metadata), bytes
/// (`SETTINGS_MAX_HEADER_LIST_SIZE`); a larger one is refused.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Longest a `Push` call may go without a whole frame arriving before it
/// is ended with `DEADLINE_EXCEEDED` (a sender that trickles bytes, or
/// stopped sending without closing). A sender paused longer reconnects and
/// resumes (the stream protocol replays what was not acknowledged).
pub const CALL_IDLE: Duration = Duration::from_secs(120);
/// HTTP/2 pings on a quiet connection, and how long a ping may go
/// unanswered before the connection is closed (a peer that vanished).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams a peer may reset before the server accepts them, per
/// connection (HTTP/2 "rapid reset" floods).
pub const MAX_PENDING_RESETS: usize = 32;

/// The most request memory, in bytes, that peers without an admin
/// identity can make a server with links of `limits` hold at once,
/// whatever they send:
/// - [`MAX_CALLS`] `Push` calls, each with one partly received message
///   (`limits.max_message`) and its HTTP/2 stream window of unread data;
/// - on each of [`MAX_CONNECTIONS`] connections, the HTTP/2 frame being
///   read (`limits.h2_frame`) and [`MAX_STREAMS_PER_CONNECTION`] other
///   calls, each with a small request ([`MAX_SMALL_REQUEST_BYTES`]) and
///   its headers ([`MAX_HEADER_LIST_BYTES`]).
///
/// Control calls are refused from their headers, before any body is read;
/// admins add at most [`MAX_CONTROL_CALLS`] weights messages
/// ([`MAX_WEIGHTS_BYTES`](super::control::MAX_WEIGHTS_BYTES) each).
pub fn peer_memory_bound(limits: &super::Limits) -> usize {
    let calls = MAX_CALLS * (limits.max_message + limits.stream_window as usize);
    let per_connection = limits.h2_frame as usize
        + MAX_STREAMS_PER_CONNECTION as usize
            * (MAX_SMALL_REQUEST_BYTES + MAX_HEADER_LIST_BYTES as usize);
    calls + MAX_CONNECTIONS * per_connection
}

/// An accepted connection holding one of the server's connection permits
/// until it closes.
pub struct Capped {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// `incoming` with at most [`MAX_CONNECTIONS`] connections open at once:
/// a connection past the cap is closed at once, logged and counted in
/// `refused`.
pub fn cap_connections<S>(
    incoming: S,
    refused: prometheus_client::metrics::counter::Counter,
) -> impl Stream<Item = io::Result<Capped>>
where
    S: Stream<Item = io::Result<TcpStream>>,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    incoming.filter_map(move |conn| match conn {
        Err(e) => Some(Err(e)),
        Ok(io) => match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(Ok(Capped {
                io,
                _permit: permit,
            })),
            Err(_) => {
                refused.inc();
                let peer = io.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::warn!(%peer, "connection closed: {MAX_CONNECTIONS} connections are open");
                None
            }
        },
    })
}
