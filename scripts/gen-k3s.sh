#!/usr/bin/env bash
# Regenerates the checked-in k3s manifests from examples/thesis.yaml: one
# directory per thesis placement (k3s/thesis/<PLACEMENT>/), the EESS
# placement of the mutual-TLS variant (examples/thesis-tls.yaml,
# k3s/thesis-tls/EESS/) and the nvidia RuntimeClass (k3s/runtimeclass.yaml). The test `manifests` fails when the
# checked-in files differ from what this writes.
#   scripts/gen-k3s.sh                       build streamfuse (ci profile), regenerate
#   STREAMFUSE=path/to/streamfuse scripts/gen-k3s.sh   use that binary
set -euo pipefail
cd "$(dirname "$0")/.."

PLACEMENTS="SSSS ESSS EESS EEES EEEE"

bin="${STREAMFUSE:-}"
if [ -z "$bin" ]; then
    cargo build --locked --quiet --profile ci -p streamfuse --bin streamfuse
    bin="${CARGO_TARGET_DIR:-target}/ci/streamfuse"
fi

for p in $PLACEMENTS; do
    "$bin" manifests examples/thesis.yaml --placement "$p" -o "k3s/thesis/$p"
done
"$bin" manifests examples/thesis-tls.yaml --placement EESS -o "k3s/thesis-tls/EESS"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" manifests examples/thesis.yaml --runtime-class -o "$tmp" 2>/dev/null
cp "$tmp/runtimeclass.yaml" k3s/runtimeclass.yaml
echo "wrote k3s/runtimeclass.yaml"
