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
        && let Err(e) = publish(&path, &ptx)
    {
        tracing::debug!("PTX cache: cannot write {}: {e}", path.display());
    }
    Ok(ptx)
}

/// Writes `data` to `path` so that a reader sees either no file, a file
/// written before, or all of `data`: into a temporary file whose name is
/// unique to this process, thread and call, then renamed over `path`.
/// Threads and processes publishing the same entry at once each rename a
/// whole file of their own.
fn publish(path: &std::path::Path, data: &str) -> std::io::Result<()> {
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
                        publish(path, b).unwrap_or_else(|e| panic!("{e}"));
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
