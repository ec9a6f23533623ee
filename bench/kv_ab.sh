#!/usr/bin/env bash
# A/B of two kv_server builds, side by side: A (the binary in $A, e.g. built from an
# earlier commit in a git worktree) and B ($B, default this tree's release build),
# both started with $KV_ARGS (default --proactor; KV_ARGS= for the epoll loop).
# ROUNDS rounds (default 6), alternating which goes first, each running
# redis-benchmark -t $TESTS (default set,get) -n N -c 50 -P p -r 100000 against
# both, for each p in $PIPES (default "1 16").
# Prints each test's median requests/s for A and B and the ratio B / A.
#
# Usage: A=/tmp/before-target/release/kv_server bench/kv_ab.sh
#        A=... TESTS=lpush,sadd PIPES=16 bench/kv_ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
A=${A:?set A to the kv_server binary to compare against}
B=${B:-target/release/kv_server}
ROUNDS=${ROUNDS:-6}
N=${N:-200000}
KV_ARGS=${KV_ARGS---proactor}
TESTS=${TESTS:-set,get}
PIPES=${PIPES:-1 16}
WORK=$(mktemp -d)
# shellcheck disable=SC2086
"$A" --port 7021 $KV_ARGS >/dev/null 2>&1 & SA=$!
# shellcheck disable=SC2086
"$B" --port 7022 $KV_ARGS >/dev/null 2>&1 & SB=$!
trap 'kill $SA $SB 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 0.7
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then order="A B"; else order="B A"; fi
  for n in $order; do
    port=7021; [[ $n == B ]] && port=7022
    for p in $PIPES; do
      # One tab-separated row per result: build, pipeline, the test's name as
      # redis-benchmark prints it (it may hold spaces: "MSET (10 keys)"), req/s.
      redis-benchmark -p $port -t "$TESTS" -n "$N" -c 50 -P "$p" -r 100000 --csv 2>/dev/null |
        tr -d '"' | awk -F, -v n=$n -v p="$p" -v OFS='\t' '$1 != "test" {print n, "-P" p, $1, $2}' >> "$WORK/rows"
    done
  done
done
echo "| test | A req/s | B req/s | B / A |"
echo "|---|---:|---:|---:|"
# The tests in the order they ran, each pipeline depth apart.
cut -f2,3 "$WORK/rows" | awk '!seen[$0]++' | while IFS=$'\t' read -r p t; do
  med() { awk -F'\t' -v n="$1" -v p="$p" -v t="$t" '$1 == n && $2 == p && $3 == t {print $4}' "$WORK/rows" |
    sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
  a=$(med A); b=$(med B)
  awk -v t="$t $p" -v a="$a" -v b="$b" 'BEGIN {printf "| %s | %.0f | %.0f | %s |\n", t, a, b, (a > 0 ? sprintf("%.2fx", b / a) : "n/a")}'
done
