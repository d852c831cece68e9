//! The safetensors weights reader on an in-memory file.
//! See `streamfuse::fuzzing::safetensors` for the input's layout and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamfuse::fuzzing::safetensors(data));
