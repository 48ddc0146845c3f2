#!/usr/bin/env bash
# The project's one "run all tests" command:
#   scripts/test.sh [extra cargo test args...]     e.g. scripts/test.sh -- --nocapture
# Makes sure PostgreSQL, Redis and NATS (JetStream) answer on 127.0.0.1 and that the tools
# (buf, grpcurl) are installed, then runs every test of the workspace against those services.
# The TEST_*_URL variables below are only defaults: set them to point the tests elsewhere.
# TEST_DATABASE_URL hosts every test's own database; TEST_REDIS_URL is the shared Redis the fuzz
# test caches in. Every other Redis and NATS a test uses is a process of its own on a spare port
# (server/tests/common/procs.rs), so there is no TEST_NATS_URL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/ensure-services.sh
bash scripts/ensure-tools.sh

export PATH="$ROOT/tools/bin:$ROOT/tools/node_modules/.bin:$PATH"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"

cargo test --workspace --all-targets "$@"
# --all-targets leaves out documentation examples: they are the SDK's promised, compiling examples.
cargo test --workspace --doc "$@"
# The web console: Vitest, the committed dist/ against a fresh build, and the end-to-end test in
# Chromium against the server binary the workspace tests just built.
cargo build -p temporal-state-server
SERVER_BIN="$ROOT/target/debug/temporal-state-server" bash web-gateway/ui/scripts/check.sh
