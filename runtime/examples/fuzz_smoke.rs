//! The test command's fuzzing step: every fuzz target (`streamfuse::fuzzing`,
//! the same functions `fuzz/`'s cargo-fuzz targets call) on its committed
//! corpus (`fuzz/corpus/<target>/`), then on inputs mutated from it for a
//! fixed time.
//!
//! A mutation fuzzer on the stable toolchain, built with the test binaries
//! (no sanitizer build, no coverage feedback): byte flips and sets,
//! interesting integers (0, -1, limits, huge sizes) written over the input
//! in little-endian, numbers in text made huge or negative, inserted,
//! deleted and duplicated ranges, and splices of two corpus inputs. The
//! coverage-guided runs (libFuzzer with AddressSanitizer) are
//! `scripts/fuzz.sh`, too slow to build in the test command.
//!
//! ```text
//! fuzz_smoke [--seconds-per-target N] [--seed S] [--threads T] [--out DIR] [TARGET...]
//! ```
//!
//! Fails (exit 1) when an input panics a target, writing it to `--out`
//! (default: the temporary directory) and naming the file; a process abort
//! (a failed allocation) or an input running over 10 s (exit 2) is
//! reproduced by rerunning with the `--seed` it printed, which fixes every
//! mutation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use streamfuse::fuzzing;

/// A target: its corpus folder's name and its entry point.
type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("framing", fuzzing::framing),
    ("wire", fuzzing::wire),
    ("spec", fuzzing::spec),
    ("npy", fuzzing::npy),
    ("safetensors", fuzzing::safetensors),
    ("onnx", fuzzing::onnx),
];

/// Longest time one input may run.
const HANG: Duration = Duration::from_secs(10);

/// Largest mutated input.
const MAX_LEN: usize = 1 << 20;

/// xorshift64*: a small, seedable generator (reproducibility is the point).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Integers that break size and offset arithmetic.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
    4096,
    1 << 31,
    99_999_999,
];

/// Numbers that break a text format's sizes.
const TEXT_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "99999999999",
    "4294967296",
    "18446744073709551616",
    "1e309",
    "nan",
    "-0",
];

/// One to eight mutations of `base` (`other`: a second corpus input to
/// splice from).
fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = v.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                // An interesting integer, 1 to 8 bytes, little-endian.
                let x = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let w = [1, 2, 4, 8][rng.below(4)];
                let i = rng.below(len);
                let n = w.min(len - i);
                v[i..i + n].copy_from_slice(&x[..n]);
            }
            3 => {
                // A run of digits replaced by a troublesome number.
                let starts: Vec<usize> = (0..len)
                    .filter(|&i| v[i].is_ascii_digit() && (i == 0 || !v[i - 1].is_ascii_digit()))
                    .collect();
                if !starts.is_empty() {
                    let s = starts[rng.below(starts.len())];
                    let e = (s..len).find(|&i| !v[i].is_ascii_digit()).unwrap_or(len);
                    let t = TEXT_NUMBERS[rng.below(TEXT_NUMBERS.len())].as_bytes();
                    v.splice(s..e, t.iter().copied());
                }
            }
            4 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            6 if len > 0 => {
                // A range duplicated in place (repeated fields, chunks).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let dup = v[i..i + n].to_vec();
                v.splice(i..i, dup);
            }
            7 if !other.is_empty() => {
                // The head of this input and the tail of another.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                // Truncated.
                v.truncate(rng.below(len));
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v.truncate(MAX_LEN);
    v
}

/// The corpus of `target`, sorted by name.
fn corpus(root: &Path, target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(target))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// What one target's run found.
struct Outcome {
    target: &'static str,
    execs: u64,
    corpus: usize,
    crash: Option<PathBuf>,
}

