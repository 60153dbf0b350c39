#!/usr/bin/env bash
# The demo, from a fresh Debian machine with Rust: installs cmake (Pingora builds
# zlib-ng from C) if missing, then builds and runs `sessiongate dev`, which needs no
# Redis and no config file. Extra arguments go to `sessiongate dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null 2>&1; then
  echo "==> installing cmake from Debian's packages"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake >/dev/null
fi
exec cargo run --release --locked -p gateway --bin sessiongate -- dev "$@"
