//! Reading models: ONNX (initializers and the node chain) and safetensors.

pub mod onnx;
pub mod safetensors;
