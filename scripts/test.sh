#!/usr/bin/env bash
# The project's single test command: formatting, lints, then every test, in every crate of the
# workspace.
#
#   scripts/test.sh [ARGS...]     (ARGS go to cargo test, e.g. scripts/test.sh tutorial -- --nocapture)
#
# First makes sure what the tests need is installed: curl, etcd (Debian's etcd-server), openssl,
# rustfmt and clippy.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }
fail() {
    echo "test: error: $*" >&2
    exit 1
}

step "checking prerequisites"
# Debian packages the tests need: curl (the tests call it), etcd (the store of several queens),
# openssl (the TLS tests make their certificates with it), python3 (the containment tests' tasks
# allocate, fork and handle SIGTERM in Python) and chromium (the dashboard's tests drive it).
install_missing test curl:curl etcd:etcd-server openssl:openssl python3:python3 chromium:chromium
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
echo "curl, etcd, openssl, python3, chromium, cargo, rustfmt and clippy are present"

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace $*"
cargo test --workspace "$@"

step "all checks passed"
