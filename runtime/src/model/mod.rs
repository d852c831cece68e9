//! Reading models: ONNX (initializers and the node chain) and safetensors.

pub mod onnx;
pub mod safetensors;

use std::path::PathBuf;

/// A model file cannot be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not of the format asked for.
    #[error("{} is not {format}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What it should be (`an ONNX model`, `a valid safetensors file`).
        format: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// Something the caller asked for is not in the file.
    #[error("{} has no {what}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What is missing (`graph`, ``initializer `w` ``, ...).
        what: String,
    },
    /// A tensor of the file cannot be used.
    #[error("{}: {tensor} {problem}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor (``initializer `w` ``, ``tensor `w` ``).
        tensor: String,
        /// What is wrong with it.
        problem: String,
    },
}
