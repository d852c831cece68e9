//! Entry points of the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh`).
//!
//! Each function takes the fuzzer's bytes and drives one reader of
//! untrusted input the way the runtime does: the `Push` call's message
//! decoder and frame checks, the spec parser, and the npy, safetensors and
//! ONNX readers. Errors are the expected outcome of most inputs and are
//! dropped; a function panics only where a reader broke a promise of its
//! own (a result that contradicts its input), so that libFuzzer reports
//! it. A panic, an abort or a hang inside a reader is a bug to fix there.
//!
//! Not part of the runtime's interface: hidden from the docs, and kept
//! here so the targets need nothing private and the regression inputs
//! can run as unit tests (`fuzzing::tests`).

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use prost::Message;
use streamfuse_kernels::Shape;
use streamfuse_proto::v1;
use tonic::Status;

use crate::transport::Limits;
use crate::transport::framing::MessageReader;
use crate::transport::wire::{self, Incoming};

/// Where the file-reading targets say their input lies. No such folder
/// exists, so a spec's relative paths name nothing.
const NOWHERE: &str = "/nonexistent-streamfuse-fuzz";

/// Runs a future whose every poll is ready (the bodies here never wait).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        // The body below is always ready: a pending poll is a reader that
        // waits for nothing, which would hang a real call.
        Poll::Pending => panic!("the message reader waited on a body that was ready"),
    }
}

/// An HTTP/2 body of given DATA chunks, then optional trailers.
struct Chunked(VecDeque<http_body::Frame<Bytes>>);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// The shapes of the framing and wire targets, picked by the input's
/// first byte: the streams' shapes of a segment (empty: one that takes no
/// frames).
const SHAPES: [&[(usize, usize, usize)]; 4] =
    [&[(1, 2, 2)], &[(3, 4, 4), (1, 2, 2)], &[(1, 1, 1)], &[]];

fn shapes(pick: u8) -> Vec<Shape> {
    SHAPES[usize::from(pick) % SHAPES.len()]
        .iter()
        .map(|&(c, h, w)| Shape::new(c, h, w))
        .collect()
}

/// What a reader gave for one message: a frame, or the error's code and
/// message (the reader stops at an error).
type Outcome = Result<v1::Frame, (tonic::Code, String)>;

/// Every message of `body` as the server's `Push` call reads them, at most
/// `max` messages.
fn read_all(body: Chunked, max_message: usize, max: usize) -> Vec<Outcome> {
    let mut r = MessageReader::new(body, max_message);
    let mut out = Vec::new();
    while out.len() < max {
        match block_on(r.next::<v1::Frame>()) {
            Ok(Some(f)) => out.push(Ok(f)),
            Ok(None) => break,
            Err(s) => {
                out.push(Err((s.code(), s.message().to_owned())));
                break;
            }
        }
    }
    out
}

