//! Frames on the wire: conversion between [`Frame`] and the protocol's
//! `Frame` message, with the checks a receiver makes on every frame.
//!
//! Copies per frame and hop (payload bytes only), with the `Push` call
//! made below tonic's codec ([`super::framing`], [`super::push`]):
//! 1. send: none in user space. The payload goes out as the `Bytes` that
//!    owns the kernel's output buffer, as its own HTTP/2 DATA chunk after a
//!    small head chunk (prefix and the other fields); h2 writes it to the
//!    socket from where it lies (the kernel's socket copy is all).
//! 2. receive: at most one. h2 hands each DATA frame over as a `Bytes` view
//!    of its read buffer. A payload inside one DATA frame is borrowed; one
//!    spread over several (frames above the 1 MiB HTTP/2 frame size, such
//!    as 720p f32) is gathered into one fresh buffer, which is aligned, so
//!    the tensor borrows it ([`Tensor::from_bytes`]). A borrowed payload
//!    that lands misaligned in h2's buffer is copied once instead, and
//!    counted (`streamfuse_payload_copies_total`).
//!
//! Through the generated tonic client or server (kept for `Info` and for
//! peers that use it) the codec adds one copy on each side: into tonic's
//! encode buffer, and into its decode buffer.
//!
//! Replays re-send the kept `Bytes` (no copy).

use bytes::Bytes;
use streamfuse_kernels::{Shape, Tensor};
use streamfuse_proto::v1;

use crate::frame::Frame;

/// Bytes of framing around a payload in one message (fields before the
/// payload, gRPC's 5-byte prefix), generously rounded up.
pub const MESSAGE_OVERHEAD: usize = 256;

/// The protocol version every frame carries (`Frame.protocol`); the rules
/// are in `stage.proto` and [`super::server`].
pub const PROTOCOL: u32 = 2;

/// A received message that is not an acceptable frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame does not carry this protocol's version.
    #[error(
        "frame seq {seq} (stream {stream}): protocol {got}, this server speaks protocol {PROTOCOL}: set Frame.protocol = {PROTOCOL} and Frame.first_unacked (see stage.proto)"
    )]
    Protocol {
        /// Stream.
        stream: u32,
        /// Frame.
        seq: u64,
        /// The version received (0: a client without the field).
        got: u32,
    },
    /// `first_unacked` is above the frame's own seq.
    #[error(
        "frame seq {seq} (stream {stream}): first_unacked {first_unacked} is above the frame's seq"
    )]
    FirstUnacked {
        /// Stream.
        stream: u32,
        /// Frame.
        seq: u64,
        /// The value received.
        first_unacked: u64,
    },
    /// The dtype is unknown or unsupported.
    #[error("frame seq {seq} (stream {stream}): unsupported dtype {dtype}")]
    Dtype {
        /// Stream.
        stream: u32,
        /// Frame.
        seq: u64,
        /// The value received.
        dtype: i32,
    },
    /// The shape is not three positive dimensions, overflows, or exceeds the limit.
    #[error("frame seq {seq} (stream {stream}): shape {shape:?} {why}")]
    Shape {
        /// Stream.
        stream: u32,
        /// Frame.
        seq: u64,
        /// The dimensions received.
        shape: Vec<u32>,
        /// What is wrong.
        why: String,
    },
    /// The payload length disagrees with shape and dtype.
    #[error(
        "frame seq {seq} (stream {stream}): payload is {got} bytes, shape {shape} as f32 needs {expected}"
    )]
    Length {
        /// Stream.
        stream: u32,
        /// Frame.
        seq: u64,
        /// Shape.
        shape: Shape,
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The frame's shape is not what this segment takes.
    #[error("frame seq {seq} (stream {stream}): shape {got}, this segment takes {expected}")]
    WrongShape {
        /// Stream.
        stream: u32,
        /// Frame.
        seq: u64,
        /// Expected.
        expected: Shape,
        /// Received.
        got: Shape,
    },
}

/// A frame as received: data frame or end-of-stream marker.
#[derive(Debug)]
pub enum Incoming {
    /// A data frame; `copied` when its payload had to be copied (misaligned).
    Frame {
        /// The frame.
        frame: Frame,
        /// Whether the payload was copied.
        copied: bool,
        /// Sender's wall clock at send, ns.
        sent_ns: u64,
    },
    /// End of a stream: `seq` is the stream's frame count.
    End {
        /// Stream.
        stream_id: u32,
        /// Frames in the stream.
        seq: u64,
    },
}

