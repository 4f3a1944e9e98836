# shellcheck shell=bash
# Shared by the hive scripts; source it, do not run it. Defines ROOT and HIVE_DIR (.hive/ in the
# repo root unless HIVE_DIR says otherwise), and helpers to install what a script needs, to read
# the hive's shape and find its pieces, and to call its queens with the cluster token (and, for a
# hive started with --tls, over HTTPS with its certificates), trying each in turn.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HIVE_DIR="${HIVE_DIR:-$ROOT/.hive}"
# HIVE_DIR as messages show it: relative to the repo root when inside it.
# shellcheck disable=SC2034 # for the sourcing script
SHOWN_DIR="${HIVE_DIR#"$ROOT"/}"
TLS_DIR="$HIVE_DIR/tls"
SHAPE_FILE="$HIVE_DIR/shape"
TOKEN="${TOKEN:-}"
SCHEME=http
CURL_TLS=()

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }

# Makes sure each COMMAND:PACKAGE after $1 has its command, installing the missing Debian packages
# with apt-get when run as root; otherwise, or when that fails, says so as "$1: error: ..." and
# exits 1. Progress goes to stderr.
install_missing() {
    local who="$1" pair missing=()
    shift
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    ((${#missing[@]} > 0)) || return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
        echo "$who: error: ${missing[*]} is not installed; install it (e.g. sudo apt-get install -y ${missing[*]}) and run again" >&2
        exit 1
    fi
    echo "$who: missing: ${missing[*]}; installing with apt-get" >&2
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; } >&2; then
        echo "$who: error: could not install ${missing[*]} with apt-get" >&2
        exit 1
    fi
    for pair in "$@"; do
        if ! command -v "${pair%%:*}" >/dev/null; then
            echo "$who: error: ${pair%%:*} is still missing after installing ${pair#*:}" >&2
            exit 1
        fi
    done
}

# True if pid $1 is a live (not zombie) process of this hive: a larve, or the etcd hive-up.sh started
# (one whose command line names .hive/, so a system etcd behind a stale pid file is never taken).
is_ours() {
    local pid="$1" comm state
    is_number "$pid" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/comm" ]]; then
        comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
        state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
    else
        comm="$(ps -p "$pid" -o comm= 2>/dev/null)" || return 1
        comm="${comm##*/}"
        state="$(ps -p "$pid" -o stat= 2>/dev/null)" || return 1
    fi
    [[ "$state" != Z* ]] || return 1
    case "$comm" in
    larve) return 0 ;;
    etcd) tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$HIVE_DIR/etcd" ;;
    *) return 1 ;;
    esac
}

# The pid in pid file $1, or nothing.
pid_in() { tr -dc '0-9' <"$1" 2>/dev/null || true; }

# The pid of the hive's piece $1 (queen-PORT, drone-PORT or etcd) if it runs, else nothing: the
# process in its pid file, ours (see is_ours) and, where /proc shows it, running exactly the
# command line recorded in NAME.cmd, so a pid the system gave to another process since is never
# taken for the piece.
piece_pid() {
    local pid cmd="$HIVE_DIR/$1.cmd"
    pid="$(pid_in "$HIVE_DIR/$1.pid")"
    is_ours "$pid" || return 0
    if [[ -r "$cmd" && -r "/proc/$pid/cmdline" ]] &&
        [[ "$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" != "$(<"$cmd")" ]]; then
        return 0
    fi
    echo "$pid"
}

