//! Sources and sinks.

pub mod journal;
pub mod npy;
pub mod sink;
pub mod sinks;
pub mod source;
pub mod synthetic;
