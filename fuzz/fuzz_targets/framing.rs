//! The `Push` call's message decoder on arbitrary DATA chunks, then the frame checks.
//! See `streamfuse::fuzzing::framing` for the input's layout and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamfuse::fuzzing::framing(data));