/// The framing decoder ([`MessageReader`]) on a `Push` request body made
/// of arbitrary DATA chunks.
///
/// Input: byte 0 picks the segment's shapes (the link's message limit is
/// the server's, [`Limits::for_frame`] of the largest) and whether the
/// body ends with trailers; byte 1 is the trailers' `grpc-status`; the
/// rest is chunks, each a length (one byte below 128, else two: 15 bits)
/// and that many bytes.
///
/// Checks: the messages and the error are the same whatever the chunking
/// (the body as one chunk gives them too), and each frame then goes
/// through [`wire::decode`] as the server's call loop does.
pub fn framing(data: &[u8]) {
    let [conf, code, rest @ ..] = data else {
        return;
    };
    let expected = shapes(*conf);
    let max_frame = expected.iter().map(|s| s.bytes()).max().unwrap_or(0);
    let limits = Limits::for_frame(max_frame);
    let mut chunks = Vec::new();
    let mut rest = rest;
    while let [b, tail @ ..] = rest {
        let (len, tail) = match (*b, tail) {
            (b, tail) if b < 0x80 => (usize::from(b), tail),
            (b, [lo, tail @ ..]) => ((usize::from(b & 0x7f) << 8) | usize::from(*lo), tail),
            (_, []) => break,
        };
        let n = len.min(tail.len());
        chunks.push(Bytes::copy_from_slice(&tail[..n]));
        rest = &tail[n..];
    }
    let trailers = (conf & 0x80 != 0).then(|| {
        let mut h = http::HeaderMap::new();
        h.insert(
            "grpc-status",
            http::HeaderValue::from(i32::from(*code % 20)),
        );
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("from the fuzzer"),
        );
        h
    });
    let body = |chunks: Vec<Bytes>| {
        let mut q: VecDeque<_> = chunks.into_iter().map(http_body::Frame::data).collect();
        q.extend(trailers.clone().map(http_body::Frame::trailers));
        Chunked(q)
    };
    const MAX_MESSAGES: usize = 256;
    let whole = Bytes::from(chunks.concat());
    let got = read_all(body(chunks), limits.max_message, MAX_MESSAGES);
    let want = read_all(body(vec![whole]), limits.max_message, MAX_MESSAGES);
    assert_eq!(got, want, "the chunking changed what was decoded");
    for m in got.into_iter().flatten() {
        let payload = m.payload.clone();
        if let Ok(Incoming::Frame { frame, .. }) = wire::decode(m, &expected, max_frame) {
            assert_eq!(frame.tensor.as_bytes(), &payload[..]);
        }
    }
}

/// The frame checks ([`wire::decode`]) on a `Frame` decoded from arbitrary
/// bytes.
///
/// Input: byte 0 picks the segment's shapes and its size limit; the rest
/// is the protobuf `Frame`.
///
/// Checks: an accepted frame has its stream's shape (stream 0's for a
/// stream the segment has no shape for), is within the limit, and holds
/// the payload's bytes.
pub fn wire(data: &[u8]) {
    let [conf, rest @ ..] = data else {
        return;
    };
    let expected = shapes(*conf);
    let max_bytes = [0, 16, 64, 4096, usize::MAX][usize::from(conf >> 2) % 5];
    let Ok(m) = v1::Frame::decode(rest) else {
        return;
    };
    let (stream, seq, payload) = (m.stream_id, m.seq, m.payload.clone());
    match wire::decode(m, &expected, max_bytes) {
        Ok(Incoming::Frame { frame, .. }) => {
            let want = usize::try_from(stream)
                .ok()
                .and_then(|s| expected.get(s))
                .or(expected.first());
            assert_eq!(Some(&frame.tensor.shape()), want);
            assert!(frame.tensor.shape().bytes() <= max_bytes);
            assert_eq!(frame.tensor.as_bytes(), &payload[..]);
            assert_eq!((frame.stream_id, frame.seq), (stream, seq));
        }
        Ok(Incoming::End { stream_id, seq: n }) => assert_eq!((stream_id, n), (stream, seq)),
        Err(e) => {
            let named = format!("frame seq {seq} (stream {stream})");
            assert!(e.to_string().starts_with(&named), "{e}");
        }
    }
}

/// The spec parser and its validation ([`crate::spec::parse`]) on YAML text.
/// Relative paths in the spec name nothing (its folder does not exist).
///
/// Checks: an error names the spec file.
pub fn spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(NOWHERE).join("spec.yaml");
    if let Err(e) = crate::spec::parse(text, &path, &crate::spec::Overrides::default()) {
        assert!(e.to_string().contains("spec.yaml"), "{e}");
    }
}

