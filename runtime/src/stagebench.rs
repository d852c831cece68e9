//! The kernel tools: `streamfuse kernels bench` times a spec's stages on
//! one synthetic frame in this process (no source, no sink), the way peers'
//! kernels are timed; `kernels roofline` measures this machine's limits;
//! `kernels check` compiles every CUDA kernel with NVRTC ([`check`]).

use std::time::Instant;

use serde::Serialize;

use crate::io::synthetic::Synthetic;
use crate::plan::plan;
use crate::spec::{FusionMode, Pipeline, SourceConfig};

/// Timing of a spec's stage chain.
#[derive(Debug, Clone, Serialize)]
pub struct StageBench {
    /// Pipeline name.
    pub name: String,
    /// Frame size `WxH`.
    pub size: String,
    /// Channels of the input.
    pub channels: usize,
    /// Fusion mode used.
    pub fusion: String,
    /// Kernels run per frame.
    pub kernels: Vec<String>,
    /// Timed iterations.
    pub iters: usize,
    /// Median ms per frame.
    pub median_ms: f64,
    /// Fastest ms per frame.
    pub min_ms: f64,
    /// Mean ms per frame.
    pub mean_ms: f64,
    /// FLOPs per frame of the chain (a multiply-add counts 2).
    pub flops: u64,
    /// Minimum bytes per frame: input, weights and output of each kernel run.
    pub bytes: u64,
    /// Kernel threads.
    pub threads: usize,
    /// CPU instruction set.
    pub cpu_features: String,
}

/// The untimed calls before a benchmark's timed ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Warmup {
    /// At least this many calls.
    pub calls: usize,
    /// And calls until at least this much time has passed: a kernel's
    /// threads, and the cores under them, reach their steady speed only
    /// after some tens of milliseconds of work (a virtual machine's idle
    /// virtual CPU in particular), which a few sub-millisecond calls do
    /// not give them.
    pub time: std::time::Duration,
}

/// Times all stages of `p` as one segment with `fusion` (`off` runs the
/// stages unfused like `chain`), `warmup`'s untimed calls then `iters`
/// timed frames.
///
/// # Errors
/// A kernel error (the spec was validated, so this means a bug).
pub fn bench(
    p: &Pipeline,
    fusion: FusionMode,
    warmup: Warmup,
    iters: usize,
) -> Result<StageBench, streamfuse_kernels::KernelError> {
    let mut one = p.clone();
    one.fusion = if fusion == FusionMode::Off {
        FusionMode::Chain
    } else {
        fusion
    };
    one.placement = vec![0; p.stages.len() + 1];
    let pl = plan(&one);
    let groups: Vec<_> = pl.segments.iter().flat_map(|s| s.groups.iter()).collect();
    let input = match &p.source {
        SourceConfig::Synthetic(src) => Synthetic::tensor(src, 0),
        SourceConfig::Npy { input, shape, .. } => {
            match crate::io::npy::NpySource::new(input.clone(), *shape, 1).next() {
                Some(Ok(f)) => f.tensor,
                Some(Err(e)) => {
                    return Err(streamfuse_kernels::KernelError::BadParam {
                        op: "npy source",
                        what: e.to_string(),
                    });
                }
                None => streamfuse_kernels::Tensor::zeros(*shape),
            }
        }
        SourceConfig::Video(_) | SourceConfig::Camera(_) | SourceConfig::Images(_) => {
            match crate::io::source::open_source_inline(&p.source).next() {
                Some(Ok(f)) => f.tensor,
                Some(Err(e)) => {
                    return Err(streamfuse_kernels::KernelError::BadParam {
                        op: "video source",
                        what: e.to_string(),
                    });
                }
                None => streamfuse_kernels::Tensor::zeros(p.source.shape()),
            }
        }
    };
    let run = || -> Result<(), streamfuse_kernels::KernelError> {
        // As the executor does: later kernels take the frame by value, so
        // elementwise ones work in place.
        let mut t = groups[0].op.run_cpu(&input)?;
        for g in &groups[1..] {
            t = g.op.run_cpu_owned(t)?;
        }
        std::hint::black_box(t);
        Ok(())
    };
    let warm = Instant::now();
    let mut calls = 0;
    while calls < warmup.calls || warm.elapsed() < warmup.time {
        run()?;
        calls += 1;
    }
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        run()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let shape = p.source.shape();
    let mut flops = 0;
    let mut bytes = 0;
    for g in &groups {
        flops += g.op.flops(g.input)?;
        bytes += g.op.min_bytes(g.input)?;
    }
    Ok(StageBench {
        flops,
        bytes,
        name: p.name.clone(),
        size: format!("{}x{}", shape.w, shape.h),
        channels: shape.c,
        fusion: fusion.name().to_owned(),
        kernels: groups.iter().map(|g| g.op.label()).collect(),
        iters: times.len(),
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        mean_ms: times.iter().sum::<f64>() / times.len() as f64,
        threads: rayon::current_num_threads(),
        cpu_features: streamfuse_kernels::cpu::simd::level().name().to_owned(),
    })
}

/// Measured limits of this machine (see `streamfuse_kernels::cpu::roofline`).
#[derive(Debug, Clone, Serialize)]
pub struct Roofline {
    /// Triad bandwidth over 256 MiB buffers, GB/s.
    pub bandwidth_gbs: f64,
    /// Peak multiply-add throughput, GFLOP/s.
    pub peak_gflops: f64,
    /// Kernel threads.
    pub threads: usize,
    /// CPU instruction set.
    pub cpu_features: String,
}

