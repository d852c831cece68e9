//! gRPC message framing for the `Push` call without copying payloads.
//!
//! A gRPC message on the wire is a 5-byte prefix (a compression flag and a
//! big-endian length) and the protobuf bytes. tonic's codec encodes each
//! message into one buffer and decodes each from one buffer, so a frame's
//! payload is copied once on each side. Here a `Frame` leaves as two
//! chunks, `[prefix, every field but the payload, the payload's key and
//! length]` and the payload `Bytes` itself, which HTTP/2 writes from where
//! it lies; and a message is decoded from the HTTP/2 DATA chunks as they
//! arrived: a payload inside one chunk is borrowed, one spread over several
//! chunks is gathered with one copy into a fresh (aligned) buffer.
//!
//! The bytes on the wire are the standard encoding (the payload is field
//! 15, the last one, so "the other fields, then the payload" is the order
//! protobuf encoders use), so any gRPC peer interoperates.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Body;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use streamfuse_proto::v1;
use tonic::Status;

/// Length of the gRPC message prefix.
pub const PREFIX: usize = 5;

/// Field number of `Frame.payload` in `stage.proto`.
const PAYLOAD_FIELD: u32 = 15;

/// Encodes `frame` as one gRPC message in two chunks: the head (prefix and
/// every field but the payload, then the payload's key and length) and the
/// payload itself, shared, not copied. The payload chunk is empty when the
/// frame has none.
///
/// # Errors
/// `OutOfRange` when the message would exceed the 4 GiB a gRPC prefix can
/// state.
pub fn encode_frame(mut frame: v1::Frame) -> Result<(Bytes, Bytes), Status> {
    let payload = std::mem::take(&mut frame.payload);
    let fields = frame.encoded_len();
    let tail = if payload.is_empty() {
        0
    } else {
        key_len(PAYLOAD_FIELD) + encoded_len_varint(payload.len() as u64)
    };
    let len = u32::try_from(fields + tail + payload.len()).map_err(|_| {
        Status::out_of_range(format!(
            "frame seq {} (stream {}): message of {} bytes is over gRPC's 4 GiB",
            frame.seq,
            frame.stream_id,
            fields + tail + payload.len()
        ))
    })?;
    let mut head = BytesMut::with_capacity(PREFIX + fields + tail);
    head.put_u8(0);
    head.put_u32(len);
    frame
        .encode(&mut head)
        .map_err(|e| Status::internal(format!("encoding frame seq {}: {e}", frame.seq)))?;
    if !payload.is_empty() {
        encode_key(PAYLOAD_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(payload.len() as u64, &mut head);
    }
    Ok((head.freeze(), payload))
}

/// Encodes a small message (an ack) as one gRPC message.
///
/// # Errors
/// `Internal` when the message cannot be encoded (not expected for the
/// messages of this service).
pub fn encode_message<M: Message>(m: &M) -> Result<Bytes, Status> {
    let len = m.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).map_err(|_| Status::internal("message over 4 GiB"))?);
    m.encode(&mut buf)
        .map_err(|e| Status::internal(format!("encoding message: {e}")))?;
    Ok(buf.freeze())
}

/// The DATA chunks received and not yet decoded.
#[derive(Debug, Default)]
struct Chunks {
    queue: VecDeque<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.queue.push_back(b);
        }
    }

    /// The first `N` buffered bytes, if there are that many.
    fn peek<const N: usize>(&self) -> Option<[u8; N]> {
        if self.len < N {
            return None;
        }
        let mut out = [0u8; N];
        let mut at = 0;
        for c in &self.queue {
            let n = (N - at).min(c.len());
            out[at..at + n].copy_from_slice(&c[..n]);
            at += n;
            if at == N {
                break;
            }
        }
        Some(out)
    }
}

impl Chunks {
    /// Up to `n` buffered bytes from `from` on (a copy, for error messages).
    fn head(&self, from: usize, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let mut skip = from;
        for c in &self.queue {
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            let part = &c[skip..];
            skip = 0;
            let take = (n - out.len()).min(part.len());
            out.extend_from_slice(&part[..take]);
            if out.len() == n {
                break;
            }
        }
        out
    }
}

