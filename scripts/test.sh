#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (run as root; only cargo needed):
# system packages and guest kernel, build, fmt, clippy, unit and system tests.
# Idempotent: every step reuses what an earlier run left (apt, kernel cache, target/).
#
# Environment:
#   VNSNAP_TEST_THREADS  test threads per test binary (default 1: the system tests boot
#                        QEMU TCG guests and fight over CPU when run side by side)
#   VNSNAP_SKIP_LINT=1   skip fmt and clippy (local iteration only; CI never sets it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" != 0 ]; then
  echo "test: must run as root (system tests create network namespaces)" >&2
  exit 1
fi

START=$SECONDS
FAILED=()
step() {
  echo
  echo "=== test: $* ($((SECONDS - START)) s elapsed)"
}
# Runs a check; a failure is recorded and the remaining checks still run, so one run
# reports every problem. Setup and build failures stop the run (nothing else could work).
check() {
  local name="$1"
  shift
  step "$name"
  if ! "$@"; then
    echo "=== test: FAILED: $name"
    FAILED+=("$name")
  fi
}

step "setup (packages, guest kernel)"
scripts/setup.sh

# rustfmt and clippy come with rustup toolchains as components; add them if missing.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  else
    # The tools of Debian's current Rust (see setup.sh), not its 1.63 rustfmt/rust-clippy.
    apt-get install -y -qq --no-install-recommends rustfmt-web rust-web-clippy >/dev/null
  fi
fi

step "build workspace binaries"
cargo build --workspace --bins

step "build guest image (static guest program, initramfs, data disk)"
target/debug/vnsnap-testbed image build

if [ -z "${VNSNAP_SKIP_LINT:-}" ]; then
  check "cargo fmt --check" cargo fmt --all --check
  check "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
fi

# System tests find vnsnap-agent and vnsnap-am next to their own executable's parent
# directory (target/debug), built above. --no-fail-fast: every test binary runs.
check "cargo test" cargo test --workspace --no-fail-fast -- --test-threads="${VNSNAP_TEST_THREADS:-1}"

if ((${#FAILED[@]})); then
  step "FAILED: ${FAILED[*]} (after $((SECONDS - START)) s)"
  exit 1
fi
step "all passed in $((SECONDS - START)) s"
