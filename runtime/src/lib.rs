//! streamfuse: a stream-processing runtime for CNN and vision pipelines on
//! camera streams across edge clusters.
//!
//! A pipeline is described once in a YAML [`spec`]; its placement maps each
//! element to a node; the [`plan`] groups adjacent co-located stages into
//! segments and fuses what can be fused; [`exec`] runs a segment's stages on
//! its device and builds the run's report; [`segment`] runs each segment's
//! one frame loop, in this process or served on its own with frames
//! crossing the [`transport`] (gRPC); [`launch`] starts a split run's
//! processes on one machine, [`deploy`] writes the Kubernetes objects that
//! run it on a k3s cluster, and [`bench`] and [`advise`] run the placement
//! experiments and rank placements from measurements.
//!
//! # Layers
//! A module may use the layers below its own and its own layer, never one
//! above ([`layers::LAYERS`]; a test reads every `crate::` path and
//! enforces it). From the top:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | tools | [`bench`], [`advise`], [`deploy`], [`stagebench`] | the study, the advisor, manifests, kernel timing |
//! | launch | [`launch`] | processes of a split run, loopback ports |
//! | segment | [`segment`] | the frame loop, live weights, serve, in-process runs |
//! | exec, transport | [`exec`], [`transport`] | a segment's stages on a device and the report; gRPC links (control calls reach the segment through a trait) |
//! | plan, io, import | [`plan`], [`io`], [`import`] | segments, fusion groups, addresses (the port rule); sources and sinks; ONNX import |
//! | spec | [`spec`] | the YAML spec, resolved and validated |
//! | base | [`frame`], [`percentiles`], [`sys`], [`media`], [`model`] | frames, statistics, OS facilities, the npy/video/ONNX/safetensors formats |
//!
//! `fuzzing` (hidden from the docs) holds the fuzz targets' entry points
//! (`fuzz/`), above every layer.
//!
//! The `streamfuse` binary's CLI sits above every layer; the kernels crate
//! below all of them.

pub mod advise;
pub mod bench;
pub mod deploy;
pub mod exec;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod io;
pub mod launch;
pub mod layers;
pub mod media;
pub mod model;
pub mod percentiles;
pub mod plan;
pub mod segment;
pub mod spec;
pub mod stagebench;
pub mod sys;
pub mod transport;
