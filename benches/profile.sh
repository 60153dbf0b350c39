#!/usr/bin/env bash
# Where a gateway's CPU goes on one path under load: perf samples of the release binary
# while wrk drives one route, then a breakdown by what the time was spent on (Redis
# client, signing, claims and JSON, headers, metrics, logging, allocation, the proxy
# itself), and the proxy's CPU time per request from /proc.
#
#   benches/profile.sh [critical|cached|bare] [GATEWAY_BINARY]
#
# `bare` profiles the load bench's bare Pingora proxy on the same requests: the
# difference between a path's breakdown and bare's is what the gateway adds.
# ACCESS_LOG=off turns the access log off; PERF=off measures CPU per request only.
# HEADERS=browser has wrk send a browser's headers (lib.sh's cookie_script).
# ALG=EdDSA has the gateway sign with Ed25519 (default ES256).
# MEASURE=instructions counts the proxy's user-space instructions per request under
# callgrind instead (REQUESTS, default 2000, one at a time; needs valgrind; a 120 s
# session cache, CACHE_TTL, so that refreshes stay as rare as at full speed): within ~2%
# from run to run where CPU time on a shared machine moves by ±40%, but blind to the
# kernel.
# Runs from the repository root after a release build (`cargo bench -p gateway --bench load --no-run`, same CARGO_TARGET_DIR), which
# also builds the load bench's upstream. Needs perf (Debian: linux-perf), wrk,
# redis-server, python3; `kernel.perf_event_paranoid` at most 1 (as root it is set).
# Writes perf.data and the folded stacks under $OUT (default /tmp/sg-profile).
set -euo pipefail

PATH_KIND=${1:-critical}
TARGET=${CARGO_TARGET_DIR:-target}
GATEWAY=${2:-$TARGET/release/sessiongate}
UPSTREAM_BIN=$(ls -t "$TARGET"/release/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1)
DURATION=${DURATION:-20}
OUT=${OUT:-/tmp/sg-profile}
ACCESS_LOG=${ACCESS_LOG:-on}
PERF=${PERF:-on}
MEASURE=${MEASURE:-cpu}
REQUESTS=${REQUESTS:-2000}
# Under callgrind the proxy runs ~50x slower, so the default 5 s cache would refresh each
# session every few requests instead of every few hundred: count with a longer one.
CACHE_TTL=${CACHE_TTL:-$([ "$MEASURE" = cpu ] && echo 5s || echo 120s)}
[ -x "$GATEWAY" ] && [ -n "$UPSTREAM_BIN" ] || {
  echo "build first: cargo bench -p gateway --bench load --no-run" >&2
  exit 2
}
[ "$(id -u)" -ne 0 ] || echo -1 >/proc/sys/kernel/perf_event_paranoid

mkdir -p "$OUT"
. "$(dirname "$0")/lib.sh"
bench_setup prof
start_redis
UP_PORT=$(free_port); PORT=$(free_port); ADMIN_PORT=$(free_port)
"$UPSTREAM_BIN" --serve-upstream "127.0.0.1:$UP_PORT" >/dev/null 2>&1 &
PIDS+=($!)

write_sessions profile

FILTER="warn,sessiongate=info,gateway=info,exchange=info,keys=info"
[ "$ACCESS_LOG" = on ] || FILTER="warn"
gateway_config "$WORK" "$PORT" "$ADMIN_PORT" "$FILTER" "$CACHE_TTL"
# MEASURE=instructions runs the proxy under callgrind: slow, but its count of the
# proxy's own (user-space) instructions does not move with the machine's noise.
LAUNCH=()
[ "$MEASURE" = cpu ] || LAUNCH=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out")
if [ "$PATH_KIND" = bare ]; then
  # The load bench's bare Pingora proxy (same crates, 2 threads) forwarding the same
  # requests: the baseline the gateway's paths are compared with.
  "${LAUNCH[@]}" "$UPSTREAM_BIN" --serve-bare "127.0.0.1:$PORT" "127.0.0.1:$UP_PORT" 2 >/dev/null 2>"$WORK/gateway.log" &
  GW=$!
  PIDS+=($GW)
  until curl -s -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null; do sleep 0.1; done
else
  "${LAUNCH[@]}" "$GATEWAY" run --config "$WORK/gateway.toml" 2>"$WORK/gateway.log" &
  GW=$!
  PIDS+=($GW)
  wait_ready "$GW" "$ADMIN_PORT" "$WORK/gateway.log"
fi

if [ "$MEASURE" = instructions ]; then
  # The same requests one at a time over 4 keep-alive connections: REQUESTS after a
  # warm-up of as many, counting only from the end of the warm-up.
  drive() {
    python3 - "$PORT" "$1" "/$PATH_KIND/x" "$WORK/cookies" <<'EOF'
import http.client, sys
port, n, path, cookies = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], open(sys.argv[4]).read().split()
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
for i in range(n):
    conns[i % 4].request("GET", path, headers={"Cookie": "__Host-session=" + cookies[i % len(cookies)]})
    response = conns[i % 4].getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"{path}: {response.status}")