/// Measures [`Roofline`] on the kernel threads.
pub fn roofline() -> Roofline {
    use streamfuse_kernels::cpu::roofline as r;
    Roofline {
        bandwidth_gbs: r::triad_bandwidth(256 << 20, 5) / 1e9,
        peak_gflops: r::peak_flops() / 1e9,
        threads: rayon::current_num_threads(),
        cpu_features: streamfuse_kernels::cpu::simd::level().name().to_owned(),
    }
}

/// One compilation of [`check`] (fields in the order its JSON has them).
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    /// Virtual architecture (`compute_70`).
    pub arch: String,
    /// The size of the PTX, or the compiler's error.
    pub detail: String,
    /// Entry points of the unit.
    pub kernels: Vec<String>,
    /// Compile time, ms.
    pub ms: f64,
    /// Whether it compiled.
    pub ok: bool,
    /// The unit: a source file's name without `.cu`, or `chain(<label>)`
    /// for a generated kernel.
    pub source: String,
}

/// What [`check`] found (fields in the order its JSON has them).
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Compilations that failed.
    pub failed: usize,
    /// NVRTC version, `major.minor`.
    pub nvrtc: String,
    /// The NVRTC library used.
    pub library: String,
    /// Every unit for every architecture, in that order.
    pub results: Vec<CheckRow>,
    /// Architectures left out, with why (the NVRTC does not target them).
    pub skipped: Vec<String>,
}

/// [`check`] could not run (a kernel that fails to compile is a row of its
/// report, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// NVRTC cannot be loaded.
    #[error(transparent)]
    Nvrtc(#[from] streamfuse_kernels::cuda::nvrtc::NvrtcError),
    /// The PTX directory cannot be created.
    #[error("cannot create {}", .path.display())]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A PTX file cannot be written.
    #[error("cannot write {}", .path.display())]
    WritePtx {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The name `kernels check` gives a representative chain's source: its
/// label and how its producer computes (chains with equal labels differ
/// there), e.g. `chain(conv2d+relu; implicit GEMM f32)`.
fn chain_unit(chain: &streamfuse_kernels::FusedChain) -> String {
    let producer =
        streamfuse_kernels::cuda::codegen::chain_producer(chain).map_or("load", |p| p.name());
    let bias = match &chain.conv {
        Some(c) if c.bias.is_none() => ", no bias",
        _ => "",
    };
    format!("chain({}; {producer}{bias})", chain.label())
}

/// Compiles every CUDA kernel with one NVRTC (the one that targets the
/// most of the architectures, [`streamfuse_kernels::cuda::nvrtc::library`])
/// for each of `archs` it targets: the hand-written sources
/// ([`streamfuse_kernels::cuda::SOURCES`]), then the generated kernel of
/// each representative fused chain (one per distinct source). An
/// architecture it does not target is skipped and named in the report
/// (NVRTC 13 dropped compute_70/72), or, when `explicit`, a failed row.
/// With `emit_ptx`, each PTX is also written to
/// `<dir>/<source>-<arch>.ptx`.
///
/// # Errors
/// [`CheckError`] when NVRTC cannot be loaded or a PTX file cannot be
/// written.
pub fn check(
    archs: &[&'static str],
    emit_ptx: Option<&std::path::Path>,
    explicit: bool,
) -> Result<CheckReport, CheckError> {
    use streamfuse_kernels::cuda::{self, codegen, nvrtc};
    let lib = nvrtc::library()?;
    let (major, minor) = lib.version;
    let targeted = |arch: &str| nvrtc::sm_of(arch).is_some_and(|sm| lib.targets(sm));
    let skipped: Vec<String> = if explicit {
        Vec::new()
    } else {
        archs
            .iter()
            .filter(|a| !targeted(a))
            .map(|a| format!("{a}: NVRTC {major}.{minor} does not target it"))
            .collect()
    };
    let archs: Vec<&'static str> = archs
        .iter()
        .copied()
        .filter(|a| explicit || targeted(a))
        .collect();
    if let Some(dir) = emit_ptx {
        std::fs::create_dir_all(dir).map_err(|source| CheckError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut units: Vec<(String, Vec<String>, String)> = cuda::SOURCES
        .iter()
        .map(|s| {
            (
                s.name.trim_end_matches(".cu").to_owned(),
                s.kernels.iter().map(|k| (*k).to_owned()).collect(),
                s.standalone(),
            )
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for chain in codegen::representative_chains() {
        let g = codegen::generate(&chain);
        if seen.insert(g.name.clone()) {
            units.push((chain_unit(&chain), vec![g.name], g.source));
        }
    }
    let mut results = Vec::new();
    for (unit, kernels, text) in &units {
        for &arch in &archs {
            let t0 = Instant::now();
            let compiled = nvrtc::compile_with(lib, unit, text, arch);
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let (ok, detail) = match compiled {
                Ok(ptx) => {
                    if let Some(dir) = emit_ptx {
                        let path = dir.join(format!("{unit}-{arch}.ptx"));
                        std::fs::write(&path, &ptx)
                            .map_err(|source| CheckError::WritePtx { path, source })?;
                    }
                    (true, format!("{} bytes of PTX", ptx.len()))
                }
                Err(e) => (false, e.to_string()),
            };
            results.push(CheckRow {
                arch: arch.to_owned(),
                detail,
                kernels: kernels.clone(),
                ms,
                ok,
                source: unit.clone(),
            });
        }
    }
    Ok(CheckReport {
        failed: results.iter().filter(|r| !r.ok).count(),
        nvrtc: format!("{major}.{minor}"),
        library: lib.path.display().to_string(),
        results,
        skipped,
    })
}
