# Shared by the bench scripts (source it): a scratch directory and the processes started,
# both cleaned up on exit; free loopback ports; a throwaway redis-server.
#
#   . "$(dirname "$0")/lib.sh"
#   bench_setup million        # WORK=/tmp/sg-million.XXXXXX, PIDS=(), trap on EXIT
#   start_redis                # REDIS_PORT, a redis-server without persistence, answering
#   PORT=$(free_port)

bench_setup() {
  WORK=$(mktemp -d "/tmp/sg-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
}
