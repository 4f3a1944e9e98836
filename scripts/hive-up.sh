#!/usr/bin/env bash
# Starts a local hive in the background: one queen (or several sharing etcd) and N drones that run
# commands; run again, brings back whatever of that hive is missing. scripts/hive-up.sh --help
# says how (the help text below is the reference).
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
LARVE="${HIVE_LARVE:-$ROOT/target/release/larve}"
DEADLINE_SECS=15
# A drone registers again once its queen has not checked on it for 3 heartbeat intervals (10 s
# each by default), so a queen alone without a data dir (a hive started before she had one) that
# restarts learns her drones within this.
REREGISTER_SECS=30
# The leader's lease when --leader-ttl is not given (the queens are started without it).
LEADER_TTL_SECS=5
DEMO_TEXT="hello from hive-up"
# The real command hive-up runs as a task, and the one its printed lines run.
TASK_JSON='{"command": ["echo", "hi"]}'
TASK_SHOWN="echo hi"
TASK_WAIT_SECS=30
USAGE="usage: scripts/hive-up.sh [--queens Q] [--tls] [N]   (--help says more)"

help() {
    cat <<HELP
usage: scripts/hive-up.sh [--queens Q] [--tls] [N]

Starts a local hive in the background: Q queens and N drones that run commands (--allow-exec).
It hands the hive the tutorial's demo task, runs one real command as a task, and prints
ready-to-paste curl and larve lines. Every port it needs must be free: if one is taken, it says
which and by what, and starts nothing. Run again, it brings back whatever of the hive it started
is missing (a queen, a drone or etcd that died) with its old flags, token, certificates and etcd
data, and starts nothing when all of it runs. A queen alone keeps her drones and tasks in a data
dir (--data-dir), so one that died comes back with all of them, and the attempts her drones kept
running end as if she never left. Stop the hive with scripts/hive-down.sh; the next hive starts
with a new data dir, as with a new token.

options:
  N             drones, 1 to 9999 (default 3)
  --queens Q    queens, 1 to 9 (default 1); several share one registry in a local etcd that the
                script starts (installing Debian's etcd-server when it is missing); one leads
  --tls         mutual TLS everywhere (larves and etcd), with a new CA and certificates made
                with openssl in HIVE_DIR/tls/: ca.pem the CA, larve.pem/.key the larves',
                etcd.pem/.key etcd's, user.pem/.key the one curl, larve, submit.sh and
                status.sh show
  -h, --help    print this help

On a hive that is running (or partly), N, --queens and --tls may be left out; given, they must
match it (to change its shape, stop it first with scripts/hive-down.sh).

environment:
  HIVE_PORT        first queen's port; queens use HIVE_PORT..HIVE_PORT+Q-1 (default 8080)
  HIVE_DRONE_PORT  first drone's port; drones use HIVE_DRONE_PORT..+N-1 (default 5001)
  HIVE_ETCD_PORT   etcd's client port, and the next one for its peers (default 12379)
  HIVE_DIR         where the hive's files go (default: .hive/ in the repo root)
  HIVE_LARVE       the larve binary to run (default: build target/release/larve with cargo)
  HIVE_TOKEN       not passed on: the hive's larves take its own token from HIVE_DIR/token

files in HIVE_DIR:
  token            the cluster token, new for every hive, readable only by you
  client-tokens    the queens' client tokens (NAME SCOPE SECRET a line), read again when it
                   changes: add a line to hand someone a token of a scope
  shape            the hive's queen and drone ports, etcd's port and whether it runs TLS
  NAME.pid, NAME.cmd, NAME.log
                   for each piece (queen-PORT, drone-PORT, etcd): its pid, its command line
                   (one argument a line, what a restart runs) and its log (stderr)
  drone-PORT.out   a drone's stdout (the demo task texts it prints)
  drone-PORT.work/ where a drone runs its tasks
  queen-PORT.data/ a queen alone's data dir: her drones and tasks, kept across restarts, new for
                   every hive (several queens keep theirs in etcd)
  etcd/            etcd's data, new for every hive, kept across restarts
HELP
}

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

# $1 quoted so that bash reads it back as it is, for the lines printed to paste.
q() { printf '%q' "$1"; }

# --- arguments -----------------------------------------------------------------------------------

QUEENS=""
COUNT=""
TLS=0
while (($# > 0)); do
    case "$1" in
    --queens)
        (($# >= 2)) || fail "--queens needs a number; $USAGE"
        QUEENS="$2"
        shift 2
        ;;
    --tls)
        TLS=1
        shift
        ;;
    -h | --help)
        help
        exit 0
        ;;
    -*) fail "unknown option $1; $USAGE" ;;
    *)
        COUNT="$1"
        shift
        ;;
    esac
done
# What was given, to hold against a hive that exists.
GIVEN_QUEENS="$QUEENS"
GIVEN_COUNT="$COUNT"
GIVEN_TLS="$TLS"
QUEENS="${QUEENS:-1}"
COUNT="${COUNT:-3}"

port_ok() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }
if ! [[ "$QUEENS" =~ ^[0-9]$ ]] || ((QUEENS < 1)); then
    fail "--queens takes a number of queens from 1 to 9 (got '$QUEENS'); $USAGE"
