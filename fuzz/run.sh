#!/usr/bin/env bash
# Builds and runs every fuzz target for the given number of seconds each (default 20).
#   bash fuzz/run.sh 10            # CI budget
#   bash fuzz/run.sh 600 sse_writer # one target, ten minutes
# Uses cargo-fuzz (libFuzzer) on the stable toolchain with no sanitizer (the hub is safe
# Rust: panics, overflow checks and debug assertions are what a crash means here).
# Installs cargo-fuzz from crates.io if it is missing. Exits non-zero on the first crash;
# the crashing input is left in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-20}"
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version "^0.13"
fi
# libFuzzer is compiled from C++ by libfuzzer-sys.
command -v c++ >/dev/null 2>&1 || {
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++
}

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

cargo fuzz build --sanitizer none

for target in "${targets[@]}"; do
  echo "== fuzz ${target}: ${seconds}s"
  mkdir -p "corpus/${target}"
  # New inputs go to a scratch dir so a short CI run leaves the committed corpus as is.
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  cargo fuzz run --sanitizer none "$target" "$scratch" "corpus/${target}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1
  rm -rf "$scratch"
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
