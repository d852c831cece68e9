//! The frame checks on a protobuf `Frame` of arbitrary bytes.
//! See `streamfuse::fuzzing::wire` for the input's layout and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamfuse::fuzzing::wire(data));
