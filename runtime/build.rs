//! Generates the ONNX model types from `proto/onnx_subset.proto` with the
//! vendored `protoc` (nothing to install).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    cfg.compile_protos(&["proto/onnx_subset.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/onnx_subset.proto");
    Ok(())
}
