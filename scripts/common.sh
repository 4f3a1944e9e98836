# shellcheck shell=bash
# Shared by the hive scripts; source it, do not run it. Defines ROOT and HIVE_DIR, and helpers to
# find the hive's larves and to call the queen with the cluster token.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HIVE_DIR="$ROOT/.hive"
TOKEN="${TOKEN:-}"

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }

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

# curl with the cluster token when there is one, passed through a file descriptor so it never
# shows in ps.
hive_curl() {
    if [[ -n "$TOKEN" ]]; then
        curl -H @<(printf 'Authorization: Bearer %s\n' "$TOKEN") "$@"
    else
        curl "$@"
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
