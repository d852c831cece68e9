//! The spec parser and validation on YAML text.
//! See `streamfuse::fuzzing::spec` for the input's layout and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamfuse::fuzzing::spec(data));
