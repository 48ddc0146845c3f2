#!/usr/bin/env bash
# Checks the deployment artefacts under deploy/, in seconds (CI runs it after buf lint):
#   1. hadolint on every Dockerfile (deploy/docker/*.Dockerfile);
#   2. `kubectl kustomize` renders every overlay (deploy/kubernetes/overlays/*);
#   3. scripts/validate-manifests.py checks each rendering strictly against the Kubernetes
#      schemas of the oldest version we support (1.30: the preStop `sleep` action is on by
#      default from there) and of the newest the pinned kubernetes-validate knows (1.37).
# The tools come from scripts/ensure-tools.sh (tools/.venv, tools/bin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/tools/.venv/bin"
K8S_VERSIONS=(1.30.0 1.37.0)

for tool in hadolint kubectl python; do
  [[ -x "$VENV/$tool" ]] || { echo "check-deploy: $VENV/$tool missing: run scripts/ensure-tools.sh" >&2; exit 1; }
done

mapfile -t dockerfiles < <(find deploy -name '*.Dockerfile' -o -name Dockerfile | sort)
(( ${#dockerfiles[@]} > 0 )) || { echo "check-deploy: no Dockerfile under deploy/" >&2; exit 1; }
"$VENV/hadolint" --failure-threshold info "${dockerfiles[@]}"
echo "check-deploy: hadolint clean: ${dockerfiles[*]}"

rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
mapfile -t overlays < <(find deploy/kubernetes/overlays -mindepth 1 -maxdepth 1 -type d | sort)
(( ${#overlays[@]} > 0 )) || { echo "check-deploy: no overlay under deploy/kubernetes/overlays" >&2; exit 1; }
for overlay in "${overlays[@]}"; do
  out="$rendered/$(basename "$overlay").yaml"
  "$VENV/kubectl" kustomize "$overlay" >"$out"
  echo "check-deploy: rendered $overlay ($(grep -c '^kind:' "$out") resources)"
done

k_args=()
for v in "${K8S_VERSIONS[@]}"; do k_args+=(-k "$v"); done
"$VENV/python" scripts/validate-manifests.py "${k_args[@]}" "$rendered"/*.yaml
