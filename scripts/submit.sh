#!/usr/bin/env bash
# Submits a task to the local hive and prints the queen's answer.
#
#   scripts/submit.sh TEXT...      (several words are joined with spaces)
#
# Asks the hive's queens in turn (those scripts/hive-up.sh recorded in .hive/shape; 8080 for a
# hive it did not start) until one takes the connection, so a dead queen is passed over.
# Environment: HIVE_PORT (ask only the queen on this port), HIVE_TOKEN (cluster token; default:
# the one in .hive/token), HIVE_DIR (default .hive/). A hive started with --tls is called over
# HTTPS with the certificates in .hive/tls/. Exits non-zero unless a queen answers 2xx.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_token
load_tls
load_queens

if (($# == 0)); then
    echo "usage: scripts/submit.sh TEXT...   (posts {\"text\": TEXT} to /submit_task on the first queen of port(s) ${QUEEN_PORTS[*]} that answers; HIVE_PORT names another)" >&2
    exit 2
fi
command -v curl >/dev/null || { echo "submit: error: curl is needed but not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "submit: error: python3 is needed (to JSON-escape the text) but not installed" >&2; exit 1; }

text="$*"
QUEEN_BODY="$(python3 -c 'import json, sys; print(json.dumps({"text": sys.argv[1]}))' "$text")"

# The status code goes on a last line of its own after the body.
if ! ask_queens /submit_task -sS --max-time 60 -w '\n%{http_code}' -H 'Content-Type: application/json' --data-binary @-; then
    if [[ -z "$ASKED_PORT" ]]; then
        echo "submit: error: cannot reach a queen on 127.0.0.1 port(s) ${QUEEN_PORTS[*]} (is the hive up? scripts/hive-up.sh starts it, or brings back what of it is missing)" >&2
    else
        echo "submit: error: the queen on port $ASKED_PORT did not answer (${QUEEN_REPLY%%$'\n'*})" >&2
    fi
    exit 1
fi
if ((${#DOWN_PORTS[@]} > 0)); then
    echo "submit: the queen(s) on port(s) ${DOWN_PORTS[*]} refused the connection; asked the one on port $ASKED_PORT (scripts/hive-up.sh brings back what is missing)" >&2
fi
split_reply "$QUEEN_REPLY"
code="$REPLY_CODE"
reply="$REPLY_BODY"

echo "$reply"
if [[ "$code" != 2?? ]]; then
    echo "submit: error: the queen answered HTTP $code" >&2
    exit 1
fi
