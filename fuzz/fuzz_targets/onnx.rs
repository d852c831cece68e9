//! The ONNX reader and importer on an in-memory model.
//! See `streamfuse::fuzzing::onnx` for the input's layout and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamfuse::fuzzing::onnx(data));
