//! The streamfuse wire protocol: service `streamfuse.v1.Stage` and its
//! messages, generated from `proto/streamfuse/v1/stage.proto`.
//!
//! A [`v1::Frame`]'s `payload` is a [`bytes::Bytes`] that borrows the
//! receive buffer (no copy on decode).

/// Version 1 of the protocol.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("streamfuse.v1");
}
