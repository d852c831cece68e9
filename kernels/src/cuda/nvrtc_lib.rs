//! Finding NVRTC by version and calling it: the library is loaded at run
//! time from a path, so NVRTC 12.x (the last to target Volta and Xavier,
//! sm_70/72) and 13.x (sm_75 and newer) both work, side by side.
//!
//! Where NVRTC is looked for, in order:
//! 1. `$STREAMFUSE_NVRTC`: a `libnvrtc.so.N` file, or a folder holding one;
//!    only that library is used;
//! 2. every folder of `$LD_LIBRARY_PATH`, the CUDA toolkits
//!    (`/usr/local/cuda*/lib64`, `targets/*/lib`), the system library
//!    folders, and the NVRTC wheels of Python environments
//!    (`site-packages/nvidia/{cuda_nvrtc,cu13,cu12}/lib`);
//! 3. the loader's own search (`libnvrtc.so.13`, `libnvrtc.so.12`).
//!
//! A library counts only with its builtins (`libnvrtc-builtins.so.M.m`)
//! beside it: NVRTC loads them on its first compile, and fails there
//! without them. Each library found is asked its version and the
//! architectures it targets; a device gets the newest library that targets
//! it.

use std::ffi::{CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One NVRTC library, loaded.
pub struct Library {
    lib: libloading::Library,
    /// The builtins, loaded from beside the library so NVRTC's own lookup
    /// by name finds them loaded (it does not search the library's folder).
    _builtins: Option<libloading::Library>,
    /// Where it was loaded from (a file, or the loader's name for it).
    pub path: PathBuf,
    /// `(major, minor)`.
    pub version: (i32, i32),
    /// The real architectures it targets (`70` for sm_70), ascending.
    pub archs: Vec<u32>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("archs", &self.archs)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NVRTC {}.{} ({})",
            self.version.0,
            self.version.1,
            self.path.display()
        )
    }
}

/// What discovery found: the usable libraries, newest first, and why the
/// others were passed over.
#[derive(Debug, Default)]
pub struct Found {
    /// Usable libraries, newest first.
    pub libs: Vec<Library>,
    /// One line per library passed over (path: reason).
    pub passed_over: Vec<String>,
}

type Program = *mut c_void;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;
type NumArchsFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type ArchsFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type CreateFn = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type GetFn = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Program) -> c_int;

/// `nvrtcResult` NVRTC_SUCCESS.
const SUCCESS: c_int = 0;

/// The library file names NVRTC goes by: `libnvrtc.so.12`,
/// `libnvrtc.so.13.0.88`, not the builtins.
fn is_nvrtc_name(name: &str) -> bool {
    name.strip_prefix("libnvrtc.so.")
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Folders to look in (step 2 of the module docs).
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    let globbed = |pattern_dir: &str, prefix: &str, tail: &[&str]| -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(pattern_dir) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| tail.iter().fold(e.path(), |p, t| p.join(t)))
            .collect();
        v.sort();
        v
    };
    for cuda in std::iter::once(PathBuf::from("/usr/local/cuda"))
        .chain(globbed("/usr/local", "cuda-", &[]))
        .chain(std::iter::once(PathBuf::from("/opt/cuda")))
    {
        dirs.push(cuda.join("lib64"));
        if let Ok(rd) = std::fs::read_dir(cuda.join("targets")) {
            dirs.extend(rd.filter_map(Result::ok).map(|e| e.path().join("lib")));
        }
    }
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    // Python environments: a virtual environment, the user's, the system's.
    let mut sites: Vec<PathBuf> = Vec::new();
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        roots.push(PathBuf::from(v).join("lib"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(h).join(".local/lib"));
    }
    roots.extend(["/usr/local/lib", "/usr/lib"].map(PathBuf::from));
    for r in roots {
        let r = r.to_string_lossy().into_owned();
        for py in globbed(&r, "python3", &[]) {
            sites.push(py.join("site-packages"));
            sites.push(py.join("dist-packages"));
        }
    }
    for s in sites {
        for sub in ["cuda_nvrtc", "cu13", "cu12"] {
            dirs.push(s.join("nvidia").join(sub).join("lib"));
        }
    }
    dirs
}

