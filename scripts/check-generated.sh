#!/usr/bin/env bash
# Fails when the committed Python and TypeScript clients differ from a fresh generation from
# proto/ (run scripts/generate-clients.sh to fix). Needs the tools of scripts/ensure-tools.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/generate-clients.sh" --check
