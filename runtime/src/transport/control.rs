//! Control calls a segment server takes besides frames (`UpdateWeights`,
//! `Probe`): who may make them ([`ControlAccess`]), the wire-level weights
//! request, and the trait through which the served segment applies it. The
//! transport knows no weights module; the segment layer implements
//! [`WeightsControl`].

use std::net::SocketAddr;

use tokio::sync::oneshot;

use crate::exec::Applied;

/// Largest weight update accepted, bytes of `f32` values (weights and bias).
pub const MAX_WEIGHTS_BYTES: usize = 64 << 20;

/// New weights for one conv stage.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsUpdate {
    /// Stage id.
    pub stage: String,
    /// Shape of `weights` as given (`[out, in, kh, kw]`).
    pub shape: Vec<u64>,
    /// Values, row-major.
    pub weights: Vec<f32>,
    /// New bias (`[out]`); `None` keeps the stage's bias.
    pub bias: Option<Vec<f32>>,
}

/// Why a control call was refused; the old state keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    /// The request was valid but cannot be applied here or now (another
    /// segment runs the stage, or the segment has stopped):
    /// `FailedPrecondition`; otherwise `InvalidArgument`.
    pub precondition: bool,
    /// What was wrong.
    pub message: String,
}

/// What takes weight updates in a served segment.
pub trait WeightsControl: Send + Sync {
    /// Validates `up` and hands it to the segment; returns the new version
    /// and a receiver told which frame first used it.
    ///
    /// # Errors
    /// [`ControlError`] when the update is refused; nothing changed then.
    fn submit(&self, up: WeightsUpdate) -> Result<(u64, oneshot::Receiver<Applied>), ControlError>;
}

/// Who may make a plaintext segment server's control calls
/// (`UpdateWeights`, which replaces a stage's weights, and `Probe`, which
/// streams frames to measure the link). Without TLS a server cannot tell
/// who a peer is, only where it connects from: control is off unless asked
/// for, and then accepted from the server's own host only. A server on
/// mutual TLS decides by the client's identity instead
/// ([`super::admins`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlAccess {
    /// Every control call is refused (`PERMISSION_DENIED`): the default.
    #[default]
    Off,
    /// Control calls from a loopback address (this host, or a
    /// `kubectl port-forward` into the pod) are accepted; every other peer
    /// is refused (`PERMISSION_DENIED`).
    Loopback,
    /// Control calls from any peer: only for a closed network whose every
    /// host is trusted (the advisor's emulated cluster of network
    /// namespaces). The server warns of it when it starts.
    Network,
}

impl std::str::FromStr for ControlAccess {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Self::Off),
            "loopback" => Ok(Self::Loopback),
            "network" => Ok(Self::Network),
            _ => Err(format!(
                "`{s}` is not a control access: off (the default), loopback or network"
            )),
        }
    }
}

impl ControlAccess {
    /// The access's name, as `--control` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Loopback => "loopback",
            Self::Network => "network",
        }
    }

    /// Whether control call `method` from `peer` (`None`: not known) is
    /// allowed; `Err` says why not, for the caller to log and return as
    /// `PERMISSION_DENIED`.
    ///
    /// # Errors
    /// The reason for a refusal.
    pub fn check(self, method: &str, peer: Option<SocketAddr>) -> Result<(), String> {
        let from = peer.map_or_else(|| "an unknown address".to_owned(), |p| p.to_string());
        match self {
            Self::Off => Err(format!(
                "{method} from {from} refused: control calls are off on this server \
                 (start it with `--control loopback` to accept them from its own host)"
            )),
            Self::Network => Ok(()),
            Self::Loopback if peer.is_some_and(|p| p.ip().is_loopback()) => Ok(()),
            Self::Loopback => Err(format!(
                "{method} from {from} refused: `--control loopback` accepts control calls \
                 from this host only (connect through loopback: ssh or kubectl port-forward)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_is_off_by_default_and_loopback_admits_only_loopback_peers() {
        let lo4: SocketAddr = "127.0.0.1:4000".parse().unwrap_or_else(|e| panic!("{e}"));
        let lo6: SocketAddr = "[::1]:4000".parse().unwrap_or_else(|e| panic!("{e}"));
        let lan: SocketAddr = "10.1.2.3:4000".parse().unwrap_or_else(|e| panic!("{e}"));
        let off = ControlAccess::default();
        for peer in [Some(lo4), Some(lo6), Some(lan), None] {
            let e = off.check("UpdateWeights", peer).err().unwrap_or_default();
            assert!(e.contains("control calls are off"), "{e}");
        }
        let lb = ControlAccess::Loopback;
        assert_eq!(lb.check("Probe", Some(lo4)), Ok(()));
        assert_eq!(lb.check("Probe", Some(lo6)), Ok(()));
        let e = lb.check("Probe", Some(lan)).err().unwrap_or_default();
        assert!(
            e.contains("Probe from 10.1.2.3:4000 refused") && e.contains("this host only"),
            "{e}"
        );
        assert!(lb.check("Probe", None).is_err());
        assert_eq!(
            "loopback".parse::<ControlAccess>(),
            Ok(ControlAccess::Loopback)
        );
        assert_eq!(ControlAccess::Network.check("Probe", Some(lan)), Ok(()));
        assert!("any".parse::<ControlAccess>().is_err());
    }
}
