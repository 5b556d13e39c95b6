# Shared by the scripts in this folder (sourced, not run): installing redis-server where it is missing and
# starting a throwaway one. Every process started here is stopped by its PID, never by name.

# Run a command as root: directly if we are root, else through sudo.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        printf 'error: need root (or sudo) to run: %s\n' "$*" >&2
        return 1
    fi
}

# Installs Debian's redis-server (which brings redis-cli and redis-benchmark) when redis-server or redis-cli is
# missing.
ensure_redis() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
    printf '==> %s\n' "redis-server/redis-cli not found; installing redis-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y redis-server; then
        as_root apt-get update
        as_root apt-get install -y redis-server
    fi
}

# Sends SIGTERM to a PID this script started, and reaps it.
stop_pid() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# True if the Redis at URL $1 answers PONG.
redis_answers() {
    command -v redis-cli >/dev/null 2>&1 || return 1
    [[ "$(timeout 5 redis-cli --no-auth-warning -u "$1" ping 2>/dev/null)" == PONG ]]
}

# True if something already listens on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts a throwaway redis-server (no persistence) on a free loopback port, with its files in directory $1.
# Sets REDIS_PID, REDIS_PORT and URL; returns 1 (with the server's log on stderr) when no attempt worked.
start_throwaway_redis() {
    local dir="$1" attempt i
    mkdir -p "$dir"
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        REDIS_PORT=$((20000 + RANDOM % 40000))
        port_in_use "$REDIS_PORT" && continue
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
            --daemonize no --dir "$dir" --logfile "$dir/redis.log" >/dev/null 2>&1 &
        REDIS_PID=$!
        for i in $(seq 100); do
            kill -0 "$REDIS_PID" 2>/dev/null || break # exited: port taken, try another
            if redis_answers "redis://127.0.0.1:$REDIS_PORT"; then
                URL="redis://127.0.0.1:$REDIS_PORT"
                return 0
            fi
            sleep 0.05
        done
        stop_pid "$REDIS_PID"
        REDIS_PID=""
    done
    printf 'error: could not start a throwaway redis-server: %s\n' "$(tail -n 5 "$dir/redis.log" 2>/dev/null)" >&2
    return 1
}