fi
if ! [[ "$COUNT" =~ ^[0-9]{1,4}$ ]] || ((10#$COUNT < 1)); then
    fail "N must be a whole number of drones from 1 to 9999 (got '$COUNT'); $USAGE"
fi
COUNT=$((10#$COUNT))
QUEEN_BASE="${HIVE_PORT:-8080}"
DRONE_BASE="${HIVE_DRONE_PORT:-5001}"
ETCD_PORT="${HIVE_ETCD_PORT:-12379}"
port_ok "$QUEEN_BASE" || fail "HIVE_PORT must be a port from 1 to 65535 (got '$QUEEN_BASE')"
port_ok "$DRONE_BASE" || fail "HIVE_DRONE_PORT must be a port from 1 to 65535 (got '$DRONE_BASE')"
port_ok "$ETCD_PORT" || fail "HIVE_ETCD_PORT must be a port from 1 to 65534 (got '$ETCD_PORT')"
QUEEN_BASE=$((10#$QUEEN_BASE))
DRONE_BASE=$((10#$DRONE_BASE))
ETCD_PORT=$((10#$ETCD_PORT))
# Each piece's command line is recorded one argument a line, so no path in it may hold a newline.
[[ "$HIVE_DIR$LARVE" != *$'\n'* ]] || fail "HIVE_DIR and HIVE_LARVE must not contain a newline"

# The larves take the hive's own token from its file; larve refuses a token given two ways.
TOKEN_FROM_ENV="${HIVE_TOKEN:+1}"
unset HIVE_TOKEN

# Debian packages the script uses: curl (to call the queens), python3 (to read their JSON),
# util-linux's setsid (to detach the larves) and iproute2's ss (to see who holds a port).
install_missing hive-up curl:curl python3:python3 setsid:util-linux ss:iproute2
mkdir -p "$HIVE_DIR"
shopt -s nullglob

# --- the hive: a new one, or the one started here before -----------------------------------------

# RESTART: 1 when HIVE_DIR holds a hive (its shape file) to bring back what is missing of.
RESTART=0
if read_shape; then
    RESTART=1
    shape_says="the hive in $SHOWN_DIR/ has ${#SHAPE_QUEENS[@]} queen(s) on port(s) ${SHAPE_QUEENS[*]}"
    shape_says+=", ${#SHAPE_DRONES[@]} drone(s) on port(s) ${SHAPE_DRONES[*]}"
    if ((SHAPE_TLS)); then shape_says+=" and runs TLS"; else shape_says+=" without TLS"; fi
    mismatch=()
    [[ -z "$GIVEN_QUEENS" || "$GIVEN_QUEENS" == "${#SHAPE_QUEENS[@]}" ]] || mismatch+=("--queens $GIVEN_QUEENS")
    [[ -z "$GIVEN_COUNT" || "$COUNT" == "${#SHAPE_DRONES[@]}" ]] || mismatch+=("$GIVEN_COUNT drones")
    ((!GIVEN_TLS || SHAPE_TLS)) || mismatch+=("--tls")
    [[ -z "${HIVE_PORT:-}" || "$QUEEN_BASE" == "${SHAPE_QUEENS[0]}" ]] || mismatch+=("HIVE_PORT=$HIVE_PORT")
    [[ -z "${HIVE_DRONE_PORT:-}" || "$DRONE_BASE" == "${SHAPE_DRONES[0]}" ]] || mismatch+=("HIVE_DRONE_PORT=$HIVE_DRONE_PORT")
    [[ -z "${HIVE_ETCD_PORT:-}" || -z "$SHAPE_ETCD" || "$ETCD_PORT" == "$SHAPE_ETCD" ]] || mismatch+=("HIVE_ETCD_PORT=$HIVE_ETCD_PORT")
    if ((${#mismatch[@]} > 0)); then
        fail "$shape_says, so it cannot take ${mismatch[*]}. To change its shape, stop it first with scripts/hive-down.sh; scripts/hive-up.sh without N, --queens or --tls brings back what is missing of it"
    fi
    QUEEN_PORTS=("${SHAPE_QUEENS[@]}")
    DRONE_PORTS=("${SHAPE_DRONES[@]}")
    QUEENS=${#QUEEN_PORTS[@]}
    COUNT=${#DRONE_PORTS[@]}
    TLS="$SHAPE_TLS"
    ETCD_PORT="${SHAPE_ETCD:-$ETCD_PORT}"
else
    rm -f "$SHAPE_FILE"
    live=()
    for pidfile in "$HIVE_DIR"/*.pid; do
        if is_ours "$(pid_in "$pidfile")"; then
            live+=("$(basename "$pidfile" .pid) (pid $(pid_in "$pidfile"))")
        else
            say "removing stale pid file ${pidfile#"$ROOT"/}"
            rm -f "$pidfile"
        fi
    done
    if ((${#live[@]} > 0)); then
        say "a hive is already running (${live[*]}); nothing started. Check it with scripts/status.sh, stop it with scripts/hive-down.sh"
        exit 0
    fi
    QUEEN_LAST=$((QUEEN_BASE + QUEENS - 1))
    DRONE_LAST=$((DRONE_BASE + COUNT - 1))
    ((QUEEN_LAST <= 65535)) || fail "$QUEENS queens from port $QUEEN_BASE would go past port 65535"
    ((DRONE_LAST <= 65535)) || fail "$COUNT drones from port $DRONE_BASE would go past port 65535"
    ((ETCD_PORT + 1 <= 65535)) || fail "HIVE_ETCD_PORT must leave room for etcd's peer port after it"
    if ((QUEEN_LAST >= DRONE_BASE && QUEEN_BASE <= DRONE_LAST)); then
        fail "queen ports $QUEEN_BASE..$QUEEN_LAST overlap the drone ports $DRONE_BASE..$DRONE_LAST; change HIVE_PORT or HIVE_DRONE_PORT"
    fi
    if ((QUEENS > 1)); then
        for port in "$ETCD_PORT" "$((ETCD_PORT + 1))"; do
            if ((port >= QUEEN_BASE && port <= QUEEN_LAST)) || ((port >= DRONE_BASE && port <= DRONE_LAST)); then
                fail "etcd's port $port is among the larves' ports; change HIVE_ETCD_PORT"
            fi
        done
    fi
    QUEEN_PORTS=()
    for ((port = QUEEN_BASE; port <= QUEEN_LAST; port++)); do QUEEN_PORTS+=("$port"); done
    DRONE_PORTS=()
    for ((port = DRONE_BASE; port <= DRONE_LAST; port++)); do DRONE_PORTS+=("$port"); done
fi
ETCD_PEER_PORT=$((ETCD_PORT + 1))
if ((TLS)); then SCHEME=https; fi
FIRST_QUEEN_URL="$SCHEME://127.0.0.1:${QUEEN_PORTS[0]}"
DRONE_RANGE="${DRONE_PORTS[0]}..${DRONE_PORTS[-1]}"
TOKEN_FILE="$HIVE_DIR/token"
CLIENT_TOKENS_FILE="$HIVE_DIR/client-tokens"

# Every piece of the hive, by name: etcd (for several queens), the queens, the drones.
PIECES=()
if ((QUEENS > 1)); then PIECES+=(etcd); fi
for port in "${QUEEN_PORTS[@]}"; do PIECES+=("queen-$port"); done
for port in "${DRONE_PORTS[@]}"; do PIECES+=("drone-$port"); done

# The ports piece $1 listens on.
ports_of() {
    case "$1" in
    etcd) echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
    *) echo "${1#*-}" ;;
    esac
}

# What is to start: every piece of a new hive, or the pieces of this one that are not running.
MISSING=()
if ((RESTART)); then
    running=()
    for name in "${PIECES[@]}"; do
        pid="$(piece_pid "$name")"
        if [[ -n "$pid" ]]; then running+=("$name (pid $pid)"); else MISSING+=("$name"); fi
    done
    if ((${#MISSING[@]} == 0)); then
        say "the hive is already running: ${running[*]}; nothing started. Check it with scripts/status.sh, stop it with scripts/hive-down.sh"
        exit 0
    fi
    kept="token"
    if ((TLS)); then kept+=", certificates"; fi
    if [[ -n "$SHAPE_ETCD" ]]; then kept+=", etcd data"; else kept+=", the queen's data dir"; fi
    say "the hive in $SHOWN_DIR/ is not all running (missing: ${MISSING[*]}); restarting what is missing with its old flags, $kept"
    [[ -r "$TOKEN_FILE" ]] ||
        fail "the hive's token $SHOWN_DIR/token is gone, so nothing restarted could join it; stop the hive with scripts/hive-down.sh and start a new one"
    if ((TLS)); then
        for file in ca.pem larve.pem larve.key user.pem user.key ${SHAPE_ETCD:+etcd.pem etcd.key}; do
            [[ -r "$TLS_DIR/$file" ]] ||
                fail "the hive's certificate $SHOWN_DIR/tls/$file is gone; stop the hive with scripts/hive-down.sh and start a new one"
        done
    fi
    for name in "${MISSING[@]}"; do
        [[ -s "$HIVE_DIR/$name.cmd" ]] ||
            fail "$name has no recorded command line ($SHOWN_DIR/$name.cmd) to restart it with; stop the hive with scripts/hive-down.sh and start a new one"
        program="$(head -n 1 "$HIVE_DIR/$name.cmd")"
        command -v -- "$program" >/dev/null ||
            fail "$name's program $program is gone; build it again (cargo build --release --bin larve) or install it, then run scripts/hive-up.sh again"
    done
    recorded="$(head -n 1 "$HIVE_DIR/queen-${QUEEN_PORTS[0]}.cmd" 2>/dev/null || true)"
    if [[ -n "${HIVE_LARVE:-}" && -n "$recorded" && "$recorded" != "$LARVE" ]]; then
        say "note: HIVE_LARVE names $LARVE, but the hive runs $recorded; restarting with the recorded one"
    fi
else
    MISSING=("${PIECES[@]}")
fi

# --- every port free -----------------------------------------------------------------------------

# Who listens on TCP port $1 where a larve on 127.0.0.1 would clash ("larve (pid 123: larve
# --queen ...)", or less when ss cannot name the process), or nothing if the port is free. Besides
# ss, a connect to 127.0.0.1 decides: whatever answers there is what a readiness check would ask.
holder_of() {
    local port="$1" line address users pid command
    while read -r _ _ _ address _ users; do
        case "${address%:*}" in
        127.0.0.1 | 0.0.0.0 | '*' | '[::]' | '[::ffff:127.0.0.1]') ;;
        *) continue ;;
        esac
        line="a process ss cannot name (as root it could)"
        if [[ "$users" =~ \(\(\"([^\"]*)\",pid=([0-9]+) ]]; then
            pid="${BASH_REMATCH[2]}"
            command="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c 1-120 || true)"
            line="${BASH_REMATCH[1]} (pid $pid${command:+: ${command% }})"
        fi
        echo "$line"
        return
    done < <(ss -Hltnp "sport = :$port" 2>/dev/null || true)
    if (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "a process ss does not show"; fi
}

taken=()
for name in "${MISSING[@]}"; do
    for port in $(ports_of "$name"); do
        holder="$(holder_of "$port")"
        [[ -z "$holder" ]] || taken+=("port $port ($name) is in use by $holder")
    done
done
if ((${#taken[@]} > 0)); then
    for line in "${taken[@]}"; do echo "hive-up: error: $line" >&2; done
    if ((RESTART)); then
        fail "nothing started; free the port(s) above (or stop the hive with scripts/hive-down.sh) and run scripts/hive-up.sh again"
    fi
    fail "nothing started; stop what holds the port(s) above, or choose others with HIVE_PORT, HIVE_DRONE_PORT or HIVE_ETCD_PORT"
fi

# --- what it needs -------------------------------------------------------------------------------

if ((QUEENS > 1)) && [[ " ${MISSING[*]} " == *" etcd "* ]]; then
    install_missing hive-up etcd:etcd-server
fi
if ((!RESTART)); then
    ((TLS)) && install_missing hive-up openssl:openssl
    if [[ -n "${HIVE_LARVE:-}" ]]; then
        [[ -x "$LARVE" ]] || fail "HIVE_LARVE names $LARVE, which is not an executable"
        say "using $LARVE"
    else
        say "building larve (cargo build --release --bin larve)"
        (cd "$ROOT" && cargo build --release --bin larve) || fail "cargo build failed"
        [[ -x "$LARVE" ]] || fail "build finished but $LARVE is missing"
    fi
fi

# --- cluster token -------------------------------------------------------------------------------

if ((!RESTART)); then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE") || fail "could not write $TOKEN_FILE"
    rm -f "$CLIENT_TOKENS_FILE"
fi
# The queens read it again whenever it changes: a line added hands a teammate a token. New (and
# empty) for a new hive, and for a hive whose file was deleted.
if [[ ! -e "$CLIENT_TOKENS_FILE" ]]; then
    (umask 077 && cat >"$CLIENT_TOKENS_FILE" <<'TOKENS'
# Client tokens the queens take, one NAME SCOPE SECRET a line; SCOPE is read, submit, operate or
# admin. The queens read this file again when it changes. To hand someone a submit token:
#   echo "alice submit $(openssl rand -hex 32)" >> .hive/client-tokens
TOKENS
    ) || fail "could not write $CLIENT_TOKENS_FILE"
fi
TOKEN="$(<"$TOKEN_FILE")"
if ((!RESTART)); then
    ((${#TOKEN} == 64)) || fail "could not read 32 random bytes from /dev/urandom"
fi

# --- certificates (--tls) -----------------------------------------------------------------------

# A new CA and certificates for every hive, as the token: ECDSA P-256 keys readable only by you;
# every certificate is good for 127.0.0.1 and localhost, as a server and as a client.
if ((!RESTART)); then
    rm -rf "$TLS_DIR"
fi
if ((TLS && !RESTART)); then
    (umask 077 && mkdir -p "$TLS_DIR") || fail "could not create $TLS_DIR"
    tls_log="$TLS_DIR/openssl.log"
    new_key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "$@" >>"$tls_log" 2>&1; }
    (umask 077 && new_key -x509 -days 365 -subj "/CN=hive local CA" \
        -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem") || fail "openssl could not make the CA; see $tls_log"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$TLS_DIR/ext.cnf"
    for name in larve etcd user; do
        (umask 077 && new_key -subj "/CN=hive $name" -keyout "$TLS_DIR/$name.key" -out "$TLS_DIR/$name.csr" &&
            openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
                -CAcreateserial -days 365 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/$name.pem" >>"$tls_log" 2>&1) ||
            fail "openssl could not make the $name certificate; see $tls_log"
    done
    rm -f "$TLS_DIR"/*.csr "$TLS_DIR/ca.srl" "$TLS_DIR/ext.cnf"
    say "made a CA and certificates in $SHOWN_DIR/tls/ (mutual TLS everywhere)"
fi
LARVE_TLS=()
if ((TLS)); then
    LARVE_TLS=(--tls-cert "$TLS_DIR/larve.pem" --tls-key "$TLS_DIR/larve.key" --tls-ca "$TLS_DIR/ca.pem" --tls-verify-clients)
    load_tls
fi

# --- start ---------------------------------------------------------------------------------------

# Pid files this run wrote; on any failure they are stopped and removed.
STARTED=()
SUCCESS=0
# Where each piece this run started began writing its log: a restarted piece appends to the old
# one, and only what it wrote itself proves anything about it.
declare -A LOG_FROM=()

stop_started() {
    local pidfile pid pids=() i
    for pidfile in "${STARTED[@]}"; do
        pid="$(pid_in "$pidfile")"
        if is_ours "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do
            if is_ours "$pid"; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if is_ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
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
        # A new hive that never came up leaves nothing to restart.
        ((RESTART)) || rm -f "$SHAPE_FILE" "$HIVE_DIR"/*.cmd
        ((status != 0)) || status=1
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME PROGRAM ARGS...: starts a detached process, records its pid in NAME.pid and its
# command line in NAME.cmd. A restarted piece appends to its old log and output.
start() {
    local name="$1"
    shift
    local log="$HIVE_DIR/$name.log" out=/dev/null
    [[ "$name" == drone-* ]] && out="$HIVE_DIR/$name.out"
    if ((RESTART)); then
        LOG_FROM[$name]="$(stat -c %s "$log" 2>/dev/null || echo 0)"
    else
        LOG_FROM[$name]=0
        : >"$log"
        [[ "$out" == /dev/null ]] || : >"$out"
        printf '%s\n' "$@" >"$HIVE_DIR/$name.cmd"
    fi
    # setsid: own session, no controlling terminal; nohup: immune to hangups. Both exec, so $! is
    # the program itself.
    setsid nohup "$@" <"/dev/null" >>"$out" 2>>"$log" &
    local pid=$!
    echo "$pid" >"$HIVE_DIR/$name.pid"
    STARTED+=("$HIVE_DIR/$name.pid")
}

# restart NAME: starts piece NAME again with the command line recorded when it first started.
restart() {
    local args
    mapfile -t args <"$HIVE_DIR/$1.cmd"
    start "$1" "${args[@]}"
}

# True if piece $1, started by this run, has written $2 to its log since.
logged() {
    local from="${LOG_FROM[$1]}"
    tail -c "+$((from + 1))" "$HIVE_DIR/$1.log" 2>/dev/null | grep -qF -- "$2"
}

# Fails with the log tail if the process recorded in .hive/NAME.pid is no longer running.
check_alive() {
    local name="$1" pid
    pid="$(pid_in "$HIVE_DIR/$name.pid")"
    if ! kill -0 "$pid" 2>/dev/null || [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo R)" == Z ]]; then
        local code=""
        # Reap it if it is our child, to learn its exit status.
        if wait "$pid" 2>/dev/null; then code=0; else code=$?; fi
        log_tail "$HIVE_DIR/$name.log"
        fail "$name exited${code:+ with status $code} during startup; see $SHOWN_DIR/$name.log"
    fi
}

# Fails if anything this run started is no longer running.
check_all_alive() {
    local pidfile
    for pidfile in "${STARTED[@]}"; do check_alive "$(basename "$pidfile" .pid)"; done
}

# until_ready WHAT CHECK...: runs CHECK every 0.1 s until it succeeds, checking that everything
# started is still alive; fails after DEADLINE (default DEADLINE_SECS) seconds.
until_ready() {
    local what="$1" deadline=$((SECONDS + ${DEADLINE:-DEADLINE_SECS}))
    shift
    until "$@"; do
        check_all_alive
        ((SECONDS < deadline)) || fail "$what did not happen within ${DEADLINE:-$DEADLINE_SECS}s; see the logs in $SHOWN_DIR/"
        sleep 0.1
    done
}

# True if this run started piece $1.
started() { [[ -v "LOG_FROM[$1]" ]]; }
missing() { [[ " ${MISSING[*]} " == *" $1 "* ]]; }

STORE_FLAGS=()
ETCD_CURL=()
if ((QUEENS > 1)); then
    ETCD_URL="$SCHEME://127.0.0.1:$ETCD_PORT"
    if ((TLS)); then
        ETCD_CURL=(--cacert "$TLS_DIR/ca.pem" --cert "$TLS_DIR/larve.pem" --key "$TLS_DIR/larve.key")
    fi
    if missing etcd && ((RESTART)); then
        say "restarting etcd on port $ETCD_PORT (its data stays in $SHOWN_DIR/etcd/)"
        restart etcd
    elif missing etcd; then
        rm -rf "$HIVE_DIR/etcd"
        say "starting etcd on port $ETCD_PORT (data in $SHOWN_DIR/etcd/)"
        # One member, so its peer URL carries no traffic and stays plain.
        ETCD_TLS=()
        if ((TLS)); then
            ETCD_TLS=(--cert-file "$TLS_DIR/etcd.pem" --key-file "$TLS_DIR/etcd.key"
                --trusted-ca-file "$TLS_DIR/ca.pem" --client-cert-auth)
        fi
        start etcd etcd --name hive --data-dir "$HIVE_DIR/etcd" \
            --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
            --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
            --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
            --initial-cluster "hive=http://127.0.0.1:$ETCD_PEER_PORT" "${ETCD_TLS[@]}"
    fi
    etcd_healthy() { [[ "$(curl "${ETCD_CURL[@]}" -s --max-time 1 "$ETCD_URL/health" || true)" == *'"true"'* ]]; }
    until_ready "etcd answering on $ETCD_URL/health" etcd_healthy
    STORE_FLAGS=(--etcd "$ETCD_URL")
    if ((TLS)); then
        STORE_FLAGS+=(--etcd-ca "$TLS_DIR/ca.pem" --etcd-cert "$TLS_DIR/larve.pem" --etcd-key "$TLS_DIR/larve.key")
    fi
fi

if ((RESTART)); then
    for port in "${QUEEN_PORTS[@]}"; do
        if missing "queen-$port"; then
            say "restarting queen-$port with its old flags ($SHOWN_DIR/queen-$port.cmd)"
            restart "queen-$port"
        fi
    done
else
    if ((QUEENS == 1)); then
        # A queen alone keeps her state in a data dir of her own, new for a new hive.
        DATA_DIR="$HIVE_DIR/queen-${QUEEN_PORTS[0]}.data"
        rm -rf "$DATA_DIR"
        STORE_FLAGS=(--data-dir "$DATA_DIR")
        say "starting 1 queen on port ${QUEEN_PORTS[0]} (data dir $SHOWN_DIR/queen-${QUEEN_PORTS[0]}.data/)"
    else
        say "starting $QUEENS queen(s) on port(s) ${QUEEN_PORTS[*]}"
    fi
    for port in "${QUEEN_PORTS[@]}"; do
        start "queen-$port" "$LARVE" --queen --port "$port" --token-file "$TOKEN_FILE" \
            --client-tokens "$CLIENT_TOKENS_FILE" "${STORE_FLAGS[@]}" "${LARVE_TLS[@]}"
    done
fi
# A queen is ready when /healthz on her port says READY; one this run started must also be the one
# answering there: alive (until_ready checks) and saying in her own log that she has that port,
# which she does only once she has bound it.
queens_ready() {
    local port health
    for port in "${QUEEN_PORTS[@]}"; do
        if started "queen-$port"; then
            logged "queen-$port" "queen listening on 127.0.0.1:$port;" || return 1
        fi
        health="$(curl "${CURL_TLS[@]}" -s --max-time 1 "$SCHEME://127.0.0.1:$port/healthz" || true)"
        [[ "$health" == *'"Status.READY"'* && "$health" == *'"Mode.QUEEN"'* ]] || return 1
    done
}
until_ready "every queen answering READY on /healthz" queens_ready

# Who queen port $1 says leads, and her own role, from /healthz ("- -" if she does not say).
leadership_of() {
    { curl "${CURL_TLS[@]}" -s --max-time 1 "$SCHEME://127.0.0.1:$1/healthz" || true; } | python3 -c '
import json, sys
try:
    health = json.load(sys.stdin)
except ValueError:
    health = {}
print(health.get("leader") or "-", health.get("role") or "-")
'
}
# The leader every queen names, or nothing until they agree and she herself says she leads (a
# leader that died by kill -9 is still named until her lease runs out).
agreed_leader() {
    local port leader role first="" leading=0
    for port in "${QUEEN_PORTS[@]}"; do
        read -r leader role < <(leadership_of "$port")
        [[ "$leader" != - && "$leader" == "${first:-$leader}" ]] || return 0
        first="$leader"
        if [[ "$leader" == "127.0.0.1:$port" && "$role" == leader ]]; then leading=1; fi
    done
    if ((leading)); then echo "$first"; fi
}
leader_agreed() { [[ -n "$(agreed_leader)" ]]; }
LEADER=""
if ((QUEENS > 1)); then
    # After a leader died by kill -9, her lease runs out before another is elected.
    DEADLINE=$((DEADLINE_SECS + LEADER_TTL_SECS)) until_ready "the queens agreeing on a leader" leader_agreed
    LEADER="$(agreed_leader)"
    say "the queens agree: $LEADER leads"
fi

QUEEN_LIST=""
for port in "${QUEEN_PORTS[@]}"; do QUEEN_LIST+="${QUEEN_LIST:+,}127.0.0.1:$port"; done
if ((RESTART)); then
    for port in "${DRONE_PORTS[@]}"; do
        if missing "drone-$port"; then
            say "restarting drone-$port with its old flags ($SHOWN_DIR/drone-$port.cmd)"
            restart "drone-$port"
        fi
    done
else
    say "starting $COUNT drone(s) on ports $DRONE_RANGE (they run commands: --allow-exec, in $SHOWN_DIR/drone-PORT.work/)"
    for port in "${DRONE_PORTS[@]}"; do
        start "drone-$port" "$LARVE" --queen-host "$QUEEN_LIST" --port "$port" --token-file "$TOKEN_FILE" \
            --allow-exec --work-dir "$HIVE_DIR/drone-$port.work" "${LARVE_TLS[@]}"
    done
fi
expected=()
for port in "${DRONE_PORTS[@]}"; do expected+=("127.0.0.1:$port"); done

# How many of the expected drone addresses queen port $1 lists on /healthz (address -> name).
registered() {
    { hive_curl -s --max-time 1 "$SCHEME://127.0.0.1:$1/healthz" || true; } | python3 -c '
import json, sys
try:
    drones = json.load(sys.stdin).get("drones") or {}
except ValueError:
    drones = {}
print(sum(1 for address in sys.argv[1:] if address in drones))
' "${expected[@]}"
}
# Every drone this run started says in its own log that it has its port and has registered, and
# every queen lists every drone.
all_registered() {
    local port
    for port in "${DRONE_PORTS[@]}"; do
        if started "drone-$port"; then
            logged "drone-$port" "drone listening on 127.0.0.1:$port," || return 1
            logged "drone-$port" "registered with queen" || return 1
        fi
    done
    for port in "${QUEEN_PORTS[@]}"; do
        (($(registered "$port") == COUNT)) || return 1
    done
}
if ((QUEENS == 1)) && started "queen-${QUEEN_PORTS[0]}" && ((RESTART)) &&
    ! grep -qx -- --data-dir "$HIVE_DIR/queen-${QUEEN_PORTS[0]}.cmd"; then
    # A queen alone without a data dir keeps her registry in memory: the restarted one knows no
    # drone until each notices that she has stopped checking on it and registers again.
    say "waiting for $COUNT drone(s) to register again with the restarted queen (a drone does once no queen has checked on it for 3 heartbeat intervals: about ${REREGISTER_SECS}s)"
    DEADLINE=$((DEADLINE_SECS + REREGISTER_SECS)) until_ready "every drone registering" all_registered
else
    say "waiting for $COUNT drone(s) to register (every queen must list them)"
    until_ready "every drone registering" all_registered
fi

# --- demo task -----------------------------------------------------------------------------------

say "submitting a demo task to the queen on port ${QUEEN_PORTS[0]}: $DEMO_TEXT"
# What each drone had printed before, so only a line printed now counts.
declare -A OUT_FROM=()
for port in "${DRONE_PORTS[@]}"; do
    OUT_FROM[$port]="$(stat -c %s "$HIVE_DIR/drone-$port.out" 2>/dev/null || echo 0)"
done
body="$(python3 -c 'import json, sys; print(json.dumps({"text": sys.argv[1]}))' "$DEMO_TEXT")"
reply="$(hive_curl -sS --max-time 30 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @- "$FIRST_QUEEN_URL/submit_task" <<<"$body")" || fail "could not reach the queen to submit the demo task"
split_reply "$reply"
code="$REPLY_CODE"
reply="$REPLY_BODY"
[[ "$code" == 2?? ]] || fail "the queen answered the demo task with HTTP $code: $reply"
say "queen answered: $(python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' <<<"$reply" 2>/dev/null || echo "$reply")"

# The drone prints the text before it answers the queen, so the line is there by now; poll briefly anyway.
printed_by=""
deadline=$((SECONDS + 5))
while [[ -z "$printed_by" ]] && ((SECONDS < deadline)); do
    for port in "${DRONE_PORTS[@]}"; do
        from="${OUT_FROM[$port]}"
        if tail -c "+$((from + 1))" "$HIVE_DIR/drone-$port.out" 2>/dev/null | grep -qxF "$DEMO_TEXT"; then
            printed_by="drone-$port"
            break
        fi
    done
    [[ -n "$printed_by" ]] || sleep 0.1
done
if [[ -n "$printed_by" ]]; then
    say "the demo task was printed by $printed_by (port ${printed_by#drone-}) in $SHOWN_DIR/$printed_by.out"
else
    say "warning: no $SHOWN_DIR/drone-*.out holds the demo text yet"
fi

# --- a real task ---------------------------------------------------------------------------------

say "running a command as a task (POST /tasks $TASK_JSON, then GET /tasks/ID?wait=$TASK_WAIT_SECS)"
reply="$(hive_curl -sS --max-time 10 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @- "$FIRST_QUEEN_URL/tasks" <<<"$TASK_JSON")" || fail "could not reach the queen to create a task"
split_reply "$reply"
[[ "$REPLY_CODE" == 2?? ]] || fail "the queen answered POST /tasks with HTTP $REPLY_CODE: $REPLY_BODY"
TASK_ID="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$REPLY_BODY" 2>/dev/null)" ||
    fail "the queen's answer to POST /tasks names no task id: $REPLY_BODY"
reply="$(hive_curl -sS --max-time $((TASK_WAIT_SECS + 10)) -w '\n%{http_code}' \
    "$FIRST_QUEEN_URL/tasks/$TASK_ID?wait=$TASK_WAIT_SECS")" || fail "could not reach the queen to wait for task $TASK_ID"
split_reply "$reply"
[[ "$REPLY_CODE" == 2?? ]] || fail "the queen answered GET /tasks/$TASK_ID with HTTP $REPLY_CODE: $REPLY_BODY"
# One line: state, the drone of the last attempt, its address, the exit code, the output (JSON).
ran="$(python3 -c '
import json, sys
task = json.load(sys.stdin)
attempt = (task.get("attempts") or [{}])[-1]
print(task.get("state"), attempt.get("drone"), attempt.get("address"), task.get("exit_code"),
      json.dumps(task.get("stdout", "").strip()), sep="\t")
' <<<"$REPLY_BODY")" || fail "could not read the queen's answer to GET /tasks/$TASK_ID: $REPLY_BODY"
IFS=$'\t' read -r state drone address exit_code output <<<"$ran"
[[ "$state" == succeeded ]] ||
    fail "task $TASK_ID ($TASK_SHOWN) ended $state (exit code $exit_code, on $drone at $address): $REPLY_BODY"
say "task $TASK_ID ($TASK_SHOWN) ran on $drone ($address): exit code $exit_code, output $output"

# --- done ----------------------------------------------------------------------------------------

check_all_alive
if ((!RESTART)); then
    etcd_port=""
    if ((QUEENS > 1)); then etcd_port="$ETCD_PORT"; fi
    write_shape "${QUEEN_PORTS[*]}" "${DRONE_PORTS[*]}" "$etcd_port" "$TLS"
fi
SUCCESS=1
if ((RESTART)); then
    restarted=()
    for name in "${MISSING[@]}"; do restarted+=("$name (pid $(pid_in "$HIVE_DIR/$name.pid"))"); done
    say "restarted ${restarted[*]}; the hive is whole again"
fi

say "queen health ($FIRST_QUEEN_URL/healthz):"
health="$(hive_curl -s --max-time 2 "$FIRST_QUEEN_URL/healthz" || true)"
python3 -m json.tool <<<"$health" 2>/dev/null || echo "$health"
echo "hive-up: the hive is up: $QUEENS queen(s) on port(s) ${QUEEN_PORTS[*]}, $COUNT drone(s) on ports $DRONE_RANGE; logs in $SHOWN_DIR/"
if ((QUEENS > 1)); then
    echo "  the queens share etcd on $ETCD_URL; any queen takes tasks and registrations."
fi
if ((TLS)); then
    echo "  every connection is mutual TLS; curl and larve show the user's certificate."
fi
# curl's options to reach a queen (the certificates, with --tls), and the URL of queen port $1.
CURL_SHOWN=""
LARVE_CLIENT=""
if ((TLS)); then
    CURL_SHOWN=" --cacert $(q "$TLS_DIR/ca.pem") --cert $(q "$TLS_DIR/user.pem") --key $(q "$TLS_DIR/user.key")"
    LARVE_CLIENT=" --tls-ca $(q "$TLS_DIR/ca.pem") --tls-cert $(q "$TLS_DIR/user.pem") --tls-key $(q "$TLS_DIR/user.key")"
fi
url_of() {
    if ((TLS)); then echo "https://127.0.0.1:$1"; else echo "localhost:$1"; fi
}
AUTH="-H \"Authorization: Bearer \$(cat $(q "$TOKEN_FILE"))\""
JSON="-H 'Content-Type: application/json'"
FIRST="${QUEEN_PORTS[0]}"
echo "  ready to paste: each queen's health, the tutorial's text task, a command run as a task, the task just run (waiting up to ${TASK_WAIT_SECS}s for a running one), and a command through larve:"
for port in "${QUEEN_PORTS[@]}"; do
    echo "  curl $AUTH$CURL_SHOWN $(url_of "$port")/healthz"
done
echo "  curl $AUTH$CURL_SHOWN $JSON -d '{\"text\": \"hello\"}' $(url_of "$FIRST")/submit_task"
echo "  curl $AUTH$CURL_SHOWN $JSON -d '$TASK_JSON' $(url_of "$FIRST")/tasks"
echo "  curl $AUTH$CURL_SHOWN '$(url_of "$FIRST")/tasks/$TASK_ID?wait=$TASK_WAIT_SECS'"
echo "  $(q "$LARVE") task run --wait --queen-host $QUEEN_LIST --token-file $(q "$TOKEN_FILE")$LARVE_CLIENT -- $TASK_SHOWN"
if [[ -n "$TOKEN_FROM_ENV" ]]; then
    echo "  (unset HIVE_TOKEN before the larve line: larve takes the token from --token-file or HIVE_TOKEN, not both)"
fi
if ((QUEENS > 1)); then
    echo "  stop the leader cleanly (kill \$(cat $SHOWN_DIR/queen-${LEADER##*:}.pid), SIGTERM) and another queen leads at once; after kill -9 her ${LEADER_TTL_SECS} s lease runs out first"
fi
cat <<MSG
  hand a teammate a token that may only submit (the queens read the file again at once):
    echo "alice submit \$(openssl rand -hex 32)" >> $(q "$CLIENT_TOKENS_FILE")
  bring back a queen or drone that died: scripts/hive-up.sh (starts what is missing, with its old flags)
  submit a task: scripts/submit.sh TEXT
  check it:      scripts/status.sh
  stop it:       scripts/hive-down.sh
MSG
if [[ "$HIVE_DIR" != "$ROOT/.hive" ]]; then
    echo "  (submit.sh, status.sh and hive-down.sh need HIVE_DIR=$HIVE_DIR set too)"
fi
