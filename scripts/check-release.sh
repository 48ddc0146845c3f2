#!/usr/bin/env bash
# Would a release publish cleanly, and does this tree keep the API compatible? Run by .ci/run:
#
#   scripts/check-release.sh            everything below
#   scripts/check-release.sh compat     seconds: metadata + API compatibility (before the tests)
#   scripts/check-release.sh packages   minutes: dry-run publishing + docs (after the tests, so the
#                                       Rust dependencies are already compiled)
#   scripts/check-release.sh rust|python|typescript    one package's part of `packages`
#   scripts/check-release.sh rust-api                  only the Rust SDK's public API check
#
# compat
#   - LICENSE: each published package holds a byte-identical copy of the root LICENSE.
#   - One version (the workspace's) in every manifest, in the Python package's __version__, in the
#     workspace's own dependency entries, with its CHANGELOG.md entry and its API baseline.
#   - One repository URL (the workspace's [workspace.package] repository) in the Python and npm
#     manifests and in the READMEs.
#   - The API (proto/) against the last release, proto/release/v<version>.binpb, with the rules of
#     buf.yaml (FILE: wire, JSON and generated-code compatibility): a breaking change fails unless
#     the version is bumped (scripts/release.sh writes the new baseline). A release that broke the
#     one before it must be a breaking bump (0.x: minor; else major). Then the same against the
#     release tag v<version> when there is one, else against the local branch main when HEAD is
#     not main (in a fresh clone of main, HEAD is main and the baseline is what counts).
# packages
#   - Rust: `cargo package` then `cargo publish --dry-run` of temporal-state-proto and
#     temporal-state-client together (cargo resolves the unpublished proto crate from its own
#     package), each verified by building the packaged source; then a scratch crate depending on both, patched to the
#     unpacked .crate files, is built and run; `cargo doc` of the SDK with warnings denied; the
#     SDK's public API (scripts/rust-public-api.py) against client-sdk/rust/api/v<version>.txt.
#   - Python: `python -m build` (sdist, then the wheel from the sdist), `twine check --strict`,
#     the wheel installed into a fresh virtualenv (dependencies from PyPI) and imported.
#   - TypeScript: `npm pack`, `npm publish --dry-run`, the tarball installed into a scratch project
#     (peer dependencies from npm), imported by Node and type-checked by tsc as a user's code.
#
# Needs the tools of scripts/ensure-tools.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/tools/bin:$ROOT/tools/node_modules/.bin:$PATH"
export CARGO_INCREMENTAL=0

WHAT="${1:-all}"
case "$WHAT" in all | compat | packages | rust | rust-api | python | typescript) ;;
  *) echo "usage: $0 [compat|packages|rust|rust-api|python|typescript]" >&2; exit 2 ;;
esac

BUF="$ROOT/tools/node_modules/.bin/buf"
PY="$ROOT/tools/.venv/bin/python"
TSC="$ROOT/web-gateway/ui/node_modules/.bin/tsc"

log() { printf 'check-release: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
step_start() { STEP_T0=$SECONDS; log "== $*"; }
step_end() { log "   ok ($((SECONDS - STEP_T0)) s)"; }

[[ -x "$BUF" && -x "$PY" ]] || die "tools missing: run scripts/ensure-tools.sh"
"$PY" -c 'import build, twine' 2>/dev/null || die "build/twine missing from tools/.venv: run scripts/ensure-tools.sh"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# The workspace's version and repository URL: the one place they are defined.
read -r VERSION REPO_URL < <("$PY" - <<'EOF'
import tomllib
ws = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]
print(ws["version"], ws["repository"])
EOF
)

# Once v$VERSION is tagged (published), the registries refuse that version again: their dry runs
# would fail until the next bump, so they are left out; everything else still runs.
RELEASED=""
if git rev-parse -q --verify "refs/tags/v$VERSION" >/dev/null; then
  RELEASED=1
fi

