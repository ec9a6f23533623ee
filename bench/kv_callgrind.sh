#!/usr/bin/env bash
# What a kv_server request costs in instructions and allocations, counted by
# callgrind (deterministic, unlike time on a shared VM): starts $BIN (default this
# tree's release build) under valgrind with 2 shards and --spin-us 0, runs
# redis-benchmark -t <test> -n $N -c 50 -P 16 -r 100000 against it, stops it, and
# prints the server's instructions and its allocations (calls into mimalloc's
# mi_malloc_aligned) per request. One line per test in $TESTS.
#
# Usage: TESTS=incr,lpush bash bench/kv_callgrind.sh
#        BIN=/tmp/before-target/release/kv_server TESTS=incr bash bench/kv_callgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/kv_server}
TESTS=${TESTS:-set,get}
N=${N:-50000}
PORT=${PORT:-6411}
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
command -v redis-benchmark >/dev/null || apt-get install -y -qq redis-tools >/dev/null
[[ $BIN != target/release/kv_server ]] || cargo build --quiet --release -p kv_server
WORK=$(mktemp -d)
server=
trap '[[ -z $server ]] || kill "$server" 2>/dev/null; rm -rf "$WORK"' EXIT
for test in ${TESTS//,/ }; do
  out=$WORK/$test.callgrind
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" --port "$PORT" --shards 2 --spin-us 0 \
    >"$WORK/server.log" 2>&1 &
  server=$!
  up=
  for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && up=1 && break; sleep 0.2; done
  [[ -n $up ]] || { echo "kv_server did not come up on port $PORT:"; cat "$WORK/server.log"; exit 1; }
  redis-benchmark -p "$PORT" -q -t "$test" -n "$N" -c 50 -P 16 -r 100000 >/dev/null 2>&1
  kill -TERM "$server"
  wait "$server" || true
  server=
  python3 - "$out" "$test" "$N" <<'PY'
import re, sys
path, test, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
names, callee, instructions, allocations = {}, None, 0, 0
for line in open(path, errors="replace"):
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        callee = names.get(m.group(2)) if m.group(1) else None
    elif line.startswith("calls=") and callee is not None:
        if callee == "mi_malloc_aligned":
            allocations += int(line.split("=")[1].split()[0])
        callee = None
    elif line.startswith("summary:"):
        instructions = int(line.split()[1])
print(f"{test}: {instructions / 1e6:.1f}M instructions, {allocations / n:.2f} allocations per request")
PY
done
