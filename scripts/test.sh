#!/usr/bin/env bash
# Run the full redcall test suite (unit, integration and doc tests).
#
# Integration tests start their own throwaway redis-server processes, so
# redis-server must be installed; it is installed via apt-get if missing.
# Any arguments are passed through to `cargo test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/redis-lib.sh
source scripts/redis-lib.sh

log() { printf '==> %s\n' "$*"; }

log "redcall tests: ensure redis-server, then cargo test (unit + integration + doc tests)"
ensure_redis
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi
log "using $(redis-server --version | head -n1)"
log "cargo test $*"
exec cargo test "$@"
