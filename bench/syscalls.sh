#!/usr/bin/env bash
# System calls a server makes per echoed message or per HTTP request, counted with
# `strace -f -c` attached to the server for the whole load.
#
# LOAD=echo (default): `echo_load --messages 100000 --conns 64 --inflight INFLIGHT` (default 1) against
# SERVER (default: examples/echo_server --mode task --proactor).
# LOAD=http: `wrk -t1 -c64 -d3s` against SERVER (default: examples/http_server, with
# SHARDLOOP_PROACTOR=1 in its environment; set PROACTOR=0 for the epoll loop).
# SERVER is a command line; it gets `--port 0` and must print
# `listening on 127.0.0.1:PORT`. For an A/B: SERVER=/tmp/old/echo_server ARGS=...
# Prints the calls per message (or request) and strace's table.
# Installs strace (and wrk for LOAD=http) with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD=${LOAD:-echo}
PROACTOR=${PROACTOR:-1}
for tool in strace $([[ $LOAD == http ]] && echo wrk); do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
if [[ $LOAD == http ]]; then
  cargo build --release --features tokio-io,hyper --example http_server
  SERVER=${SERVER:-target/release/examples/http_server}
else
  cargo build --release --example echo_server --example echo_load
  SERVER=${SERVER:-target/release/examples/echo_server --mode task --proactor}
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

env SHARDLOOP_PROACTOR="$([[ $PROACTOR == 1 ]] && echo 1)" $SERVER --port 0 >"$WORK/out" 2>"$WORK/err" &
PID=$!
PIDS+=("$PID")
for _ in $(seq 100); do
  PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/out")
  if [ -n "$PORT" ]; then break; fi
  sleep 0.1
done
[ -n "$PORT" ] || { echo "the server did not start:" >&2; cat "$WORK/err" >&2; exit 1; }

strace -f -c -p "$PID" -o "$WORK/strace" 2>/dev/null &
STRACE=$!
sleep 0.5
if [[ $LOAD == http ]]; then
  COUNT=$(wrk -t1 -c64 -d3s "http://127.0.0.1:$PORT/" | awk '/requests in/{print $1}')
  UNIT=request
else
  COUNT=100000
  target/release/examples/echo_load --addr "127.0.0.1:$PORT" --messages $COUNT --conns 64 --inflight "${INFLIGHT:-1}" >/dev/null
  UNIT=message
fi
sleep 0.3
kill -INT "$STRACE"
wait "$STRACE" 2>/dev/null || true
awk -v n="$COUNT" -v unit="$UNIT" '/total/{printf "%s: %d %ss, %.3f system calls per %s\n", "'"$SERVER"'", n, unit, $4/n, unit}' "$WORK/strace"
cat "$WORK/strace"
