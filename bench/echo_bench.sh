#!/usr/bin/env bash
# Echo throughput on one loop: each server of SERVER_TABLE (below) serves on
# 127.0.0.1, one thread, and examples/echo_load (one thread, plain mio, the same
# client for all) keeps CONNS connections (default 64) busy with SIZE-byte messages
# (default 100), INFLIGHT messages in flight on each (default "1 16": both), for
# SECS seconds (default 5) per run, ROUNDS rounds (default 3) with the servers'
# order reversed every other round. Each run starts its server fresh and kills it
# after; WARMUP seconds (default 1) of load go before the measured part.
#
# Prints a Markdown table per INFLIGHT: the medians of msgs/s and of the server's
# CPU time per message (user + system, from /proc/PID/stat), with msgs/s ratios
# against uvloop's protocol echo, tokio and monoio.
#
# CHURN=1 gives every message a connection of its own (echo_load --churn: an
# accept-heavy load; msgs/s is then connections served a second; INFLIGHT must be 1).
#
# SERVERS="tokio shardloop-protocol" runs a subset (by name, in that order).
# EXTRA="name|command;..." adds servers to the table, for an A/B against another
# build: EXTRA="before|env SHARDLOOP_PROACTOR=1 /tmp/old/echo_streams" SERVERS="before
# shardloop-streams-proactor".
# A quick smoke run: SECS=1 ROUNDS=1 WARMUP=0 bench/echo_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
CHURN=${CHURN:-0}
# A churning connection carries one message: 1 in flight.
if [[ $CHURN != 0 ]]; then INFLIGHT=${INFLIGHT:-1}; else INFLIGHT=${INFLIGHT:-"1 16"}; fi
CONNS=${CONNS:-64}
SIZE=${SIZE:-100}
WARMUP=${WARMUP:-1}
PYTHON=${PYTHON:-python3}

cargo build --release --example echo_server --example echo_server_tokio --example echo_server_monoio \
  --example echo_streams --example echo_load
BIN=${CARGO_TARGET_DIR:-target}/release/examples

# The servers, "name|command". Each command takes `--port 0` (appended) and prints
# "listening on 127.0.0.1:PORT". To add one, add a line here (and build it above).
SERVER_TABLE=(
  "uvloop-protocol|$PYTHON bench/echo_server.py --mode protocol --uvloop"
  "uvloop-streams|$PYTHON bench/echo_server.py --mode streams --uvloop"
  "asyncio-protocol|$PYTHON bench/echo_server.py --mode protocol"
  "asyncio-streams|$PYTHON bench/echo_server.py --mode streams"
  "shardloop-task|$BIN/echo_server --mode task"
  "shardloop-protocol|$BIN/echo_server --mode protocol"
  "shardloop-protocol-proactor|$BIN/echo_server --mode protocol --proactor"
  "shardloop-task-proactor|$BIN/echo_server --mode task --proactor"
  "shardloop-owned|$BIN/echo_server --mode owned"
  "shardloop-owned-proactor|$BIN/echo_server --mode owned --proactor"
  "shardloop-streams|$BIN/echo_streams"
  "shardloop-streams-proactor|$BIN/echo_streams --proactor"
  "tokio|$BIN/echo_server_tokio"
  "monoio|$BIN/echo_server_monoio"
)

if [[ -n ${EXTRA:-} ]]; then
  IFS=';' read -r -a MORE <<<"$EXTRA"
  SERVER_TABLE+=("${MORE[@]}")
fi

declare -A COMMAND
ALL=()
for row in "${SERVER_TABLE[@]}"; do
  COMMAND[${row%%|*}]=${row#*|}
  ALL+=("${row%%|*}")
done
read -r -a NAMES <<<"${SERVERS:-${ALL[*]}}"
for name in "${NAMES[@]}"; do
  [[ -n ${COMMAND[$name]:-} ]] || { echo "unknown server $name (known: ${ALL[*]})" >&2; exit 2; }
done

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME: starts the server on a free port; sets PORT and SERVER_PID.
start() {
  : >"$WORK/out"
  bash -c "exec ${COMMAND[$1]} --port 0" >"$WORK/out" 2>"$WORK/err" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/out")
    if [[ -n $PORT ]]; then return; fi
    sleep 0.1
  done
  echo "$1 did not start:" >&2; cat "$WORK/err" >&2; exit 1
}

stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# measure NAME INFLIGHT: one run; prints "msgs/s us/msg".
measure() {
  start "$1"
  local load=(--addr "127.0.0.1:$PORT" --conns "$CONNS" --size "$SIZE" --inflight "$2")
  if [[ $CHURN != 0 ]]; then load+=(--churn); fi
  if [[ $WARMUP != 0 ]]; then "$BIN/echo_load" "${load[@]}" --secs "$WARMUP" >/dev/null; fi
  local line
  line=$("$BIN/echo_load" "${load[@]}" --secs "$SECS" --server-pid "$SERVER_PID")
  stop
  echo "$line" | tr ' ' '\n' | awk -F= '/^msgs_per_sec=/ {m = $2} /^server_us_per_msg=/ {u = $2} END {print m, u}'
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }

declare -A RATE CPU
for inflight in $INFLIGHT; do
  for round in $(seq "$ROUNDS"); do
    order=("${NAMES[@]}")
    if (( round % 2 == 0 )); then
      order=(); for (( i=${#NAMES[@]}-1; i>=0; i-- )); do order+=("${NAMES[$i]}"); done
    fi
    for name in "${order[@]}"; do
      read -r rate cpu < <(measure "$name" "$inflight")
      RATE[$name/$inflight]+="$rate "
      CPU[$name/$inflight]+="$cpu "
      echo "inflight $inflight round $round: $name $rate msgs/s, $cpu us/msg" >&2
    done
  done
done

echo
echo "Echo, $CONNS connections$( [[ $CHURN != 0 ]] && echo ', a new connection for every message'), $SIZE-byte messages, one server thread, one client thread"
echo "(examples/echo_load), $SECS s per run, medians of $ROUNDS rounds, $(nproc) cores."
for inflight in $INFLIGHT; do
  declare -A MED=()
  for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    MED[$name]=$(median ${RATE[$name/$inflight]})
  done
  echo
  echo "### $inflight message(s) in flight per connection"
  echo
  echo "| server | msgs/s | server µs/msg | vs uvloop-protocol | vs tokio | vs monoio |"
  echo "|---|---:|---:|---:|---:|---:|"
  for name in "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    cpu=$(median ${CPU[$name/$inflight]})
    vs_uv=$( [[ -n ${MED[uvloop-protocol]:-} ]] && ratio "${MED[$name]}" "${MED[uvloop-protocol]}" || echo -)
    vs_tk=$( [[ -n ${MED[tokio]:-} ]] && ratio "${MED[$name]}" "${MED[tokio]}" || echo -)
    vs_mo=$( [[ -n ${MED[monoio]:-} ]] && ratio "${MED[$name]}" "${MED[monoio]}" || echo -)
    printf '| %s | %.0f | %.2f | %s | %s | %s |\n' "$name" "${MED[$name]}" "$cpu" "$vs_uv" "$vs_tk" "$vs_mo"
  done
  unset MED
done
