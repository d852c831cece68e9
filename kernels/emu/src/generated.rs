//! Generated fused-chain kernels on the CPU: the source the generator
//! gives NVRTC is compiled here by the system C++ compiler under
//! `cuda_emu_kernel.h` (the kernel side of the emulator, without the
//! launcher's threads and barriers) into a shared library, loaded, and
//! launched by this crate's launcher (`cuda_emu.h`, through
//! `sf_emu_host_launch`) with the same parameters and grid the CUDA backend
//! uses.
//!
//! Libraries are cached on disk, next to NVRTC's PTX cache
//! (`nvrtc::cache_dir()/emu/`, else the temporary directory's
//! `streamfuse-emu/`), in a folder per compiler and header, by a
//! hash of their full source: a kernel is compiled once per machine, not
//! once per test process. The folder also holds a precompiled
//! `cuda_emu_kernel.h`, which makes each compile several times faster.
//! Different kernels compile in parallel; files appear by atomic renames,
//! so concurrent processes share the cache safely.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use streamfuse_kernels::cuda::codegen::{self, Generated};
use streamfuse_kernels::cuda::params::{FusedParams, Launch};
use streamfuse_kernels::{FusedChain, Tensor};

/// The kernel side of the emulator, written next to each generated source.
const EMU_HEADER: &str = include_str!("../cuda_emu_kernel.h");

/// Its file name in the cache folder.
const EMU_HEADER_NAME: &str = "cuda_emu_kernel.h";

/// Appended to a generated source: a C entry point that has the test
/// process's launcher (`sf_emu_host_launch`) run the kernel, one call of
/// `sf_chain_thread` per emulated thread, which sets this library's own
/// indices first; the launcher points the library's barrier hook at the
/// launch's barrier.
const LAUNCHER: &str = r#"
struct SfLaunch { unsigned grid[3]; unsigned block[3]; };
typedef void (*SfThreadBody)(void*, const dim3*, const dim3*, const dim3*, const dim3*);
typedef void (*SfHostLaunch)(const SfLaunch*, int, SfThreadBody, void*, void (**)());
struct SfChainArgs {
    const float* in; const float* w; const float* bias; float* out; const float* chan;
    FusedParams p;
};
static void sf_chain_thread(void* arg, const dim3* t, const dim3* b, const dim3* bd,
                            const dim3* gd) {
    sf_emu::thread_idx = *t;
    sf_emu::block_idx = *b;
    sf_emu::block_dim = *bd;
    sf_emu::grid_dim = *gd;
    const SfChainArgs* a = static_cast<const SfChainArgs*>(arg);
    SF_CHAIN_NAME(a->in, a->w, a->bias, a->out, a->chan, a->p);
}
extern "C" void sf_emu_generated(SfHostLaunch host, const SfLaunch* l, const float* in,
                                 const float* w, const float* bias, float* out,
                                 const float* chan, const FusedParams* p) {
    SfChainArgs a{in, w, bias, out, chan, *p};
    // The load producer never synchronises: it runs serially.
    host(l, SF_CHAIN_CONV ? 0 : 1, sf_chain_thread, &a, &sf_emu::barrier_wait);
}
"#;

type Entry = unsafe extern "C" fn(
    crate::HostLaunch,
    *const Launch,
    *const f32,
    *const f32,
    *const f32,
    *mut f32,
    *const f32,
    *const FusedParams,
);

/// A generated kernel could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum GeneratedError {
    /// The C++ compiler ([`compiler`]) cannot be run.
    #[error("the C++ compiler `{compiler}` that builds generated kernels cannot run: {why}")]
    NoCompiler {
        /// The command.
        compiler: String,
        /// Why.
        why: String,
    },
    /// Writing the source or running the compiler failed.
    #[error("emulating {kernel}: {what}")]
    Build {
        /// Kernel name.
        kernel: String,
        /// What failed.
        what: String,
    },
}