/// Bytes of a message's start that `frame_ids` looks at.
const HEAD_BYTES: usize = 64;

/// `Frame.stream_id` and `Frame.seq` (fields 1 and 2) from the start of an
/// encoded message, where they are there; the fields before the payload are
/// encoded first, so a frame's ids are in its first bytes.
fn frame_ids(mut b: &[u8]) -> (Option<u64>, Option<u64>) {
    let (mut stream, mut seq) = (None, None);
    while !b.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut b) else {
            break;
        };
        match key & 7 {
            0 => {
                let Ok(v) = prost::encoding::decode_varint(&mut b) else {
                    break;
                };
                match key >> 3 {
                    1 => stream = Some(v),
                    2 => seq = Some(v),
                    _ => {}
                }
            }
            1 if b.len() >= 8 => b = &b[8..],
            5 if b.len() >= 4 => b = &b[4..],
            2 => {
                let Ok(len) = prost::encoding::decode_varint(&mut b) else {
                    break;
                };
                let Ok(len) = usize::try_from(len) else { break };
                if len > b.len() {
                    break;
                }
                b = &b[len..];
            }
            _ => break,
        }
    }
    (stream, seq)
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.queue.front().map_or(&[], |b| b.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            let n = cnt.min(front.len());
            front.advance(n);
            self.len -= n;
            cnt -= n;
            if front.is_empty() {
                self.queue.pop_front();
            }
        }
    }

    /// Borrows when the range lies in one chunk; gathers it with one copy
    /// otherwise.
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.len, "copy_to_bytes past the end");
        if let Some(front) = self.queue.front_mut()
            && front.len() >= len
        {
            let out = front.split_to(len);
            self.len -= len;
            if front.is_empty() {
                self.queue.pop_front();
            }
            return out;
        }
        let mut out = BytesMut::with_capacity(len);
        while out.len() < len {
            let need = len - out.len();
            let c = self.chunk();
            let n = need.min(c.len());
            out.extend_from_slice(&c[..n]);
            self.advance(n);
        }
        out.freeze()
    }
}

/// Reads gRPC messages from an HTTP/2 body (a request or a response),
/// decoding each from the chunks as received.
pub struct MessageReader<B> {
    body: B,
    chunks: Chunks,
    max_message: usize,
    /// The status from the trailers, once they arrived.
    trailer: Option<Status>,
    ended: bool,
}

impl<B> MessageReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A reader of messages of at most `max_message` bytes from `body`.
    pub fn new(body: B, max_message: usize) -> Self {
        Self {
            body,
            chunks: Chunks::default(),
            max_message,
            trailer: None,
            ended: false,
        }
    }

    /// The next message, or `None` when the body ended cleanly.
    ///
    /// # Errors
    /// `Unimplemented` for a compressed message, `ResourceExhausted` for one
    /// over the limit (naming the frame where its first bytes are a
    /// `Frame`'s), `InvalidArgument` for bytes that are not a message of
    /// type `M` or a body that ends inside a message, the trailers' status
    /// when it is not OK, and the transport's error when the body fails.
    pub async fn next<M: Message + Default>(&mut self) -> Result<Option<M>, Status> {
        loop {
            if let Some([flag, a, b, c, d]) = self.chunks.peek::<PREFIX>() {
                if flag != 0 {
                    return Err(Status::unimplemented(
                        "compressed messages are not supported (send grpc-encoding identity)",
                    ));
                }
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.max_message {
                    let want = PREFIX + len.min(HEAD_BYTES);
                    if self.chunks.remaining() >= want || self.ended {
                        let head = self.chunks.head(PREFIX, HEAD_BYTES);
                        // proto3 leaves zero fields out: absent is 0.
                        let (stream, seq) = frame_ids(&head);
                        return Err(Status::resource_exhausted(format!(
                            "frame seq {} (stream {}): message of {len} bytes is over this link's limit of {} bytes",
                            seq.unwrap_or(0),
                            stream.unwrap_or(0),
                            self.max_message
                        )));
                    }
                } else if self.chunks.remaining() >= PREFIX + len {
                    self.chunks.advance(PREFIX);
                    let m = M::decode((&mut self.chunks).take(len)).map_err(|e| {
                        Status::invalid_argument(format!("undecodable message: {e}"))
                    })?;
                    return Ok(Some(m));
                }
            }
            if self.ended {
                if let Some(s) = self.trailer.take()
                    && s.code() != tonic::Code::Ok
                {
                    return Err(s);
                }
                if self.chunks.remaining() > 0 {
                    return Err(Status::invalid_argument(format!(
                        "stream ended inside a message ({} bytes left over)",
                        self.chunks.remaining()
                    )));
                }
                return Ok(None);
            }
            match std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await {
                None => self.ended = true,
                Some(Err(e)) => return Err(Status::from_error(e.into())),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.chunks.push(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailer = Status::from_header_map(&trailers);
                        }
                    }
                },
            }
        }
    }
}

