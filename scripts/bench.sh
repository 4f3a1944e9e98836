#!/usr/bin/env bash
# Builds the release binaries and benchmarks a local hive against the targets of the performance
# issue (scenarios 1 to 8), of the tasks issue (9 to 14: tasks that run commands), of the front
# door (15: attacks by unauthenticated clients; 16: the front's cost), and, named rather than
# numbered, of the durable store (durable-store-task-submission, -task-throughput, -recovery), of
# containment (containment: cgroups against process groups, and cancels), of scoped tokens
# (scoped-tokens), of placement by labels (placement-with-constraints: the scheduler's
# placement over 1,000 drones, in a second, no larve started) and of the event stream
# (event-watchers: 1,000 clients following GET /events, about two minutes), with wrk as the load
# generator, etcd for the scenarios of several queens and openssl for the TLS certificates (each
# installed with apt-get when missing and run as root: Debian's wrk, etcd-server and openssl).
#
#   scripts/bench.sh [--quick] [HIVE-BENCH OPTIONS...]
#
# Every scenario starts its own queens and drones (and etcd) on 127.0.0.1 (free ports) and stops
# them after; the drones of the task scenarios run commands (`true`, `sleep`, `sh`, `python3`) in work
# directories under the run's directory.
# Progress goes to stderr; the machine line and one markdown table of every number go to stdout, so
#   scripts/bench.sh > bench.md
# keeps just the table. The full run takes about 15 minutes, --quick about 4 (scenario 8 alone:
# a minute and a half, or half a minute with --quick; each task scenario: at most a minute and a
# quarter, or half a minute with --quick; scenarios 15 and 16 together: three minutes,
# or under a minute with --quick).
#
# Scenario 16 compares this larve with the larve from before the front door (commit 047a915). That
# one is built once, from the commit's files unpacked under the system's temporary directory (out
# of this workspace) with its own target directory under target/ (the first build takes a minute
# or two), and reused by later runs; without the commit (a shallow clone) or when its build fails, the bench runs without
# it and scenario 16 says so in its row.
# The durable store's three scenarios take about two minutes together.
# Other options (--only 9,13,durable-store-recovery,containment, --keep-logs) go to hive-bench; see
# target/release/hive-bench --help.
# The wrk loads can be run by hand against any queen with scripts/wrk/hive.lua (see its header).
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

fail() {
    echo "bench: error: $*" >&2
    exit 1
}

# Debian packages the bench needs: wrk (the load), etcd-server (the store of several queens),
# openssl (the certificates of the TLS scenarios) and python3 (the tasks the containment scenario
# cancels handle SIGTERM in Python).
install_missing bench wrk:wrk etcd:etcd-server openssl:openssl python3:python3
WRK="$(command -v wrk)"
command -v cargo >/dev/null || fail "cargo is not installed (see https://rustup.rs)"

echo "bench: cargo build --release -p hive -p hive-bench" >&2
cargo build --release -p hive -p hive-bench >&2 || fail "the release build failed"

# Run copies, so a rebuild of target/ while the bench runs cannot swap binaries under it.
BIN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/hive-bench-bin.XXXXXX")"
trap 'rm -rf "$BIN_DIR"' EXIT
cp target/release/larve target/release/hive-bench "$BIN_DIR/"

# The larve from before the front door, for scenario 16.
OLD_COMMIT=047a91515725343cc4ea08d16ba4b0e60ff7495f
OLD_TREE="${TMPDIR:-/tmp}/hive-larve-${OLD_COMMIT:0:7}-src"
OLD_TARGET="$ROOT/target/larve-${OLD_COMMIT:0:7}"

# True unless the arguments choose scenarios (--only) without 16, or name an old larve themselves.
wants_old_larve() {
    local arg only=""
    while (($# > 0)); do
        arg="$1"
        shift
        case "$arg" in
            --old-larve | --old-larve=* | -h | --help) return 1 ;;
            --only) only="${1:-}" ;;
            --only=*) only="${arg#--only=}" ;;
        esac
    done
    [[ -z "$only" || ",${only// /}," == *,16,* ]]
}

# Builds the old larve (or finds it built) and copies it to $BIN_DIR; says why not on stderr.
build_old_larve() {
    if ! git rev-parse --verify --quiet "$OLD_COMMIT^{commit}" >/dev/null; then
        echo "bench: commit ${OLD_COMMIT:0:7} is not in this clone's history (a shallow clone?); scenario 16 runs without the larve from before the front door" >&2
        return 1
    fi
    if [[ ! -f "$OLD_TREE/Cargo.toml" ]]; then
        # Unpacked beside it and then moved, so that an interrupted unpack is never taken as whole.
        rm -rf "$OLD_TREE" "$OLD_TREE.part"
        mkdir -p "$OLD_TREE.part"
        echo "bench: git archive ${OLD_COMMIT:0:7} into $OLD_TREE" >&2
        if ! git archive "$OLD_COMMIT" | tar -x -C "$OLD_TREE.part" || ! mv "$OLD_TREE.part" "$OLD_TREE"; then
            rm -rf "$OLD_TREE.part"
            echo "bench: could not unpack commit ${OLD_COMMIT:0:7}; scenario 16 runs without the larve from before the front door" >&2
            return 1
        fi
    fi
    echo "bench: cargo build --release --bin larve in $OLD_TREE (target: ${OLD_TARGET#"$ROOT"/})" >&2
    if ! cargo build --release --bin larve --manifest-path "$OLD_TREE/Cargo.toml" --target-dir "$OLD_TARGET" >&2; then
        echo "bench: the build of commit ${OLD_COMMIT:0:7} failed; scenario 16 runs without the larve from before the front door" >&2
        return 1
    fi
    cp "$OLD_TARGET/release/larve" "$BIN_DIR/larve-${OLD_COMMIT:0:7}"
}

OLD_LARVE=()
if wants_old_larve "$@" && build_old_larve; then
    OLD_LARVE=(--old-larve "$BIN_DIR/larve-${OLD_COMMIT:0:7}")
fi

"$BIN_DIR/hive-bench" --larve "$BIN_DIR/larve" "${OLD_LARVE[@]}" --wrk "$WRK" "$@"
