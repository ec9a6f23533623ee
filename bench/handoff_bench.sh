#!/usr/bin/env bash
# blocking_handoff vs blocking_handoff_tokio: the same tiny_http server and blocking
# handler threads, handing each /work request to shardloop shards (submit_to +
# wait_timeout) or to tokio current-thread runtimes (Handle::spawn + one-shot + recv
# with timeout), both with the same number of loop threads and handler threads.
#
# wrk hits /work with 1000 different keys (a Lua script), alternating between the two
# servers, ROUNDS rounds each; prints the median requests/s of each and the ratio.
#
# Usage: bench/handoff_bench.sh            (env: ROUNDS=3 DURATION=5s SHARDS=2
#                                                WORKERS=8 CONNS=32 WRK_THREADS=2;
#                                                SL_ARGS: extra blocking_handoff flags,
#                                                e.g. SL_ARGS="--spin-us 0")
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
SHARDS=${SHARDS:-2}
WORKERS=${WORKERS:-8}
CONNS=${CONNS:-32}
WRK_THREADS=${WRK_THREADS:-2}
SL_ARGS=${SL_ARGS:-}
# Generous, so that a loaded machine measures throughput, not 503s; any non-2xx
# answer is reported below.
TIMEOUT_MS=${TIMEOUT_MS:-1000}

if ! command -v wrk >/dev/null; then
    apt-get update -qq && apt-get install -y -qq wrk
fi

cargo build --release --example blocking_handoff --example blocking_handoff_tokio

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/keys.lua" <<'EOF'
-- Each request asks for one of 1000 keys, so the work spreads over the shards.
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "/work?key=k" .. (n % 1000))
end
EOF

# start NAME [FLAGS...]: runs target/release/examples/NAME on a free port; sets $port.
start() {
    local name=$1
    shift
    "target/release/examples/$name" --port 0 --shards "$SHARDS" --workers "$WORKERS" \
        --timeout-ms "$TIMEOUT_MS" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids+=("$!")
    for _ in $(seq 100); do
        if grep -q '^listening on ' "$tmp/$name.out"; then
            port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/$name.out")
            return
        fi
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$tmp/$name.err" >&2
    exit 1
}

# shellcheck disable=SC2086
start blocking_handoff $SL_ARGS
shardloop_port=$port
start blocking_handoff_tokio
tokio_port=$port

# tiny_http serves each connection on a thread of its own pool, which grows only when
# no thread is idle at the moment a connection comes: a burst of connections (wrk
# opens all of its at once) can queue some behind idle threads that another
# connection of the burst takes, and a queued keep-alive connection then waits for the
# whole round. That made rounds fall to ~10 k req/s at random, on either server. So
# before each round the pool is grown to more threads than wrk has connections, by
# opening connections one at a time (each answered before the next opens; every one
# held, so each needs a thread of its own) and closing them all.
cat >"$tmp/grow_pool.py" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /work?key=warm HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("the server closed a warm-up connection")
        got += chunk
    held.append(s)
for s in held:
    s.close()
EOF

# bench PORT DURATION: prints requests/s; warns about non-2xx answers.
bench() {
    local out
    python3 "$tmp/grow_pool.py" "$1" $((CONNS + 8))
    out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$2" -s "$tmp/keys.lua" \
        "http://127.0.0.1:$1/work?key=k")
    if grep -q 'Non-2xx' <<<"$out"; then
        echo "warning: $(grep 'Non-2xx' <<<"$out" | xargs) (port $1)" >&2
    fi
    awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "warming up both servers..." >&2
bench "$shardloop_port" 1s >/dev/null
bench "$tokio_port" 1s >/dev/null

s=()
t=()
for round in $(seq "$ROUNDS"); do
    # Alternate which one goes first, so neither always runs on a warmer machine.
    if ((round % 2)); then
        s+=("$(bench "$shardloop_port" "$DURATION")")
        t+=("$(bench "$tokio_port" "$DURATION")")
    else
        t+=("$(bench "$tokio_port" "$DURATION")")
        s+=("$(bench "$shardloop_port" "$DURATION")")
    fi
    echo "round $round: shardloop ${s[-1]} req/s, tokio ${t[-1]} req/s" >&2
done

sm=$(median "${s[@]}")
tm=$(median "${t[@]}")
ratio=$(awk -v a="$sm" -v b="$tm" 'BEGIN { printf "%.2f", a / b }')
echo
echo "machine: $(nproc) CPUs; wrk -t$WRK_THREADS -c$CONNS -d$DURATION, /work with 1000 keys;" \
    "$SHARDS loop threads, $WORKERS handler threads, median of $ROUNDS rounds"
echo "| workload | shardloop req/s | tokio req/s | ratio |"
echo "|---|---|---|---|"
echo "| blocking_handoff /work (tiny_http, $SHARDS loops${SL_ARGS:+, $SL_ARGS}) | $sm | $tm | ${ratio}x |"