/// Frames of one `Push` call as an HTTP/2 request body: each frame's head
/// chunk, then its payload chunk.
pub struct FrameBody {
    rx: tokio::sync::mpsc::Receiver<v1::Frame>,
    payload: Option<Bytes>,
}

impl FrameBody {
    /// A body sending what arrives on `rx` until it closes.
    pub fn new(rx: tokio::sync::mpsc::Receiver<v1::Frame>) -> Self {
        Self { rx, payload: None }
    }
}

impl Body for FrameBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if let Some(p) = self.payload.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(p))));
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(f)) => match encode_frame(f) {
                Ok((head, payload)) => {
                    if !payload.is_empty() {
                        self.payload = Some(payload);
                    }
                    Poll::Ready(Some(Ok(http_body::Frame::data(head))))
                }
                Err(s) => Poll::Ready(Some(Err(s))),
            },
        }
    }
}

/// Acks of one `Push` call as an HTTP/2 response body, ending with the
/// call's status in the trailers.
pub struct AckBody {
    rx: tokio::sync::mpsc::Receiver<Result<v1::Ack, Status>>,
    done: bool,
}

impl AckBody {
    /// A body sending the acks from `rx`; the first error, or `rx`
    /// closing, ends it.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<v1::Ack, Status>>) -> Self {
        Self { rx, done: false }
    }
}

fn trailers(status: &Status) -> http_body::Frame<Bytes> {
    let mut h = http::HeaderMap::new();
    if status.add_header(&mut h).is_err() {
        // Only a status message that is not a valid header value gets
        // here; keep the code.
        h.clear();
        let _ = Status::new(status.code(), "").add_header(&mut h);
    }
    http_body::Frame::trailers(h)
}

