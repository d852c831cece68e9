//! The npy reader (weights and stacked frame sources) on an in-memory file.
//! See `streamfuse::fuzzing::npy` for the input's layout and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamfuse::fuzzing::npy(data));
