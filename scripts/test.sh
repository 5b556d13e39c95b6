#!/usr/bin/env bash
# Run the full redcall test suite (unit, integration and doc tests), after checking that the library builds
# alone, without the `cli` feature's dependencies (what a user with `default-features = false` compiles).
#
# Integration tests start their own throwaway redis-server processes, so
# redis-server must be installed; it is installed via apt-get if missing, as is openssl (for the TLS tests).
# Any arguments are passed through to `cargo test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/redis-lib.sh
source scripts/redis-lib.sh

log() { printf '==> %s\n' "$*"; }

log "redcall tests: ensure redis-server and openssl, build the library alone, then cargo test (unit + integration + doc tests)"
ensure_redis
# The TLS tests make their certificates with the openssl CLI (and would skip without it).
if ! command -v openssl >/dev/null 2>&1; then
    log "openssl not found; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y openssl || { as_root apt-get update && as_root apt-get install -y openssl; }
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi
log "the library alone: cargo build and cargo clippy --no-default-features --lib"
cargo build --no-default-features --lib
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --no-default-features --lib -- -D warnings
else
    log "cargo clippy not installed; skipping its check of the library alone"
fi
log "using $(redis-server --version | head -n1)"
log "cargo test $*"
exec cargo test "$@"
