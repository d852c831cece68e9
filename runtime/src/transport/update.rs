//! The client of `UpdateWeights`: new conv weights sent to a running
//! segment server (`streamfuse update-weights`).

use std::time::Duration;

use streamfuse_proto::v1;
use streamfuse_proto::v1::stage_client::StageClient;

use super::control::{MAX_WEIGHTS_BYTES, WeightsUpdate};

/// An update could not be delivered, or the server refused it.
#[derive(Debug, thiserror::Error)]
pub enum UpdateClientError {
    /// The address is not a valid URI.
    #[error("address {addr}: {message}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// No connection could be made.
    #[error("cannot reach the segment server at {addr}: {message}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The server answered with an error (the update was refused; the old
    /// weights keep serving).
    #[error("{addr} refused the update ({code}): {message}")]
    Refused {
        /// The address.
        addr: String,
        /// gRPC status code.
        code: String,
        /// The server's message.
        message: String,
    },
}

/// Sends `up` to the segment server at `addr` (`host:port` or a URI),
/// through mutual TLS with `tls` (else plaintext), and returns its reply:
/// the version and the first frame that used it.
///
/// # Errors
/// [`UpdateClientError`] when the server cannot be reached or refuses the
/// update.
pub async fn send(
    addr: &str,
    up: WeightsUpdate,
    tls: Option<&super::tls::ClientTls>,
) -> Result<v1::UpdateWeightsReply, UpdateClientError> {
    let endpoint = tonic::transport::Endpoint::from_shared(super::forward::uri(addr))
        .map_err(|e| UpdateClientError::Address {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5));
    let channel =
        super::tls::connect(&endpoint, tls)
            .await
            .map_err(|e| UpdateClientError::Connect {
                addr: addr.to_owned(),
                message: e.to_string(),
            })?;
    let mut client = StageClient::new(channel)
        .max_encoding_message_size(MAX_WEIGHTS_BYTES + (64 << 10))
        .max_decoding_message_size(1 << 20);
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let request = v1::UpdateWeightsRequest {
        stage: up.stage,
        shape: up.shape,
        weights: bytes(&up.weights),
        bias: up.bias.as_deref().map(bytes),
    };
    client
        .update_weights(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| UpdateClientError::Refused {
            addr: addr.to_owned(),
            code: format!("{:?}", s.code()),
            message: s.message().to_owned(),
        })
}
