#!/usr/bin/env bash
# redis-cli (Redis's own client, not ours) against the kv_server example.
#
# Installs redis-tools with apt when redis-cli is missing, builds the example, starts it
# on a free port of 127.0.0.1 with 2 shards, checks what redis-cli prints for a few
# commands, stops the server with SHUTDOWN (it must exit 0; SIGTERM is tested by
# tests/kv_server.rs), and ends with a line
# `redis-cli: N passed, M failed`. Exits non-zero when any check failed.
set -euo pipefail
cd "$(dirname "$0")/../../.."

if ! command -v redis-cli >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-tools >/dev/null
fi

cargo build --quiet -p kv_server
bin="${CARGO_TARGET_DIR:-target}/debug/kv_server"

tmp=$(mktemp -d)
pid=
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

"$bin" --port 0 --shards 2 >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!
# The first stdout line says where it listens; a hang detector, not a timing check.
port=
for _ in $(seq 600); do
    line=$(head -n 1 "$tmp/stdout")
    if [[ "$line" =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]]; then
        port=${BASH_REMATCH[1]}
        break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$port" ]]; then
    echo "kv_server did not say where it listens; stdout: $(cat "$tmp/stdout")" >&2
    cat "$tmp/stderr" >&2
    echo "redis-cli: 0 passed, 1 failed"
    exit 1
fi

passed=0
failed=0
cli() { timeout 60 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>&1; }

# check NAME EXPECTED ACTUAL
check() {
    if [[ "$2" == "$3" ]]; then
        passed=$((passed + 1))
        echo "ok   $1"
    else
        failed=$((failed + 1))
        echo "FAIL $1"
        echo "  expected: $(printf '%q' "$2")"
        echo "  got:      $(printf '%q' "$3")"
    fi
}

# check_has NAME PATTERN ACTUAL: ACTUAL has a line matching the extended regex.
check_has() {
    if grep -Eq -- "$2" <<<"$3"; then
        passed=$((passed + 1))
        echo "ok   $1"
    else
        failed=$((failed + 1))
        echo "FAIL $1: no line matches $2 in:"
        sed 's/^/  /' <<<"$3"
    fi
}

# Output is redis-cli's raw format (stdout is not a terminal): no "(integer)" or quotes,
# and a nil is an empty line.
check "PING" "PONG" "$(cli PING)"
check "SET" "OK" "$(cli SET greeting hello)"
check "GET" "hello" "$(cli GET greeting)"
check "GET of a missing key" "" "$(cli GET nothing)"
check "INCR" "1" "$(cli INCR counter)"
check "INCRBY" "42" "$(cli INCRBY counter 41)"
check "INCR of text" "ERR value is not an integer or out of range" "$(cli INCR greeting)"
check "MSET" "OK" "$(cli MSET a 1 b 2 c 3 d 4)"
check "MGET across shards" "$(printf '1\n2\n\n3\n4')" "$(cli MGET a b missing c d)"
check "SET with a space in the value" "OK" "$(cli SET spaced 'a b  c')"
check "GET with a space in the value" "a b  c" "$(cli GET spaced)"
check "DBSIZE" "7" "$(cli DBSIZE)"

info=$(cli INFO | tr -d '\r')
check_has "INFO has the server section" '^redis_version:' "$info"
check_has "INFO has the keyspace" '^db0:keys=7,' "$info"
check_has "INFO counts two shards" '^shards:2$' "$info"
shard_total=$(sed -nE 's/^shard[0-9]+(_keys:|:keys=)([0-9]+).*/\2/p' <<<"$info" | awk '{ s += $1 } END { print s + 0 }')
check "INFO's shard key counts add up to DBSIZE" "7" "$shard_total"

# Several commands on one connection, read from standard input.
check "commands from stdin" "$(printf 'OK\nx1\n2')" \
    "$(printf 'SET x x1\nGET x\nEXISTS x greeting\n' | cli)"

