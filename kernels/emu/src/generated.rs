//! Generated fused-chain kernels on the CPU: the source the generator
//! gives NVRTC is compiled here by the system C++ compiler under
//! `cuda_emu.h` into a shared library (once per kernel and process, in a
//! temporary directory), loaded, and launched with the same parameters and
//! grid the CUDA backend uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use streamfuse_kernels::cuda::codegen::{self, Generated};
use streamfuse_kernels::cuda::params::{FusedParams, Launch};
use streamfuse_kernels::{FusedChain, Tensor};

/// The emulation header, written next to each generated source.
const EMU_HEADER: &str = include_str!("../cuda_emu.h");

/// Appended to a generated source: a C entry point that launches it.
const LAUNCHER: &str = r#"
struct SfLaunch { unsigned grid[3]; unsigned block[3]; };
extern "C" void sf_emu_generated(const SfLaunch* l, const float* in, const float* w,
                                 const float* bias, float* out, const FusedParams* p) {
    FusedParams q = *p;
    sf_emu::launch(dim3{l->grid[0], l->grid[1], l->grid[2]},
                   dim3{l->block[0], l->block[1], l->block[2]},
                   [&] { SF_CHAIN_NAME(in, w, bias, out, q); });
}
"#;

type Entry = unsafe extern "C" fn(
    *const Launch,
    *const f32,
    *const f32,
    *const f32,
    *mut f32,
    *const FusedParams,
);

/// A generated kernel could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum GeneratedError {
    /// Writing the source or running the compiler failed.
    #[error("emulating {kernel}: {what}")]
    Build {
        /// Kernel name.
        kernel: String,
        /// What failed.
        what: String,
    },
}

fn loaded() -> &'static Mutex<HashMap<String, &'static libloading::Library>> {
    static LIBS: OnceLock<Mutex<HashMap<String, &'static libloading::Library>>> = OnceLock::new();
    LIBS.get_or_init(Mutex::default)
}

fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("streamfuse-emu-{}", std::process::id()))
}

fn build(g: &Generated, dir: &Path) -> Result<PathBuf, GeneratedError> {
    let err = |what: String| GeneratedError::Build {
        kernel: g.name.clone(),
        what,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let header = dir.join("cuda_emu.h");
    if !header.exists() {
        std::fs::write(&header, EMU_HEADER)
            .map_err(|e| err(format!("{}: {e}", header.display())))?;
    }
    let src = dir.join(format!("{}.cu", g.name));
    std::fs::write(&src, format!("{}\n{LAUNCHER}", g.source))
        .map_err(|e| err(format!("{}: {e}", src.display())))?;
    let lib = dir.join(format!("lib{}.so", g.name));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args(["-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w"])
        .arg("-include")
        .arg(&header)
        .args(["-x", "c++"])
        .arg(&src)
        .arg("-o")
        .arg(&lib)
        .output()
        .map_err(|e| err(format!("running {cxx}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{cxx} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(lib)
}

fn entry(g: &Generated) -> Result<Entry, GeneratedError> {
    let err = |what: String| GeneratedError::Build {
        kernel: g.name.clone(),
        what,
    };
    let mut libs = loaded()
        .lock()
        .map_err(|_| err("library table poisoned".into()))?;
    let lib = match libs.get(&g.name) {
        Some(l) => *l,
        None => {
            let path = build(g, &work_dir())?;
            // SAFETY: a library we just compiled from our own source; its
            // initialisers only set up the emulator's globals.
            let l = unsafe { libloading::Library::new(&path) }
                .map_err(|e| err(format!("loading {}: {e}", path.display())))?;
            // Kept for the life of the process: entry points stay valid.
            let l: &'static libloading::Library = Box::leak(Box::new(l));
            libs.insert(g.name.clone(), l);
            l
        }
    };
    // SAFETY: the launcher above defines this symbol with this signature.
    let f = unsafe { lib.get::<Entry>(b"sf_emu_generated\0") }
        .map_err(|e| err(format!("entry point: {e}")))?;
    Ok(*f)
}

/// Runs `chain` through its generated kernel, or `None` when the chain
/// does not fit the template (the caller runs the members one by one, as
/// the CUDA backend does).
///
/// # Errors
/// [`GeneratedError`] when the kernel cannot be built, or the chain cannot
/// take the input (as a build error naming the cause).
pub fn run(chain: &FusedChain, input: &Tensor) -> Result<Option<Tensor>, GeneratedError> {
    let g = codegen::generate(chain);
    let bad = |e: streamfuse_kernels::KernelError| GeneratedError::Build {
        kernel: g.name.clone(),
        what: e.to_string(),
    };
    let Some((params, launch)) = codegen::plan(chain, input.shape()).map_err(bad)? else {
        return Ok(None);
    };
    let out_shape = chain.output_shape(input.shape()).map_err(bad)?;
    let f = entry(&g)?;
    let mut out = Tensor::zeros(out_shape);
    let zero = [0.0f32];
    let (w, bias) = match &chain.conv {
        Some(c) => (
            c.weights.as_ptr(),
            c.bias.as_ref().map_or(zero.as_ptr(), |b| b.as_ptr()),
        ),
        None => (zero.as_ptr(), zero.as_ptr()),
    };
    // SAFETY: buffers hold the shapes `params` describes (planned above);
    // weights hold out*in*kh*kw values; bias is read only when has_bias.
    unsafe {
        f(
            &launch,
            input.data().as_ptr(),
            w,
            bias,
            out.data_mut().as_mut_ptr(),
            &params,
        );
    }
    Ok(Some(out))
}
