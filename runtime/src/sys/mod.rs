//! What the operating system tells and lets a process do: CPU time,
//! CPU affinity, allocator tuning.

pub mod affinity;
pub mod alloc;
pub mod cputime;
