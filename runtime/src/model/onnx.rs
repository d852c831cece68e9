//! ONNX models: the generated protobuf types (a subset of ONNX's schema,
//! `proto/onnx_subset.proto`) and helpers to read initializers and walk the
//! node chain.

use std::path::Path;

use super::ModelError;

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
/// [`ModelError`] naming the file when it cannot be read or decoded.
pub fn read_model(path: &Path) -> Result<ModelProto, ModelError> {
    decode_model(path, &super::read_file(path)?)
}

/// Decodes an in-memory model; `path` names it in errors.
///
/// # Errors
/// [`ModelError::Format`] when the bytes are not a model.
pub fn decode_model(path: &Path, bytes: &[u8]) -> Result<ModelProto, ModelError> {
    ModelProto::decode(bytes).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        format: "an ONNX model",
        message: e.to_string(),
    })
}

/// The graph of a model.
///
/// # Errors
/// [`ModelError::Missing`] when the model has no graph.
pub fn graph<'m>(m: &'m ModelProto, path: &Path) -> Result<&'m GraphProto, ModelError> {
    m.graph.as_ref().ok_or_else(|| ModelError::Missing {
        path: path.to_path_buf(),
        what: "graph".into(),
    })
}

/// An initializer's dims and values as `f32` (float, float16 and double
/// accepted; inline or raw data). A tensor produced by a `Constant` node
/// (its `value`, `value_float` or `value_floats` attribute) counts as an
/// initializer of its output's name.
///
/// # Errors
/// [`ModelError`] naming the initializer when it is missing, external or
/// of another type.
pub fn initializer(
    g: &GraphProto,
    name: &str,
    path: &Path,
) -> Result<(Vec<u64>, Vec<f32>), ModelError> {
    if let Some(t) = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
    {
        return tensor_values(t, path);
    }
    let constant = g.node.iter().find(|n| {
        n.op_type.as_deref() == Some("Constant")
            && n.output.first().map(String::as_str) == Some(name)
    });
    if let Some(n) = constant {
        for a in &n.attribute {
            match a.name.as_deref() {
                Some("value") => {
                    if let Some(t) = &a.t {
                        return tensor_values(t, path).map_err(|e| match e {
                            ModelError::Tensor { path, problem, .. } => ModelError::Tensor {
                                path,
                                tensor: format!("constant `{name}`"),
                                problem,
                            },
                            other => other,
                        });
                    }
                }
                Some("value_float") => {
                    if let Some(f) = a.f {
                        return Ok((vec![], vec![f]));
                    }
                }
                Some("value_floats") => return Ok((vec![a.floats.len() as u64], a.floats.clone())),
                _ => {}
            }
        }
        return Err(tensor_error(
            path,
            name,
            "is a Constant node without a float tensor value".into(),
        ));
    }
    Err(ModelError::Missing {
        path: path.to_path_buf(),
        what: format!("initializer `{name}`"),
    })
}

/// A float attribute of a node.
pub fn float(n: &NodeProto, name: &str) -> Option<f32> {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.f)
}

/// The dims and `f32` values of a tensor.
///
/// # Errors
/// [`ModelError::Tensor`] when the data is external or of an unsupported
/// type.
pub fn tensor_values(t: &TensorProto, path: &Path) -> Result<(Vec<u64>, Vec<f32>), ModelError> {
    let name = t.name.as_deref().unwrap_or("?");
    if t.data_location == Some(1) {
        return Err(tensor_error(
            path,
            name,
            "keeps its data in an external file (not supported)".into(),
        ));
    }
    // The dims are checked against the data the tensor holds before any
    // value is decoded.
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut n: u64 = 1;
    for &d in &t.dims {
        let Ok(d) = u64::try_from(d) else {
            return Err(tensor_error(
                path,
                name,
                format!("has a negative dimension in dims {:?}", t.dims),
            ));
        };
        n = n.checked_mul(d).ok_or_else(|| {
            tensor_error(
                path,
                name,
                format!("has dims {:?}, whose product overflows", t.dims),
            )
        })?;
        dims.push(d);
    }
    let raw = t.raw_data.as_deref().unwrap_or_default();
    let data_type = t.data_type.unwrap_or(0);
    let (item, inline) = match data_type {
        FLOAT => (4, t.float_data.len()),
        FLOAT16 => (2, t.int32_data.len()),
        DOUBLE => (8, t.double_data.len()),
        other => {
            return Err(tensor_error(
                path,
                name,
                format!("has data type {other}; expected float, float16 or double"),
            ));
        }
    };
    let held = if raw.is_empty() {
        inline as u64
    } else {
        if !raw.len().is_multiple_of(item) {
            return Err(tensor_error(
                path,
                name,
                format!(
                    "has {} bytes of raw_data, not a whole number of {item}-byte values",
                    raw.len()
                ),
            ));
        }
        (raw.len() / item) as u64
    };
    if held != n {
        return Err(tensor_error(
            path,
            name,
            format!("has {held} values for dims {dims:?}"),
        ));
    }
    let values: Vec<f32> = match data_type {
        FLOAT if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
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
        _ => t.float_data.clone(),
    };
    Ok((dims, values))
}

fn tensor_error(path: &Path, name: &str, problem: String) -> ModelError {
    ModelError::Tensor {
        path: path.to_path_buf(),
        tensor: format!("initializer `{name}`"),
        problem,
    }
}

/// Reads initializer `name` checking its shape against `expected`; the
/// error names the file, the initializer and both shapes.
///
/// # Errors
/// As [`initializer`], or a shape mismatch.
pub fn load(path: &Path, name: &str, expected: &[u64]) -> Result<Vec<f32>, ModelError> {
    let m = read_model(path)?;
    let (dims, values) = initializer(graph(&m, path)?, name, path)?;
    if dims != expected {
        return Err(tensor_error(
            path,
            name,
            format!("has shape {dims:?}, expected {expected:?}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: Some("w".into()),
            dims,
            data_type: Some(FLOAT),
            raw_data: Some(raw),
            ..TensorProto::default()
        }
    }

    fn problem(t: &TensorProto) -> String {
        match tensor_values(t, Path::new("m.onnx")) {
            Ok(v) => panic!("read {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn dims_are_checked_against_the_data() {
        let ok = tensor_values(&t(vec![2], vec![0; 8]), Path::new("m.onnx"));
        assert!(matches!(ok, Ok((d, v)) if d == [2] && v.len() == 2));
        // Dims whose product overflows (a panic with overflow checks).
        let e = problem(&t(vec![1 << 32, 1 << 32, 2], vec![0; 8]));
        assert!(
            e.contains("initializer `w` has dims") && e.contains("overflows"),
            "{e}"
        );
        // A negative dimension was read as 0.
        let e = problem(&t(vec![-1, 0], vec![]));
        assert!(e.contains("negative dimension"), "{e}");
        // Trailing raw bytes were dropped.
        let e = problem(&t(vec![1], vec![0; 5]));
        assert!(e.contains("5 bytes of raw_data, not a whole number"), "{e}");
        let e = problem(&t(vec![3], vec![0; 8]));
        assert!(e.contains("has 2 values for dims [3]"), "{e}");
    }
}
