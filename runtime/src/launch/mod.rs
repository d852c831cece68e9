//! Starting segment processes: a split run on one machine ([`local`]) and
//! free loopback ports ([`ports`]).

pub mod local;
pub mod ports;