# Reads the shape file scripts/hive-up.sh writes (see write_shape) into SHAPE_QUEENS and
# SHAPE_DRONES (their ports), SHAPE_ETCD (etcd's client port, or nothing for a queen alone) and
# SHAPE_TLS (1 or 0). Fails with nothing set if there is no shape file or it does not read as one.
# shellcheck disable=SC2034 # the SHAPE_* variables are for the sourcing script
read_shape() {
    local key rest queens=() drones=() etcd="" tls="" port
    [[ -r "$SHAPE_FILE" ]] || return 1
    while read -r key rest; do
        case "$key" in
        queens) read -r -a queens <<<"$rest" ;;
        drones) read -r -a drones <<<"$rest" ;;
        etcd) etcd="$rest" ;;
        tls) tls="$rest" ;;
        esac
    done <"$SHAPE_FILE"
    ((${#queens[@]} > 0 && ${#drones[@]} > 0)) || return 1
    for port in "${queens[@]}" "${drones[@]}" ${etcd:+"$etcd"}; do is_number "$port" || return 1; done
    [[ "$tls" == [01] ]] || return 1
    SHAPE_QUEENS=("${queens[@]}")
    SHAPE_DRONES=("${drones[@]}")
    SHAPE_ETCD="$etcd"
    SHAPE_TLS="$tls"
}

# Records the hive's shape for read_shape: queen ports $1, drone ports $2 (each space-separated),
# etcd's port $3 (empty for a queen alone) and TLS $4 (1 or 0).
write_shape() {
    cat >"$SHAPE_FILE" <<SHAPE
# The hive scripts/hive-up.sh started here, read back to bring back what of it is missing;
# scripts/hive-down.sh removes it. Each piece's command line is in NAME.cmd, one argument a line.
queens $1
drones $2
tls $4
SHAPE
    if [[ -n "$3" ]]; then echo "etcd $3" >>"$SHAPE_FILE"; fi
}

# Sets QUEEN_PORTS to the queens to ask, in turn: HIVE_PORT alone when it is set, else every
# queen of the hive's shape, else 8080.
load_queens() {
    if [[ -n "${HIVE_PORT:-}" ]]; then
        QUEEN_PORTS=("$HIVE_PORT")
    elif read_shape; then
        QUEEN_PORTS=("${SHAPE_QUEENS[@]}")
    else
        QUEEN_PORTS=(8080)
    fi
}

# Sets TOKEN to the cluster token: HIVE_TOKEN, else the one scripts/hive-up.sh wrote, else none.
load_token() {
    TOKEN="${HIVE_TOKEN:-}"
    if [[ -z "$TOKEN" && -r "$HIVE_DIR/token" ]]; then TOKEN="$(<"$HIVE_DIR/token")"; fi
}

# For a hive started with --tls (its certificates are in .hive/tls/): sets SCHEME to https and
# CURL_TLS to the curl options that trust the hive's CA and show the user's certificate.
load_tls() {
    if [[ -r "$TLS_DIR/user.pem" ]]; then
        SCHEME=https
        CURL_TLS=(--cacert "$TLS_DIR/ca.pem" --cert "$TLS_DIR/user.pem" --key "$TLS_DIR/user.key")
    fi
}

# curl with the hive's TLS options (see load_tls) and the cluster token when there is one, the
# token passed through a file descriptor so it never shows in ps.
hive_curl() {
    if [[ -n "$TOKEN" ]]; then
        curl "${CURL_TLS[@]}" -H @<(printf 'Authorization: Bearer %s\n' "$TOKEN") "$@"
    else
        curl "${CURL_TLS[@]}" "$@"
    fi
}

# ask_queens PATH CURL_OPTIONS...: hive_curl with the options to PATH on each queen of QUEEN_PORTS
# in turn, until one takes the connection (a refused one sent nothing, so the next may be asked
# the same); stdin goes with each try as QUEEN_BODY. Sets QUEEN_REPLY to what curl printed (its
# errors too), ASKED_PORT to the queen that took it (none if none did) and DOWN_PORTS to those
# that refused; returns curl's status for the last queen tried.
# shellcheck disable=SC2034 # QUEEN_REPLY, ASKED_PORT and DOWN_PORTS are for the sourcing script
ask_queens() {
    local path="$1" port status=7
    shift
    QUEEN_REPLY=""
    ASKED_PORT=""
    DOWN_PORTS=()
    for port in "${QUEEN_PORTS[@]}"; do
        status=0
        QUEEN_REPLY="$(hive_curl "$@" "$SCHEME://127.0.0.1:$port$path" 2>&1 <<<"${QUEEN_BODY:-}")" || status=$?
        if ((status == 7)); then
            DOWN_PORTS+=("$port")
            continue
        fi
        ASKED_PORT="$port"
        break
    done
    return "$status"
}

# Splits what `curl -w '\n%{http_code}'` printed into REPLY_BODY (without the queen's final
# newline) and REPLY_CODE.
# shellcheck disable=SC2034 # REPLY_CODE and REPLY_BODY are for the sourcing script
split_reply() {
    REPLY_CODE="${1##*$'\n'}"
    REPLY_BODY="${1%$'\n'*}"
    REPLY_BODY="${REPLY_BODY%$'\n'}"
}
