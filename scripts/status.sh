#!/usr/bin/env bash
# Shows the local hive through one of its queens: GET /healthz and GET /drones.
#
# Asks the hive's queens in turn (those scripts/hive-up.sh recorded in .hive/shape; 8080 for a
# hive it did not start) until one takes the connection, and names any that refused it.
# Environment: HIVE_PORT (ask only the queen on this port), HIVE_TOKEN (cluster token; default:
# the one in .hive/token), HIVE_DIR (default .hive/). A hive started with --tls is called over
# HTTPS with the certificates in .hive/tls/. Exits non-zero if no queen is reachable.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_token
load_tls
load_queens

command -v curl >/dev/null || { echo "status: error: curl is needed but not installed" >&2; exit 1; }

# Pretty-prints JSON when python3 is there, else prints it as it came.
pretty() {
    if command -v python3 >/dev/null && python3 -m json.tool <<<"$1" 2>/dev/null; then
        return
    fi
    echo "$1"
}

# show PATH: prints a queen's answer to GET PATH; fails unless it is 2xx.
show() {
    local reply code
    if ! ask_queens "$1" -sS --max-time 5 -w '\n%{http_code}'; then
        echo "status: error: no queen on 127.0.0.1 port(s) ${QUEEN_PORTS[*]} answered (${QUEEN_REPLY%%$'\n'*}); is the hive up? scripts/hive-up.sh starts it, or brings back what of it is missing" >&2
        return 1
    fi
    split_reply "$QUEEN_REPLY"
    code="$REPLY_CODE"
    reply="$REPLY_BODY"
    echo "GET $1 -> HTTP $code (queen on port $ASKED_PORT)"
    pretty "$reply"
    if [[ "$code" != 2?? ]]; then
        echo "status: error: GET $1 answered HTTP $code (is port $ASKED_PORT really the queen?)" >&2
        return 1
    fi
}

show /healthz
show /drones
# The queens after the one that answered, not asked yet: are they there at all?
down=("${DOWN_PORTS[@]}")
after=0
for port in "${QUEEN_PORTS[@]}"; do
    if ((after)); then
        status=0
        hive_curl -s -o /dev/null --max-time 2 "$SCHEME://127.0.0.1:$port/healthz" || status=$?
        if ((status == 7)); then down+=("$port"); fi
    fi
    if [[ "$port" == "$ASKED_PORT" ]]; then after=1; fi
done
if ((${#down[@]} > 0)); then
    echo "status: the queen(s) on port(s) ${down[*]} refused the connection; scripts/hive-up.sh brings back what is missing of the hive" >&2
fi
