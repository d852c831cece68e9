//! Compiling the CUDA sources with NVRTC (found by version and loaded at
//! run time: [`super::nvrtc_lib`]), with a disk cache keyed by source hash,
//! architecture and NVRTC version.
//!
//! - [`compile`], [`compile_text`]: PTX for a virtual architecture
//!   (`compute_70`), by the newest NVRTC that targets it;
//! - [`compile_with`]: the same with a given library (`kernels check` uses
//!   one library for every architecture and says which it skips);
//! - [`for_device`]: code for a device's exact architecture: a cubin
//!   (`sm_XX`, no PTX JIT by the driver) where an NVRTC targets it, else
//!   PTX for the newest architecture at or below it that one does.

use std::path::PathBuf;

use cudarc::nvrtc::Ptx;

use super::Source;
use super::fnv1a;
use super::nvrtc_lib::{self, Library};

/// NVRTC is missing or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvrtcError {
    /// No usable NVRTC: what was found, and what to install.
    #[error("{0}")]
    Missing(String),
    /// A source failed to compile.
    #[error("NVRTC {version} failed on {file} for {arch}: {log}")]
    Compile {
        /// Source file.
        file: String,
        /// Architecture.
        arch: String,
        /// The NVRTC that compiled it (`12.9`).
        version: String,
        /// Compiler log.
        log: String,
    },
}

/// The options every compile uses (besides the architecture).
const OPTIONS: &[&str] = &["--fmad=true", "--std=c++17", "-lineinfo"];

/// The SM number of `compute_70` / `sm_70` (`70`).
pub fn sm_of(arch: &str) -> Option<u32> {
    arch.strip_prefix("compute_")
        .or_else(|| arch.strip_prefix("sm_"))
        .and_then(|n| n.parse().ok())
}

/// The NVRTC `kernels check` and [`version`] use: the one that targets the
/// most of [`super::ARCHS`], the newest among equals.
///
/// # Errors
/// [`NvrtcError::Missing`] naming what was found and what to install.
pub fn library() -> Result<&'static Library, NvrtcError> {
    let archs: Vec<u32> = super::ARCHS.iter().filter_map(|a| sm_of(a)).collect();
    nvrtc_lib::best_for(&archs).map_err(NvrtcError::Missing)
}

/// Whether some NVRTC can be loaded (never panics).
pub fn available() -> bool {
    !nvrtc_lib::found().libs.is_empty()
}

/// The `(major, minor)` version of [`library`].
///
/// # Errors
/// [`NvrtcError::Missing`] when NVRTC cannot be loaded.
pub fn version() -> Result<(i32, i32), NvrtcError> {
    library().map(|l| l.version)
}

/// Compiles `src` to PTX for the virtual architecture `arch`
/// (`compute_70`, ...), with line info and the options the runtime uses.
///
/// # Errors
/// [`NvrtcError`] when NVRTC is missing or the source does not compile.
pub fn compile(src: &Source, arch: &'static str) -> Result<String, NvrtcError> {
    compile_text(src.name, src.standalone(), arch)
}

/// The newest NVRTC that targets `arch`.
fn library_for(arch: &str) -> Result<&'static Library, NvrtcError> {
    let sm = sm_of(arch)
        .ok_or_else(|| NvrtcError::Missing(format!("`{arch}` is not an architecture")))?;
    nvrtc_lib::for_arch(sm).map_err(NvrtcError::Missing)
}

/// Compiles a self-contained source `text` (named `name` in messages) to
/// PTX for `arch` with the newest NVRTC that targets it, as [`compile`].
///
/// # Errors
/// [`NvrtcError`] when no NVRTC targets `arch` or the source does not
/// compile.
pub fn compile_text(name: &str, text: String, arch: &'static str) -> Result<String, NvrtcError> {
    compile_with(library_for(arch)?, name, &text, arch)
}

/// Compiles `text` to PTX for `arch` with `lib`.
///
/// # Errors
/// [`NvrtcError::Compile`] with the compiler's log.
pub fn compile_with(
    lib: &Library,
    name: &str,
    text: &str,
    arch: &str,
) -> Result<String, NvrtcError> {
    ptx_text(lib, name, arch, compile_code(lib, name, text, arch)?)
}

/// Compiled PTX as text.
fn ptx_text(lib: &Library, name: &str, arch: &str, code: Vec<u8>) -> Result<String, NvrtcError> {
    String::from_utf8(code).map_err(|_| NvrtcError::Compile {
        file: name.into(),
        arch: arch.into(),
        version: version_text(lib),
        log: "the PTX is not UTF-8".into(),
    })
}

fn version_text(lib: &Library) -> String {
    format!("{}.{}", lib.version.0, lib.version.1)
}

fn compile_code(lib: &Library, name: &str, text: &str, arch: &str) -> Result<Vec<u8>, NvrtcError> {
    lib.compile(name, text, arch, OPTIONS)
        .map_err(|log| NvrtcError::Compile {
            file: name.into(),
            arch: arch.into(),
            version: version_text(lib),
            log,
        })
}

