#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, only when missing: redis-server,
# PostgreSQL (tests start their own servers with initdb; the package's own cluster is never
# started), nginx (likewise), Debian's chromium, Node.js >= 20 with npm; then the pinned npm
# packages (package-lock.json) of tests/browser, tests/node and tests/dashclaw. Safe to run
# repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

node_major() {
  command -v node >/dev/null 2>&1 || { echo 0; return; }
  node --version | sed -E 's/^v([0-9]+).*/\1/'
}

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
# bench/rolling-restart.sh (run by load/tests/load_tool.rs) picks ports and summarises with it.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ "$(node_major)" -lt 20 ]; then need_apt+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then need_apt+=(npm); fi

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  # Keep the packages' scripts from starting a system postgres or nginx (port 5432, 80):
  # the tests start their own, on free ports.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  if [ "$made_policy" -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

if [ "$(node_major)" -lt 20 ]; then
  echo "install-test-deps: node $(node --version 2>/dev/null || echo missing) is older than 20 (playwright-core needs >= 20)" >&2
  exit 1
fi

for dir in tests/browser tests/node tests/dashclaw; do
  # npm ci reproduces package-lock.json exactly; skip when it is already installed.
  if ! (cd "$dir" && npm ls --depth=0 >/dev/null 2>&1); then
    echo "install-test-deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
