#!/usr/bin/env bash
# Builds the release binaries and benchmarks a local hive against the performance issue's targets.
#
#   scripts/bench.sh [--quick] [HIVE-BENCH OPTIONS...]
#
# Every scenario starts its own queen and drones on 127.0.0.1 (free ports) and stops them after.
# Progress goes to stderr; the machine line and one markdown table of every number go to stdout, so
#   scripts/bench.sh > bench.md
# keeps just the table. The full run takes about 2 to 3 minutes, --quick about half a minute. Other
# options (--only 1,4, --clients N, --seconds S, --keep-logs) go to hive-bench; see
# target/release/hive-bench --help.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

fail() {
    echo "bench: error: $*" >&2
    exit 1
}

command -v cargo >/dev/null || fail "cargo is not installed (see https://rustup.rs)"

echo "bench: cargo build --release" >&2
cargo build --release >&2 || fail "the release build failed"

# Run copies, so a rebuild of target/ while the bench runs cannot swap binaries under it.
BIN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/hive-bench-bin.XXXXXX")"
trap 'rm -rf "$BIN_DIR"' EXIT
cp target/release/larve target/release/hive-bench "$BIN_DIR/"

"$BIN_DIR/hive-bench" --larve "$BIN_DIR/larve" "$@"
