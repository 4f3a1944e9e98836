#!/usr/bin/env bash
# Builds the release binaries and benchmarks a local hive against the targets of the performance
# issue (scenarios 1 to 8) and of the tasks issue (9 to 14: tasks that run commands), with wrk as
# the load generator and etcd for the scenarios of several queens (each installed with apt-get
# when missing and run as root: Debian's wrk and etcd-server).
#
#   scripts/bench.sh [--quick] [HIVE-BENCH OPTIONS...]
#
# Every scenario starts its own queens and drones (and etcd) on 127.0.0.1 (free ports) and stops
# them after; the drones of the task scenarios run commands (`true`, `sleep`, `sh`) in work
# directories under the run's directory.
# Progress goes to stderr; the machine line and one markdown table of every number go to stdout, so
#   scripts/bench.sh > bench.md
# keeps just the table. The full run takes about 12 minutes, --quick about 3 (scenario 8 alone:
# a minute and a half, or half a minute with --quick; each task scenario: at most a minute and a
# quarter, or half a minute with --quick).
# Other options (--only 9,13, --keep-logs) go to hive-bench; see target/release/hive-bench --help.
# The wrk loads can be run by hand against any queen with scripts/wrk/hive.lua (see its header).
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

fail() {
    echo "bench: error: $*" >&2
    exit 1
}

# Debian packages the bench needs: wrk (the load) and etcd-server (the store of several queens).
install_missing bench wrk:wrk etcd:etcd-server
WRK="$(command -v wrk)"
command -v cargo >/dev/null || fail "cargo is not installed (see https://rustup.rs)"

echo "bench: cargo build --release -p hive -p hive-bench" >&2
cargo build --release -p hive -p hive-bench >&2 || fail "the release build failed"

# Run copies, so a rebuild of target/ while the bench runs cannot swap binaries under it.
BIN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/hive-bench-bin.XXXXXX")"
trap 'rm -rf "$BIN_DIR"' EXIT
cp target/release/larve target/release/hive-bench "$BIN_DIR/"

"$BIN_DIR/hive-bench" --larve "$BIN_DIR/larve" --wrk "$WRK" "$@"
