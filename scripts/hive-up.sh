#!/usr/bin/env bash
# Starts a local hive in the background: one queen and N drones (default 3).
#
#   scripts/hive-up.sh [N]
#
# Environment: HIVE_PORT (queen port, default 8080), HIVE_DRONE_PORT (first drone port, default 5001;
# drones use HIVE_DRONE_PORT .. HIVE_DRONE_PORT+N-1). Pid files and logs go to .hive/ in the repo root:
# queen.pid, queen.log (stderr), drone-PORT.pid, drone-PORT.log (stderr), drone-PORT.out (stdout: the
# task texts the drone prints), and token: a new random cluster token for every hive, readable only by
# you, which every larve loads with --token-file and submit.sh/status.sh send. Stop the hive with
# scripts/hive-down.sh.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
LARVE="$ROOT/target/release/larve"
QUEEN_PORT="${HIVE_PORT:-8080}"
DRONE_BASE="${HIVE_DRONE_PORT:-5001}"
COUNT="${1:-3}"
DEADLINE_SECS=15
DEMO_TEXT="hello from hive-up"

say() { echo "hive-up: $*"; }
fail() {
    echo "hive-up: error: $*" >&2
    exit 1
}

# Prints the last lines of log $1, indented, to stderr.
log_tail() {
    if [[ -s "$1" ]]; then
        echo "--- last lines of ${1#"$ROOT"/} ---" >&2
        tail -n 15 "$1" | sed 's/^/  /' >&2
    else
        echo "(${1#"$ROOT"/} is empty)" >&2
    fi
}

# --- arguments -----------------------------------------------------------------------------------

