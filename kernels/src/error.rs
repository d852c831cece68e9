//! Errors raised by kernels and op validation.

use crate::tensor::Shape;

/// An op cannot run on the tensor it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The input has a different channel count than the op was built for.
    #[error("{op}: expected {expected} input channels, got {got}")]
    Channels {
        /// The op's name.
        op: &'static str,
        /// Channels the op was built for.
        expected: usize,
        /// Channels of the input.
        got: usize,
    },
    /// The window (kernel or pool) does not fit in the (padded) input.
    #[error(
        "{op}: window {window_h}x{window_w} does not fit input {input} (padded {padded_h}x{padded_w})"
    )]
    WindowTooLarge {
        /// The op's name.
        op: &'static str,
        /// Window height.
        window_h: usize,
        /// Window width.
        window_w: usize,
        /// Input shape.
        input: Shape,
        /// Padded input height.
        padded_h: usize,
        /// Padded input width.
        padded_w: usize,
    },
    /// A parameter is out of its valid range.
    #[error("{op}: {what}")]
    BadParam {
        /// The op's name.
        op: &'static str,
        /// What is wrong.
        what: String,
    },
    /// Data length does not match the shape.
    #[error("tensor of shape {shape} needs {expected} values, got {got}")]
    Length {
        /// Declared shape.
        shape: Shape,
        /// Values the shape needs.
        expected: usize,
        /// Values supplied.
        got: usize,
    },
}
