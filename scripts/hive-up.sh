#!/usr/bin/env bash
# Starts a local hive in the background: one queen (or several sharing etcd) and N drones.
#
#   scripts/hive-up.sh [--queens Q] [--tls] [N]
#
# N drones (default 3) and Q queens (1 to 9, default 1). Several queens share one registry in a
# local etcd that this script starts (and installs, as Debian's etcd-server, when it is missing);
# one of them leads. With --tls, the script makes a CA and certificates with openssl (installing
# Debian's openssl when it is missing) in .hive/tls/, and every larve (and etcd) serves and calls
# over mutual TLS: ca.pem is the CA, larve.pem/.key the larves' certificate, etcd.pem/.key etcd's,
# user.pem/.key the one curl, submit.sh and status.sh show.
#
# Environment: HIVE_PORT (first queen's port, default 8080; queens use HIVE_PORT .. HIVE_PORT+Q-1),
# HIVE_DRONE_PORT (first drone port, default 5001; drones use HIVE_DRONE_PORT .. +N-1), HIVE_ETCD_PORT
# (etcd's client port, default 12379, and the next one for its peer port). Everything goes to .hive/
# in the repo root: queen-PORT.pid and queen-PORT.log (stderr), drone-PORT.pid, drone-PORT.log
# (stderr), drone-PORT.out (stdout: the task texts the drone prints), etcd.pid, etcd.log and etcd/
# (its data, new for every hive), and token: a new random cluster token for every hive, readable
# only by you, which every larve loads with --token-file and submit.sh/status.sh send. HIVE_DIR
# puts all of it elsewhere; HIVE_LARVE names a larve binary to run instead of building one. Stop the
# hive with scripts/hive-down.sh.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
LARVE="${HIVE_LARVE:-$ROOT/target/release/larve}"
QUEEN_BASE="${HIVE_PORT:-8080}"
DRONE_BASE="${HIVE_DRONE_PORT:-5001}"
ETCD_PORT="${HIVE_ETCD_PORT:-12379}"
DEADLINE_SECS=15
DEMO_TEXT="hello from hive-up"
USAGE="usage: scripts/hive-up.sh [--queens Q] [--tls] [N]"

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

QUEENS=1
COUNT=3
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
        echo "$USAGE"
        exit 0
        ;;
    *)
        COUNT="$1"
        shift
        ;;
    esac
done

port_ok() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }
if ! [[ "$QUEENS" =~ ^[0-9]$ ]] || ((QUEENS < 1)); then
    fail "--queens takes a number of queens from 1 to 9 (got '$QUEENS'); $USAGE"