/// The NVRTC files in `dir`.
fn nvrtc_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| is_nvrtc_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Whether NVRTC `version`'s builtins lie beside `path` (a loader name with
/// no folder is trusted: the loader found it in its own folders).
fn builtins_beside(path: &Path, version: (i32, i32)) -> Result<(), String> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let want = format!("libnvrtc-builtins.so.{}.{}", version.0, version.1);
    if dir.join(&want).exists() {
        Ok(())
    } else {
        Err(format!(
            "{want} is not beside it (NVRTC loads it on its first compile): copy it into {}",
            dir.display()
        ))
    }
}

impl Library {
    /// Loads the NVRTC at `path` (a file, or a name for the loader).
    ///
    /// # Errors
    /// Why it cannot be used: it does not load, does not answer its
    /// version, or its builtins are missing.
    pub fn load(path: &Path) -> Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; NVRTC's have no
        // preconditions.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        let (mut major, mut minor) = (0, 0);
        // SAFETY: the symbol has nvrtcVersion's signature in every NVRTC.
        let r = unsafe {
            let f = lib
                .get::<VersionFn>(b"nvrtcVersion\0")
                .map_err(|e| e.to_string())?;
            f(&mut major, &mut minor)
        };
        if r != SUCCESS {
            return Err(format!("nvrtcVersion failed ({r})"));
        }
        builtins_beside(path, (major, minor))?;
        let builtins = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => {
                let b = dir.join(format!("libnvrtc-builtins.so.{major}.{minor}"));
                // SAFETY: as for the library itself.
                Some(
                    unsafe { libloading::Library::new(&b) }
                        .map_err(|e| format!("{}: {e}", b.display()))?,
                )
            }
            None => None,
        };
        let mut archs = Vec::new();
        // SAFETY: both symbols have these signatures (NVRTC 11.2 and
        // later); the buffer has the length NVRTC reported.
        unsafe {
            if let (Ok(num), Ok(get)) = (
                lib.get::<NumArchsFn>(b"nvrtcGetNumSupportedArchs\0"),
                lib.get::<ArchsFn>(b"nvrtcGetSupportedArchs\0"),
            ) {
                let mut n: c_int = 0;
                if num(&mut n) == SUCCESS && n > 0 {
                    let mut v = vec![0 as c_int; usize::try_from(n).unwrap_or(0)];
                    if get(v.as_mut_ptr()) == SUCCESS {
                        archs = v
                            .into_iter()
                            .filter_map(|a| u32::try_from(a).ok())
                            .collect();
                    }
                }
            }
        }
        archs.sort_unstable();
        Ok(Self {
            lib,
            _builtins: builtins,
            path: path.to_path_buf(),
            version: (major, minor),
            archs,
        })
    }

    /// Whether it targets architecture `sm` (`70` for sm_70 and
    /// compute_70).
    pub fn targets(&self, sm: u32) -> bool {
        self.archs.contains(&sm)
    }

    /// Compiles `src` (named `name` in messages) with `options` for
    /// `arch`: `compute_XX` gives PTX (text), `sm_XX` a cubin for that
    /// exact architecture.
    ///
    /// # Errors
    /// The compiler's log, one line, when the source does not compile or an
    /// NVRTC call fails.
    pub fn compile(
        &self,
        name: &str,
        src: &str,
        arch: &str,
        options: &[&str],
    ) -> Result<Vec<u8>, String> {
        let cubin = arch.starts_with("sm_");
        let c_src = CString::new(src).map_err(|_| "the source holds a NUL byte".to_owned())?;
        let c_name = CString::new(name).map_err(|_| "the name holds a NUL byte".to_owned())?;
        let mut opts: Vec<CString> = Vec::with_capacity(options.len() + 1);
        opts.push(
            CString::new(format!("--gpu-architecture={arch}"))
                .map_err(|_| "bad architecture".to_owned())?,
        );
        for o in options {
            opts.push(CString::new(*o).map_err(|_| format!("option {o} holds a NUL byte"))?);
        }
        let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: every symbol is NVRTC's with the declared signature; the
        // program is created, used and destroyed here, and every buffer
        // passed has the size NVRTC reported for it.
        unsafe {
            let lib = &self.lib;
            let create: CreateFn = sym(lib, b"nvrtcCreateProgram\0")?;
            let compile: CompileFn = sym(lib, b"nvrtcCompileProgram\0")?;
            let log_size: SizeFn = sym(lib, b"nvrtcGetProgramLogSize\0")?;
            let log: GetFn = sym(lib, b"nvrtcGetProgramLog\0")?;
            let (out_size, out): (SizeFn, GetFn) = if cubin {
                (
                    sym(lib, b"nvrtcGetCUBINSize\0")?,
                    sym(lib, b"nvrtcGetCUBIN\0")?,
                )
            } else {
                (sym(lib, b"nvrtcGetPTXSize\0")?, sym(lib, b"nvrtcGetPTX\0")?)
            };
            let destroy: DestroyFn = sym(lib, b"nvrtcDestroyProgram\0")?;
            let mut prog: Program = std::ptr::null_mut();
            let r = create(
                &mut prog,
                c_src.as_ptr(),
                c_name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            if r != SUCCESS {
                return Err(format!("nvrtcCreateProgram failed ({r})"));
            }
            let read = |size: SizeFn, get: GetFn| -> Option<Vec<u8>> {
                let mut n = 0usize;
                if size(prog, &mut n) != SUCCESS {
                    return None;
                }
                let mut buf = vec![0u8; n];
                (get(prog, buf.as_mut_ptr().cast()) == SUCCESS).then_some(buf)
            };
            let n_opts = c_int::try_from(opt_ptrs.len()).unwrap_or(c_int::MAX);
            let r = compile(prog, n_opts, opt_ptrs.as_ptr());
            let result = if r == SUCCESS {
                read(out_size, out).ok_or_else(|| "reading the compiled code failed".to_owned())
            } else {
                let text = read(log_size, log)
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .trim_end_matches('\0')
                            .trim()
                            .to_owned()
                    })
                    .unwrap_or_default();
                Err(format!("error {r}: {}", text.replace('\n', " | ")))
            };
            destroy(&mut prog);
            result.map(|mut code| {
                if !cubin {
                    // PTX comes NUL-terminated.
                    while code.last() == Some(&0) {
                        code.pop();
                    }
                }
                code
            })
        }
    }
}

