#!/usr/bin/env bash
# Stops the local hive started by scripts/hive-up.sh: exactly the larves (and the etcd of several
# queens) named in .hive/*.pid, and forgets its shape (.hive/shape and the NAME.cmd files), so the
# next scripts/hive-up.sh starts a new hive (new token, certificates, etcd data and queen's data
# dir).
# SIGTERM first (a clean stop: a leading queen hands leadership over at once), SIGKILL after ~5 s.
# Safe to run when nothing is running.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
GRACE_TENTHS=50 # ~5 s

say() { echo "hive-down: $*"; }

# Forgets the hive's shape and command lines: what scripts/hive-up.sh would restart from.
forget() {
    local cmds=("$HIVE_DIR"/*.cmd)
    if [[ -e "$SHAPE_FILE" ]] || ((${#cmds[@]} > 0)); then
        rm -f "$SHAPE_FILE" "${cmds[@]}"
        say "forgot the hive's shape; the next scripts/hive-up.sh starts a new hive"
    fi
}

shopt -s nullglob
pidfiles=("$HIVE_DIR"/*.pid)
if ((${#pidfiles[@]} == 0)); then
    say "no hive is running (no pid files in $SHOWN_DIR/); nothing to stop"
    forget
    exit 0
fi

names=()
pids=()
for pidfile in "${pidfiles[@]}"; do
    name="$(basename "$pidfile" .pid)"
    pid="$(piece_pid "$name")"
    if [[ -n "$pid" ]]; then
        names+=("$name")
        pids+=("$pid")
    else
        stale="$(pid_in "$pidfile")"
        say "$name (pid ${stale:-?}) is not running; removing its stale pid file"
        rm -f "$pidfile"
    fi
done

if ((${#pids[@]} == 0)); then
    say "no hive process was running; nothing to stop"
    forget
    exit 0
fi

failed=0
# stop INDEX...: SIGTERM to those pieces, then waits for them to go, polling; SIGKILL whatever is
# left after the grace period.
stop() {
    local idx i left pid name
    for idx in "$@"; do kill -TERM "${pids[$idx]}" 2>/dev/null || true; done
    for ((i = 0; i < GRACE_TENTHS; i++)); do
        left=0
        for idx in "$@"; do
            if is_ours "${pids[$idx]}"; then left=$((left + 1)); fi
        done
        ((left > 0)) || break
        sleep 0.1
    done
    for idx in "$@"; do
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
}

# The larves first, etcd last: a leading queen gives up her lease in etcd as she stops.
larves=()
stores=()
for idx in "${!names[@]}"; do
    if [[ "${names[$idx]}" == etcd ]]; then stores+=("$idx"); else larves+=("$idx"); fi
done
stop "${larves[@]}"
stop "${stores[@]}"
if ((failed)); then
    exit 1
fi
say "the hive is down (${#pids[@]} process(es) stopped); logs stay in $SHOWN_DIR/"
forget
