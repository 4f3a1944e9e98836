#!/usr/bin/env bash
# The project's single test command: formatting, lints, then every test.
#
#   scripts/test.sh [ARGS...]     (ARGS go to cargo test, e.g. scripts/test.sh tutorial -- --nocapture)
#
# First makes sure what the tests need is installed: curl, etcd (Debian's etcd-server), rustfmt and
# clippy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }
fail() {
    echo "test: error: $*" >&2
    exit 1
}

step "checking prerequisites"
# Debian packages the tests need: curl (the tests call it) and etcd (the store of several queens).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v etcd >/dev/null || missing+=(etcd-server)
if ((${#missing[@]} > 0)); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "missing: ${missing[*]}; installing with apt-get"
        if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"; }; then
            fail "could not install ${missing[*]} with apt-get"
        fi
    else
        fail "the tests need ${missing[*]}, which is not installed; install it (e.g. sudo apt-get install -y ${missing[*]}) and run again"
    fi
fi
command -v etcd >/dev/null || fail "etcd is still missing after installing etcd-server"
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
echo "curl, etcd, cargo, rustfmt and clippy are present"

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test $*"
cargo test "$@"

step "all checks passed"