# Mass insertion: 1000 SETs as raw RESP, pipelined, counted by redis-cli --pipe.
for i in $(seq 1000); do
    printf '*3\r\n$3\r\nSET\r\n$%d\r\nbulk:%d\r\n$%d\r\n%d\r\n' $((5 + ${#i})) "$i" ${#i} "$i"
done >"$tmp/mass.resp"
check_has "redis-cli --pipe, 1000 SETs" '^errors: 0, replies: 1000$' \
    "$(cli --pipe <"$tmp/mass.resp" | tr -d '\r')"
check "GET after --pipe" "777" "$(cli GET bulk:777)"
check "DBSIZE after --pipe" "1008" "$(cli DBSIZE)"
check "FLUSHALL" "OK" "$(cli FLUSHALL)"
check "DBSIZE after FLUSHALL" "0" "$(cli DBSIZE)"

# The data types, and the everyday commands beyond GET and SET.
check "APPEND" "5" "$(cli APPEND s hello)"
check "STRLEN" "5" "$(cli STRLEN s)"
check "SETNX on an existing key" "0" "$(cli SETNX s other)"
check "SET .. GET" "hello" "$(cli SET s world GET)"
check "GETDEL" "world" "$(cli GETDEL s)"
check "RPUSH" "3" "$(cli RPUSH list a b c)"
check "LPUSH" "4" "$(cli LPUSH list z)"
check "LRANGE" "$(printf 'z\na\nb\nc')" "$(cli LRANGE list 0 -1)"
check "LPOP with a count" "$(printf 'z\na')" "$(cli LPOP list 2)"
check "RPOP" "c" "$(cli RPOP list)"
check "LLEN" "1" "$(cli LLEN list)"
check "LINDEX" "b" "$(cli LINDEX list 0)"
check "HSET" "2" "$(cli HSET user name ada lang rust)"
check "HGET" "ada" "$(cli HGET user name)"
check "HINCRBY" "7" "$(cli HINCRBY user visits 7)"
check "HGETALL" "$(printf 'name\nada\nlang\nrust\nvisits\n7')" "$(cli HGETALL user)"
check "HDEL" "1" "$(cli HDEL user lang)"
check "HLEN" "2" "$(cli HLEN user)"
check "SADD" "3" "$(cli SADD tags x y z)"
check "SISMEMBER" "1" "$(cli SISMEMBER tags y)"
check "SCARD" "3" "$(cli SCARD tags)"
check "SMEMBERS (sorted)" "$(printf 'x\ny\nz')" "$(cli SMEMBERS tags | sort)"
check_has "SPOP takes a member" '^[xyz]$' "$(cli SPOP tags)"
check "ZADD" "3" "$(cli ZADD board 10 ann 20 bob 15 cy)"
check "ZRANGE WITHSCORES" "$(printf 'ann\n10\ncy\n15\nbob\n20')" "$(cli ZRANGE board 0 -1 WITHSCORES)"
check "ZINCRBY" "25" "$(cli ZINCRBY board 15 ann)"
check "ZSCORE" "25" "$(cli ZSCORE board ann)"
check "ZPOPMIN" "$(printf 'cy\n15')" "$(cli ZPOPMIN board)"
check "ZCARD" "2" "$(cli ZCARD board)"
check "TYPE" "$(printf 'list\nhash\nset\nzset\nnone')" \
    "$(printf 'TYPE list\nTYPE user\nTYPE tags\nTYPE board\nTYPE nope\n' | cli)"
check "WRONGTYPE" "WRONGTYPE Operation against a key holding the wrong kind of value" "$(cli GET list)"
check "KEYS (sorted)" "$(printf 'board\nlist\ntags\nuser')" "$(cli KEYS '*' | sort)"
check "EXPIRE" "1" "$(cli EXPIRE user 100)"
check "PERSIST" "1" "$(cli PERSIST user)"
check "TTL after PERSIST" "-1" "$(cli TTL user)"
for i in $(seq 30); do printf 'SET scan:%d v\n' "$i"; done | cli >/dev/null
check "redis-cli --scan walks every shard" "30" "$(cli --scan --pattern 'scan:*' | sort -u | wc -l | tr -d ' ')"
check "CLIENT SETNAME" "OK" "$(cli CLIENT SETNAME tester)"
check "CLIENT GETNAME on the same connection" "$(printf 'OK\ntester')" \
    "$(printf 'CLIENT SETNAME tester\nCLIENT GETNAME\n' | cli)"
check_has "HELLO 3 over redis-cli -3" '^proto 3$' "$(cli -3 HELLO 3)"
check "UNLINK" "4" "$(cli UNLINK list user tags board)"

# redis-benchmark's default suite but XADD (streams are not served), keys spread
# over both shards: every test completes and no reply is an error.
bench_out=$(timeout 300 redis-benchmark -h 127.0.0.1 -p "$port" -n 2000 -r 1000 -q \
    -t ping_inline,ping_mbulk,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange,mset 2>&1 | tr '\r' '\n')
check "redis-benchmark: no error replies" "0" "$(grep -ci 'error' <<<"$bench_out")"
check "redis-benchmark: all 20 tests finish" "20" "$(grep -c 'requests per second' <<<"$bench_out")"

# SHUTDOWN: the server stops as on SIGTERM, and exits 0.
cli SHUTDOWN >/dev/null || true
status=0
wait "$pid" || status=$?
pid=
check "exit status after SHUTDOWN" "0" "$status"

if ((failed > 0)); then
    echo "--- kv_server stderr ---"
    cat "$tmp/stderr"
fi
echo "redis-cli: $passed passed, $failed failed"
((failed == 0))
