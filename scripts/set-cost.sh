#!/usr/bin/env bash
# What one `SET key value PX ttl` costs Redis, by the size of the keyspace it lands in: the figure behind
# "where the time goes" in docs/performance.md. redcall writes two such keys per request (the request record and
# the stored reply); the bench's baseline writes none.
#
# Installs redis-server if missing, starts a throwaway one on a free loopback port in a temp dir (no persistence),
# runs redis-benchmark three times with keys shaped like redcall's (hash tag, prefix, 36-character id) and 150-byte
# values, and prints Redis's own `usec_per_call` for SET each time:
#   1. a small keyspace (1,000 keys, overwritten over and over);
#   2. a growing keyspace (every key new, up to ~400,000: what the bench's measurements do);
#   3. a large stable keyspace (~400,000 keys, overwritten).
# Then, on that large keyspace of records, the two ways to store a reply: as a key of its own (`SET reply-key NX PX`,
# what redcall does) and appended to the request record (`APPEND record-key`, an alternative that was measured and
# not taken, see docs/performance.md).
# The server is stopped by PID on exit. Takes about 20 s.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/redis-lib.sh
source scripts/redis-lib.sh

TMP="$(mktemp -d -t redcall-setcost.XXXXXX)"
REDIS_PID=""
cleanup() {
    stop_pid "$REDIS_PID"
    rm -rf "$TMP"
}
trap cleanup EXIT

ensure_redis
start_throwaway_redis "$TMP/redis"
PORT="$REDIS_PORT"

KEY='{redcall:orders}:req:__rand_int__-0000-7000-8000-000000000000'
VALUE="$(head -c 150 /dev/zero | tr '\0' 'x')"

cost() { # $1: label, $2: key range (-r), $3: requests (-n), then the command; prints Redis's µs per call of it
    local label="$1" range="$2" requests="$3"
    shift 3
    local name
    name="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')"
    redis-cli -p "$PORT" config resetstat >/dev/null
    redis-benchmark -p "$PORT" -q -P 64 -r "$range" -n "$requests" "$@" >/dev/null 2>&1
    local per_call keys
    per_call="$(redis-cli -p "$PORT" info commandstats | sed -n "s/^cmdstat_${name}:.*usec_per_call=\([0-9.]*\).*/\1/p")"
    keys="$(redis-cli -p "$PORT" dbsize)"
    printf '%-48s %6s µs per %s   (%s keys at the end)\n' "$label" "$per_call" "$1" "$keys"
}

set_cost() { # $1: label, $2: key range (-r), $3: requests (-n)
    cost "$1" "$2" "$3" SET "$KEY" "$VALUE" PX 3600000
}

set_cost "small keyspace (1,000 keys, overwritten)" 1000 400000
redis-cli -p "$PORT" flushall >/dev/null
set_cost "growing keyspace (every key new)" 100000000 400000
redis-cli -p "$PORT" flushall >/dev/null
redis-benchmark -p "$PORT" -q -P 64 -r 400000 -n 3000000 SET "$KEY" "$VALUE" PX 3600000 >/dev/null 2>&1
set_cost "large stable keyspace (~400,000, overwritten)" 400000 400000
REPLY_KEY='{redcall:orders}:reply:__rand_int__-0000-7000-8000-000000000000'
REPLY="$(head -c 100 /dev/zero | tr '\0' 'y')"
cost "reply as its own key (SET NX PX, new keys)" 400000 400000 SET "$REPLY_KEY" "$REPLY" NX PX 3600000
cost "reply appended to the record (APPEND)" 400000 400000 APPEND "$KEY" "$REPLY"