fn fuzz_target(
    (name, f): Target,
    root: &Path,
    seed: u64,
    budget: Duration,
    out: &Path,
    progress: &AtomicU64,
) -> Result<Outcome, String> {
    let inputs = corpus(root, name);
    if inputs.is_empty() {
        return Err(format!(
            "{name}: no corpus in {}",
            root.join(name).display()
        ));
    }
    // One generator per target, from the seed and the target's name: a
    // target's inputs do not depend on the others or on scheduling.
    let mut rng = Rng(name.bytes().fold(seed | 1, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }));
    let t0 = Instant::now();
    let mut execs = 0u64;
    let run_one = |data: &[u8], execs: &mut u64| -> Option<PathBuf> {
        progress.store(t0.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        *execs += 1;
        if std::panic::catch_unwind(|| f(data)).is_ok() {
            return None;
        }
        let path = out.join(format!("crash-{name}-{seed}-{execs}"));
        match std::fs::write(&path, data) {
            Ok(()) => Some(path),
            Err(e) => Some(PathBuf::from(format!(
                "(could not write {}: {e})",
                path.display()
            ))),
        }
    };
    let mut crash = inputs.iter().find_map(|input| run_one(input, &mut execs));
    while crash.is_none() && t0.elapsed() < budget {
        let base = &inputs[rng.below(inputs.len())];
        let other = &inputs[rng.below(inputs.len())];
        let data = mutate(&mut rng, base, other);
        crash = run_one(&data, &mut execs);
    }
    Ok(Outcome {
        target: name,
        execs,
        corpus: inputs.len(),
        crash,
    })
}

struct Args {
    secs: u64,
    seed: u64,
    threads: usize,
    out: PathBuf,
    targets: Vec<Target>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        secs: 20,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        out: std::env::temp_dir(),
        targets: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().ok_or(format!("{what} needs a value"));
        match arg.as_str() {
            "--seconds-per-target" => {
                a.secs = value(&arg)?
                    .parse()
                    .map_err(|e| format!("--seconds-per-target: {e}"))?;
            }
            "--seed" => a.seed = value(&arg)?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--threads" => {
                a.threads = value(&arg)?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?;
            }
            "--out" => a.out = PathBuf::from(value(&arg)?),
            t => match TARGETS.iter().find(|x| x.0 == t) {
                Some(x) => a.targets.push(*x),
                None => {
                    let names: Vec<&str> = TARGETS.iter().map(|x| x.0).collect();
                    return Err(format!(
                        "unknown target or option `{t}`; targets: {}",
                        names.join(", ")
                    ));
                }
            },
        }
    }
    if a.targets.is_empty() {
        a.targets = TARGETS.to_vec();
    }
    a.threads = a.threads.clamp(1, a.targets.len());
    Ok(a)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuzz_smoke: {e}");
            std::process::exit(64);
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    println!(
        "fuzz_smoke: seed {} ({} s per target, {} thread(s); rerun with --seed {} to repeat)",
        a.seed, a.secs, a.threads, a.seed
    );
    // Panics are expected to be caught and reported here, once.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("fuzz_smoke: a target panicked: {info}")
    }));
    let budget = Duration::from_secs(a.secs);
    let queue = Arc::new(std::sync::Mutex::new(a.targets.clone()));
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..a.threads)
        .map(|_| {
            let (queue, results, root, out) = (
                Arc::clone(&queue),
                Arc::clone(&results),
                root.clone(),
                a.out.clone(),
            );
            let seed = a.seed;
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some(target) = next else { break };
                    // A watchdog: no progress for HANG is a hang.
                    let progress = Arc::new(AtomicU64::new(0));
                    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let dog = {
                        let (progress, done) = (Arc::clone(&progress), Arc::clone(&done));
                        std::thread::spawn(move || {
                            let t0 = Instant::now();
                            let mut last = (0u64, Instant::now());
                            while !done.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(200));
                                let p = progress.load(Ordering::Relaxed);
                                if p != last.0 {
                                    last = (p, Instant::now());
                                } else if last.1.elapsed() > HANG {
                                    eprintln!(
                                        "fuzz_smoke: {} ran one input for over {} s ({} s in); rerun with --seed {seed} {}",
                                        target.0,
                                        HANG.as_secs(),
                                        t0.elapsed().as_secs(),
                                        target.0
                                    );
                                    std::process::exit(2);
                                }
                            }
                        })
                    };
                    let r = fuzz_target(target, &root, seed, budget, &out, &progress);
                    done.store(true, Ordering::Relaxed);
                    let _ = dog.join();
                    if let Ok(mut v) = results.lock() {
                        v.push(r);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    let mut failed = results.len() != a.targets.len();
    for r in results {
        match r {
            Ok(o) => {
                let rate = o.execs as f64 / a.secs.max(1) as f64;
                match &o.crash {
                    None => println!(
                        "{:<12} {:>9} inputs ({:.0}/s) from {} corpus files: no failure",
                        o.target, o.execs, rate, o.corpus
                    ),
                    Some(p) => {
                        failed = true;
                        println!(
                            "{:<12} FAILED after {} inputs: the input is {}",
                            o.target,
                            o.execs,
                            p.display()
                        );
                    }
                }
            }
            Err(e) => {
                failed = true;
                println!("error: {e}");
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