/// Symbol `name` of `lib` as a `T` (a function pointer type).
///
/// # Safety
/// `T` must be the symbol's true type.
unsafe fn sym<T: Copy>(lib: &libloading::Library, name: &[u8]) -> Result<T, String> {
    // SAFETY: the caller's contract.
    unsafe { lib.get::<T>(name) }
        .map(|s| *s)
        .map_err(|e| e.to_string())
}

/// Every NVRTC discovery finds (module docs), loaded once per process.
pub fn found() -> &'static Found {
    static FOUND: OnceLock<Found> = OnceLock::new();
    FOUND.get_or_init(discover)
}

fn discover() -> Found {
    let mut f = Found::default();
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("STREAMFUSE_NVRTC") {
        let p = PathBuf::from(p);
        if p.is_dir() {
            paths.extend(nvrtc_files(&p));
            if paths.is_empty() {
                f.passed_over.push(format!(
                    "{}: STREAMFUSE_NVRTC names a folder with no libnvrtc.so.N in it",
                    p.display()
                ));
            }
        } else {
            paths.push(p);
        }
    } else {
        for d in search_dirs() {
            paths.extend(nvrtc_files(&d));
        }
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    for p in paths {
        let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if seen.contains(&canon) {
            continue;
        }
        seen.push(canon);
        match Library::load(&p) {
            Ok(l) => {
                if !f.libs.iter().any(|o| o.version == l.version) {
                    f.libs.push(l);
                }
            }
            Err(why) => f.passed_over.push(format!("{}: {why}", p.display())),
        }
    }
    if f.libs.is_empty() && std::env::var_os("STREAMFUSE_NVRTC").is_none() {
        for name in ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"] {
            if let Ok(l) = Library::load(Path::new(name)) {
                f.libs.push(l);
                break;
            }
        }
    }
    f.libs.sort_by_key(|l| std::cmp::Reverse(l.version));
    f
}