/// The C++ compiler generated kernels are built with: `$CXX`, else `c++`.
pub fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// Checks that [`compiler`] runs; returns the first line of its
/// `--version`.
///
/// # Errors
/// [`GeneratedError::NoCompiler`] saying why it cannot run.
pub fn check_compiler() -> Result<String, GeneratedError> {
    let cxx = compiler();
    let no = |why: String| GeneratedError::NoCompiler {
        compiler: cxx.clone(),
        why,
    };
    let out = Command::new(&cxx)
        .arg("--version")
        .output()
        .map_err(|e| no(e.to_string()))?;
    if !out.status.success() {
        return Err(no(format!("`{cxx} --version` exited with {}", out.status)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Flags of every compile (kernels and the precompiled header alike: GCC
/// uses a precompiled header only with the flags it was made with).
const FLAGS: [&str; 5] = ["-std=c++20", "-O1", "-fPIC", "-pthread", "-w"];

/// 64-bit FNV-1a, for cache keys.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// `data` written to `path` through a unique temporary file and a rename,
/// so no reader ever sees a partial file.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = unique_tmp(path);
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// A temporary name next to `path`, unique in this machine's processes.
fn unique_tmp(path: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}-{seq}", std::process::id()));
    path.with_file_name(name)
}

/// The cache folder of this compiler and header, with the header and (when
/// the compiler makes one) its precompiled form in it; set up once per
/// process.
fn toolchain_dir() -> Result<&'static Path, GeneratedError> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let version = check_compiler().map_err(|e| e.to_string())?;
        let cxx = compiler();
        let key = fnv1a(&[
            cxx.as_bytes(),
            version.as_bytes(),
            EMU_HEADER.as_bytes(),
            FLAGS.concat().as_bytes(),
        ]);
        // The folder's name hashes the header's text: one already there
        // holds this header. The temporary directory serves where the
        // cache cannot be written.
        let folder = |base: PathBuf| {
            let dir = base.join(format!("{key:016x}"));
            let header = dir.join(EMU_HEADER_NAME);
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    if header.exists() {
                        Ok(())
                    } else {
                        write_atomic(&header, EMU_HEADER.as_bytes())
                    }
                })
                .map(|()| dir)
        };
        let cache = streamfuse_kernels::cuda::nvrtc::cache_dir().join("emu");
        let dir = folder(cache.clone())
            .or_else(|_| folder(std::env::temp_dir().join("streamfuse-emu")))
            .map_err(|e| format!("{} (nor the temporary directory): {e}", cache.display()))?;
        let header = dir.join(EMU_HEADER_NAME);
        let pch = dir.join(format!("{EMU_HEADER_NAME}.gch"));
        if !pch.exists() {
            // Optional: without it (or with one GCC finds unusable) each
            // compile parses the header itself.
            let tmp = unique_tmp(&pch);
            let made = Command::new(&cxx)
                .args(FLAGS)
                .args(["-x", "c++-header"])
                .arg(&header)
                .arg("-o")
                .arg(&tmp)
                .output()
                .is_ok_and(|o| o.status.success());
            if !(made && std::fs::rename(&tmp, &pch).is_ok()) {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(dir)
    });
    dir.as_deref().map_err(|what| GeneratedError::Build {
        kernel: "(every generated kernel)".into(),
        what: what.clone(),
    })
}

/// Compiles `g` into the cache (unless it is there) and returns the path of
/// its library.
fn build(g: &Generated) -> Result<PathBuf, GeneratedError> {
    let err = |what: String| GeneratedError::Build {
        kernel: g.name.clone(),
        what,
    };
    let dir = toolchain_dir()?;
    let source = format!("{}\n{LAUNCHER}", g.source);
    let key = fnv1a(&[source.as_bytes()]);
    let lib = dir.join(format!("lib{}-{key:016x}.so", g.name));
    if lib.exists() {
        return Ok(lib);
    }
    let src = unique_tmp(&dir.join(format!("{}-{key:016x}.cu", g.name)));
    std::fs::write(&src, &source).map_err(|e| err(format!("{}: {e}", src.display())))?;
    let tmp = unique_tmp(&lib);
    let cxx = compiler();
    let out = Command::new(&cxx)
        .args(FLAGS)
        .arg("-shared")
        .arg("-include")
        .arg(dir.join(EMU_HEADER_NAME))
        .args(["-x", "c++"])
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .output();
    let _ = std::fs::remove_file(&src);
    let out = out.map_err(|e| err(format!("running {cxx}: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(format!(
            "{cxx} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::rename(&tmp, &lib).map_err(|e| err(format!("{}: {e}", lib.display())))?;
    Ok(lib)
}

/// A kernel's library, loaded once per process and kept for its life (the
/// entry points stay valid).
type Slot = Arc<OnceLock<Result<&'static libloading::Library, String>>>;

fn entry(g: &Generated) -> Result<Entry, GeneratedError> {
    let err = |what: String| GeneratedError::Build {
        kernel: g.name.clone(),
        what,
    };
    static LIBS: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    // The table's lock is held only to find the kernel's slot: different
    // kernels build in parallel, one kernel once.
    let slot = LIBS
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| err("library table poisoned".into()))?
        .entry(g.name.clone())
        .or_default()
        .clone();
    let lib = slot
        .get_or_init(|| {
            let path = build(g).map_err(|e| match e {
                GeneratedError::Build { what, .. } => what,
                other => other.to_string(),
            })?;
            // SAFETY: a library compiled from our own source; its
            // initialisers only set up the emulator's globals.
            let l = unsafe { libloading::Library::new(&path) }
                .map_err(|e| format!("loading {}: {e}", path.display()))?;
            Ok(&*Box::leak(Box::new(l)))
        })
        .as_ref()
        .map_err(|e| err(e.clone()))?;
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
    let chan = codegen::channel_data(chain);
    let chan_ptr = if chan.is_empty() {
        zero.as_ptr()
    } else {
        chan.as_ptr()
    };
    // SAFETY: buffers hold the shapes `params` describes (planned above);
    // weights hold out*in/groups*kh*kw values; bias is read only when
    // has_bias; `chan` holds 2 * C values per per-channel op (C the
    // produced channels, checked by `output_shape`), read only by those.
    unsafe {
        f(
            crate::sf_emu_host_launch,
            &launch,
            input.data().as_ptr(),
            w,
            bias,
            out.data_mut().as_mut_ptr(),
            chan_ptr,
            &params,
        );
    }
    Ok(Some(out))
}