impl WireError {
    /// The gRPC status a receiver answers this error with:
    /// `FAILED_PRECONDITION` for a wrong protocol version, else
    /// `INVALID_ARGUMENT`.
    pub fn status(&self) -> tonic::Status {
        match self {
            Self::Protocol { .. } => tonic::Status::failed_precondition(self.to_string()),
            _ => tonic::Status::invalid_argument(self.to_string()),
        }
    }
}

/// Builds the message for `frame` (payload shared, not copied).
pub fn encode(frame: Frame, sent_ns: u64) -> v1::Frame {
    let s = frame.tensor.shape();
    v1::Frame {
        stream_id: frame.stream_id,
        seq: frame.seq,
        capture_ns: frame.capture_ns,
        sent_ns,
        protocol: PROTOCOL,
        // Set by the forwarder as it sends (it knows what was acknowledged).
        first_unacked: 0,
        shape: vec![dim(s.c), dim(s.h), dim(s.w)],
        dtype: v1::Dtype::F32 as i32,
        end_of_stream: false,
        payload: frame.tensor.into_bytes(),
    }
}

fn dim(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The end-of-stream marker for `stream_id` after `frames` frames.
pub fn end_of_stream(stream_id: u32, frames: u64) -> v1::Frame {
    v1::Frame {
        stream_id,
        seq: frames,
        end_of_stream: true,
        protocol: PROTOCOL,
        ..v1::Frame::default()
    }
}

/// Checks `m` and turns it into a frame of the shape its stream takes
/// (`expected[stream_id]`; a stream the spec has no source for, such as one
/// pushed by another producer, takes stream 0's) whose payload is at most
/// `max_bytes`.
///
/// # Errors
/// [`WireError`] naming the seq and what is wrong.
pub fn decode(m: v1::Frame, expected: &[Shape], max_bytes: usize) -> Result<Incoming, WireError> {
    let (stream, seq) = (m.stream_id, m.seq);
    if m.protocol != PROTOCOL {
        return Err(WireError::Protocol {
            stream,
            seq,
            got: m.protocol,
        });
    }
    if m.first_unacked > seq {
        return Err(WireError::FirstUnacked {
            stream,
            seq,
            first_unacked: m.first_unacked,
        });
    }
    if m.end_of_stream {
        if !m.shape.is_empty() || !m.payload.is_empty() {
            return Err(WireError::Shape {
                stream,
                seq,
                shape: m.shape.clone(),
                why: format!(
                    "on an end-of-stream marker, which carries no shape and no payload ({} payload bytes)",
                    m.payload.len()
                ),
            });
        }
        return Ok(Incoming::End {
            stream_id: stream,
            seq,
        });
    }
    if m.dtype != v1::Dtype::F32 as i32 {
        return Err(WireError::Dtype {
            stream,
            seq,
            dtype: m.dtype,
        });
    }
    let bad = |why: String| WireError::Shape {
        stream,
        seq,
        shape: m.shape.clone(),
        why,
    };
    let [c, h, w] = m.shape[..] else {
        return Err(bad("is not [C, H, W]".into()));
    };
    if c == 0 || h == 0 || w == 0 {
        return Err(bad("has a zero dimension".into()));
    }
    let bytes = (c as usize)
        .checked_mul(h as usize)
        .and_then(|n| n.checked_mul(w as usize))
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| bad("overflows".into()))?;
    if bytes > max_bytes {
        return Err(bad(format!(
            "needs {bytes} bytes, over this segment's limit of {max_bytes}"
        )));
    }
    let shape = Shape::new(c as usize, h as usize, w as usize);
    if m.payload.len() != bytes {
        return Err(WireError::Length {
            stream,
            seq,
            shape,
            expected: bytes,
            got: m.payload.len(),
        });
    }
    let Some(&expected) = usize::try_from(stream)
        .ok()
        .and_then(|s| expected.get(s))
        .or(expected.first())
    else {
        return Err(bad("arrived at a segment that takes no frames".into()));
    };
    if shape != expected {
        return Err(WireError::WrongShape {
            stream,
            seq,
            expected,
            got: shape,
        });
    }
    let payload: Bytes = m.payload;
    let (tensor, copied) = Tensor::from_bytes(shape, payload).map_err(|_| WireError::Length {
        stream,
        seq,
        shape,
        expected: bytes,
        got: bytes,
    })?;
    Ok(Incoming::Frame {
        frame: Frame {
            stream_id: stream,
            seq,
            capture_ns: m.capture_ns,
            tensor,
        },
        copied,
        sent_ns: m.sent_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(shape: Shape) -> Frame {
        let data = (0..shape.len()).map(|i| i as f32 * 0.5).collect();
        Frame {
            stream_id: 3,
            seq: 9,
            capture_ns: 77,
            tensor: Tensor::from_vec(shape, data).unwrap_or_else(|_| Tensor::zeros(shape)),
        }
    }

    #[test]
    fn round_trip_keeps_every_field_and_value() {
        let s = Shape::new(2, 3, 5);
        let f = frame(s);
        let m = encode(f.clone(), 5);
        match decode(m, &[s], 1 << 20) {
            Ok(Incoming::Frame { frame, sent_ns, .. }) => {
                assert_eq!(frame, f);
                assert_eq!(sent_ns, 5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_stream_takes_its_own_shape() {
        let (s0, s1) = (Shape::new(1, 4, 4), Shape::new(1, 2, 6));
        let as_stream = |stream_id: u32, s: Shape| {
            let mut m = encode(frame(s), 0);
            m.stream_id = stream_id;
            decode(m, &[s0, s1], 1 << 20)
        };
        assert!(matches!(as_stream(1, s1), Ok(Incoming::Frame { .. })));
        assert!(matches!(as_stream(0, s0), Ok(Incoming::Frame { .. })));
        let e = as_stream(1, s0).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("(stream 1)") && e.contains("takes"), "{e}");
        assert!(matches!(
            as_stream(0, s1),
            Err(WireError::WrongShape { .. })
        ));
        // A stream the spec has no source for takes stream 0's shape.
        assert!(matches!(as_stream(9, s0), Ok(Incoming::Frame { .. })));
        assert!(as_stream(9, s1).is_err());
        let mut m = encode(frame(s0), 0);
        m.stream_id = 0;
        assert!(decode(m, &[], 1 << 20).is_err());
    }

    #[test]
    fn each_bad_frame_names_its_seq_and_fault() {
        let s = Shape::new(1, 4, 4);
        let good = encode(frame(s), 0);
        let mut short = good.clone();
        short.payload = short.payload.slice(..8);
        let mut dtype = good.clone();
        dtype.dtype = 9;
        let mut over = good.clone();
        over.shape = vec![u32::MAX, u32::MAX, u32::MAX];
        let mut big = good.clone();
        big.shape = vec![1, 1024, 1024];
        let mut flat = good.clone();
        flat.shape = vec![16];
        let mut empty = good.clone();
        empty.shape = vec![];
        empty.payload = Bytes::new();
        let mut zero = good.clone();
        zero.shape = vec![1, 0, 4];
        zero.payload = Bytes::new();
        let mut old = good.clone();
        old.protocol = 0;
        let mut ahead = good.clone();
        ahead.first_unacked = 10;
        let mut end_with_payload = good.clone();
        end_with_payload.end_of_stream = true;
        let cases = [
            (empty, "is not [C, H, W]"),
            (zero, "has a zero dimension"),
            (old, "protocol 0, this server speaks protocol 2"),
            (ahead, "first_unacked 10 is above"),
            (end_with_payload, "end-of-stream marker"),
            (short, "payload is 8 bytes"),
            (dtype, "unsupported dtype 9"),
            (over, "overflows"),
            (big, "over this segment's limit"),
            (flat, "is not [C, H, W]"),
        ];
        for (m, want) in cases {
            let e = decode(m, &[s], 4096).map(|_| ()).unwrap_err().to_string();
            assert!(
                e.contains("frame seq 9 (stream 3)") && e.contains(want),
                "{e}"
            );
        }
        assert!(decode(good, &[Shape::new(1, 2, 8)], 4096).is_err());
    }

    #[test]
    fn aligned_payload_is_borrowed_misaligned_is_copied() {
        let s = Shape::new(1, 2, 2);
        let raw: Vec<u8> = (0..20u8).collect();
        let whole = Bytes::from(raw);
        for off in 0..4 {
            let m = v1::Frame {
                shape: vec![1, 2, 2],
                dtype: v1::Dtype::F32 as i32,
                protocol: PROTOCOL,
                payload: whole.slice(off..off + 16),
                ..v1::Frame::default()
            };
            let aligned = (m.payload.as_ptr() as usize).is_multiple_of(4);
            match decode(m, &[s], 64) {
                Ok(Incoming::Frame { copied, frame, .. }) => {
                    assert_eq!(copied, !aligned);
                    assert_eq!(frame.tensor.is_shared(), aligned);
                    assert_eq!(frame.tensor.as_bytes(), &whole[off..off + 16]);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
