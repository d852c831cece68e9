//! Sources and sinks.

pub mod npy;
pub mod sink;
pub mod synthetic;
pub mod video;
