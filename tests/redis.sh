# Sourced by tests/run.sh: makes sure a Redis server binary is installed
# (Debian's redis-server package), starts a private one on a free loopback
# port in a temporary directory, exports its URL as BROKER_TEST_REDIS_URL,
# and stops it when the calling shell exits. Nothing is persisted.

ensure_redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    echo "== installing redis-server (Debian package)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "redis-server is missing and this is not root: install Debian's redis-server package" >&2
        return 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

# A port the kernel just handed out on 127.0.0.1 and nobody holds now.
free_loopback_port() {
    python3 - <<'PY' 2>/dev/null || node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

start_test_redis() {
    ensure_redis_server
    REDIS_TEST_DIR="$(mktemp -d)"
    local attempt port
    for attempt in 1 2 3 4 5; do
        port="$(free_loopback_port)"
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$REDIS_TEST_DIR" --daemonize no --loglevel warning \
            >"$REDIS_TEST_DIR/redis.log" 2>&1 &
        REDIS_TEST_PID=$!
        trap stop_test_redis EXIT
        # Wait (bounded) until it answers PING, or until it died (port taken).
        local tries
        for tries in $(seq 1 100); do
            if ! kill -0 "$REDIS_TEST_PID" 2>/dev/null; then
                break
            fi
            if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
                export BROKER_TEST_REDIS_URL="redis://127.0.0.1:$port"
                echo "== redis-server $(redis-server --version | awk '{print $3}') on $BROKER_TEST_REDIS_URL (pid $REDIS_TEST_PID)"
                return 0
            fi
            sleep 0.1
        done
        kill "$REDIS_TEST_PID" 2>/dev/null || true
        wait "$REDIS_TEST_PID" 2>/dev/null || true
        echo "redis-server did not start on port $port (attempt $attempt):" >&2
        cat "$REDIS_TEST_DIR/redis.log" >&2 || true
    done
    return 1
}

stop_test_redis() {
    if [ -n "${REDIS_TEST_PID:-}" ]; then
        kill "$REDIS_TEST_PID" 2>/dev/null || true
        wait "$REDIS_TEST_PID" 2>/dev/null || true
        REDIS_TEST_PID=""
    fi
    if [ -n "${REDIS_TEST_DIR:-}" ]; then
        rm -rf "$REDIS_TEST_DIR"
        REDIS_TEST_DIR=""
    fi
}
