#!/usr/bin/env bash
# The project's single test command: formatting, lints, then every test.
#
#   scripts/test.sh [ARGS...]     (ARGS go to cargo test, e.g. scripts/test.sh tutorial -- --nocapture)
#
# First makes sure what the tests need is installed: curl (the tests call it), rustfmt and clippy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }
fail() {
    echo "test: error: $*" >&2
    exit 1
}

step "checking prerequisites"
if ! command -v curl >/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "curl is missing; installing it with apt-get"
        if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y curl; }; then
            fail "could not install curl with apt-get"
        fi
    else
        fail "the tests need curl, which is not installed; install it (e.g. sudo apt-get install -y curl) and run again"
    fi
fi
command -v cargo >/dev/null || fail "cargo is not installed (see https://rustup.rs)"
for tool in fmt:rustfmt clippy:clippy; do
    sub="${tool%%:*}"
    component="${tool##*:}"
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || fail "cargo $sub is missing and rustup is not installed to add $component"
        echo "cargo $sub is missing; installing it with rustup component add $component"
        rustup component add "$component" || fail "could not install the $component component"
    fi
done
echo "curl, cargo, rustfmt and clippy are present"

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test $*"
cargo test "$@"

step "all checks passed"
