//! Compiling the CUDA sources with NVRTC (loaded at run time), with a disk
//! cache keyed by source hash, architecture and NVRTC version.

use std::path::PathBuf;

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use super::Source;
use super::fnv1a;

/// NVRTC is missing or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvrtcError {
    /// `libnvrtc` cannot be loaded.
    #[error(
        "NVRTC (libnvrtc.so.12) cannot be loaded: install the CUDA toolkit or the `nvidia-cuda-nvrtc-cu12` wheel and put its lib folder on LD_LIBRARY_PATH"
    )]
    Missing,
    /// A source failed to compile.
    #[error("NVRTC failed on {file} for {arch}: {log}")]
    Compile {
        /// Source file.
        file: String,
        /// Architecture.
        arch: String,
        /// Compiler log.
        log: String,
    },
}

/// Whether NVRTC can be loaded (never panics).
pub fn available() -> bool {
    // SAFETY: only tries to open the library; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's `(major, minor)` version.
///
/// # Errors
/// [`NvrtcError::Missing`] when NVRTC cannot be loaded.
pub fn version() -> Result<(i32, i32), NvrtcError> {
    if !available() {
        return Err(NvrtcError::Missing);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); nvrtcVersion writes two ints.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(NvrtcError::Missing);
    }
    Ok((major, minor))
}

/// Compiles `src` to PTX for the virtual architecture `arch`
/// (`compute_70`, ...), with line info and the options the runtime uses.
///
/// # Errors
/// [`NvrtcError`] when NVRTC is missing or the source does not compile.
pub fn compile(src: &Source, arch: &'static str) -> Result<String, NvrtcError> {
    compile_text(src.name, src.standalone(), arch)
}

/// Compiles a self-contained source `text` (named `name` in messages) to
/// PTX for `arch`, as [`compile`].
///
/// # Errors
/// [`NvrtcError`] when NVRTC is missing or the source does not compile.
pub fn compile_text(name: &str, text: String, arch: &'static str) -> Result<String, NvrtcError> {
    if !available() {
        return Err(NvrtcError::Missing);
    }
    let opts = CompileOptions {
        arch: Some(arch),
        fmad: Some(true),
        options: vec!["--std=c++17".into(), "-lineinfo".into()],
        name: Some(name.into()),
        ..CompileOptions::default()
    };
    compile_ptx_with_opts(text, opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| NvrtcError::Compile {
            file: name.into(),
            arch: arch.into(),
            log: compile_log(&e),
        })
}

fn compile_log(e: &cudarc::nvrtc::CompileError) -> String {
    match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            log.to_string_lossy().trim().replace('\n', " | ")
        }
        other => format!("{other:?}"),
    }
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
    let (major, minor) = version()?;
    let key = format!(
        "{}-{arch}-nvrtc{major}.{minor}-{:016x}.ptx",
        name.trim_end_matches(".cu"),
        fnv1a(text.as_bytes())
    );
    let path = cache_dir().join("ptx").join(key);
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        return Ok(ptx);
    }
    let ptx = compile_text(name, text, arch)?;
    if let Some(dir) = path.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &ptx).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(ptx)
}
