#!/usr/bin/env bash
# kv_server (2 shards) against Debian's redis-server (persistence off), measured with
# redis-benchmark: SET and GET, with pipelining (-P 16) and without (-P 1).
#
# Both servers run side by side on 127.0.0.1; each round runs every test against one,
# then the other (alternating which goes first), so drift on a shared machine hits both
# alike. Prints, as a markdown table, the median requests/s of the rounds for each test
# and the ratio kv_server / redis-server, and each server's CPU time per request (user +
# system, all threads, from /proc/PID/stat; medians of the rounds).
#
# Usage: bench/kv_bench.sh            (ROUNDS=3 N=200000 CLIENTS=50 by default)
#        ROUNDS=5 N=100000 bench/kv_bench.sh
#        EXTRA="-r 100000" bench/kv_bench.sh   (extra redis-benchmark arguments, e.g.
#                                               random keys instead of one key)
#        TESTS=suite PIPES=16 EXTRA="-r 100000" bench/kv_bench.sh
#                                  (redis-benchmark's default suite but XADD)
#        TESTS=load bench/kv_bench.sh    (our load client, kv_load: SET:GET 1:10 over
#                                         100k keys, 50 connections, pipelines of 16)
#        TESTS=mset bench/kv_bench.sh    (MSET of 2 keys: on one shard, and on two)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
N=${N:-200000}
N_P1=${N_P1:-$N}
CLIENTS=${CLIENTS:-50}
SHARDS=${SHARDS:-2}
EXTRA=${EXTRA:-}
TESTS=${TESTS:-set,get}
PIPES=${PIPES:-16 1}
if [[ $TESTS == suite ]]; then
    TESTS=ping_inline,ping_mbulk,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange,mset
fi
# Extra kv_server flags, e.g. KV_ARGS=--no-pin.
KV_ARGS=${KV_ARGS:-}

