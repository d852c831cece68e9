#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/: cargo-fuzz, libFuzzer, AddressSanitizer)
# and runs each for a fixed time on its committed seed corpus
# (fuzz/corpus/<target>/) plus the inputs it finds.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 18: the six targets take under 2 minutes
# together, the build aside. Each run has a 2 GiB memory limit (a single
# allocation over it counts too) and a 10 s limit per input. The script
# fails when any target crashes, panics, runs out of memory or times out;
# the input is kept under $FUZZ_OUT (default: a temporary folder, printed)
# with libFuzzer's report. New corpus entries go there too, never into the
# committed corpus; to keep one, copy it into fuzz/corpus/<target>/ (a crash
# fixed: as regress-<what>, where `cargo test` runs it too). A temporary
# folder is removed when every target passed.
#
# cargo-fuzz is installed when missing (pinned version, into
# $CARGO_FUZZ_ROOT, default ~/.cache/streamfuse/cargo-fuzz). The stable
# toolchain builds the targets: RUSTC_BOOTSTRAP=1 admits the sanitizer
# flags cargo-fuzz passes.
set -euo pipefail

cd "$(dirname "$0")/.."

SECS=${1:-18}
shift || true
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  root=${CARGO_FUZZ_ROOT:-$HOME/.cache/streamfuse/cargo-fuzz}
  if [ ! -x "$root/bin/cargo-fuzz" ]; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $root" >&2
    nice -n 19 cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$root"
  fi
  export PATH="$root/bin:$PATH"
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
# `cargo fuzz build` builds all targets with no name given; with names,
# one at a time.
if [ $# -gt 0 ]; then
  for t in "${targets[@]}"; do nice -n 19 cargo fuzz build "$t"; done
else
  nice -n 19 cargo fuzz build
fi
echo "fuzz build: $(( $(date +%s) - start )) s" >&2

host=$(rustc -vV | sed -n 's/^host: //p')
bin=fuzz/target/$host/release
keep=${FUZZ_OUT:+yes}
out=${FUZZ_OUT:-$(mktemp -d -t streamfuse-fuzz.XXXXXX)}
mkdir -p "$out"
echo "new corpus entries, reports and crash inputs: $out" >&2

failed=()
for t in "${targets[@]}"; do
  mkdir -p "$out/$t/new" "$out/$t/artifacts"
  log=$out/$t/log.txt
  echo "== $t: ${SECS} s" >&2
  set +e
  # The first folder receives new inputs; the committed corpus is read only.
  "$bin/$t" "$out/$t/new" "fuzz/corpus/$t" \
    -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$out/$t/artifacts/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  # libFuzzer's last coverage line and final counters.
  grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1 >&2 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" >&2 || true
  if [ "$rc" -ne 0 ]; then
    echo "!! $t failed (exit $rc); report: $log" >&2
    grep -E 'ERROR: |panicked at|Test unit written to' "$log" | head -n 5 >&2 || true
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]} (inputs and reports under $out)" >&2
  exit 1
fi
if [ -z "$keep" ]; then rm -rf "$out"; fi
echo "fuzzing: ${targets[*]}: no crash, timeout or out-of-memory in ${SECS} s each" >&2
