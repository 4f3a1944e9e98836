#!/usr/bin/env bash
# Builds the release binaries and benchmarks a local hive against the targets of the issues, one
# named scenario at a time (queen-under-load, failure-detection, ... placement-with-constraints;
# `target/release/hive-bench --help` lists them in the order they run), with wrk as the load
# generator, etcd for the scenarios of several queens and openssl for the TLS certificates (each
# installed with apt-get when missing and run as root: Debian's wrk, etcd-server and openssl).
#
#   scripts/bench.sh [--quick] [--only NAME[,NAME...]] [HIVE-BENCH OPTIONS...]
#
# Every scenario starts its own queens and drones (and etcd) on 127.0.0.1 (free ports) and stops
# them after; the drones of the task scenarios run commands (`true`, `sleep`, `sh`, `python3`) in
# work directories under the run's directory.
# The report goes into docs/benchmarks.md: a header with the machine and the commit measured,
# then one section per scenario with its table (measure, value, target, met) and notes. A run
# rewrites the header and the sections of the scenarios it ran and keeps the others, so
#   scripts/bench.sh --only task-latency
# updates that scenario's numbers alone. The same report (this run's sections only) goes to
# stdout, and progress to stderr.
# A full run takes about 25 minutes on two cores, --quick under 10 (the release builds apart).
# The longest scenarios take two to three minutes each (queen-under-load, the two fleets,
# several-queens, front-door-under-attack, cost-of-the-front); the quickest, footprint and
# placement-with-constraints, a few seconds.
#
# cost-of-the-front compares this larve with the larve from before the front door (commit
# 047a915). That one is built once, from the commit's files unpacked under the system's temporary
# directory (out of this workspace) with its own target directory under target/ (the first build
# takes a minute or two), and reused by later runs; without the commit (a shallow clone) or when
# its build fails, the bench runs without it and the scenario says so in its row.
# Other options (--keep-logs) go to hive-bench; see target/release/hive-bench --help.
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

# The larve from before the front door, for cost-of-the-front.
OLD_COMMIT=047a91515725343cc4ea08d16ba4b0e60ff7495f
OLD_TREE="${TMPDIR:-/tmp}/hive-larve-${OLD_COMMIT:0:7}-src"
OLD_TARGET="$ROOT/target/larve-${OLD_COMMIT:0:7}"

# True unless the arguments choose scenarios (--only) without cost-of-the-front, or name an old
# larve themselves.
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
    [[ -z "$only" || ",${only// /}," == *,cost-of-the-front,* ]]
}

# Builds the old larve (or finds it built) and copies it to $BIN_DIR; says why not on stderr.
build_old_larve() {
    if ! git rev-parse --verify --quiet "$OLD_COMMIT^{commit}" >/dev/null; then
        echo "bench: commit ${OLD_COMMIT:0:7} is not in this clone's history (a shallow clone?); cost-of-the-front runs without the larve from before the front door" >&2
        return 1
    fi
    if [[ ! -f "$OLD_TREE/Cargo.toml" ]]; then
        # Unpacked beside it and then moved, so that an interrupted unpack is never taken as whole.
        rm -rf "$OLD_TREE" "$OLD_TREE.part"
        mkdir -p "$OLD_TREE.part"
        echo "bench: git archive ${OLD_COMMIT:0:7} into $OLD_TREE" >&2
        if ! git archive "$OLD_COMMIT" | tar -x -C "$OLD_TREE.part" || ! mv "$OLD_TREE.part" "$OLD_TREE"; then
            rm -rf "$OLD_TREE.part"
            echo "bench: could not unpack commit ${OLD_COMMIT:0:7}; cost-of-the-front runs without the larve from before the front door" >&2
            return 1
        fi
    fi
    echo "bench: cargo build --release --bin larve in $OLD_TREE (target: ${OLD_TARGET#"$ROOT"/})" >&2
    if ! cargo build --release --bin larve --manifest-path "$OLD_TREE/Cargo.toml" --target-dir "$OLD_TARGET" >&2; then
        echo "bench: the build of commit ${OLD_COMMIT:0:7} failed; cost-of-the-front runs without the larve from before the front door" >&2
        return 1
    fi
    cp "$OLD_TARGET/release/larve" "$BIN_DIR/larve-${OLD_COMMIT:0:7}"
}

OLD_LARVE=()
if wants_old_larve "$@" && build_old_larve; then
    OLD_LARVE=(--old-larve "$BIN_DIR/larve-${OLD_COMMIT:0:7}")
fi

# The commit measured, as the report names it; changes not committed yet are said, apart from the
# report's own file.
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo "unknown")"
if ! git diff --quiet HEAD -- . ':(exclude)docs/benchmarks.md' 2>/dev/null; then
    COMMIT="$COMMIT with uncommitted changes"
fi

"$BIN_DIR/hive-bench" --larve "$BIN_DIR/larve" "${OLD_LARVE[@]}" --wrk "$WRK" \
    --doc docs/benchmarks.md --commit "$COMMIT" "$@"
