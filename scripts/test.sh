#!/usr/bin/env bash
# Run the full redcall test suite (unit, integration and doc tests).
#
# Integration tests start their own throwaway redis-server processes, so
# redis-server must be installed; it is installed via apt-get if missing.
# Any arguments are passed through to `cargo test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*"; }

# Run a command as root: directly if we are root, else via sudo if available.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

ensure_redis() {
    command -v redis-server >/dev/null 2>&1 && return 0
    log "redis-server not found; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y redis-server; then
        as_root apt-get update
        as_root apt-get install -y redis-server
    fi
}

log "redcall tests: ensure redis-server, then cargo test (unit + integration + doc tests)"
ensure_redis
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi
log "using $(redis-server --version | head -n1)"
log "cargo test $*"
exec cargo test "$@"
