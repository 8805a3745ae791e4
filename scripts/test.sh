#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server, postgresql, nginx, chromium, node + npm packages of tests/browser,
# tests/node and tests/dashclaw, when missing.
bash scripts/install-test-deps.sh

# Every test spawns its own redis-server on a free port; none uses a shared one.
cargo test --workspace --all-targets --no-fail-fast "$@"
