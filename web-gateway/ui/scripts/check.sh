#!/usr/bin/env bash
# Everything the console needs to pass, in the order CI runs it:
#   1. npm ci (only when package-lock.json changed since the last install);
#   2. type check and the Vitest tests;
#   3. a fresh build, which must equal the committed dist/ (the gateway embeds dist/, so a stale
#      one would ship old code: rebuild with `npm run build` in web-gateway/ui and commit);
#   4. the end-to-end tests in Chromium against SERVER_BIN (embedded store, and PostgreSQL when
#      TEST_DATABASE_URL is set; sign-in with API keys and OpenID Connect), then the figures
#      (printed, never asserted).
#
#   SERVER_BIN=target/debug/temporal-state-server web-gateway/ui/scripts/check.sh
# SERVER_BIN unset: steps 1-3 only. The e2e harness picks the console as e2e/harness.mjs says
# (CONSOLE_URL, GATEWAY_BIN, or its own static server).
set -euo pipefail

UI="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$UI"
log() { printf 'console-check: %s\n' "$*" >&2; }

stamp=node_modules/.console-lock.json
if ! cmp -s package-lock.json "$stamp"; then
  log "npm ci (package-lock.json changed)"
  npm ci --no-audit --no-fund
  cp package-lock.json "$stamp"
fi

log "type check"
npm run --silent typecheck
log "vitest"
npx vitest run

log "build, then compare with the committed dist/"
npx vite build --logLevel warn
if ! git diff --exit-code --stat -- dist || [[ -n "$(git status --porcelain -- dist)" ]]; then
  git status --short -- dist >&2
  log "ERROR: web-gateway/ui/dist is stale: run \`npm run build\` in web-gateway/ui and commit dist/"
  exit 1
fi
log "dist/ is up to date"

if [[ -z "${SERVER_BIN:-}" ]]; then
  log "SERVER_BIN unset: skipping the end-to-end test and the figures"
  exit 0
fi
log "end-to-end in Chromium against $SERVER_BIN"
node --preserve-symlinks --test --test-concurrency=1 e2e/console.e2e.mjs e2e/auth.e2e.mjs
log "figures"
node --preserve-symlinks e2e/figures.mjs
