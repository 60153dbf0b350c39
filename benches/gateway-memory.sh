#!/usr/bin/env bash
# The RSS of a real sessiongate process holding a million cached sessions.
#
# benches/memory.rs measures the cache in a small process; this drives the release
# binary end to end: a redis-server with SESSIONS sessions (default 1,000,000) written
# in the documented schema, the load bench's 64-byte upstream, and `wrk` sending one
# request per session cookie (then cycling through them again) to a non-critical route.
# Every first request is a cache miss: a Redis read, a decode and an EdDSA mint, so the
# cache fills with sessions and the token cache with their tokens. It prints the
# gateway's RSS and cache gauges before, during and after.
#
# Run from the repository root after a release build of the benches
# (`cargo bench -p gateway --bench load` builds both binaries):
#   CARGO_TARGET_DIR=... benches/gateway-memory.sh
# Needs redis-server, redis-cli, wrk, python3. Takes 3-5 minutes on two cores.
set -euo pipefail

SESSIONS=${SESSIONS:-1000000}
TARGET=${CARGO_TARGET_DIR:-target}
GATEWAY=$TARGET/release/sessiongate
UPSTREAM_BIN=$(ls -t "$TARGET"/release/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -x "$GATEWAY" ] && [ -n "$UPSTREAM_BIN" ] || {
  echo "build first: cargo bench -p gateway --bench load (with the same CARGO_TARGET_DIR)" >&2
  exit 2
}

. "$(dirname "$0")/lib.sh"
bench_setup million
start_redis
UP_PORT=$(free_port); PORT=$(free_port); ADMIN_PORT=$(free_port)
"$UPSTREAM_BIN" --serve-upstream "127.0.0.1:$UP_PORT" >/dev/null 2>&1 &
PIDS+=($!)

# Two wrk threads, each cycling through its half of the cookies: memtest-<thread>-<n>.
HALF=$((SESSIONS / 2))
python3 - "$HALF" >"$WORK/sessions.resp" <<'EOF'
import hashlib, sys
half = int(sys.argv[1])
out = sys.stdout.buffer
for t in (1, 2):
    for n in range(half):
        cookie = f"memtest-{t}-{n:012d}"
        key = "sg:session:" + hashlib.sha256(cookie.encode()).hexdigest()
        tail = f"{t}{n:09d}"
        value = ('{"sub":"user-%s","exp":4102444800,"roles":["reader","writer"],'
                 '"email":"user-%s@example.com","theme":"dark"}') % (tail, tail)
        parts = [b"SET", key.encode(), value.encode(), b"EX", b"7200"]
        out.write(b"*%d\r\n" % len(parts))
        for p in parts:
            out.write(b"$%d\r\n%s\r\n" % (len(p), p))
EOF
redis-cli -p "$REDIS_PORT" --pipe <"$WORK/sessions.resp" | tail -1
rm "$WORK/sessions.resp"

cat >"$WORK/sessiongate.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
threads = 2
upgrade_sock = "$WORK/upgrade.sock"

[redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"
pool_size = 4

[session]
cache_ttl = "1h"
cache_max_entries = $SESSIONS
cache_max_bytes = "288MiB"
token_cache_max_bytes = "64MiB"

[token]
algorithm = "EdDSA"

[keys]
store = "file"
dir = "$WORK/keys"

[log]
filter = "warn"

[[route]]
name = "api"
path_prefix = "/api"
upstreams = ["127.0.0.1:$UP_PORT"]
EOF
mkdir -p "$WORK/keys"
"$GATEWAY" run --config "$WORK/sessiongate.toml" >"$WORK/gateway.log" 2>&1 &
GW=$!
PIDS+=("$GW")
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$GW" 2>/dev/null || { cat "$WORK/gateway.log" >&2; exit 1; }
  sleep 0.2
done

rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$GW/status"; }
gauge() { curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# Requests the gateway has answered, over every route and status.
served() {
  curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '$1 ~ /^sessiongate_requests_total\{/ {s += $2} END {printf "%d", s}'
}
report() {
  echo "| $1 | $(gauge sessiongate_session_cache_entries) | $(gauge sessiongate_token_cache_entries) | $(rss) |"
}

cat >"$WORK/cycle.lua" <<EOF
local half = $HALF
local n = 0
local id = 0
local ids = 0
function setup(thread)
  ids = ids + 1
  thread:set("id", ids)
end
function init(args)
  id = wrk.thread:get("id")
end
function request()
  local cookie = string.format("memtest-%d-%012d", id, n % half)
  n = n + 1
  return wrk.format("GET", "/api/x", { ["Cookie"] = "__Host-session=" .. cookie })
end
EOF

echo "### A sessiongate process holding $SESSIONS sessions ($(date -u +%FT%TZ))"
echo
echo "| after | cached sessions | sessions with a token | RSS MiB |"
echo "|---|---:|---:|---:|"
report "start (ready, idle)"
# One pass fills the cache; a second pass (all hits) shows it stays put.
for pass in 1 2; do
  deadline=$((SECONDS + 900))
  wrk -t2 -c64 -d900s -s "$WORK/cycle.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk-$pass.txt" 2>&1 &
  WRK=$!
  while kill -0 "$WRK" 2>/dev/null; do
    sleep 5
    if [ "$(served)" -ge $((pass * SESSIONS)) ] || [ $SECONDS -ge $deadline ]; then
      kill -INT "$WRK" 2>/dev/null || true
      wait "$WRK" 2>/dev/null || true
      break
    fi
  done
  report "pass $pass ($(served) requests served)"
done
non2xx=$(grep -h "Non-2xx" "$WORK"/wrk-*.txt || true)
echo
echo "wrk: ${non2xx:-no non-2xx answers}"
