#!/usr/bin/env bash
# Runs one system test N times in a row under CPU load, stopping at the first failure:
# the check that a test waits on events and not on time (issue 17, item 9).
#
#   scripts/repeat-test.sh [-n RUNS] [-l LOAD_WORKERS] TEST_BINARY TEST_NAME
#   scripts/repeat-test.sh -n 20 snapshot_rounds checker_detects_broken_invariants
#
# LOAD_WORKERS (default: the number of CPUs) stress-ng CPU workers run for the whole
# loop; 0 runs without load. Needs the workspace built (scripts/test.sh does it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

RUNS=20
LOAD="$(nproc)"
while getopts "n:l:" o; do
  case "$o" in
    n) RUNS="$OPTARG" ;;
    l) LOAD="$OPTARG" ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || { echo "usage: $0 [-n RUNS] [-l LOAD_WORKERS] TEST_BINARY TEST_NAME" >&2; exit 2; }
BIN="$1"
NAME="$2"

if ((LOAD > 0)); then
  command -v stress-ng >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stress-ng >/dev/null
  }
  stress-ng --cpu "$LOAD" --quiet &
  STRESS=$!
  trap 'kill "$STRESS" 2>/dev/null || true' EXIT
fi

cargo build --workspace --bins -q
# The test executable, built once: every run is the same code whatever changes in the tree.
EXE="$(cargo test -p vnsnap-testbed --test "$BIN" --no-run --message-format=json -q |
  python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m.get("profile", {}) and m["profile"]["test"]:
        print(m["executable"])')"
[ -x "$EXE" ] || { echo "no test executable for $BIN" >&2; exit 1; }
for i in $(seq 1 "$RUNS"); do
  start=$SECONDS
  if ! (cd testbed && "$EXE" --exact "$NAME" --test-threads=1) >"/tmp/repeat-$BIN-$i.log" 2>&1; then
    echo "run $i of $RUNS: FAILED after $((SECONDS - start)) s (log: /tmp/repeat-$BIN-$i.log, load: $(cut -d' ' -f1-3 /proc/loadavg))"
    exit 1
  fi
  echo "run $i of $RUNS: passed in $((SECONDS - start)) s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
done
echo "$RUNS runs in a row passed with $LOAD stress-ng CPU workers"
