# shellcheck shell=bash
# Shared by the hive scripts; source it, do not run it. Defines ROOT and HIVE_DIR (.hive/ in the
# repo root unless HIVE_DIR says otherwise), and helpers to install what a script needs, to find
# the hive's larves and to call the queen with the cluster token (and, for a hive started with
# --tls, over HTTPS with its certificates).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HIVE_DIR="${HIVE_DIR:-$ROOT/.hive}"
# HIVE_DIR as messages show it: relative to the repo root when inside it.
SHOWN_DIR="${HIVE_DIR#"$ROOT"/}"
TLS_DIR="$HIVE_DIR/tls"
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

# Splits what `curl -w '\n%{http_code}'` printed into REPLY_BODY (without the queen's final
# newline) and REPLY_CODE.
# shellcheck disable=SC2034 # REPLY_CODE and REPLY_BODY are for the sourcing script
split_reply() {
    REPLY_CODE="${1##*$'\n'}"
    REPLY_BODY="${1%$'\n'*}"
    REPLY_BODY="${REPLY_BODY%$'\n'}"
}
