#!/usr/bin/env bash
# Stops the local hive started by scripts/hive-up.sh: exactly the larves (and the etcd of several
# queens) named in .hive/*.pid.
# SIGTERM first, SIGKILL after ~5 s. Safe to run when nothing is running.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
GRACE_TENTHS=50 # ~5 s

say() { echo "hive-down: $*"; }

shopt -s nullglob
pidfiles=("$HIVE_DIR"/*.pid)
if ((${#pidfiles[@]} == 0)); then
    say "no hive is running (no pid files in $SHOWN_DIR/); nothing to stop"
    exit 0
fi

names=()
pids=()
for pidfile in "${pidfiles[@]}"; do
    name="$(basename "$pidfile" .pid)"
    pid="$(pid_in "$pidfile")"
    if is_ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        names+=("$name")
        pids+=("$pid")
    else
        say "$name (pid ${pid:-?}) is not running; removing its stale pid file"
        rm -f "$pidfile"
    fi
done

if ((${#pids[@]} == 0)); then
    say "no hive process was running; nothing to stop"
    exit 0
fi

# Wait for them to go, polling; SIGKILL whatever is left after the grace period.
for ((i = 0; i < GRACE_TENTHS; i++)); do
    left=0
    for pid in "${pids[@]}"; do
        if is_ours "$pid"; then left=$((left + 1)); fi
    done
    ((left > 0)) || break
    sleep 0.1
done

failed=0
for idx in "${!pids[@]}"; do
    pid="${pids[$idx]}"
    name="${names[$idx]}"
    if is_ours "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            is_ours "$pid" || break
            sleep 0.1
        done
        if is_ours "$pid"; then
            echo "hive-down: error: $name (pid $pid) survived SIGKILL; keeping $SHOWN_DIR/$name.pid" >&2
            failed=1
            continue
        fi
        say "stopped $name (pid $pid) with SIGKILL; it ignored SIGTERM for 5 s"
    else
        say "stopped $name (pid $pid)"
    fi
    rm -f "$HIVE_DIR/$name.pid"
done
if ((failed)); then
    exit 1
fi
say "the hive is down (${#pids[@]} process(es) stopped); logs stay in $SHOWN_DIR/"
