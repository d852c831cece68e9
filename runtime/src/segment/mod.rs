//! A segment's life: THE frame loop ([`worker`]) over an inlet and an
//! outlet, live weights ([`live`]), the whole pipeline in one process
//! ([`inproc`]) and one segment as its own process behind gRPC links
//! ([`serve`]). The same segment runs the same loop either way.

pub mod inproc;
pub mod live;
pub mod serve;
pub mod worker;

pub use inproc::{RunOptions, run};
