#!/usr/bin/env bash
# The chaos run of docs/guarantees.md: CALLS `redcall call ... --timeout 60` (CONCURRENCY at once) against three
# `redcall serve` responders that are SIGKILLed and restarted every 2 s, plus one restart of Redis (AOF always,
# down about 1 s) while the calls run. Prints how many calls were answered, and each other exit status with its
# count. Everything runs on 127.0.0.1; every process started here is stopped by its PID.
#
#   scripts/chaos.sh                 # 1000 calls at concurrency 40
#   CALLS=200 CONCURRENCY=20 DOWN=3 scripts/chaos.sh
#   scripts/chaos.sh --fail-fast     # the same run with the opt-in fail-fast mode, for contrast
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/redis-lib.sh
source scripts/redis-lib.sh

CALLS=${CALLS:-1000}
CONCURRENCY=${CONCURRENCY:-40}
DOWN=${DOWN:-1}  # seconds Redis stays down
FLAG=${1:-}  # nothing, or --fail-fast
log() { printf '==> %s\n' "$*" >&2; }

ensure_redis
cargo build --release --quiet
BIN=target/release/redcall
DIR=$(mktemp -d -t redcall-chaos-XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="redis://127.0.0.1:$PORT"
SERVICE="chaos-$$"
REDIS_PID=""

# Processes are started in a subshell, so that killing them leaves no job notices in this script's output.
start_redis() {
    (redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --appendonly yes --appendfsync always --save '' \
        --daemonize no --logfile "$DIR/redis.log" &
        echo $! >"$DIR/redis.pid")
    REDIS_PID=$(cat "$DIR/redis.pid")
    for _ in $(seq 100); do redis_answers "$URL" && return 0; sleep 0.05; done
    log "redis-server did not start"; return 1
}

# Starts responder $1 and records its PID in $DIR/resp.$1 (read by the chaos loop and by cleanup, which run in
# other shells).
start_responder() {
    ("$BIN" --url "$URL" --service "$SERVICE" serve --consumer "resp-$1-$RANDOM" --visibility-timeout 2000 \
        >/dev/null 2>>"$DIR/responders.log" &
        echo $! >"$DIR/resp.$1")
}

cleanup() {
    [[ -n "${CHAOS_PID:-}" ]] && kill "$CHAOS_PID" 2>/dev/null && wait "$CHAOS_PID" 2>/dev/null || true
    for i in 0 1 2; do
        [[ -f "$DIR/resp.$i" ]] && kill -KILL "$(cat "$DIR/resp.$i")" 2>/dev/null || true
    done
    [[ -f "$DIR/redis.pid" ]] && REDIS_PID=$(cat "$DIR/redis.pid")
    [[ -n "$REDIS_PID" ]] && kill -TERM "$REDIS_PID" 2>/dev/null || true
    sleep 0.2
    rm -rf "$DIR"
}
trap cleanup EXIT

SECONDS=0
start_redis
for i in 0 1 2; do start_responder "$i"; done
log "Redis at $URL (AOF always), 3 responders, $CALLS calls at concurrency $CONCURRENCY $FLAG"

# The chaos: every 2 s one responder is SIGKILLed and replaced; at about 3 s Redis is SIGKILLed, kept down 1 s and
# restarted on the same port and directory (DOWN seconds later). Each call asks for 300 ms of work, so the run lasts well past both.
(
    round=0
    while true; do
        sleep 2
        victim=$((round % 3))
        kill -KILL "$(cat "$DIR/resp.$victim")" 2>/dev/null || true
        start_responder "$victim"
        round=$((round + 1))
    done
) &
CHAOS_PID=$!
(
    sleep 3
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    log "Redis SIGKILLed at ${SECONDS}s; down for ${DOWN}s"
    sleep "$DOWN"
    start_redis
    log "Redis restarted at ${SECONDS}s"
) &
RESTART_PID=$!

# shellcheck disable=SC2016 # expanded by the inner shell
seq "$CALLS" | xargs -P "$CONCURRENCY" -I{} sh -c \
    '"$0" --url "$1" --service "$2" $4 call sleep "{\"ms\":300}" --timeout 60 >/dev/null 2>>"$3/calls.err"; echo $?' \
    "$BIN" "$URL" "$SERVICE" "$DIR" "$FLAG" >"$DIR/codes" || true
elapsed=$SECONDS
wait "$RESTART_PID" || true

answered=$(grep -c '^0$' "$DIR/codes" || true)
printf 'answered %s of %s in %s s\n' "$answered" "$CALLS" "$elapsed"
sort "$DIR/codes" | uniq -c | sort -rn | awk '$2 != 0 { printf "exit %s: %s calls\n", $2, $1 }'
if grep -q '^error:' "$DIR/calls.err"; then
    echo "errors, most frequent first:"
    grep '^error:' "$DIR/calls.err" | sed 's/request [^:]*:/request ID:/' | sort | uniq -c | sort -rn | head -5
fi
[[ "$answered" == "$CALLS" ]]
