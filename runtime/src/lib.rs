//! streamfuse: a stream-processing runtime for CNN and vision pipelines on
//! camera streams across edge clusters.
//!
//! A pipeline is described once in a YAML [`spec`]; its placement maps each
//! element to a node; the [`plan`] groups adjacent co-located stages into
//! segments and fuses what can be fused; the [`exec`]utor runs the segments
//! with bounded links between them and reports throughput, latency
//! percentiles and the communication/computation ratio. Split across
//! processes, each segment is [`serve`]d on its own and frames cross the
//! [`transport`] (gRPC); [`local`] runs such a split on one machine, and
//! [`deploy`] writes the Kubernetes objects that run it on a k3s cluster;
//! [`bench`] runs the placement experiments on an emulated cluster.

pub mod advise;
pub mod affinity;
pub mod alloc;
pub mod bench;
pub mod cputime;
pub mod deploy;
pub mod exec;
pub mod frame;
pub mod import;
pub mod io;
pub mod live;
pub mod local;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod ports;
pub mod serve;
pub mod spec;
pub mod stagebench;
pub mod transport;
