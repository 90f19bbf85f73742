#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine (run as root; only cargo needed):
# a 2-host lab (agents in network namespaces), 3 QEMU VMs on two L2 segments of the
# agents' virtual switch, every pair pings, then a summary. Everything is removed at
# the end. Pass --keep to leave the lab running (it prints how to remove it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" != 0 ]; then
  echo "demo: must run as root (the lab creates network namespaces)" >&2
  exit 1
fi

scripts/setup.sh
echo "demo: building (release)"
cargo build --release -p vnsnap-agent -p vnsnap-am -p vnsnap-testbed
exec target/release/vnsnap-testbed demo "$@"