# Breaking bump from $1 to $2 under semver: major, or minor while the major is 0.
is_breaking_bump() {
  local a b
  IFS=. read -r -a a <<<"$1"
  IFS=. read -r -a b <<<"$2"
  if [[ "${a[0]}" -eq 0 ]]; then
    [[ "${b[0]}" -gt 0 || "${b[1]}" -gt "${a[1]}" ]]
  else
    [[ "${b[0]}" -gt "${a[0]}" ]]
  fi
}

# ---------------------------------------------------------------- metadata
check_metadata() {
  step_start "metadata: license, version $VERSION, repository $REPO_URL"
  [[ -f LICENSE ]] && grep -q 'Apache License' LICENSE && grep -q 'Version 2.0, January 2004' LICENSE \
    || die "LICENSE at the root is missing or is not the Apache License 2.0"
  local dir
  for dir in proto client-sdk/rust client-sdk/python client-sdk/typescript; do
    cmp -s LICENSE "$dir/LICENSE" || die "$dir/LICENSE differs from the root LICENSE: cp LICENSE $dir/"
  done
  "$PY" - "$VERSION" "$REPO_URL" <<'EOF'
import json, re, sys, tomllib
version, repo = sys.argv[1], sys.argv[2]
errors = []
def expect(what, got, want):
    if got != want:
        errors.append(f"{what}: {got!r}, expected {want!r}")

cargo = tomllib.load(open("Cargo.toml", "rb"))
deps = cargo["workspace"]["dependencies"]
for crate in ("temporal-state-proto", "temporal-state-client"):
    expect(f"Cargo.toml [workspace.dependencies] {crate} version", deps[crate].get("version"), version)
for manifest in ("proto/Cargo.toml", "client-sdk/rust/Cargo.toml"):
    pkg = tomllib.load(open(manifest, "rb"))["package"]
    for key in ("version", "license", "repository"):
        expect(f"{manifest} {key}", pkg.get(key), {"workspace": True})
    if "LICENSE" not in pkg.get("include", []):
        errors.append(f"{manifest}: include does not list LICENSE")
expect("workspace license", cargo["workspace"]["package"]["license"], "Apache-2.0")

py = tomllib.load(open("client-sdk/python/pyproject.toml", "rb"))["project"]
expect("client-sdk/python/pyproject.toml version", py["version"], version)
expect("client-sdk/python/pyproject.toml license", py["license"], "Apache-2.0")
expect("client-sdk/python/pyproject.toml license-files", py.get("license-files"), ["LICENSE"])
expect("client-sdk/python/pyproject.toml [project.urls] Repository", py["urls"].get("Repository"), repo)
init = open("client-sdk/python/src/temporal_state/__init__.py").read()
m = re.search(r'^__version__ = "([^"]+)"', init, re.M)
expect("client-sdk/python temporal_state.__version__", m and m.group(1), version)

npm = json.load(open("client-sdk/typescript/package.json"))
expect("client-sdk/typescript/package.json version", npm["version"], version)
expect("client-sdk/typescript/package.json license", npm["license"], "Apache-2.0")
expect("client-sdk/typescript/package.json repository.url", npm["repository"]["url"], repo + ".git")
if "LICENSE" not in npm.get("files", []):
    errors.append("client-sdk/typescript/package.json: files does not list LICENSE")

# Any link to a GitHub repository of ours in the READMEs and the changelog is the workspace's.
owner = re.escape(repo.rsplit("/", 2)[-2])
for doc in ("README.md", "CHANGELOG.md", "proto/README.md", "client-sdk/rust/README.md",
            "client-sdk/python/README.md", "client-sdk/typescript/README.md"):
    for url in re.findall(r"https://github\.com/" + owner + r"/[A-Za-z0-9_.-]+", open(doc).read()):
        expect(f"{doc} repository link", url.removesuffix(".git"), repo)

changelog = open("CHANGELOG.md").read()
if not re.search(r"^## \[" + re.escape(version) + r"\] - \d{4}-\d{2}-\d{2}$", changelog, re.M):
    errors.append(f"CHANGELOG.md has no '## [{version}] - YYYY-MM-DD' entry")
if not re.search(r"^## \[Unreleased\]$", changelog, re.M):
    errors.append("CHANGELOG.md has no '## [Unreleased]' section")

if errors:
    print("\n".join("check-release: ERROR: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
EOF
  step_end
}

# ---------------------------------------------------------------- API compatibility
breaking() { # breaking <against> <label>: 0 when compatible, 1 when breaking (printed), dies on error
  local out rc=0
  out="$("$BUF" breaking --against "$1" 2>&1)" || rc=$?
  if [[ "$rc" -eq 0 ]]; then
    log "   compatible with $2"
    return 0
  fi
  # buf exits 100 for breaking changes found; anything else is a failure to run.
  [[ "$rc" -eq 100 ]] || die "buf breaking --against $1 failed to run (exit $rc):"$'\n'"$out"
  printf '%s\n' "$out" >&2
  return 1
}

check_compat() {
  step_start "API compatibility (buf breaking, buf.yaml rules)"
  local baseline="proto/release/v$VERSION.binpb" previous="" v
  [[ -f "$baseline" ]] || die "no API baseline $baseline for version $VERSION (scripts/release.sh writes it)"
  for v in $(ls proto/release/ | sed -n 's/^v\(.*\)\.binpb$/\1/p' | sort -V); do
    [[ "$v" == "$VERSION" ]] && break
    previous="$v"
  done
  breaking "$baseline" "the released API v$VERSION ($baseline)" \
    || die "the API breaks compatibility with released v$VERSION: undo the change, or bump the version (scripts/release.sh X.Y.Z; a breaking change needs $([[ "${VERSION%%.*}" == 0 ]] && echo 'a minor bump while 0.x' || echo 'a major bump'))"
  if [[ -n "$previous" ]] && ! breaking "proto/release/v$previous.binpb" "v$previous"; then
    is_breaking_bump "$previous" "$VERSION" \
      || die "v$VERSION breaks the API of v$previous but is not a breaking version bump"
    log "   breaks v$previous, allowed: $previous -> $VERSION is a breaking bump"
  fi
  # The git side: the release tag, else main.
  if git rev-parse -q --verify "refs/tags/v$VERSION" >/dev/null; then
    breaking ".git#tag=v$VERSION" "the tag v$VERSION" || die "the API breaks compatibility with the tag v$VERSION"
  elif git rev-parse -q --verify refs/heads/main >/dev/null; then
    if [[ "$(git rev-parse HEAD)" == "$(git rev-parse refs/heads/main)" ]]; then
      log "   HEAD is main: nothing to compare on the git side (the baseline above is the check)"
    elif ! breaking ".git#branch=main" "main"; then
      local main_version
      main_version="$(git show main:Cargo.toml | "$PY" -c 'import sys, tomllib; print(tomllib.loads(sys.stdin.read())["workspace"]["package"]["version"])')"
      is_breaking_bump "$main_version" "$VERSION" \
        || die "the API breaks compatibility with main (v$main_version) without a breaking version bump"
      log "   breaks main, allowed: $main_version -> $VERSION is a breaking bump"
    fi
  else
    log "   no tag v$VERSION and no local main: the baseline above is the check"
  fi
  step_end
}

# ---------------------------------------------------------------- Rust
# cargo verifies a package in an ephemeral workspace of its own, which knows nothing of this
# workspace's [profile.dev]: the same settings as config reuse the dependencies already built.
CARGO_PROFILE=(
  --config 'profile.dev.debug="line-tables-only"'
  --config 'profile.dev.package."*".opt-level=1'
  --config 'profile.dev.package."*".debug=false'
)

check_rust() {
  step_start "Rust: cargo package + cargo publish --dry-run -p temporal-state-proto -p temporal-state-client"
  # `cargo package` builds each packaged crate (the client against the packaged proto crate, which
  # cargo serves from a local registry of its own: it need not be on crates.io yet) and leaves the
  # .crate files in target/package/; `cargo publish --dry-run` then runs the registry's checks.
  # --allow-dirty: a developer runs this before committing; CI's clone is clean anyway.
  local quiet='^warning: ignoring test .* is not included in the published package$'
  cargo package "${CARGO_PROFILE[@]}" --allow-dirty -p temporal-state-proto -p temporal-state-client 2>&1 \
    | { grep -v "$quiet" || true; } >&2
  [[ "${PIPESTATUS[0]}" -eq 0 ]] || die "cargo package failed"
  if [[ -n "$RELEASED" ]]; then
    log "   v$VERSION is tagged (released): cargo publish --dry-run left out"
  else
    cargo publish --dry-run --no-verify --allow-dirty -p temporal-state-proto -p temporal-state-client 2>&1 \
      | { grep -v "$quiet" || true; } >&2
    [[ "${PIPESTATUS[0]}" -eq 0 ]] || die "cargo publish --dry-run failed"
  fi
  local crate
  for crate in temporal-state-proto temporal-state-client; do
    tar -tzf "target/package/$crate-$VERSION.crate" | grep -x "$crate-$VERSION/LICENSE" >/dev/null \
      || die "target/package/$crate-$VERSION.crate has no LICENSE"
  done
  step_end

  step_start "Rust: a user's crate on the packaged SDK"
  local app="$scratch/rust-app"
  mkdir -p "$app/src" "$scratch/crates"
  for crate in temporal-state-proto temporal-state-client; do
    tar -xzf "target/package/$crate-$VERSION.crate" -C "$scratch/crates"
  done
  cat >"$app/Cargo.toml" <<EOF
[package]
name = "release-check-app"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
temporal-state-client = "$VERSION"
tokio = { version = "1", features = ["full"] }

# What crates.io would serve once published: the packaged sources.
[patch.crates-io]
temporal-state-client = { path = "../crates/temporal-state-client-$VERSION" }
temporal-state-proto = { path = "../crates/temporal-state-proto-$VERSION" }
EOF
  cat >"$app/src/main.rs" <<'EOF'
use temporal_state_client::{Client, Error};

#[tokio::main]
async fn main() {
    // A loopback port nobody listens on: connecting must fail with the SDK's typed error.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = Client::builder(format!("http://127.0.0.1:{port}"))
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(err, Error::Connect { .. }), "unexpected error: {err:?}");
    println!("a user's crate on the packaged SDK: {err}");
}
EOF
  # The workspace's target/ (and the lockfile's versions): the verified packages are reused.
  cp Cargo.lock "$app/Cargo.lock"
  (cd "$app" && CARGO_TARGET_DIR="$ROOT/target" cargo run "${CARGO_PROFILE[@]}" --quiet) \
    || die "the user's crate on the packaged SDK failed"
  step_end

  step_start "Rust: RUSTDOCFLAGS='-D warnings' cargo doc -p temporal-state-client --no-deps"
  RUSTDOCFLAGS="-D warnings" cargo doc --quiet -p temporal-state-proto -p temporal-state-client --no-deps \
    || die "the SDK's documentation has warnings"
  step_end

  check_rust_api
}

# The Rust SDK's public API (scripts/rust-public-api.py, from rustdoc's JSON) against the baseline
# of the released version, client-sdk/rust/api/v<version>.txt: an item removed or changed there
# fails unless the version is a breaking bump from the one before, as buf breaking does for protos.
rust_api_now() { # writes the current public API to $1
  RUSTC_BOOTSTRAP=1 cargo rustdoc --quiet -p temporal-state-client --lib -- -Z unstable-options --output-format json \
    || die "rustdoc could not write the SDK's JSON"
  "$PY" scripts/rust-public-api.py target/doc/temporal_state_client.json >"$1"
}

rust_api_breaks() { # rust_api_breaks <baseline> <current> <label>: 0 when compatible
  if "$PY" scripts/rust-public-api.py --diff "$1" "$2" >"$scratch/api.diff"; then
    log "   compatible with $3 ($(grep -c '^+' "$scratch/api.diff" || true) items added)"
    return 1
  fi
  grep '^-' "$scratch/api.diff" | head -n 20 >&2
  return 0
}

check_rust_api() {
  step_start "Rust: the SDK's public API against client-sdk/rust/api/v$VERSION.txt"
  local baseline="client-sdk/rust/api/v$VERSION.txt" previous="" v
  [[ -f "$baseline" ]] || die "no Rust API baseline $baseline (scripts/release.sh writes it)"
  rust_api_now "$scratch/api.txt"
  if rust_api_breaks "$baseline" "$scratch/api.txt" "the released SDK v$VERSION"; then
    die "the Rust SDK's public API lost or changed the items above since v$VERSION: undo the change, or bump the version (scripts/release.sh X.Y.Z, a breaking bump)"
  fi
  for v in $(ls client-sdk/rust/api/ | sed -n 's/^v\(.*\)\.txt$/\1/p' | sort -V); do
    [[ "$v" == "$VERSION" ]] && break
    previous="$v"
  done
  if [[ -n "$previous" ]] && rust_api_breaks "client-sdk/rust/api/v$previous.txt" "$baseline" "v$previous"; then
    is_breaking_bump "$previous" "$VERSION" \
      || die "the Rust SDK v$VERSION breaks the API of v$previous but is not a breaking version bump"
    log "   breaks v$previous, allowed: $previous -> $VERSION is a breaking bump"
  fi
  step_end
}

# ---------------------------------------------------------------- Python
check_python() {
  step_start "Python: python -m build, twine check, install the wheel into a fresh virtualenv"
  # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
  local src="$scratch/python-src" dist="$scratch/python-dist" venv="$scratch/python-venv"
  cp -R client-sdk/python "$src"
  rm -rf "$src/build" "$src/dist" "$src"/src/*.egg-info
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  # No isolation: the pinned setuptools of tools/.venv, not whatever PyPI serves today.
  "$PY" -m build --no-isolation --outdir "$dist" "$src" >"$scratch/python-build.log" 2>&1 \
    || { cat "$scratch/python-build.log" >&2; die "python -m build failed"; }
  "$PY" -m twine check --strict "$dist"/* >&2 || die "twine check failed"
  local sdist wheel
  sdist="$(ls "$dist"/temporal_state_client-"$VERSION".tar.gz)"
  wheel="$(ls "$dist"/temporal_state_client-"$VERSION"-py3-none-any.whl)"
  tar -tzf "$sdist" | grep -x "temporal_state_client-$VERSION/LICENSE" >/dev/null || die "$sdist has no LICENSE"
  "$PY" -m zipfile -l "$wheel" | grep "dist-info/licenses/LICENSE" >/dev/null || die "$wheel has no LICENSE"

  python3 -m venv "$venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --quiet "$wheel" || die "pip install $wheel failed"
  (cd "$scratch" && "$venv/bin/python" - "$VERSION" <<'EOF'
import importlib.metadata as md, sys
import temporal_state
from temporal_state import connect, to_dict, to_struct
from temporal_state.v1 import instance_service_pb2 as instances, types_pb2

version = sys.argv[1]
assert temporal_state.__file__.startswith(sys.prefix), temporal_state.__file__
assert md.version("temporal-state-client") == version == temporal_state.__version__
assert md.metadata("temporal-state-client")["License-Expression"] == "Apache-2.0"
assert to_dict(to_struct({"score": 150, "tags": ["a"]})) == {"score": 150, "tags": ["a"]}
request = instances.GetCurrentStateRequest(entity_type="player_profile", external_id="player-001")
assert instances.GetCurrentStateRequest.FromString(request.SerializeToString()) == request
with connect("127.0.0.1:1") as client:
    assert hasattr(client.instances, "GetCurrentState")
print(f"check-release:    temporal-state-client {version} (Python) imports from {temporal_state.__file__}", file=sys.stderr)
EOF
  ) || die "the installed Python package does not work"
  step_end
}

# ---------------------------------------------------------------- TypeScript
check_typescript() {
  step_start "TypeScript: npm pack, npm publish --dry-run, install the tarball into a scratch project"
  local pkg="$ROOT/client-sdk/typescript" app="$scratch/ts-app" tarball
  mkdir -p "$scratch/npm" "$app"
  (cd "$pkg" && npm pack --silent --pack-destination "$scratch/npm" >/dev/null) || die "npm pack failed"
  tarball="$scratch/npm/temporal-state-client-$VERSION.tgz"
  [[ -f "$tarball" ]] || die "npm pack made no $tarball"
  tar -tzf "$tarball" | grep -x "package/LICENSE" >/dev/null || die "$tarball has no LICENSE"
  if [[ -n "$RELEASED" ]]; then
    log "   v$VERSION is tagged (released): npm publish --dry-run left out"
  else
    (cd "$pkg" && npm publish --dry-run --loglevel=error >/dev/null 2>"$scratch/npm-publish.log") \
      || { cat "$scratch/npm-publish.log" >&2; die "npm publish --dry-run failed"; }
  fi

  printf '{ "name": "release-check-app", "private": true, "type": "module" }\n' >"$app/package.json"
  (cd "$app" && npm install --silent --no-audit --no-fund "$tarball") || die "npm install of $tarball failed"
  (cd "$app" && node --input-type=module -e '
    import { createTemporalStateClient, GetCurrentStateRequestSchema } from "@temporal-state/client";
    import { create, toBinary, fromBinary } from "@bufbuild/protobuf";
    const request = create(GetCurrentStateRequestSchema, { entityType: "player_profile", externalId: "player-001" });
    const back = fromBinary(GetCurrentStateRequestSchema, toBinary(GetCurrentStateRequestSchema, request));
    if (back.externalId !== "player-001") throw new Error("round trip failed");
    if (typeof createTemporalStateClient !== "function") throw new Error("no createTemporalStateClient");
  ') || die "the installed npm package does not import"
  if [[ -x "$TSC" ]]; then
    cat >"$app/check.ts" <<'EOF'
import type { Transport } from "@connectrpc/connect";
import { createTemporalStateClient, type Instance, type GetCurrentStateResponse } from "@temporal-state/client";

export async function currentVersion(transport: Transport): Promise<bigint | undefined> {
  const client = createTemporalStateClient(transport);
  const reply: GetCurrentStateResponse = await client.instances.getCurrentState({ entityType: "player_profile", externalId: "player-001" });
  const instance: Instance | undefined = reply.instance;
  return instance?.version;
}
EOF
    (cd "$app" && "$TSC" --noEmit --strict --module nodenext --moduleResolution nodenext --target es2022 --skipLibCheck false check.ts) \
      || die "tsc rejects a user's code against the installed package's .d.ts"
  else
    die "tsc missing ($TSC): run scripts/ensure-tools.sh"
  fi
  step_end
}

T0=$SECONDS
if [[ "$WHAT" == all || "$WHAT" == compat ]]; then
  check_metadata
  check_compat
fi
case "$WHAT" in all | packages | python) check_python ;; esac
case "$WHAT" in all | packages | typescript) check_typescript ;; esac
case "$WHAT" in all | packages | rust) check_rust ;; esac
case "$WHAT" in rust-api) check_rust_api ;; esac
log "all release checks passed ($WHAT, version $VERSION, $((SECONDS - T0)) s)"
