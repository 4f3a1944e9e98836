#!/usr/bin/env bash
# Shows the local hive's queen: GET /healthz and GET /drones.
#
# Environment: HIVE_PORT (queen port, default 8080), HIVE_TOKEN (cluster token; default: the one in
# .hive/token), HIVE_DIR (default .hive/). A hive started with --tls is called over HTTPS with the
# certificates in .hive/tls/. Exits non-zero if the queen is unreachable.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_token
load_tls

PORT="${HIVE_PORT:-8080}"
BASE="$SCHEME://127.0.0.1:$PORT"

command -v curl >/dev/null || { echo "status: error: curl is needed but not installed" >&2; exit 1; }

# Pretty-prints JSON when python3 is there, else prints it as it came.
pretty() {
    if command -v python3 >/dev/null && python3 -m json.tool <<<"$1" 2>/dev/null; then
        return
    fi
    echo "$1"
}

# show PATH: prints the queen's answer to GET PATH; fails unless it is 2xx.
show() {
    local reply code
    if ! reply="$(hive_curl -sS --max-time 5 -w '\n%{http_code}' "$BASE$1" 2>&1)"; then
        echo "status: error: the queen at 127.0.0.1:$PORT is unreachable (${reply%%$'\n'*}); is the hive up? start it with scripts/hive-up.sh" >&2
        return 1
    fi
    split_reply "$reply"
    code="$REPLY_CODE"
    reply="$REPLY_BODY"
    echo "GET $1 -> HTTP $code"
    pretty "$reply"
    if [[ "$code" != 2?? ]]; then
        echo "status: error: GET $1 answered HTTP $code (is port $PORT really the queen?)" >&2
        return 1
    fi
}

show /healthz
show /drones