impl Body for AckBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(ack))) => match encode_message(&ack) {
                Ok(b) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
                Err(s) => {
                    self.done = true;
                    Poll::Ready(Some(Ok(trailers(&s))))
                }
            },
            Poll::Ready(Some(Err(s))) => {
                self.done = true;
                Poll::Ready(Some(Ok(trailers(&s))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Ok(trailers(&Status::ok("")))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn frame(payload: Vec<u8>) -> v1::Frame {
        v1::Frame {
            stream_id: 3,
            seq: 300,
            capture_ns: 123_456_789,
            sent_ns: 987,
            shape: vec![1, 2, (payload.len() / 8) as u32],
            dtype: v1::Dtype::F32 as i32,
            end_of_stream: false,
            protocol: crate::transport::wire::PROTOCOL,
            first_unacked: 299,
            payload: Bytes::from(payload),
        }
    }

    #[test]
    fn two_chunks_are_the_standard_encoding() {
        for n in [0usize, 8, 200, 70_000] {
            let f = frame((0..n).map(|i| i as u8).collect());
            let (head, payload) = encode_frame(f.clone()).unwrap();
            let body = f.encode_to_vec();
            let mut want = vec![0u8];
            want.extend_from_slice(&(body.len() as u32).to_be_bytes());
            want.extend_from_slice(&body);
            let got = [head.as_ref(), payload.as_ref()].concat();
            assert_eq!(got, want, "payload of {n} bytes");
            assert_eq!(payload.as_ptr(), f.payload.as_ptr(), "payload not shared");
        }
    }

    fn body_of(chunks: Vec<Bytes>) -> impl Body<Data = Bytes, Error = Status> + Unpin {
        StreamBody::new(tokio_stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Status>(http_body::Frame::data(c))),
        ))
    }

    #[tokio::test]
    async fn decodes_across_any_chunking_and_borrows_whole_chunks() {
        let frames: Vec<v1::Frame> = (0..4)
            .map(|k| {
                let mut f = frame((0..(64 * (k + 1))).map(|i| (i * 7) as u8).collect());
                f.seq = k as u64;
                f
            })
            .collect();
        let mut wire = Vec::new();
        let mut pieces = Vec::new();
        for f in &frames {
            let (h, p) = encode_frame(f.clone()).unwrap();
            wire.extend_from_slice(&h);
            wire.extend_from_slice(&p);
            pieces.push(h);
            pieces.push(p);
        }
        // As sent: head and payload chunks; the payload is borrowed.
        let mut r = MessageReader::new(body_of(pieces.clone()), 1 << 20);
        for (k, f) in frames.iter().enumerate() {
            let got: v1::Frame = r.next().await.unwrap().unwrap();
            assert_eq!(&got, f);
            assert_eq!(got.payload.as_ptr(), pieces[2 * k + 1].as_ptr());
        }
        assert!(r.next::<v1::Frame>().await.unwrap().is_none());
        // Any re-chunking gives the same messages.
        for step in [1usize, 3, 7, 100, 333] {
            let chunks: Vec<Bytes> = wire.chunks(step).map(Bytes::copy_from_slice).collect();
            let mut r = MessageReader::new(body_of(chunks), 1 << 20);
            for f in &frames {
                assert_eq!(&r.next::<v1::Frame>().await.unwrap().unwrap(), f);
            }
            assert!(r.next::<v1::Frame>().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn refuses_oversized_compressed_and_truncated_messages() {
        let (h, p) = encode_frame(frame(vec![1; 800])).unwrap();
        let mut r = MessageReader::new(body_of(vec![h.clone(), p.clone()]), 100);
        let e = r.next::<v1::Frame>().await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        let named = "frame seq 300 (stream 3): message of";
        assert!(e.message().contains(named), "{e:?}");
        // Named from the first bytes, before the rest of the message came.
        let mut r = MessageReader::new(body_of(vec![h.slice(..12)]), 100);
        let e = r.next::<v1::Frame>().await.unwrap_err();
        assert!(e.message().contains(named), "{e:?}");

        let mut c = BytesMut::from(h.as_ref());
        c[0] = 1;
        let mut r = MessageReader::new(body_of(vec![c.freeze(), p.clone()]), 1 << 20);
        let e = r.next::<v1::Frame>().await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");

        let mut r = MessageReader::new(body_of(vec![h, p.slice(..100)]), 1 << 20);
        let e = r.next::<v1::Frame>().await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("ended inside a message"), "{e:?}");
    }

    #[tokio::test]
    async fn ack_body_ends_with_the_status_in_trailers() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(v1::Ack {
            streams: vec![v1::StreamAck {
                stream_id: 1,
                next_seq: 9,
                ended: false,
            }],
            credit_total: 4,
            r#final: false,
        }))
        .await
        .unwrap();
        tx.send(Err(Status::invalid_argument("frame seq 9 (stream 1): bad")))
            .await
            .unwrap();
        drop(tx);
        let mut r = MessageReader::new(AckBody::new(rx), 1 << 20);
        let a: v1::Ack = r.next().await.unwrap().unwrap();
        assert_eq!(a.credit_total, 4);
        let e = r.next::<v1::Ack>().await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(e.message(), "frame seq 9 (stream 1): bad");

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<v1::Ack, Status>>(1);
        drop(tx);
        let collected = AckBody::new(rx).collect().await.unwrap();
        let t = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(t.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    }
}