fi
if ! [[ "$COUNT" =~ ^[0-9]{1,4}$ ]] || ((10#$COUNT < 1)); then
    fail "N must be a whole number of drones from 1 to 9999 (got '$COUNT'); $USAGE"
fi
COUNT=$((10#$COUNT))
port_ok "$QUEEN_BASE" || fail "HIVE_PORT must be a port from 1 to 65535 (got '$QUEEN_BASE')"
port_ok "$DRONE_BASE" || fail "HIVE_DRONE_PORT must be a port from 1 to 65535 (got '$DRONE_BASE')"
port_ok "$ETCD_PORT" || fail "HIVE_ETCD_PORT must be a port from 1 to 65534 (got '$ETCD_PORT')"
QUEEN_BASE=$((10#$QUEEN_BASE))
DRONE_BASE=$((10#$DRONE_BASE))
ETCD_PORT=$((10#$ETCD_PORT))
ETCD_PEER_PORT=$((ETCD_PORT + 1))
QUEEN_LAST=$((QUEEN_BASE + QUEENS - 1))
DRONE_LAST=$((DRONE_BASE + COUNT - 1))
((QUEEN_LAST <= 65535)) || fail "$QUEENS queens from port $QUEEN_BASE would go past port 65535"
((DRONE_LAST <= 65535)) || fail "$COUNT drones from port $DRONE_BASE would go past port 65535"
((ETCD_PEER_PORT <= 65535)) || fail "HIVE_ETCD_PORT must leave room for etcd's peer port after it"
if ((QUEEN_LAST >= DRONE_BASE && QUEEN_BASE <= DRONE_LAST)); then
    fail "queen ports $QUEEN_BASE..$QUEEN_LAST overlap the drone ports $DRONE_BASE..$DRONE_LAST; change HIVE_PORT or HIVE_DRONE_PORT"
fi
if ((QUEENS > 1)); then
    for port in "$ETCD_PORT" "$ETCD_PEER_PORT"; do
        if ((port >= QUEEN_BASE && port <= QUEEN_LAST)) || ((port >= DRONE_BASE && port <= DRONE_LAST)); then
            fail "etcd's port $port is among the larves' ports; change HIVE_ETCD_PORT"
        fi
    done
fi
# Debian packages the script uses: curl (to call the queens), python3 (to read their JSON) and
# util-linux's setsid (to detach the larves).
install_missing hive-up curl:curl python3:python3 setsid:util-linux
if ((TLS)); then
    install_missing hive-up openssl:openssl
    SCHEME=https
fi

QUEEN_PORTS=()
for ((port = QUEEN_BASE; port <= QUEEN_LAST; port++)); do QUEEN_PORTS+=("$port"); done
FIRST_QUEEN_URL="$SCHEME://127.0.0.1:$QUEEN_BASE"

# --- an existing hive? ---------------------------------------------------------------------------

mkdir -p "$HIVE_DIR"
shopt -s nullglob

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

# --- etcd, for several queens ---------------------------------------------------------------------

if ((QUEENS > 1)); then
    install_missing hive-up etcd:etcd-server
fi

# --- build ---------------------------------------------------------------------------------------

if [[ -n "${HIVE_LARVE:-}" ]]; then
    [[ -x "$LARVE" ]] || fail "HIVE_LARVE names $LARVE, which is not an executable"
    say "using $LARVE"
else
    say "building larve (cargo build --release --bin larve)"
    (cd "$ROOT" && cargo build --release --bin larve) || fail "cargo build failed"
    [[ -x "$LARVE" ]] || fail "build finished but $LARVE is missing"
fi

# --- cluster token -------------------------------------------------------------------------------

TOKEN_FILE="$HIVE_DIR/token"
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TOKEN_FILE") || fail "could not write $TOKEN_FILE"
TOKEN="$(<"$TOKEN_FILE")"
((${#TOKEN} == 64)) || fail "could not read 32 random bytes from /dev/urandom"

# --- certificates (--tls) -----------------------------------------------------------------------

# A new CA and certificates for every hive, as the token: ECDSA P-256 keys readable only by you;
# every certificate is good for 127.0.0.1 and localhost, as a server and as a client.
rm -rf "$TLS_DIR"
LARVE_TLS=()
if ((TLS)); then
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
    LARVE_TLS=(--tls-cert "$TLS_DIR/larve.pem" --tls-key "$TLS_DIR/larve.key" --tls-ca "$TLS_DIR/ca.pem" --tls-verify-clients)
    load_tls
fi

# --- start ---------------------------------------------------------------------------------------

# Pid files this run wrote; on any failure they are stopped and removed.
STARTED=()
SUCCESS=0

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
        ((status != 0)) || status=1
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME PROGRAM ARGS...: starts a detached process, records its pid in .hive/NAME.pid.
start() {
    local name="$1"
    shift
    local out=/dev/null
    [[ "$name" == drone-* ]] && out="$HIVE_DIR/$name.out"
    # setsid: own session, no controlling terminal; nohup: immune to hangups. Both exec, so $! is
    # the program itself.
    setsid nohup "$@" <"/dev/null" >"$out" 2>"$HIVE_DIR/$name.log" &
    local pid=$!
    echo "$pid" >"$HIVE_DIR/$name.pid"
    STARTED+=("$HIVE_DIR/$name.pid")
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
# started is still alive; fails after DEADLINE_SECS.
until_ready() {
    local what="$1" deadline=$((SECONDS + DEADLINE_SECS))
    shift
    until "$@"; do
        check_all_alive
        ((SECONDS < deadline)) || fail "$what did not happen within ${DEADLINE_SECS}s; see the logs in $SHOWN_DIR/"
        sleep 0.1
    done
}

STORE_FLAGS=()
if ((QUEENS > 1)); then
    ETCD_URL="$SCHEME://127.0.0.1:$ETCD_PORT"
    rm -rf "$HIVE_DIR/etcd"
    say "starting etcd on port $ETCD_PORT (data in $SHOWN_DIR/etcd/)"
    # One member, so its peer URL carries no traffic and stays plain.
    ETCD_TLS=()
    ETCD_CURL=()
    if ((TLS)); then
        ETCD_TLS=(--cert-file "$TLS_DIR/etcd.pem" --key-file "$TLS_DIR/etcd.key"
            --trusted-ca-file "$TLS_DIR/ca.pem" --client-cert-auth)
        ETCD_CURL=(--cacert "$TLS_DIR/ca.pem" --cert "$TLS_DIR/larve.pem" --key "$TLS_DIR/larve.key")
    fi
    start etcd etcd --name hive --data-dir "$HIVE_DIR/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "hive=http://127.0.0.1:$ETCD_PEER_PORT" "${ETCD_TLS[@]}"
    etcd_healthy() { [[ "$(curl "${ETCD_CURL[@]}" -s --max-time 1 "$ETCD_URL/health" || true)" == *'"true"'* ]]; }
    until_ready "etcd answering on $ETCD_URL/health" etcd_healthy
    STORE_FLAGS=(--etcd "$ETCD_URL")
    if ((TLS)); then
        STORE_FLAGS+=(--etcd-ca "$TLS_DIR/ca.pem" --etcd-cert "$TLS_DIR/larve.pem" --etcd-key "$TLS_DIR/larve.key")
    fi
fi

say "starting $QUEENS queen(s) on port(s) ${QUEEN_PORTS[*]}"
for port in "${QUEEN_PORTS[@]}"; do
    start "queen-$port" "$LARVE" --queen --port "$port" --token-file "$TOKEN_FILE" "${STORE_FLAGS[@]}" "${LARVE_TLS[@]}"
done
queens_ready() {
    local port health
    for port in "${QUEEN_PORTS[@]}"; do
        health="$(curl "${CURL_TLS[@]}" -s --max-time 1 "$SCHEME://127.0.0.1:$port/healthz" || true)"
        [[ "$health" == *'"Status.READY"'* && "$health" == *'"Mode.QUEEN"'* ]] || return 1
    done
}
until_ready "every queen answering READY on /healthz" queens_ready

# The leader queen port $1 names on /healthz, or nothing.
leader_of() {
    { curl "${CURL_TLS[@]}" -s --max-time 1 "$SCHEME://127.0.0.1:$1/healthz" || true; } | python3 -c '
import json, sys
try:
    print(json.load(sys.stdin).get("leader") or "")
except ValueError:
    print("")
'
}
# The leader every queen names, or nothing if they do not agree yet.
agreed_leader() {
    local port leader first=""
    for port in "${QUEEN_PORTS[@]}"; do
        leader="$(leader_of "$port")"
        [[ -n "$leader" && "$leader" == "${first:-$leader}" ]] || return 0
        first="$leader"
    done
    echo "$first"
}
leader_agreed() { [[ -n "$(agreed_leader)" ]]; }
if ((QUEENS > 1)); then
    until_ready "the queens agreeing on a leader" leader_agreed
    say "the queens agree: $(agreed_leader) leads"
fi

QUEEN_LIST=""
for port in "${QUEEN_PORTS[@]}"; do QUEEN_LIST+="${QUEEN_LIST:+,}127.0.0.1:$port"; done
say "starting $COUNT drone(s) on ports $DRONE_BASE..$DRONE_LAST"
expected=()
for ((port = DRONE_BASE; port <= DRONE_LAST; port++)); do
    start "drone-$port" "$LARVE" --queen-host "$QUEEN_LIST" --port "$port" --token-file "$TOKEN_FILE" "${LARVE_TLS[@]}"
    expected+=("127.0.0.1:$port")
done

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
all_registered() {
    local port
    for port in "${QUEEN_PORTS[@]}"; do
        (($(registered "$port") == COUNT)) || return 1
    done
}
say "waiting for $COUNT drone(s) to register (every queen must list them)"
until_ready "every drone registering" all_registered

# --- demo task -----------------------------------------------------------------------------------

say "submitting a demo task to the queen on port $QUEEN_BASE: $DEMO_TEXT"
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
    say "the demo task was printed by $printed_by (port ${printed_by#drone-}) in $SHOWN_DIR/$printed_by.out"
else
    say "warning: no $SHOWN_DIR/drone-*.out holds the demo text yet"
fi

# --- done ----------------------------------------------------------------------------------------

check_all_alive
SUCCESS=1

say "queen health ($FIRST_QUEEN_URL/healthz):"
health="$(hive_curl -s --max-time 2 "$FIRST_QUEEN_URL/healthz" || true)"
python3 -m json.tool <<<"$health" 2>/dev/null || echo "$health"
echo "hive-up: the hive is up: $QUEENS queen(s) on port(s) ${QUEEN_PORTS[*]}, $COUNT drone(s) on ports $DRONE_BASE..$DRONE_LAST; logs in $SHOWN_DIR/"
# What curl needs to reach queen port $1: the scheme and address, and with --tls the certificates.
curl_target() {
    if ((TLS)); then
        echo "--cacert $TLS_DIR/ca.pem --cert $TLS_DIR/user.pem --key $TLS_DIR/user.key https://127.0.0.1:$1"
    else
        echo "localhost:$1"
    fi
}
if ((QUEENS > 1 || TLS)); then
    if ((QUEENS > 1)); then
        echo "  the queens share etcd on $ETCD_URL; any queen takes tasks and registrations. Try:"
    else
        echo "  every connection is mutual TLS; curl shows the user's certificate. Try:"
    fi
    for port in "${QUEEN_PORTS[@]}"; do
        echo "  curl -H \"Authorization: Bearer \$(cat $TOKEN_FILE)\" $(curl_target "$port")/healthz"
        echo "  curl -H \"Authorization: Bearer \$(cat $TOKEN_FILE)\" -H 'Content-Type: application/json' -d '{\"text\": \"hello\"}' $(curl_target "$port")/submit_task"
    done
fi
if ((QUEENS > 1)); then
    echo "  kill the leader (kill \$(cat $SHOWN_DIR/queen-PORT.pid)) and another queen takes over within about 6 s (its 5 s lease, then an election)"
fi
cat <<MSG
  submit a task: scripts/submit.sh TEXT
  check it:      scripts/status.sh
  stop it:       scripts/hive-down.sh
MSG
if [[ "$QUEEN_BASE" != 8080 ]]; then
    echo "  (submit.sh and status.sh need HIVE_PORT=$QUEEN_BASE set too)"
fi
if [[ "$HIVE_DIR" != "$ROOT/.hive" ]]; then
    echo "  (submit.sh, status.sh and hive-down.sh need HIVE_DIR=$HIVE_DIR set too)"
fi
