#!/usr/bin/env bash
# How long `sessiongate session revoke-user` takes without a per-subject index: a SCAN of
# the session prefix, every value decoded, the subject's sessions unlinked.
#
# A redis-server is filled with SESSIONS sessions (default 1,000,000) in the format
# FORMAT (express: connect-redis JSON under `sess:`; django: pickles under
# `:1:django.contrib.sessions.cache`; sessiongate: JSON under `sg:session:`, no index),
# of which MATCHING (default 20) belong to the subject revoked; the rest to 100,000 other
# users. Then revoke-user runs once, timed, and the script checks that exactly MATCHING
# keys went and the others stayed.
#
# Run from the repository root after a release build of the binary
# (`cargo build --release -p gateway`), with the same CARGO_TARGET_DIR:
#   FORMAT=express benches/revoke-user.sh
# Needs redis-server, redis-cli, python3. Takes about a minute on two cores.
set -euo pipefail

SESSIONS=${SESSIONS:-1000000}
MATCHING=${MATCHING:-20}
FORMAT=${FORMAT:-express}
TARGET=${CARGO_TARGET_DIR:-target}
GATEWAY=$TARGET/release/sessiongate
[ -x "$GATEWAY" ] || { echo "build first: cargo build --release -p gateway" >&2; exit 2; }

. "$(dirname "$0")/lib.sh"
bench_setup revoke
start_redis

case "$FORMAT" in
  express) PREFIX="sess:" ;;
  django) PREFIX=":1:django.contrib.sessions.cache" ;;
  sessiongate) PREFIX="sg:session:" ;;
  *) echo "FORMAT is express, django or sessiongate" >&2; exit 2 ;;
esac

python3 - "$SESSIONS" "$MATCHING" "$FORMAT" "$PREFIX" >"$WORK/sessions.resp" <<'EOF'
import hashlib, pickle, sys
sessions, matching, fmt, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = sys.stdout.buffer
def command(*parts):
    out.write(b"*%d\r\n" % len(parts))
    for p in parts:
        out.write(b"$%d\r\n%s\r\n" % (len(p), p))
for n in range(sessions):
    user = 42 if n % (sessions // matching) == 0 and n // (sessions // matching) < matching else 1000 + n % 100000
    if fmt == "express":
        key = f"{prefix}sid{n:029d}"
        value = ('{"cookie":{"originalMaxAge":86400000,"expires":"2026-12-05T00:00:00.000Z",'
                 '"secure":false,"httpOnly":true,"path":"/"},"passport":{"user":%d},'
                 '"roles":["reader"]}' % user).encode()
    elif fmt == "django":
        key = f"{prefix}{hashlib.sha256(str(n).encode()).hexdigest()[:32]}"
        value = pickle.dumps({"_auth_user_id": str(user),
                              "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                              "_auth_user_hash": "0" * 64, "roles": ["reader"]}, 5)
    else:
        key = prefix + hashlib.sha256(f"cookie-{n}".encode()).hexdigest()
        value = ('{"sub":"%d","exp":4102444800,"roles":["reader"]}' % user).encode()
    command(b"SET", key.encode(), value, b"EX", b"86400")
EOF
started=$(date +%s.%N)
redis-cli -p "$REDIS_PORT" --pipe <"$WORK/sessions.resp" >/dev/null
echo "loaded $(redis-cli -p "$REDIS_PORT" dbsize) keys in $(python3 -c "print(f'{$(date +%s.%N) - $started:.1f}')") s" >&2

case "$FORMAT" in
  express) FORMAT_KEYS=$'format = "express"\nsecrets_env = "SG_BENCH_SECRETS"' ;;
  django) FORMAT_KEYS='format = "django"' ;;
  sessiongate) FORMAT_KEYS='format = "sessiongate"' ;;
esac
cat >"$WORK/gateway.toml" <<EOF
[redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"
timeout = "2s"

[session]
$FORMAT_KEYS

[keys]
store = "file"
dir = "$WORK/keys"

[[route]]
name = "orders"
path_prefix = "/api/orders"
upstreams = ["127.0.0.1:9"]
EOF

before=$(redis-cli -p "$REDIS_PORT" dbsize)
SG_BENCH_SECRETS='["bench"]' "$GATEWAY" session revoke-user --config "$WORK/gateway.toml" 42 \
  >"$WORK/out.txt" 2>"$WORK/err.txt"
after=$(redis-cli -p "$REDIS_PORT" dbsize)
cat "$WORK/err.txt" >&2
echo "| format | sessions in Redis | deleted | left | revoke-user says |"
echo "|---|---:|---:|---:|---|"
echo "| $FORMAT | $before | $((before - after)) | $after | $(cat "$WORK/out.txt") |"
[ $((before - after)) -eq "$MATCHING" ] || { echo "expected $MATCHING deleted" >&2; exit 1; }