EOF
  }
  drive "$REQUESTS"
  callgrind_control -z "$GW" >/dev/null
  drive "$REQUESTS"
  callgrind_control -d "$GW" >/dev/null
  dump=$(ls -t "$OUT"/callgrind.out* | head -1)
  callgrind_annotate --inclusive=no --auto=no --threshold=100 "$dump" 2>/dev/null >"$OUT/callgrind.txt"
  python3 - "$OUT/callgrind.txt" "$REQUESTS" "$PATH_KIND" <<'EOF'
import re, sys, collections
# Self cost per function, grouped by the crate (or library) it belongs to.
text, n, path = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3]
total = int(re.search(r"^([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text, re.M).group(1).replace(",", ""))
OWNERS = [
    ("signature (aws-lc)", r"aws_lc|ecp_nistz|ed25519|p256"),
    ("Redis client (fred, redis-protocol, direct reads)", r"fred::|redis_protocol|store::direct"),
    ("exchange (session lookup, cache, minting)", r"exchange::|quick_cache|sha2::"),
    ("JSON and base64", r"serde_json|base64"),
    ("gateway (routing, headers, cookies)", r"gateway::|sessiongate::"),
    ("logging (tracing)", r"tracing"),
    ("metrics (prometheus)", r"prometheus::"),
    ("allocation and copies", r"mi_|_mi_|malloc|free|memcpy|memmove|memset"),
    ("HTTP types and parsing (http, httparse, bytes)", r"http::|httparse|bytes::"),
    ("Pingora", r"pingora"),
    ("tokio", r"tokio::|mio::"),
]
by = collections.Counter()
for line in text.splitlines():
    m = re.match(r"^\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
    if not m or "PROGRAM TOTALS" in line:
        continue
    cost, name = int(m.group(1).replace(",", "")), m.group(2)
    # The threads' entry frames show the whole program's cost after a zeroing: skip them.
    if cost > total // 2:
        continue
    function = re.sub(r"^(\?\?\?|\S*?\.(rs|c|h|S|s)):", "", name)
    by[next((o for o, p in OWNERS if re.search(p, function)), "other")] += cost
by["other"] += total - sum(by.values())
print(f"path={path} requests={n} instructions_per_request={total / n:,.0f}")
print("| owner (self cost) | instructions per request |")
print("|---|---:|")
for owner, cost in by.most_common():
    print(f"| {owner} | {cost / n:,.0f} |")
EOF
  exit 0
fi

cookie_script "$PATH_KIND"
# Warm up, then sample while measuring.
wrk -t2 -c64 -d3s -s "$WORK/cookies.lua" "http://127.0.0.1:$PORT" >/dev/null
ticks() { awk '{print $14 + $15}' "/proc/$GW/stat"; }
before=$(ticks)
if [ "$PERF" = on ]; then
  perf record -F 499 -g --call-graph dwarf,16384 -p "$GW" -o "$OUT/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  RECORDER=$!
fi
wrk -t2 -c64 -d"${DURATION}s" -s "$WORK/cookies.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk.txt"
[ "$PERF" = off ] || wait "$RECORDER" || true
after=$(ticks)
requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
hz=$(getconf CLK_TCK)
echo "path=$PATH_KIND access_log=$ACCESS_LOG requests=$requests cpu_us_per_request=$(python3 -c "print(round(($after - $before) / $hz * 1e6 / $requests, 1))")"
[ "$PERF" = on ] || exit 0

perf script -i "$OUT/perf.data" 2>/dev/null >"$OUT/perf.script"
python3 - "$OUT/perf.script" <<'EOF'
import re, sys, collections
# Each sample: its stack, innermost first. Attribute it to the first category whose
# pattern matches a frame (innermost wins), else "other".
CATEGORIES = [
    ("signature (aws-lc / ed25519)", r"aws_lc|ecdsa|p256|ec_GFp|ed25519|curve25519|sha512|SigningKey::sign"),
    ("Redis client (fred, direct reads)", r"fred::|redis_protocol|store::direct"),
    ("claims JSON and base64", r"claims_json|serde_json|base64|encode_string|Minter::mint"),
    ("session lookup (exchange, cache)", r"exchange::|quick_cache|sha2::"),
    ("metrics (prometheus)", r"prometheus::"),
    ("logging (tracing)", r"tracing|telemetry::|LineWriter"),
    ("headers and cookies (gateway)", r"gateway::http::|insert_header|remove_header|HeaderMap|http::header"),
    ("allocation", r"mi_|malloc|free|realloc|memcpy|memmove"),
    ("proxying (pingora, tokio, kernel)", r"pingora|tokio|h1|httparse|\[kernel|syscall|epoll|tcp_|__libc_|sys_"),
]
counts = collections.Counter()
total = 0
stack = []
def flush():
    global total
    if not stack:
        return
    total += 1
    for name, pattern in CATEGORIES:
        if any(re.search(pattern, f) for f in stack):
            counts[name] += 1
            return
    counts["other"] += 1
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    if not line.strip():
        flush()
        stack = []
    elif line.startswith("\t") or line.startswith(" "):
        stack.append(line.strip())
flush()
print("| where | share of samples |")
print("|---|---:|")
for name, n in counts.most_common():
    print(f"| {name} | {100 * n / max(total, 1):.1f}% |")
print(f"\n{total} samples")
EOF
