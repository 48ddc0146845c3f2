#!/usr/bin/env bash
# The one command that regenerates the Python and TypeScript clients from proto/:
#
#   scripts/generate-clients.sh            regenerate, in place
#   scripts/generate-clients.sh --check    change nothing; fail (exit 1, showing the difference)
#                                          when the committed output is stale
#
# buf generates with the local plugins of buf.gen.yaml (offline: no remote plugins) into a scratch
# directory; the generated files then replace their committed copies:
#
#   client-sdk/python/src/temporal_state/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py
#   client-sdk/typescript/gen/**                       (the whole folder is generated)
#   client-sdk/python/README.md, its "## API" section  (rendered from the docstrings of the
#                                                       hand-written temporal_state package by
#                                                       client-sdk/python/codegen/readme_api.py)
#
# Hand-written files next to them (temporal_state/__init__.py, client.py, v1/__init__.py,
# typescript/index.js ...) are never touched. The tools come from scripts/ensure-tools.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=write
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

die() { printf 'generate-clients: ERROR: %s\n' "$*" >&2; exit 1; }

BUF="$ROOT/tools/node_modules/.bin/buf"
ES="$ROOT/tools/node_modules/.bin/protoc-gen-es"
PY="$ROOT/tools/.venv/bin/python"
[[ -x "$BUF" && -x "$ES" ]] || die "buf or protoc-gen-es missing under tools/node_modules: run scripts/ensure-tools.sh"
"$PY" -c 'import grpc_tools.protoc' 2>/dev/null \
  || die "grpcio-tools missing from tools/.venv: run scripts/ensure-tools.sh"

PY_OUT=client-sdk/python/src/temporal_state/v1
TS_OUT=client-sdk/typescript/gen

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

"$BUF" generate --template buf.gen.yaml -o "$scratch/fresh"

# The generated Python files only (the folder also holds hand-written ones).
py_generated() { find "$1" -maxdepth 1 -type f \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) | sort; }

[[ -n "$(py_generated "$scratch/fresh/$PY_OUT")" ]] || die "buf generated no Python files"
[[ -d "$scratch/fresh/$TS_OUT" ]] || die "buf generated no TypeScript files"

if [[ "$MODE" == check ]]; then
  mkdir -p "$scratch/committed/py" "$scratch/fresh-py"
  if [[ -d "$PY_OUT" ]]; then
    py_generated "$PY_OUT" | while read -r f; do cp "$f" "$scratch/committed/py/"; done
  fi
  py_generated "$scratch/fresh/$PY_OUT" | while read -r f; do cp "$f" "$scratch/fresh-py/"; done
  status=0
  diff -ru "$scratch/committed/py" "$scratch/fresh-py" > "$scratch/py.diff" || status=1
  if [[ -d "$TS_OUT" ]]; then
    diff -ru "$TS_OUT" "$scratch/fresh/$TS_OUT" > "$scratch/ts.diff" || status=1
  else
    echo "missing: $TS_OUT" > "$scratch/ts.diff"; status=1
  fi
  "$PY" -B client-sdk/python/codegen/readme_api.py client-sdk/python/README.md client-sdk/python/src --check \
    >> "$scratch/py.diff" 2>&1 || status=1
  if [[ "$status" -ne 0 ]]; then
    echo "generate-clients: the generated clients are stale (committed vs fresh):" >&2
    cat "$scratch/py.diff" "$scratch/ts.diff" | head -n 80 >&2
    echo "generate-clients: run scripts/generate-clients.sh and commit the result" >&2
    exit 1
  fi
  echo "generate-clients: generated clients are up to date"
  exit 0
fi

mkdir -p "$PY_OUT"
py_generated "$PY_OUT" | while read -r f; do rm -f "$f"; done
py_generated "$scratch/fresh/$PY_OUT" | while read -r f; do cp "$f" "$PY_OUT/"; done
rm -rf "$TS_OUT"
cp -R "$scratch/fresh/$TS_OUT" "$TS_OUT"
"$PY" -B client-sdk/python/codegen/readme_api.py client-sdk/python/README.md client-sdk/python/src
echo "generate-clients: wrote $PY_OUT, $TS_OUT and the API section of client-sdk/python/README.md"
