//! ONNX models: the generated protobuf types (a subset of ONNX's schema,
//! `proto/onnx_subset.proto`) and helpers to read initializers and walk the
//! node chain.

use std::path::Path;

use prost::Message;

/// Types generated from `proto/onnx_subset.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// `TensorProto.DataType` values read here.
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;

/// Decodes the model at `path`.
///
/// # Errors
/// A message naming the file when it cannot be read or decoded.
pub fn read_model(path: &Path) -> Result<ModelProto, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ModelProto::decode(&bytes[..])
        .map_err(|e| format!("{} is not an ONNX model: {e}", path.display()))
}

/// The graph of a model.
///
/// # Errors
/// A message when the model has no graph.
pub fn graph<'m>(m: &'m ModelProto, path: &Path) -> Result<&'m GraphProto, String> {
    m.graph
        .as_ref()
        .ok_or_else(|| format!("{} has no graph", path.display()))
}

/// An initializer's dims and values as `f32` (float, float16 and double
/// accepted; inline or raw data).
///
/// # Errors
/// A message naming the initializer when it is missing, external or of
/// another type.
pub fn initializer(
    g: &GraphProto,
    name: &str,
    path: &Path,
) -> Result<(Vec<u64>, Vec<f32>), String> {
    let t = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .ok_or_else(|| format!("{} has no initializer `{name}`", path.display()))?;
    tensor_values(t, path)
}

/// The dims and `f32` values of a tensor.
///
/// # Errors
/// A message when the data is external or of an unsupported type.
pub fn tensor_values(t: &TensorProto, path: &Path) -> Result<(Vec<u64>, Vec<f32>), String> {
    let name = t.name.as_deref().unwrap_or("?");
    if t.data_location == Some(1) {
        return Err(format!(
            "{}: initializer `{name}` keeps its data in an external file (not supported)",
            path.display()
        ));
    }
    let dims: Vec<u64> = t.dims.iter().map(|&d| d.max(0) as u64).collect();
    let raw = t.raw_data.as_deref().unwrap_or_default();
    let values: Vec<f32> = match t.data_type.unwrap_or(0) {
        FLOAT if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        FLOAT => t.float_data.clone(),
        FLOAT16 if !raw.is_empty() => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        // float16 inline data lives in int32_data, one value per element.
        FLOAT16 => t
            .int32_data
            .iter()
            .map(|&v| half::f16::from_bits(v as u16).to_f32())
            .collect(),
        DOUBLE if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        DOUBLE => t.double_data.iter().map(|&v| v as f32).collect(),
        other => {
            return Err(format!(
                "{}: initializer `{name}` has data type {other}; expected float, float16 or double",
                path.display()
            ));
        }
    };
    let n: u64 = dims.iter().product();
    if values.len() as u64 != n {
        return Err(format!(
            "{}: initializer `{name}` has {} values for dims {dims:?}",
            path.display(),
            values.len()
        ));
    }
    Ok((dims, values))
}

/// Reads initializer `name` checking its shape against `expected`; the
/// error names the file, the initializer and both shapes.
///
/// # Errors
/// As [`initializer`], or a shape mismatch.
pub fn load(path: &Path, name: &str, expected: &[u64]) -> Result<Vec<f32>, String> {
    let m = read_model(path)?;
    let (dims, values) = initializer(graph(&m, path)?, name, path)?;
    if dims != expected {
        return Err(format!(
            "{}: initializer `{name}` has shape {dims:?}, expected {expected:?}",
            path.display()
        ));
    }
    Ok(values)
}

/// An integer-list attribute of a node.
pub fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .map(|a| a.ints.clone())
}

/// An integer attribute of a node.
pub fn int(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.i)
}

/// A string attribute of a node.
pub fn string(n: &NodeProto, name: &str) -> Option<String> {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}
