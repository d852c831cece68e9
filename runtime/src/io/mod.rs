//! Sources and sinks.

pub mod sink;
pub mod synthetic;
