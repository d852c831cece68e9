//! Helpers shared by the runtime's integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `streamfuse` binary built for these tests.
pub fn streamfuse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamfuse"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start streamfuse: {e}"))
}

/// Writes `data` as a float32 `.npy` file of `shape` (with npyz, not the
/// code under test).
pub fn write_npy(path: &Path, shape: &[u64], data: &[f32]) {
    use npyz::WriterBuilder;
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .unwrap_or_else(|e| panic!("{e}"));
    w.extend(data.iter().copied())
        .unwrap_or_else(|e| panic!("{e}"));
    w.finish().unwrap_or_else(|e| panic!("{e}"));
}

/// Seeded values in `[-bound, bound)`.
pub fn values(n: usize, seed: u64, bound: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| streamfuse_kernels::random::symmetric_f32(seed, 2, i, bound))
        .collect()
}
