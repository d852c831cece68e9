//! Caps on what one peer, hostile or broken, can make a segment server
//! hold: connections, calls, HTTP/2 streams and headers, and idle time.
//! Each is a stated number (README, "What a segment server exposes"); with
//! them the memory a server can be made to hold is bounded whatever its
//! peers do: at most [`MAX_CALLS`] calls, each holding at most one
//! partly received message (the segment's message limit) and its HTTP/2
//! stream window (two messages).

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
