#!/usr/bin/env bash
# Swaps a conv stage's weights in the middle of a 1000-frame 1280x720
# stream and prints what the swap cost: the first seq with the new
# weights, every frame's arrival, and the p99 latency of the 100 frames
# around the swap next to the whole stream's p99.
#
#   scripts/live-weights-check.sh [BINARY]     (default target/quick/streamfuse: `cargo build --profile quick -p streamfuse`)
#
# Two runs, the source paced at 200 fps:
#   - in process, `weights: { npy: { path: w.npy, watch: true } }`, the
#     file replaced (rename) after 2.5 s;
#   - split over loopback, two `streamfuse serve` processes (source + conv
#     | relu + pool + sink), `streamfuse update-weights` after 2.5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/quick/streamfuse}")
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

# Two 3x3 weight sets as float32 .npy files (numpy's format, written with
# the standard library).
python3 - "$dir" <<'EOF'
import struct, sys, random
def npy(path, shape, values):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack(f"<{len(values)}f", *values))
for name, seed in (("a", 1), ("b", 2)):
    r = random.Random(seed)
    npy(f"{sys.argv[1]}/{name}.npy", (1, 1, 3, 3), [r.uniform(-1 / 3, 1 / 3) for _ in range(9)])
EOF

spec() { # weights-yaml placement
    cat <<EOF
name: live
source: { synthetic: { width: 1280, height: 720, channels: 1, frames: 1000, seed: 7, fps: 200 } }
stages:
  - { id: conv, op: conv2d, kernel: 3, out_channels: 1, weights: { npy: $1 } }
  - { id: relu, op: relu }
  - { id: pool, op: maxpool, size: 2, stride: 2 }
sink: { stats: {} }
nodes:
  edge:   { letter: E, device: cpu }
  server: { letter: S, device: cpu }
placement: $2
fusion: kernel
EOF
}

echo "== in process: watched weights file, replaced after 2.5 s"
cp "$dir/a.npy" "$dir/w.npy"
spec "{ path: w.npy, watch: true }" SSSS > "$dir/watch.yaml"
"$bin" run "$dir/watch.yaml" --json > "$dir/run.json" 2>"$dir/run.err" &
pids+=($!)
sleep 2.5
cp "$dir/b.npy" "$dir/w.tmp" && mv "$dir/w.tmp" "$dir/w.npy"
wait "${pids[-1]}"
python3 - "$dir/run.json" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
u = r["weight_updates"][0]
print(f"frames {r['frames']}, fps {r['fps']:.1f}; stage {u['stage']} version {u['version']} from seq {u['first_seq']}")
print(f"p99 latency: whole stream {r['latency_ms']['p99']:.3f} ms, 100 frames around the swap {u['p99_around_ms']:.3f} ms "
      f"(ratio {u['p99_around_ms'] / r['latency_ms']['p99']:.2f}); p50 {r['latency_ms']['p50']:.3f} ms")
EOF

echo "== split over loopback: update-weights to the conv segment after 2.5 s"
spec a.npy EESS > "$dir/split.yaml"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
p0=$(port); p1=$(port)
RUST_LOG=warn "$bin" serve "$dir/split.yaml" --segment 1 --once --listen "127.0.0.1:$p1" > "$dir/seg1.json" &
pids+=($!)
RUST_LOG=warn "$bin" serve "$dir/split.yaml" --segment 0 --once --listen "127.0.0.1:$p0" --next "127.0.0.1:$p1" --control loopback > "$dir/seg0.json" &
pids+=($!)
sleep 2.5
"$bin" update-weights "127.0.0.1:$p0" --stage conv --weights "$dir/b.npy" --json > "$dir/reply.json"
wait "${pids[-1]}" "${pids[-2]}"
python3 - "$dir/reply.json" "$dir/seg1.json" <<'EOF'
import json, math, sys
reply = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
sink = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])["sink"]
lat = sink["streams"][0]["latencies_ns"]
def p99(v):
    v = sorted(v)
    return v[max(1, math.ceil(0.99 * len(v))) - 1] / 1e6
q = reply["first_seq"]
around = lat[max(0, q - 50):q + 50]
print(f"frames {len(lat)}; reply: applied {reply['applied']}, version {reply['version']}, first seq {q}")
print(f"p99 latency: whole stream {p99(lat):.3f} ms, 100 frames around the swap {p99(around):.3f} ms "
      f"(ratio {p99(around) / p99(lat):.2f}); p50 {sorted(lat)[len(lat) // 2] / 1e6:.3f} ms")
EOF
