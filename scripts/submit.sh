#!/usr/bin/env bash
# Submits a task to the local hive's queen and prints her answer.
#
#   scripts/submit.sh TEXT...      (several words are joined with spaces)
#
# Environment: HIVE_PORT (queen port, default 8080), HIVE_TOKEN (cluster token; default: the one in
# .hive/token), HIVE_DIR (default .hive/). A hive started with --tls is called over HTTPS with the
# certificates in .hive/tls/. Exits non-zero unless the queen answers 2xx.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_token
load_tls

PORT="${HIVE_PORT:-8080}"
URL="$SCHEME://127.0.0.1:$PORT/submit_task"

if (($# == 0)); then
    echo "usage: scripts/submit.sh TEXT...   (posts {\"text\": TEXT} to $URL; set HIVE_PORT for another port)" >&2
    exit 2
fi
command -v curl >/dev/null || { echo "submit: error: curl is needed but not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "submit: error: python3 is needed (to JSON-escape the text) but not installed" >&2; exit 1; }

text="$*"
body="$(python3 -c 'import json, sys; print(json.dumps({"text": sys.argv[1]}))' "$text")"

# The status code goes on a last line of its own after the body.
if ! reply="$(hive_curl -sS --max-time 60 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @- "$URL" <<<"$body")"; then
    echo "submit: error: cannot reach the queen at 127.0.0.1:$PORT (is the hive up? scripts/hive-up.sh)" >&2
    exit 1
fi
split_reply "$reply"
code="$REPLY_CODE"
reply="$REPLY_BODY"

echo "$reply"
if [[ "$code" != 2?? ]]; then
    echo "submit: error: the queen answered HTTP $code" >&2
    exit 1
fi
