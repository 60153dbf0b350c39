#!/usr/bin/env bash
# Two gateway binaries on one path at the same time: the same requests, the same Redis
# and upstream, the same seconds of a shared machine. Run one after the other, two runs
# of one binary here differ by up to ±40% in CPU per request (docs/performance.md);
# run side by side, whatever slows the machine slows both, so their ratio holds still.
#
#   benches/side-by-side.sh PATH BINARY_A BINARY_B [ROUNDS]
#
# PATH is `critical` or `cached` (as in profile.sh). A binary named `bare` is the load
# bench's bare Pingora proxy (2 threads) on the same requests: `bare` against a gateway
# gives what the gateway costs on top of proxying. Each round drives both gateways
# with `wrk -t1 -c32` for DURATION seconds (default 10) at once, swapping which one
# starts first, and prints each one's CPU µs per request (user + system, from /proc) and
# the system (kernel) part of it, context switches per request, and B's CPU over A's.
# HEADERS=browser sends a browser's headers instead of Host and Cookie alone (lib.sh).
# ALG_A / ALG_B (ES256 or EdDSA, default ES256) choose each gateway's signing algorithm:
# the same binary twice, ES256 against EdDSA, compares the two on the critical path.
# Needs wrk, redis-server, python3, and the load bench's upstream
# (`cargo bench -p gateway --bench load --no-run`).
set -euo pipefail

PATH_KIND=${1:?critical or cached}
A=${2:?binary A}
B=${3:?binary B}
ROUNDS=${4:-3}
DURATION=${DURATION:-10}
TARGET=${CARGO_TARGET_DIR:-target}
UPSTREAM_BIN=$(ls -t "$TARGET"/release/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1)
[ -n "$UPSTREAM_BIN" ] || {
  echo "build first: cargo bench -p gateway --bench load --no-run" >&2
  exit 2
}

. "$(dirname "$0")/lib.sh"
bench_setup side
start_redis
UP_PORT=$(free_port)
"$UPSTREAM_BIN" --serve-upstream "127.0.0.1:$UP_PORT" >/dev/null 2>&1 &
PIDS+=($!)

write_sessions side

# start NAME BINARY: a gateway configured like the load bench's (2 threads, pool of 4,
# access log on), its pid in GW_NAME and its port in PORT_NAME.
start() {
  local name=$1 bin=$2 port admin
  port=$(free_port)
  admin=$(free_port)
  if [ "$bin" = bare ]; then
    "$UPSTREAM_BIN" --serve-bare "127.0.0.1:$port" "127.0.0.1:$UP_PORT" 2 >/dev/null 2>&1 &
    PIDS+=($!)
    eval "GW_$name=$!"
    eval "PORT_$name=$port"
    until curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; do sleep 0.1; done
    return
  fi
  local alg_var="ALG_${name^^}"
  ALG=${!alg_var:-ES256} gateway_config "$WORK/$name" "$port" "$admin" "warn,sessiongate=info,gateway=info,exchange=info,keys=info"
  "$bin" run --config "$WORK/$name/gateway.toml" 2>"$WORK/$name/gateway.log" &
  PIDS+=($!)
  eval "GW_$name=$!"
  eval "PORT_$name=$port"
  wait_ready "$!" "$admin" "$WORK/$name/gateway.log"
}
start a "$A"
start b "$B"

cookie_script "$PATH_KIND"

ticks() { awk '{print $14 ":" $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
drive() { wrk -t1 -c32 -d"${DURATION}s" -s "$WORK/cookies.lua" "http://127.0.0.1:$1" >"$2"; }
for port in "$PORT_a" "$PORT_b"; do
  wrk -t1 -c32 -d2s -s "$WORK/cookies.lua" "http://127.0.0.1:$port" >/dev/null
done

hz=$(getconf CLK_TCK)
echo "| round | A CPU µs/req | B CPU µs/req | B / A | A sys µs/req | B sys µs/req | A switches/req | B switches/req | A req/s | B req/s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$ROUNDS"); do
  ta=$(ticks "$GW_a"); tb=$(ticks "$GW_b"); sa=$(switches "$GW_a"); sb=$(switches "$GW_b")
  if [ $((round % 2)) -eq 1 ]; then
    drive "$PORT_a" "$WORK/a.txt" & first=$!
    drive "$PORT_b" "$WORK/b.txt" & second=$!
  else
    drive "$PORT_b" "$WORK/b.txt" & first=$!
    drive "$PORT_a" "$WORK/a.txt" & second=$!
  fi
  wait "$first" "$second"
  python3 - "$hz" "$DURATION" \
    "$ta" "$(ticks "$GW_a")" "$sa" "$(switches "$GW_a")" "$(awk '/requests in/ {print $1}' "$WORK/a.txt")" \
    "$tb" "$(ticks "$GW_b")" "$sb" "$(switches "$GW_b")" "$(awk '/requests in/ {print $1}' "$WORK/b.txt")" "$round" <<'EOF'
import sys
hz, secs = int(sys.argv[1]), float(sys.argv[2])
def side(t0, t1, s0, s1, n):
    n = int(n)
    (u0, k0), (u1, k1) = (map(int, t.split(":")) for t in (t0, t1))
    per = lambda ticks: ticks / hz * 1e6 / n
    return per(u1 + k1 - u0 - k0), per(k1 - k0), (int(s1) - int(s0)) / n, n / secs
a = side(*sys.argv[3:8]); b = side(*sys.argv[8:13])
print(f"| {sys.argv[13]} | {a[0]:.1f} | {b[0]:.1f} | {b[0] / a[0]:.2f} | {a[1]:.1f} | {b[1]:.1f} | {a[2]:.2f} | {b[2]:.2f} | {a[3]:.0f} | {b[3]:.0f} |")
EOF
done