/// The npy reader on an in-memory file: as weights
/// ([`crate::media::npy::read_f32_bytes`]) and as a stacked frame source
/// ([`crate::io::npy::read_stacked_bytes`], at most 64 frames).
///
/// Checks: the values read fill the shape the header states.
pub fn npy(data: &[u8]) {
    let path = Path::new(NOWHERE).join("in.npy");
    if let Ok((shape, values)) = crate::media::npy::read_f32_bytes(&path, data) {
        let n: u64 = shape.iter().product();
        assert_eq!(values.len() as u64, n, "shape {shape:?}");
    }
    if let Ok((shape, count, frames)) = crate::io::npy::read_stacked_bytes(&path, data, 64) {
        assert_eq!(frames.len() as u64, count.min(64));
        assert!(frames.iter().all(|t| t.shape() == shape));
    }
}

/// The safetensors reader ([`crate::model::safetensors::load_bytes`]) on an
/// in-memory file: every tensor it lists (at most 16) with its own shape,
/// and with a shape it does not have; and a name it lacks.
///
/// Checks: the values read fill the shape.
pub fn safetensors(data: &[u8]) {
    use crate::model::safetensors::load_bytes;
    let path = Path::new(NOWHERE).join("w.safetensors");
    let _ = load_bytes(&path, data, "not-there", &[1]);
    let Ok((_, meta)) = ::safetensors::SafeTensors::read_metadata(data) else {
        return;
    };
    let mut tensors: Vec<_> = meta.tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, info) in tensors.into_iter().take(16) {
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        if let Ok(values) = load_bytes(&path, data, &name, &shape) {
            let n: u64 = shape.iter().product();
            assert_eq!(values.len() as u64, n, "tensor {name}");
        }
        let mut other = shape.clone();
        other.push(1);
        assert!(load_bytes(&path, data, &name, &other).is_err());
    }
}

/// The ONNX reader and importer on an in-memory model: every initializer
/// and `Constant` output (at most 64) through
/// [`crate::model::onnx::initializer`], then [`crate::import::import_bytes`]
/// with the model's own input size and with one given. The model file is
/// not on disk, so the import's last step (loading the generated spec,
/// which reads the weights from the file) fails.
///
/// Checks: the values read fill the dims.
pub fn onnx(data: &[u8]) {
    use crate::model::onnx;
    let path = Path::new(NOWHERE).join("model.onnx");
    let Ok(m) = onnx::decode_model(&path, data) else {
        return;
    };
    if let Ok(g) = onnx::graph(&m, &path) {
        let names = g
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
            .chain(
                g.node
                    .iter()
                    .filter_map(|n| n.output.first().map(String::as_str)),
            );
        for name in names.take(64) {
            if let Ok((dims, values)) = onnx::initializer(g, name, &path) {
                let n: u64 = dims.iter().product();
                assert_eq!(values.len() as u64, n, "initializer {name}");
            }
        }
    }
    for input in [None, Some((4, 4, 3))] {
        let opts = crate::import::ImportOptions {
            input,
            spec_path: Some(Path::new(NOWHERE).join("imported.yaml")),
        };
        let _ = crate::import::import_bytes(&path, data, &opts);
    }
}

#[cfg(test)]
mod tests {
    //! Every input of the fuzz corpora (`fuzz/corpus/<target>/`: the seeds
    //! and the `regress-*` inputs of fixed crashes), once through its
    //! target.

    use std::path::PathBuf;

    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_file()
                    && let Ok(b) = std::fs::read(&p)
                {
                    out.push((p, b));
                }
            }
        }
        out.sort();
        out
    }

    fn run(target: &str, f: fn(&[u8])) {
        for (p, b) in corpus(target) {
            let r = std::panic::catch_unwind(|| f(&b));
            assert!(r.is_ok(), "{} panicked", p.display());
        }
    }

    #[test]
    fn framing_corpus() {
        run("framing", super::framing);
    }

    #[test]
    fn wire_corpus() {
        run("wire", super::wire);
    }

    #[test]
    fn spec_corpus() {
        run("spec", super::spec);
    }

    #[test]
    fn npy_corpus() {
        run("npy", super::npy);
    }

    #[test]
    fn safetensors_corpus() {
        run("safetensors", super::safetensors);
    }

    #[test]
    fn onnx_corpus() {
        run("onnx", super::onnx);
    }
}