missing=()
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v redis-server >/dev/null || missing+=(redis-server)
if ((${#missing[@]})); then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --quiet --release -p kv_server --bins
bin="${CARGO_TARGET_DIR:-target}/release/kv_server"
load_bin="${CARGO_TARGET_DIR:-target}/release/kv_load"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Waits until the first line of file $1 matches `listening on 127.0.0.1:PORT` and
# prints PORT (a hang detector, not a timing check).
wait_port() {
    for _ in $(seq 600); do
        if [[ "$(head -n 1 "$1")" =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
            echo "${BASH_REMATCH[1]}"
            return 0
        fi
        sleep 0.1
    done
    echo "no 'listening on' line in $1" >&2
    return 1
}

"$bin" --port 0 --shards "$SHARDS" $KV_ARGS >"$tmp/kv.out" 2>"$tmp/kv.err" &
pids+=($!)
kv_port=$(wait_port "$tmp/kv.out")

redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --save '' --appendonly no --port "$redis_port" --bind 127.0.0.1 \
    >"$tmp/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis_version=$(redis-server --version | sed -nE 's/.*v=([0-9.]+).*/\1/p')

# Server CPU time so far (user + system, all threads), in clock ticks, of process $1.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Two keys on one shard and two on different shards (shard hash v1, SHARDS shards),
# for the MSET rows.
read -r same_a same_b cross_a cross_b < <(python3 - "$SHARDS" <<'PY'
import sys
shards = int(sys.argv[1])
def shard(key):
    h = 0xcbf29ce484222325
    for b in key.encode():
        h = ((h ^ b) * 0x100000001b3) & (2**64 - 1)
    for shift, mul in ((33, 0xff51afd7ed558ccd), (33, 0xc4ceb9fe1a85ec53)):
        h ^= h >> shift
        h = (h * mul) & (2**64 - 1)
    h ^= h >> 33
    return (h * shards) >> 64
keys = [f"k{i}" for i in range(100)]
same = [k for k in keys if shard(k) == shard(keys[0])][:2]
cross = [keys[0], next(k for k in keys if shard(k) != shard(keys[0]))] if shards > 1 else same
print(*same, *cross)
PY
)

# run PORT PID PIPELINE N: prints "<test> <rps> <server CPU us per request>" for each
# test (redis-benchmark's names, spaces as _).
run() {
    local test t0 t1 out lines
    if [[ $TESTS == load ]]; then
        t0=$(cpu_ticks "$2")
        out=$("$load_bin" --port "$1" --connections "$CLIENTS" --pipeline "$3" --requests "$4")
        t1=$(cpu_ticks "$2")
        awk -v o="$out" -v d=$((t1 - t0)) -v n="$4" -v hz="$(getconf CLK_TCK)" 'BEGIN {
            split(o, f, " "); if (f[8] != 0) { print "kv_load saw " f[8] " errors" > "/dev/stderr" }
            printf "SET:GET_1:10 %s %.2f\n", f[6], d / hz * 1e6 / n }'
        return
    fi
    if [[ $TESTS == mset ]]; then
        for pair in "same_shard $same_a $same_b" "two_shards $cross_a $cross_b"; do
            set -- "$1" "$2" "$3" "$4" $pair
            t0=$(cpu_ticks "$2")
            out=$(redis-benchmark -h 127.0.0.1 -p "$1" -q -n "$4" -c "$CLIENTS" -P "$3" \
                MSET "$6" v "$7" v | tr '\r' '\n' | sed -nE 's/^.*: ([0-9.]+) requests per second.*/\1/p' | tail -n 1)
            t1=$(cpu_ticks "$2")
            awk -v t="MSET_2_keys_$5" -v r="$out" -v d=$((t1 - t0)) -v n="$4" -v hz="$(getconf CLK_TCK)" \
                'BEGIN { printf "%s %s %.2f\n", t, r, d / hz * 1e6 / n }'
        done
        return
    fi
    for test in ${TESTS//,/ }; do
        t0=$(cpu_ticks "$2")
        # -q prints progress lines ended by \r, then one final line per test.
        # shellcheck disable=SC2086
        out=$(redis-benchmark -h 127.0.0.1 -p "$1" -q -t "$test" -n "$4" -c "$CLIENTS" -P "$3" $EXTRA \
            | tr '\r' '\n' | sed -nE 's/^ *([^:]+): ([0-9.]+) requests per second.*/\1|\2/p')
        t1=$(cpu_ticks "$2")
        lines=$(grep -c . <<<"$out")
        while IFS='|' read -r name rps; do
            awk -v t="${name// /_}" -v r="$rps" -v d=$((t1 - t0)) -v n="$4" -v k="$lines" -v hz="$(getconf CLK_TCK)" \
                'BEGIN { printf "%s %s %.2f\n", t, r, d / hz * 1e6 / (n * k) }'
        done <<<"$out"
    done
}

# Results: lines "<server> <P> <test> <rps> <server CPU us per request>".
results="$tmp/results"
: >"$results"
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then order="kv redis"; else order="redis kv"; fi
    for p in $PIPES; do
        if ((p == 1)); then n=$N_P1; else n=$N; fi
        for server in $order; do
            if [[ $server == kv ]]; then port=$kv_port pid=${pids[0]}; else port=$redis_port pid=${pids[1]}; fi
            run "$port" "$pid" "$p" "$n" | while read -r test rps cpu; do
                echo "$server $p $test $rps $cpu" >>"$results"
                echo "round $round: $server -P $p $test $rps req/s, $cpu us CPU/request" >&2
            done
        done
    done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# med SERVER P TEST [COLUMN]: the median of the rounds' requests/s (or COLUMN 5: CPU).
med() { awk -v s="$1" -v p="$2" -v t="$3" -v c="${4:-4}" '$1 == s && $2 == p && $3 == t { print $c }' "$results" | median; }

echo
echo "redis-benchmark -q -t $TESTS -n $N -c $CLIENTS, -P $PIPES (-n $N_P1 at -P 1)${EXTRA:+ $EXTRA};" \
    "median of $ROUNDS alternating rounds; $(nproc) cores ($(sed -nE 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))"
echo
echo "| workload | kv_server ($SHARDS shards${KV_ARGS:+ $KV_ARGS}) req/s | peer | peer req/s | ratio | kv_server CPU µs/req | peer CPU µs/req |"
echo "|---|---:|---|---:|---:|---:|---:|"
for p in $PIPES; do
    for test in $(awk -v p="$p" '$1 == "kv" && $2 == p && !seen[$3]++ { print $3 }' "$results"); do
        kv=$(med kv "$p" "$test")
        rd=$(med redis "$p" "$test")
        ratio=$(awk -v a="$kv" -v b="$rd" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }')
        printf '| %s -P %s | %.0f | redis-server %s | %.0f | %s | %s | %s |\n' "${test//_/ }" "$p" "$kv" \
            "$redis_version" "$rd" "$ratio" "$(med kv "$p" "$test" 5)" "$(med redis "$p" "$test" 5)"
    done
done

# kv_server must stop cleanly on SIGTERM.
kill -TERM "${pids[0]}"
status=0
wait "${pids[0]}" || status=$?
pids=("${pids[@]:1}")
if ((status != 0)); then
    echo "kv_server exited with $status after SIGTERM" >&2
    cat "$tmp/kv.err" >&2
    exit 1
fi
