//! Control calls a segment server takes besides frames (`UpdateWeights`):
//! the wire-level request, and the trait through which the served segment
//! applies it. The transport knows no weights module; the segment layer
//! implements [`WeightsControl`].

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