/// Where compiled PTX is cached: `$STREAMFUSE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/streamfuse`, else `~/.cache/streamfuse`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STREAMFUSE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("streamfuse")
}

/// [`compile`], cached on disk by (source hash, arch, NVRTC version). A
/// cache that cannot be read or written is skipped, not an error.
///
/// # Errors
/// As [`compile`].
pub fn compile_cached(src: &Source, arch: &'static str) -> Result<String, NvrtcError> {
    compile_cached_text(src.name, src.standalone(), arch)
}

/// [`compile_text`], cached on disk as [`compile_cached`] is.
///
/// # Errors
/// As [`compile`].
pub fn compile_cached_text(
    name: &str,
    text: String,
    arch: &'static str,
) -> Result<String, NvrtcError> {
    let lib = library_for(arch)?;
    let code = cached(lib, name, &text, arch, |lib| {
        compile_code(lib, name, &text, arch)
    })?;
    ptx_text(lib, name, arch, code)
}

/// `make(lib)`'s output, cached on disk by (name, arch, NVRTC version,
/// source hash).
fn cached(
    lib: &Library,
    name: &str,
    text: &str,
    arch: &str,
    make: impl FnOnce(&Library) -> Result<Vec<u8>, NvrtcError>,
) -> Result<Vec<u8>, NvrtcError> {
    let ext = if arch.starts_with("sm_") {
        "cubin"
    } else {
        "ptx"
    };
    let key = format!(
        "{}-{arch}-nvrtc{}.{}-{:016x}.{ext}",
        name.trim_end_matches(".cu"),
        lib.version.0,
        lib.version.1,
        fnv1a(text.as_bytes())
    );
    let path = cache_dir().join("ptx").join(key);
    if let Ok(code) = std::fs::read(&path)
        && !code.is_empty()
    {
        return Ok(code);
    }
    let code = make(lib)?;
    if let Some(dir) = path.parent()
        && std::fs::create_dir_all(dir).is_ok()
        && let Err(e) = publish(&path, &code)
    {
        tracing::debug!("kernel cache: cannot write {}: {e}", path.display());
    }
    Ok(code)
}

/// Code of `text` for a device of compute capability `(major, minor)`:
/// a cubin for its exact `sm_XX` from the newest NVRTC that targets it
/// (cached), else PTX for the newest architecture below it that an NVRTC
/// targets (the driver JIT-compiles it). Returns the code and what it is
/// (`sm_90`, `compute_87`).
///
/// # Errors
/// [`NvrtcError`] when no NVRTC targets the device or anything below it,
/// or the source does not compile.
pub fn for_device(
    name: &str,
    text: &str,
    capability: (i32, i32),
) -> Result<(Ptx, String), NvrtcError> {
    let sm = u32::try_from(capability.0 * 10 + capability.1).unwrap_or(0);
    if let Ok(lib) = nvrtc_lib::for_arch(sm) {
        let arch = format!("sm_{sm}");
        let code = cached(lib, name, text, &arch, |lib| {
            compile_code(lib, name, text, &arch)
        })?;
        return Ok((Ptx::from_binary(code), arch));
    }
    // No NVRTC knows the device: PTX for the newest architecture below it.
    let found = nvrtc_lib::found();
    let below = found
        .libs
        .iter()
        .filter_map(|l| l.archs.iter().rev().find(|&&a| a <= sm).map(|&a| (a, l)))
        .max_by_key(|(a, l)| (*a, l.version));
    let Some((a, lib)) = below else {
        return Err(NvrtcError::Missing(
            nvrtc_lib::for_arch(sm).err().unwrap_or_default(),
        ));
    };
    let arch = format!("compute_{a}");
    let code = cached(lib, name, text, &arch, |lib| {
        compile_code(lib, name, text, &arch)
    })?;
    let ptx = ptx_text(lib, name, &arch, code)?;
    Ok((Ptx::from_src(ptx), arch))
}

/// Writes `data` to `path` so that a reader sees either no file, a file
/// written before, or all of `data`: into a temporary file whose name is
/// unique to this process, thread and call, then renamed over `path`.
/// Threads and processes publishing the same entry at once each rename a
/// whole file of their own.
fn publish(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "tmp-{}-{:?}-{}",
        std::process::id(),
        std::thread::current().id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    );
    let name: String = unique
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tmp = path.with_extension(name);
    let written = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod publish_tests {
    use super::publish;

    /// Eight threads publishing different entries to one path at once:
    /// the file ends up holding exactly one of them, whole, and no
    /// temporary file is left behind.
    #[test]
    fn concurrent_publishers_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("k-sm_70.ptx");
        let bodies: Vec<String> = (0..8)
            .map(|t| format!("// thread {t}\n{}", "x".repeat(200_000 + t)))
            .collect();
        std::thread::scope(|s| {
            for b in &bodies {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        publish(path, b.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
                        let now = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
                        assert!(bodies_contains(&now), "a torn file of {} bytes", now.len());
                    }
                });
            }
            fn bodies_contains(s: &str) -> bool {
                (0..8).any(|t| s == format!("// thread {t}\n{}", "x".repeat(200_000 + t)))
            }
        });
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }
}
