#!/usr/bin/env bash
# HTTP/1.1 keep-alive throughput: examples/http_server (shardloop, 2 shards, one
# SO_REUSEPORT listener per shard) against examples/http_server_tokio (the same hyper
# handler and settings on tokio's multi-thread runtime, 2 workers).
#
# Both servers run side by side on 127.0.0.1; `wrk -t1 -c64 -d10s` hits one, then
# the other, for ROUNDS rounds, alternating which goes first; the medians of requests/s and their ratio
# (shardloop / tokio) are printed, with every round, as a Markdown table.
#
# Env: DURATION (wrk -d, default 10s), ROUNDS (default 3), CONNS (wrk -c, default
# 64), THREADS (shards / workers, default 2), URL_PATH (default /), SL_ARGS (extra
# http_server flags, e.g. SL_ARGS="--spin-us 0").
# Also printed for each server: its CPU time per request (user + system, from
# /proc/PID/stat) and its threads' context switches per request, medians of the
# rounds.
# PROTO=tls: HTTPS (rustls, HTTP/1.1 by ALPN) with wrk, examples/https_server against
# examples/https_server_tokio (the same rustls settings and hyper on tokio), with a
# self-signed certificate made by openssl for the run; PROTO=h2tls: the same servers
# over HTTP/2 (ALPN h2), loaded by h2load.
# PROTO=h2c: HTTP/2 with prior knowledge instead (both servers started with --http2,
# the http2 feature built in), loaded by h2load (`-c CONNS -m STREAMS -n REQUESTS`,
# default 16 streams per connection and 400000 requests) instead of wrk.
# Installs wrk (and h2load, Debian's nghttp2-client) with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
URL_PATH=${URL_PATH:-/}
SL_ARGS=${SL_ARGS:-}
PROTO=${PROTO:-h1}
STREAMS=${STREAMS:-16}
REQUESTS=${REQUESTS:-400000}

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

if [[ $PROTO == h2c || $PROTO == h2tls ]] && ! command -v h2load >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
cargo build --release --features tokio-io,hyper,http2 --example http_server --example http_server_tokio \
  --example https_server --example https_server_tokio
PROTO_ARGS=()
SL_NAME=http_server TK_NAME=http_server_tokio SCHEME=http
if [[ $PROTO == h2c ]]; then PROTO_ARGS=(--http2); fi
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
  "$BIN/$name" --port 0 "${PROTO_ARGS[@]}" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/$name.out")
    if [ -n "$PORT" ]; then return; fi
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$WORK/$name.err" >&2; exit 1
}

