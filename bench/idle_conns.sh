#!/usr/bin/env bash
# Memory per idle connection: kv_server (epoll and --proactor, 1 shard) and Debian's
# redis-server. Opens N connections to each server in turn (127.0.0.1 only), sends
# one request on each (PING, or with BIG=n a SET of an n-byte value), waits for the
# replies, lets them sit for a second and prints the server's resident memory
# growth per connection (VmRSS from /proc).
#
# Usage: bench/idle_conns.sh            (N=2000)
#        N=5000 BIG=100000 bench/idle_conns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}; BIG=${BIG:-0}; PORT=${PORT:-7400}
ulimit -n $((N + 100))
cargo build --release -q -p kv_server
measure() {
  python3 - "$PORT" "$1" "$N" "$BIG" <<'PY'
import socket, sys, time
port, pid, n, big = (int(a) for a in sys.argv[1:])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
base, socks = rss(), []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    socks.append(s)
    if big:
        key, v = b"k%d" % i, b"x" * big
        s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(v), v))
    else:
        s.sendall(b"PING\r\n")
for s in socks:
    s.recv(100)
time.sleep(1)
print(f"{(rss() - base) / n:.1f} KiB per connection")
PY
}
for server in "kv_server" "kv_server --proactor" "redis-server"; do
  case $server in
    redis*) redis-server --save '' --appendonly no --bind 127.0.0.1 --port $PORT \
              --maxclients $((N + 10)) >/dev/null 2>&1 & ;;
    *) target/release/$server --port $PORT --shards 1 >/dev/null 2>&1 & ;;
  esac
  pid=$!
  sleep 0.5
  printf '%-22s ' "$server:"
  measure $pid
  kill $pid; wait $pid 2>/dev/null || true
done