if ! [[ "$COUNT" =~ ^[0-9]{1,4}$ ]] || ((10#$COUNT < 1)); then
    fail "N must be a whole number of drones from 1 to 9999 (got '$COUNT'); usage: scripts/hive-up.sh [N]"
fi
COUNT=$((10#$COUNT))
if ! [[ "$QUEEN_PORT" =~ ^[0-9]{1,5}$ ]] || ((10#$QUEEN_PORT < 1 || 10#$QUEEN_PORT > 65535)); then
    fail "HIVE_PORT must be a port from 1 to 65535 (got '$QUEEN_PORT')"
fi
if ! [[ "$DRONE_BASE" =~ ^[0-9]{1,5}$ ]] || ((10#$DRONE_BASE < 1 || 10#$DRONE_BASE > 65535)); then
    fail "HIVE_DRONE_PORT must be a port from 1 to 65535 (got '$DRONE_BASE')"
fi
QUEEN_PORT=$((10#$QUEEN_PORT))
DRONE_BASE=$((10#$DRONE_BASE))
DRONE_LAST=$((DRONE_BASE + COUNT - 1))
((DRONE_LAST <= 65535)) || fail "$COUNT drones from port $DRONE_BASE would go past port 65535"
if ((QUEEN_PORT >= DRONE_BASE && QUEEN_PORT <= DRONE_LAST)); then
    fail "queen port $QUEEN_PORT is inside the drone ports $DRONE_BASE..$DRONE_LAST; change HIVE_PORT or HIVE_DRONE_PORT"
fi
command -v curl >/dev/null || fail "curl is needed but not installed"
command -v setsid >/dev/null || fail "setsid (util-linux) is needed but not installed"
command -v python3 >/dev/null || fail "python3 is needed (to read the queen's JSON) but not installed"

# --- an existing hive? ---------------------------------------------------------------------------

mkdir -p "$HIVE_DIR"
shopt -s nullglob

if [[ -e "$HIVE_DIR/queen.pid" ]] && is_larve "$(pid_in "$HIVE_DIR/queen.pid")"; then
    say "a hive is already running (queen pid $(pid_in "$HIVE_DIR/queen.pid")); nothing started. Check it with scripts/status.sh, stop it with scripts/hive-down.sh"
    exit 0
fi

live=()
for pidfile in "$HIVE_DIR"/*.pid; do
    if is_larve "$(pid_in "$pidfile")"; then
        live+=("$(basename "$pidfile" .pid) (pid $(pid_in "$pidfile"))")
    else
        say "removing stale pid file ${pidfile#"$ROOT"/}"
        rm -f "$pidfile"
    fi
done
if ((${#live[@]} > 0)); then
    fail "the queen is gone but larves of an earlier hive still run: ${live[*]}; stop them with scripts/hive-down.sh first"
fi

# --- build ---------------------------------------------------------------------------------------

say "building larve (cargo build --release --bin larve)"
(cd "$ROOT" && cargo build --release --bin larve) || fail "cargo build failed"
[[ -x "$LARVE" ]] || fail "build finished but $LARVE is missing"

# --- cluster token -------------------------------------------------------------------------------

TOKEN_FILE="$HIVE_DIR/token"
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE") || fail "could not write $TOKEN_FILE"
TOKEN="$(<"$TOKEN_FILE")"
((${#TOKEN} == 64)) || fail "could not read 32 random bytes from /dev/urandom"

# --- start ---------------------------------------------------------------------------------------

# Pid files this run wrote; on any failure they are stopped and removed.
STARTED=()
SUCCESS=0

stop_started() {
    local pidfile pid pids=() i
    for pidfile in "${STARTED[@]}"; do
        pid="$(pid_in "$pidfile")"
        if is_larve "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do
            if is_larve "$pid"; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if is_larve "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    for pidfile in "${STARTED[@]}"; do rm -f "$pidfile"; done
    if ((${#pids[@]} > 0)); then
        echo "hive-up: stopped what this run started (pids ${pids[*]})" >&2
    fi
}

on_exit() {
    local status=$?
    if ((!SUCCESS)); then
        stop_started
        ((status != 0)) || status=1
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME ARGS...: starts a detached larve, records its pid in .hive/NAME.pid.
start() {
    local name="$1"
    shift
    local out=/dev/null
    [[ "$name" == drone-* ]] && out="$HIVE_DIR/$name.out"
    # setsid: own session, no controlling terminal; nohup: immune to hangups. Both exec, so $! is the larve.
    setsid nohup "$LARVE" "$@" <"/dev/null" >"$out" 2>"$HIVE_DIR/$name.log" &
    local pid=$!
    echo "$pid" >"$HIVE_DIR/$name.pid"
    STARTED+=("$HIVE_DIR/$name.pid")
}

# Fails with the log tail if the larve recorded in .hive/NAME.pid is no longer running.
check_alive() {
    local name="$1" pid
    pid="$(pid_in "$HIVE_DIR/$name.pid")"
    if ! kill -0 "$pid" 2>/dev/null || [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo R)" == Z ]]; then
        local code=""
        # Reap it if it is our child, to learn its exit status.
        if wait "$pid" 2>/dev/null; then code=0; else code=$?; fi
        log_tail "$HIVE_DIR/$name.log"
        fail "$name (port $(port_of "$name")) exited${code:+ with status $code} during startup; see .hive/$name.log"
    fi
}

port_of() {
    if [[ "$1" == queen ]]; then echo "$QUEEN_PORT"; else echo "${1#drone-}"; fi
}

QUEEN_URL="http://127.0.0.1:$QUEEN_PORT"

say "starting queen on port $QUEEN_PORT"
start queen --queen --port "$QUEEN_PORT" --token-file "$TOKEN_FILE"

deadline=$((SECONDS + DEADLINE_SECS))
until health="$(curl -s --max-time 1 "$QUEEN_URL/healthz")" && [[ "$health" == *'"Mode.QUEEN"'* ]]; do
    check_alive queen
    ((SECONDS < deadline)) || {
        log_tail "$HIVE_DIR/queen.log"
        fail "the queen did not answer $QUEEN_URL/healthz within ${DEADLINE_SECS}s"
    }
    sleep 0.1
done
check_alive queen

say "starting $COUNT drone(s) on ports $DRONE_BASE..$DRONE_LAST"
expected=()
for ((port = DRONE_BASE; port <= DRONE_LAST; port++)); do
    start "drone-$port" --queen-host "127.0.0.1:$QUEEN_PORT" --port "$port" --token-file "$TOKEN_FILE"
    expected+=("127.0.0.1:$port")
done

# How many of the expected drone addresses the queen's /healthz lists (its drones: address -> name).
registered() {
    { hive_curl -s --max-time 1 "$QUEEN_URL/healthz" || true; } | python3 -c '
import json, sys
try:
    drones = json.load(sys.stdin).get("drones") or {}
except ValueError:
    drones = {}
print(sum(1 for address in sys.argv[1:] if address in drones))
' "${expected[@]}"
}

say "waiting for $COUNT drone(s) to register with the queen"
deadline=$((SECONDS + DEADLINE_SECS))
while :; do
    check_alive queen
    for ((port = DRONE_BASE; port <= DRONE_LAST; port++)); do check_alive "drone-$port"; done
    n="$(registered)"
    ((n == COUNT)) && break
    ((SECONDS < deadline)) || {
        log_tail "$HIVE_DIR/queen.log"
        fail "only $n of $COUNT drones registered within ${DEADLINE_SECS}s; see the logs in .hive/"
    }
    sleep 0.2
done

# --- demo task -----------------------------------------------------------------------------------

say "submitting a demo task: $DEMO_TEXT"
body="$(python3 -c 'import json, sys; print(json.dumps({"text": sys.argv[1]}))' "$DEMO_TEXT")"
reply="$(hive_curl -sS --max-time 30 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @- "$QUEEN_URL/submit_task" <<<"$body")" || fail "could not reach the queen to submit the demo task"
split_reply "$reply"
code="$REPLY_CODE"
reply="$REPLY_BODY"
[[ "$code" == 2?? ]] || fail "the queen answered the demo task with HTTP $code: $reply"
say "queen answered: $(python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' <<<"$reply" 2>/dev/null || echo "$reply")"

# The drone prints the text before it answers the queen, so the line is there by now; poll briefly anyway.
printed_by=""
deadline=$((SECONDS + 5))
while [[ -z "$printed_by" ]] && ((SECONDS < deadline)); do
    for ((port = DRONE_BASE; port <= DRONE_LAST; port++)); do
        out="$HIVE_DIR/drone-$port.out"
        if grep -qxF "$DEMO_TEXT" "$out"; then
            printed_by="$(basename "$out" .out)"
            break
        fi
    done
    [[ -n "$printed_by" ]] || sleep 0.1
done
if [[ -n "$printed_by" ]]; then
    say "the demo task was printed by $printed_by (port ${printed_by#drone-}) in .hive/$printed_by.out"
else
    say "warning: no .hive/drone-*.out holds the demo text yet"
fi

# --- done ----------------------------------------------------------------------------------------

check_alive queen
for ((port = DRONE_BASE; port <= DRONE_LAST; port++)); do check_alive "drone-$port"; done
SUCCESS=1

say "queen health ($QUEEN_URL/healthz):"
health="$(hive_curl -s --max-time 2 "$QUEEN_URL/healthz" || true)"
python3 -m json.tool <<<"$health" 2>/dev/null || echo "$health"
cat <<MSG
hive-up: the hive is up: queen on port $QUEEN_PORT, $COUNT drone(s) on ports $DRONE_BASE..$DRONE_LAST; logs in .hive/
  submit a task: scripts/submit.sh TEXT
  check it:      scripts/status.sh
  stop it:       scripts/hive-down.sh
MSG
if [[ "$QUEEN_PORT" != 8080 ]]; then
    echo "  (submit.sh and status.sh need HIVE_PORT=$QUEEN_PORT set too)"
fi
