# Shared by the bench scripts (source it): a scratch directory and the processes started,
# both cleaned up on exit; free loopback ports; a throwaway redis-server.
#
#   . "$(dirname "$0")/lib.sh"
#   bench_setup million        # WORK=/tmp/sg-million.XXXXXX, PIDS=(), trap on EXIT
#   start_redis                # REDIS_PORT, a redis-server without persistence, answering
#   PORT=$(free_port)
#   write_sessions NAME        # 256 sessions in Redis, their cookies in $WORK/cookies
#   cookie_script PATH_KIND    # $WORK/cookies.lua: wrk requests /PATH_KIND/x rotating them
#                              # (HEADERS=browser: with a browser's headers)
#   wait_ready PID ADMIN_PORT LOG  # until /readyz is 200; exits with LOG if PID dies
#   gateway_config DIR PORT ADMIN_PORT FILTER [CACHE_TTL]
#                              # DIR/gateway.toml: routes /cached and /critical onto
#                              # 127.0.0.1:$UP_PORT, 2 threads, keys in DIR/keys
#                              # (ALG=EdDSA signs with Ed25519; default ES256)

# wait_ready PID ADMIN_PORT LOG: until the gateway's /readyz answers 200; fails with its
# log if the gateway exits first (a config it refuses, a port it cannot bind).
wait_ready() {
  until curl -fs "http://127.0.0.1:$2/readyz" >/dev/null 2>&1; do
    kill -0 "$1" 2>/dev/null || { echo "the gateway exited before it was ready:" >&2; cat "$3" >&2; exit 1; }
    sleep 0.1
  done
}

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

# 256 sessions in the documented schema, as the load bench writes them; their cookies
# (NAME-session-cookie-00000000 ...) one per line in $WORK/cookies.
write_sessions() {
  python3 - "$1" "$REDIS_PORT" >"$WORK/cookies" <<'EOF'
import hashlib, subprocess, sys
name, port = sys.argv[1], sys.argv[2]
cmds = []
for n in range(256):
    cookie = f"{name}-session-cookie-{n:08d}"
    key = "sg:session:" + hashlib.sha256(cookie.encode()).hexdigest()
    cmds.append(f'SET {key} \'{{"sub":"user-{n}","exp":4102444800,"roles":["reader"],"email":"u{n}@example.com"}}\' EX 3600')
    print(cookie)
subprocess.run(["redis-cli", "-p", port], input="\n".join(cmds), text=True, check=True, capture_output=True)
EOF
}

# $WORK/cookies.lua: a wrk script sending GET /PATH_KIND/x with the cookies of
# $WORK/cookies in turn. HEADERS=browser adds what a browser sends with a page's fetch
# (Chrome's headers, and two cookies of other applications beside the session's): the
# default request carries only Host and Cookie, which understates the header work of
# both proxies.
cookie_script() {
  local extra="" others=""
  if [ "${HEADERS:-minimal}" = browser ]; then
    extra='
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ["Accept"] = "application/json, text/plain, */*",
    ["Accept-Language"] = "en-GB,en;q=0.9,de;q=0.8",
    ["Accept-Encoding"] = "gzip, deflate, br, zstd",
    ["Referer"] = "https://app.example.com/orders",
    ["Sec-Fetch-Site"] = "same-origin",
    ["Sec-Fetch-Mode"] = "cors",
    ["Sec-Fetch-Dest"] = "empty",
    ["Sec-CH-UA"] = "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
    ["Sec-CH-UA-Mobile"] = "?0",
    ["Sec-CH-UA-Platform"] = "\"Linux\"",
    ["Priority"] = "u=1, i",'
    others='"_ga=GA1.1.1234567890.1733300000; theme=dark; " .. '
  fi
  cat >"$WORK/cookies.lua" <<EOF
local cookies = {}
for line in io.lines("$WORK/cookies") do cookies[#cookies + 1] = line end
local i = 0
request = function()
  i = i % #cookies + 1
  return wrk.format("GET", "/$1/x", {$extra
    ["Cookie"] = ${others}"__Host-session=" .. cookies[i],
  })
end
EOF
}

gateway_config() {
  local dir=$1 port=$2 admin=$3 filter=$4 cache_ttl=${5:-5s}
  mkdir -p "$dir/keys"
  cat >"$dir/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
threads = 2
upgrade_sock = "$dir/upgrade.sock"
[redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"
pool_size = 4
[keys]
store = "file"
dir = "$dir/keys"
[token]
algorithm = "${ALG:-ES256}"
[session]
cache_ttl = "$cache_ttl"
[log]
filter = "$filter"
[[route]]
name = "cached"
path_prefix = "/cached"
upstreams = ["127.0.0.1:$UP_PORT"]
[[route]]
name = "critical"
path_prefix = "/critical"
upstreams = ["127.0.0.1:$UP_PORT"]
critical = true
EOF
}