/// The libraries found, in words (for errors).
pub fn describe(f: &Found) -> String {
    let mut parts: Vec<String> = f
        .libs
        .iter()
        .map(|l| {
            let lo = l.archs.first().copied().unwrap_or(0);
            let hi = l.archs.last().copied().unwrap_or(0);
            format!("{l}, which targets sm_{lo} to sm_{hi}")
        })
        .collect();
    parts.extend(f.passed_over.iter().map(|p| format!("passed over {p}")));
    if parts.is_empty() {
        "none found".to_owned()
    } else {
        parts.join("; ")
    }
}

/// The newest library that targets `sm` (`70` for sm_70).
///
/// # Errors
/// A message naming what was found and what to install.
pub fn for_arch(sm: u32) -> Result<&'static Library, String> {
    let f = found();
    f.libs.iter().find(|l| l.targets(sm)).ok_or_else(|| {
        let install = if sm < 75 {
            "NVRTC 12.x (the last to target sm_70/72): a CUDA 12 toolkit or the `nvidia-cuda-nvrtc-cu12` wheel"
        } else {
            "NVRTC 12.x or 13.x: a CUDA toolkit or the `nvidia-cuda-nvrtc-cu12` wheel"
        };
        format!(
            "no NVRTC that targets sm_{sm} ({}); install {install}, or point STREAMFUSE_NVRTC at its libnvrtc.so.N (with libnvrtc-builtins beside it)",
            describe(f)
        )
    })
}

/// The library that targets the most of `archs` (`70`, `72`, ...), the
/// newest among equals: the one `kernels check` uses.
///
/// # Errors
/// A message naming what was found and what to install.
pub fn best_for(archs: &[u32]) -> Result<&'static Library, String> {
    let f = found();
    f.libs
        .iter()
        .max_by_key(|l| {
            (
                archs.iter().filter(|&&a| l.targets(a)).count(),
                l.version,
            )
        })
        .ok_or_else(|| {
            format!(
                "NVRTC cannot be loaded ({}); install a CUDA 12 toolkit or the `nvidia-cuda-nvrtc-cu12` wheel, or point STREAMFUSE_NVRTC at its libnvrtc.so.12 (with libnvrtc-builtins beside it)",
                describe(f)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nvrtc_itself_is_a_candidate() {
        assert!(is_nvrtc_name("libnvrtc.so.12"));
        assert!(is_nvrtc_name("libnvrtc.so.13.0.88"));
        assert!(!is_nvrtc_name("libnvrtc-builtins.so.12.9"));
        assert!(!is_nvrtc_name("libnvrtc.so"));
        assert!(!is_nvrtc_name("libnvrtc.so.12.bak"));
        assert!(!is_nvrtc_name("libnvrtc.alt.so.12"));
    }

    #[test]
    fn a_library_without_its_builtins_is_passed_over_with_the_reason() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let lib = dir.path().join("libnvrtc.so.12");
        std::fs::write(&lib, b"").unwrap_or_else(|e| panic!("{e}"));
        let why = builtins_beside(&lib, (12, 9)).unwrap_err();
        assert!(why.contains("libnvrtc-builtins.so.12.9"), "{why}");
        std::fs::write(dir.path().join("libnvrtc-builtins.so.12.9"), b"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(builtins_beside(&lib, (12, 9)).is_ok());
        assert!(builtins_beside(Path::new("libnvrtc.so.12"), (12, 9)).is_ok());
        // Not a library at all: refused at load, with the loader's reason.
        assert!(Library::load(&lib).is_err());
    }
}
