//! Generates the gRPC service and messages from `proto/streamfuse/v1/stage.proto`
//! with the vendored `protoc`, so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // The payload decodes into `bytes::Bytes`: a view of the receive
        // buffer, no copy.
        .bytes(".streamfuse.v1.Frame.payload")
        .compile_with_config(cfg, &["proto/streamfuse/v1/stage.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/streamfuse/v1/stage.proto");
    Ok(())
}
