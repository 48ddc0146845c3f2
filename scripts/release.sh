#!/usr/bin/env bash
# Bumps the one version of the API and all its clients, as one commit:
#
#   scripts/release.sh X.Y.Z
#
# It refuses a dirty tree (uncommitted or untracked files), a version that is not above the
# current one, an empty "Unreleased" section in CHANGELOG.md, and a bump too small for the API:
# when proto/ breaks compatibility with the last release (buf breaking against
# proto/release/v<current>.binpb), X.Y.Z must be a breaking bump (0.x: the minor; else the major).
# Then it
#   - sets X.Y.Z in Cargo.toml ([workspace.package] and the workspace's dependency entries of
#     temporal-state-proto and temporal-state-client), Cargo.lock, client-sdk/python/pyproject.toml,
#     temporal_state.__version__, client-sdk/typescript/package.json and its package-lock.json;
#   - turns CHANGELOG.md's Unreleased section into "## [X.Y.Z] - today" and updates its links;
#   - regenerates the Python and TypeScript clients (scripts/generate-clients.sh);
#   - writes the API baselines proto/release/vX.Y.Z.binpb and client-sdk/rust/api/vX.Y.Z.txt
#     (the Rust SDK's public API, scripts/rust-public-api.py), which scripts/check-release.sh checks
#     every later change against;
#   - runs scripts/check-release.sh compat and commits "Release X.Y.Z".
# It neither tags nor publishes: it prints those steps, to run once CI is green on main.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/tools/bin:$ROOT/tools/node_modules/.bin:$PATH"

