//! The `streamfuse` package's integration tests, one binary: the CLI, the
//! spec fixtures, npy, video and model I/O, live weights, and the
//! multi-process tests that start real `streamfuse` processes (splits on
//! loopback, bad input from a third-party client, manifests, the study),
//! and the CUDA path on a counting stand-in for the driver.
#![allow(dead_code)]

mod bad_input;
mod bench;
mod certs;
mod chaos;
mod cli;
mod common;
mod cuda_shim;
mod hostile;
mod live_weights;
mod manifests;
mod model_import;
mod npy_io;
mod processes;
mod spec_fixtures;
mod split;
mod streams;
mod support;
mod tls;
mod video_io;
