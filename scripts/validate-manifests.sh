#!/usr/bin/env bash
# Validates generated k3s manifests offline against the Kubernetes API
# schemas with `kubernetes-validate --strict` (PyPI, installed into
# .venv/k8s; it bundles the schemas, no cluster or network needed once
# installed): the checked-in k3s/ tree, and fresh output of
# `streamfuse manifests` for every thesis placement with kernel fusion and
# with fusion off (one pod per stage), plus the RuntimeClass and the
# manifests of a spec whose stage reads its weights from watched files.
#
# Kubernetes versions: the one the generator is built for (the k8s-openapi
# feature in Cargo.toml, v1_36 -> 1.36) first, then the other minors k3s
# maintains; override with SF_K8S_VERSIONS="1.36 1.37".
#   scripts/validate-manifests.sh [path/to/streamfuse]
# Exit status 2 with a SKIPPED line when the validator cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# --setup-only: only install kubernetes-validate (the test command does
# this while it compiles).
setup_only=0
if [ "${1:-}" = "--setup-only" ]; then
    setup_only=1
    shift
fi
bin="${1:-${CARGO_TARGET_DIR:-target}/ci/streamfuse}"
SF_K8S_VENV="${SF_K8S_VENV:-$PWD/.venv/k8s}"
SF_K8S_PINS="kubernetes-validate==1.37.0"

feature=$(grep -o 'k8s-openapi = {[^}]*"v1_[0-9]*"' Cargo.toml | grep -o 'v1_[0-9]*' | head -n1)
[ -n "$feature" ] || { echo "cannot find the k8s-openapi version feature in Cargo.toml" >&2; exit 1; }
primary="1.${feature#v1_}"
versions="${SF_K8S_VERSIONS:-$primary 1.33 1.34 1.35 1.37}"

if [ ! -f "$SF_K8S_VENV/.pins" ] || [ "$(cat "$SF_K8S_VENV/.pins")" != "$SF_K8S_PINS" ]; then
    rm -rf "$SF_K8S_VENV"
    python3 -m venv "$SF_K8S_VENV" >/dev/null 2>&1 \
        && "$SF_K8S_VENV/bin/pip" install -q $SF_K8S_PINS >/dev/null 2>&1 \
        && echo "$SF_K8S_PINS" >"$SF_K8S_VENV/.pins" \
        || { echo "SKIPPED manifest validation: cannot install $SF_K8S_PINS from PyPI"; exit 2; }
fi
[ "$setup_only" = 0 ] || exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for fusion in kernel off; do
    for p in SSSS ESSS EESS EEES EEEE; do
        "$bin" manifests examples/thesis.yaml --placement "$p" --fusion "$fusion" \
            -o "$tmp/$fusion-$p" 2>/dev/null
    done
done
"$bin" manifests examples/thesis.yaml --runtime-class -o "$tmp/runtime-class" 2>/dev/null
# A spec whose conv reads watched weights and a bias from files: they ship
# in the ConfigMap's binaryData, projected next to the spec.
mkdir -p "$tmp/model-spec/m"
python3 - "$tmp/model-spec" <<'PY'
import struct, sys
def npy(path, shape, values):
    dims = ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
    head = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % dims
    head += " " * (-(10 + len(head) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode())
        f.write(struct.pack("<%df" % len(values), *values))
npy(sys.argv[1] + "/w.npy", [1, 1, 3, 3], [0.1 * k for k in range(9)])
npy(sys.argv[1] + "/m/b.npy", [1], [0.5])
PY
sed -e 's|weights: { random: { seed: 1 } }|weights: { npy: { path: w.npy, watch: true } }, bias: { npy: m/b.npy }|' \
    examples/thesis.yaml >"$tmp/model-spec/model.yaml"
grep -q 'watch: true' "$tmp/model-spec/model.yaml" || { echo "could not write the model-file spec" >&2; exit 1; }
"$bin" manifests "$tmp/model-spec/model.yaml" --placement EESS -o "$tmp/model-EESS" 2>/dev/null
grep -q binaryData "$tmp/model-EESS/configmap.yaml" || { echo "the model files are not in the ConfigMap" >&2; exit 1; }

mapfile -t files < <(find k3s "$tmp" -name '*.yaml' -not -path "$tmp/model-spec/*" | sort)
for v in $versions; do
    "$SF_K8S_VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${files[@]}" \
        || { echo "manifests do not validate against Kubernetes $v" >&2; exit 1; }
done
echo "${#files[@]} manifest files valid (kubernetes-validate --strict) against Kubernetes $versions"