if [[ $PROTO == tls || $PROTO == h2tls ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  PROTO_ARGS=(--cert "$WORK/cert.pem" --key "$WORK/key.pem")
  SL_NAME=https_server TK_NAME=https_server_tokio SCHEME=https
  SL_ARGS=""  # https_server has no --spin-us
fi

# shellcheck disable=SC2086
start "$SL_NAME" --shards "$THREADS" $SL_ARGS; SL_PORT=$PORT; SL_PID=$PID
start "$TK_NAME" --workers "$THREADS"; TK_PORT=$PORT; TK_PID=$PID

# Server CPU time (user + system, in clock ticks) and context switches (voluntary
# and involuntary, all threads) so far, of process $1.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ctx_switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}'; }

# run PORT PID: one wrk run; prints "requests/s server-us-per-request
# context-switches-per-request".
run() {
  local out t0 c0 t1 c1 reqs
  if [[ $PROTO == h2c || $PROTO == h2tls ]]; then
    t0=$(cpu_ticks "$2"); c0=$(ctx_switches "$2")
    out=$(h2load -c "$CONNS" -m "$STREAMS" -n "$REQUESTS" "$SCHEME://127.0.0.1:$1$URL_PATH")
    t1=$(cpu_ticks "$2"); c1=$(ctx_switches "$2")
    if ! echo "$out" | grep -q "requests: $REQUESTS total, $REQUESTS started, $REQUESTS done, $REQUESTS succeeded"; then
      echo "warning: h2load saw failures:" >&2; echo "$out" >&2
    fi
    echo "$out" | awk -v t=$((t1 - t0)) -v c=$((c1 - c0)) -v n="$REQUESTS" -v hz="$(getconf CLK_TCK)" \
      '/^finished in/ {gsub(",", "", $4); printf "%s %.2f %.3f\n", $4, t / hz * 1e6 / n, c / n}'
    return
  fi
  t0=$(cpu_ticks "$2"); c0=$(ctx_switches "$2")
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" "$SCHEME://127.0.0.1:$1$URL_PATH")
  t1=$(cpu_ticks "$2"); c1=$(ctx_switches "$2")
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
    echo "warning: wrk saw errors:" >&2; echo "$out" >&2
  fi
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$out" | awk -v t=$((t1 - t0)) -v c=$((c1 - c0)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" \
    '/^Requests\/sec:/ {printf "%s %.2f %.3f\n", $2, t / hz * 1e6 / n, c / n}'
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# A short warm-up of each, so neither pays for first-touch page faults in round 1.
if [[ $PROTO == h2c || $PROTO == h2tls ]]; then
  h2load -c "$CONNS" -m "$STREAMS" -n 20000 "$SCHEME://127.0.0.1:$SL_PORT$URL_PATH" >/dev/null
  h2load -c "$CONNS" -m "$STREAMS" -n 20000 "$SCHEME://127.0.0.1:$TK_PORT$URL_PATH" >/dev/null
else
  wrk -t1 -c"$CONNS" -d1s "$SCHEME://127.0.0.1:$SL_PORT$URL_PATH" >/dev/null
  wrk -t1 -c"$CONNS" -d1s "$SCHEME://127.0.0.1:$TK_PORT$URL_PATH" >/dev/null
fi

SL=(); TK=(); SL_CPU=(); TK_CPU=(); SL_CS=(); TK_CS=()
run_sl() { read -r rps cpu cs < <(run "$SL_PORT" "$SL_PID"); SL+=("$rps"); SL_CPU+=("$cpu"); SL_CS+=("$cs"); }
run_tk() { read -r rps cpu cs < <(run "$TK_PORT" "$TK_PID"); TK+=("$rps"); TK_CPU+=("$cpu"); TK_CS+=("$cs"); }
# Which server goes first alternates round by round, so that drift on a shared
# machine (a neighbour, thermal state, page cache) falls on both alike.
for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then run_sl; run_tk; first=shardloop; else run_tk; run_sl; first=tokio; fi
  echo "round $round ($first first): shardloop ${SL[-1]} req/s, tokio ${TK[-1]} req/s" >&2
done

SL_MED=$(median "${SL[@]}")
TK_MED=$(median "${TK[@]}")
RATIO=$(awk -v a="$SL_MED" -v b="$TK_MED" 'BEGIN {printf "%.2f", a / b}')

echo
case $PROTO in
  h2c) load="HTTP/2 (h2c), \`h2load -c $CONNS -m $STREAMS -n $REQUESTS\`" ;;
  h2tls) load="HTTP/2 over TLS (rustls), \`h2load -c $CONNS -m $STREAMS -n $REQUESTS\`" ;;
  tls) load="HTTP/1.1 over TLS (rustls), keep-alive, \`wrk -t1 -c$CONNS -d$DURATION\`" ;;
  *) load="HTTP/1.1 keep-alive, \`wrk -t1 -c$CONNS -d$DURATION\`" ;;
esac
echo "$load on $URL_PATH, $THREADS shards vs $THREADS tokio workers, $(nproc) cores, $ROUNDS rounds${SL_ARGS:+; shardloop: $SL_ARGS}"
echo
echo "| server | rounds (req/s) | median req/s | server CPU µs/request | context switches/request |"
echo "| --- | --- | --- | --- | --- |"
echo "| shardloop $SL_NAME | ${SL[*]} | $SL_MED | $(median "${SL_CPU[@]}") | $(median "${SL_CS[@]}") |"
echo "| tokio + hyper ($TK_NAME) | ${TK[*]} | $TK_MED | $(median "${TK_CPU[@]}") | $(median "${TK_CS[@]}") |"
echo
echo "ratio shardloop/tokio: $RATIO"

# The shardloop server shuts down gracefully on SIGTERM and exits 0.
kill -TERM "$SL_PID"
if wait "$SL_PID"; then
  echo "$SL_NAME exited 0 on SIGTERM" >&2
else
  echo "$SL_NAME exited with status $? on SIGTERM" >&2
  exit 1
fi
