#!/usr/bin/env bash
# HTTP/1.1 keep-alive throughput: examples/http_server (shardloop, 2 shards, one
# SO_REUSEPORT listener per shard) against examples/http_server_tokio (the same hyper
# handler and settings on tokio's multi-thread runtime, 2 workers).
#
# Both servers run side by side on 127.0.0.1; `wrk -t1 -c64 -d10s` hits one, then
# the other, for ROUNDS rounds; the medians of requests/s and their ratio
# (shardloop / tokio) are printed, with every round, as a Markdown table.
#
# Env: DURATION (wrk -d, default 10s), ROUNDS (default 3), CONNS (wrk -c, default
# 64), THREADS (shards / workers, default 2), URL_PATH (default /).
# Installs wrk with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
URL_PATH=${URL_PATH:-/}

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

cargo build --release --features hyper --example http_server --example http_server_tokio
BIN=target/release/examples

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME ARGS...: starts a server on a free port; sets PORT and PID.
start() {
  local name=$1; shift
  : >"$WORK/$name.out"  # exists before the server (started in the background) opens it
  "$BIN/$name" --port 0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/$name.out")
    if [ -n "$PORT" ]; then return; fi
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$WORK/$name.err" >&2; exit 1
}

start http_server --shards "$THREADS"; SL_PORT=$PORT; SL_PID=$PID
start http_server_tokio --workers "$THREADS"; TK_PORT=$PORT

# rps PORT: one wrk run; prints its requests/s.
rps() {
  local out
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$1$URL_PATH")
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
    echo "warning: wrk saw errors:" >&2; echo "$out" >&2
  fi
  echo "$out" | awk '/^Requests\/sec:/ {print $2}'
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# A short warm-up of each, so neither pays for first-touch page faults in round 1.
wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$SL_PORT$URL_PATH" >/dev/null
wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$TK_PORT$URL_PATH" >/dev/null

SL=(); TK=()
for round in $(seq "$ROUNDS"); do
  SL+=("$(rps "$SL_PORT")")
  TK+=("$(rps "$TK_PORT")")
  echo "round $round: shardloop ${SL[-1]} req/s, tokio ${TK[-1]} req/s" >&2
done

SL_MED=$(median "${SL[@]}")
TK_MED=$(median "${TK[@]}")
RATIO=$(awk -v a="$SL_MED" -v b="$TK_MED" 'BEGIN {printf "%.2f", a / b}')

echo
echo "HTTP/1.1 keep-alive, \`wrk -t1 -c$CONNS -d$DURATION\` on $URL_PATH, $THREADS shards vs $THREADS tokio workers, $(nproc) cores, $ROUNDS rounds"
echo
echo "| server | rounds (req/s) | median req/s |"
echo "| --- | --- | --- |"
echo "| shardloop http_server | ${SL[*]} | $SL_MED |"
echo "| tokio + hyper | ${TK[*]} | $TK_MED |"
echo
echo "ratio shardloop/tokio: $RATIO"

# The shardloop server shuts down gracefully on SIGTERM and exits 0.
kill -TERM "$SL_PID"
if wait "$SL_PID"; then
  echo "http_server exited 0 on SIGTERM" >&2
else
  echo "http_server exited with status $? on SIGTERM" >&2
  exit 1
fi