die() { printf 'release: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'release: %s\n' "$*" >&2; }

[[ $# -eq 1 ]] || { echo "usage: $0 X.Y.Z" >&2; exit 2; }
NEW="$1"
[[ "$NEW" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]] || die "'$NEW' is not a version X.Y.Z"

BUF="$ROOT/tools/node_modules/.bin/buf"
PY="$ROOT/tools/.venv/bin/python"
[[ -x "$BUF" && -x "$PY" ]] || die "tools missing: run scripts/ensure-tools.sh"

[[ -z "$(git status --porcelain)" ]] || die "the tree is dirty (git status): commit or stash first"

OLD="$("$PY" -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')"
REPO_URL="$("$PY" -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["repository"])')"
[[ "$NEW" != "$OLD" && "$(printf '%s\n%s\n' "$OLD" "$NEW" | sort -V | tail -n 1)" == "$NEW" ]] \
  || die "$NEW is not above the current version $OLD"

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

# The API against the last release: a breaking change needs a breaking bump.
baseline="proto/release/v$OLD.binpb"
[[ -f "$baseline" ]] || die "no API baseline $baseline for the current version $OLD"
rc=0
out="$("$BUF" breaking --against "$baseline" 2>&1)" || rc=$?
if [[ "$rc" -eq 100 ]]; then
  printf '%s\n' "$out" >&2
  is_breaking_bump "$OLD" "$NEW" \
    || die "the API breaks compatibility with $OLD (above): $NEW must be a breaking bump ($([[ "${OLD%%.*}" == 0 ]] && echo 'a minor bump while 0.x' || echo 'a major bump'))"
  log "the API breaks $OLD: $OLD -> $NEW is a breaking bump, so that is allowed"
elif [[ "$rc" -ne 0 ]]; then
  die "buf breaking failed to run: $out"
fi

# The Rust SDK's public API against the last release, the same way.
rust_api="$(mktemp)"
RUSTC_BOOTSTRAP=1 cargo rustdoc --quiet -p temporal-state-client --lib -- -Z unstable-options --output-format json \
  || die "rustdoc could not write the SDK's JSON"
"$PY" scripts/rust-public-api.py target/doc/temporal_state_client.json >"$rust_api"
[[ -f "client-sdk/rust/api/v$OLD.txt" ]] || die "no Rust API baseline client-sdk/rust/api/v$OLD.txt"
if ! "$PY" scripts/rust-public-api.py --diff "client-sdk/rust/api/v$OLD.txt" "$rust_api" >"$rust_api.diff"; then
  grep '^-' "$rust_api.diff" | head -n 20 >&2
  is_breaking_bump "$OLD" "$NEW" \
    || die "the Rust SDK's public API breaks $OLD (above): $NEW must be a breaking bump"
  log "the Rust SDK breaks $OLD: $OLD -> $NEW is a breaking bump, so that is allowed"
fi

log "bumping $OLD -> $NEW"
"$PY" - "$OLD" "$NEW" "$REPO_URL" "$(date -u +%Y-%m-%d)" <<'EOF'
import json, re, sys
old, new, repo, today = sys.argv[1:]

# Every new text is made and checked first, and only then written: a refusal leaves no edit.
files = {}

def text(path):
    if path not in files:
        files[path] = open(path).read()
    return files[path]

def edit(path, pattern, replacement, count=1):
    updated, n = re.subn(pattern, replacement, text(path), flags=re.M)
    if n != count:
        sys.exit(f"release: ERROR: {path}: expected {count} match(es) of {pattern!r}, found {n}")
    files[path] = updated

# CHANGELOG.md: Unreleased becomes the new version; its links follow.
m = re.search(r"^## \[Unreleased\]\n(.*?)(?=^## \[)", text("CHANGELOG.md"), re.M | re.S)
if not m:
    sys.exit("release: ERROR: CHANGELOG.md has no '## [Unreleased]' section followed by a version")
if not m.group(1).strip():
    sys.exit("release: ERROR: CHANGELOG.md's Unreleased section is empty: write down what changed first")
changelog = text("CHANGELOG.md")
files["CHANGELOG.md"] = (changelog[:m.start()] + f"## [Unreleased]\n\n## [{new}] - {today}\n\n"
                         + m.group(1).strip() + "\n\n" + changelog[m.end():])
edit("CHANGELOG.md", r"^\[Unreleased\]: .*$",
     f"[Unreleased]: {repo}/compare/v{new}...HEAD\n[{new}]: {repo}/compare/v{old}...v{new}")

# Cargo.toml: the workspace version, then the two published crates' dependency entries.
edit("Cargo.toml", r'(\[workspace\.package\]\nversion = )"[^"]+"', rf'\g<1>"{new}"')
edit("Cargo.toml", r'^(temporal-state-(?:proto|client) = \{ path = "[^"]+", version = )"[^"]+"', rf'\g<1>"{new}"', count=2)
edit("client-sdk/python/pyproject.toml", r'^version = "[^"]+"', f'version = "{new}"')
edit("client-sdk/python/src/temporal_state/__init__.py", r'^__version__ = "[^"]+"', f'__version__ = "{new}"')
for path in ("client-sdk/typescript/package.json", "client-sdk/typescript/package-lock.json"):
    data = json.loads(text(path))
    data["version"] = new
    if "packages" in data:
        data["packages"][""]["version"] = new
    files[path] = json.dumps(data, indent=2, ensure_ascii=False) + "\n"

for path, content in files.items():
    open(path, "w").write(content)
EOF

trap 'log "failed after editing files: undo with git checkout -- . && git clean -fd proto/release"' ERR
# Cargo.lock follows the members' new version (no other dependency moves).
cargo update --workspace --offline --quiet
bash scripts/generate-clients.sh >&2
"$BUF" build --exclude-source-info -o "proto/release/v$NEW.binpb"
cp "$rust_api" "client-sdk/rust/api/v$NEW.txt"
bash scripts/check-release.sh compat

git add -A
git commit --quiet -m "Release $NEW" -m "scripts/release.sh $NEW: every manifest, CHANGELOG.md, the generated clients and the API baselines proto/release/v$NEW.binpb and client-sdk/rust/api/v$NEW.txt."
log "committed 'Release $NEW'. Once CI is green on main:"
cat >&2 <<EOF
  git tag -a v$NEW -m "Release $NEW" && git push origin v$NEW
  cargo publish -p temporal-state-proto -p temporal-state-client
  (python -m build client-sdk/python --outdir dist && twine upload dist/*)
  (cd client-sdk/typescript && npm publish)
EOF
