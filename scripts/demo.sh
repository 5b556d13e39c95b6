#!/usr/bin/env bash
# Interactive demo of redcall against a real Redis.
#
# Starts a throwaway redis-server on a free loopback port in a temp dir
# (installing redis-server via apt-get if needed), unless REDIS_URL is set:
# then it uses that Redis, and stops if it does not answer PING (a Redis you
# run already, say on 127.0.0.1:6379, is never used unless you ask). It then
# builds redcall (cargo's progress shown: a first release build takes
# minutes), starts a responder (`serve`) and walks through a few calls,
# including params from a file and the two-program flow where a caller waits
# and a second program replies by id. Everything the script starts is stopped
# by PID on exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/redis-lib.sh
source scripts/redis-lib.sh

REDIS_URL="${REDIS_URL:-}"
BIN=target/release/redcall
SERVICE="demo-$$"
MANUAL_SERVICE="demo-$$-manual"
TMP="$(mktemp -d -t redcall-demo.XXXXXX)"
URL=""
REDIS_PID=""
SERVE_PID=""
CALL_PID=""

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
heading() { printf '\n=== %s ===\n' "$*"; }

# Print a command line with arguments quoted only where needed.
show_cmd() {
    local out="\$" arg
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./:=@-]+$ ]]; then out+=" $arg"; else out+=" '$arg'"; fi
    done
    printf '%s\n' "$out"
}

cleanup() {
    local rc=$?
    stop_pid "$CALL_PID"
    stop_pid "$SERVE_PID"
    if [[ $rc -ne 0 && -s "$TMP/serve.log" ]]; then
        printf '\n--- responder log (tail) ---\n' >&2
        tail -n 20 "$TMP/serve.log" >&2
    fi
    # On a Redis we did not start, remove the demo's streams (records and replies expire on their own).
    if [[ -z "$REDIS_PID" && -n "$URL" ]] && command -v redis-cli >/dev/null 2>&1; then
        local svc
        for svc in "$SERVICE" "$MANUAL_SERVICE"; do
            redis-cli -u "$URL" DEL "{redcall:$svc}:requests" "{redcall:$svc}:dead" "{redcall:$svc}:runs" >/dev/null 2>&1 || true
        done
    fi
    stop_pid "$REDIS_PID"
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

# redcall against the demo service / the manual-reply service.
rc() { "$BIN" --url "$URL" --service "$SERVICE" "$@"; }
rcm() { "$BIN" --url "$URL" --service "$MANUAL_SERVICE" "$@"; }

# Print a heading with the command line, then run it.
demo() {
    heading "$*"
    show_cmd redcall --url "$URL" --service "$SERVICE" "$@"
    rc "$@"
}

# --- Redis -----------------------------------------------------------------
if [[ -n "$REDIS_URL" ]]; then
    redis_answers "$REDIS_URL" || die "REDIS_URL is set, but no Redis answers PING at $REDIS_URL (unset it for a throwaway redis-server)"
    URL="$REDIS_URL"
    log "using Redis at $URL (from REDIS_URL)"
else
    log "REDIS_URL not set; starting a throwaway redis-server"
    ensure_redis
    start_throwaway_redis "$TMP/redis" || die "no throwaway redis-server"
    log "started throwaway redis-server (pid $REDIS_PID) at $URL"
fi

# --- Build & responder -----------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust from https://rustup.rs"
log "building redcall (release; the first build takes a few minutes)"
cargo build --release

log "starting responder: redcall --service $SERVICE serve (log: $TMP/serve.log)"
"$BIN" --url "$URL" --service "$SERVICE" serve >"$TMP/serve.log" 2>&1 &
SERVE_PID=$!
sleep 0.5
kill -0 "$SERVE_PID" 2>/dev/null || { wait "$SERVE_PID" || true; SERVE_PID=""; die "responder exited early"; }

# --- Calls handled by the responder ----------------------------------------
demo call echo '{"key1":"value1"}'
demo call sleep '{"ms":200}'

# Params from a file (`@PATH`; `-` reads stdin): past the 128 KiB the kernel allows one argument.
printf '{"from":"a file","items":[1,2,3]}\n' >"$TMP/params.json"
demo call echo "@$TMP/params.json"

heading "call fail (expected to fail)"
show_cmd redcall --url "$URL" --service "$SERVICE" call fail '{}'
code=0
out="$(rc call fail '{}' 2>&1)" || code=$?
printf '%s\n' "$out"
printf 'exit code: %s\n' "$code"
[[ $code -ne 0 ]] || log "warning: 'fail' unexpectedly succeeded"

# --- Two-program flow: one caller waits, another program replies -----------
heading "two-program flow (service $MANUAL_SERVICE)"
show_cmd redcall --url "$URL" --service "$MANUAL_SERVICE" call SomeFunction '{"a":1}' --id request_123 --timeout 10
echo "(running in the background, waiting for a reply)"
rcm call SomeFunction '{"a":1}' --id request_123 --timeout 10 >"$TMP/call.out" 2>&1 &
CALL_PID=$!

show_cmd redcall --url "$URL" --service "$MANUAL_SERVICE" info request_123
found=0
for _ in $(seq 50); do # up to 5 s
    if rcm info request_123 >"$TMP/info.out" 2>&1; then found=1; break; fi
    kill -0 "$CALL_PID" 2>/dev/null || break
    sleep 0.1
done
cat "$TMP/info.out"
[[ $found -eq 1 ]] || die "request_123 did not become visible via 'info' within 5 s"

show_cmd redcall --url "$URL" --service "$MANUAL_SERVICE" reply request_123 '{"answer":42}'
rcm reply request_123 '{"answer":42}'

code=0
wait "$CALL_PID" || code=$?
CALL_PID=""
printf -- '--- waiting caller output (exit code %s) ---\n' "$code"
cat "$TMP/call.out"

# --- A request no one can handle ends in the dead-letter stream; replay it -------
heading "call NoSuchFunction (expected to fail: unknown function key, dead-lettered)"
show_cmd redcall --url "$URL" --service "$SERVICE" call NoSuchFunction '{"x":1}' --id lost_1
code=0
out="$(rc call NoSuchFunction '{"x":1}' --id lost_1 2>&1)" || code=$?
printf '%s\nexit code: %s\n' "$out" "$code"
demo dlq list
demo stats

heading "done"
