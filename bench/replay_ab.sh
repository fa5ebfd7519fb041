#!/usr/bin/env bash
# bench/replay_ab.sh: A/B of the replay benchmarks. Builds bench's test
# binary at BASE_REF (A) and from the working tree (B), then runs each in
# turn ROUNDS times on the benchmarks matching PATTERN; prints the raw
# `go test -bench` output of every run, A and B marked, for benchstat or
# by hand. Alternating spreads slow drifts of the machine over both.
#
#   bench/replay_ab.sh d9fb8f1 3 'RouteEncap64/routes=4|DecapDeliver'
set -euo pipefail
REF=${1:-HEAD}
ROUNDS=${2:-3}
PATTERN=${3:-RouteEncap64/routes=4|DecapDeliver}
ROOT=$(git rev-parse --show-toplevel)
WORK=$(mktemp -d /tmp/weft-replay-ab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/a"
git -C "$ROOT" archive "$REF" | tar -x -C "$WORK/a"
(cd "$WORK/a" && go test -c -o "$WORK/bench.A" ./bench/)
(cd "$ROOT" && go test -c -o "$WORK/bench.B" ./bench/)
for r in $(seq "$ROUNDS"); do
	for s in A B; do
		dir="$ROOT/bench"
		[ $s = A ] && dir="$WORK/a/bench"
		echo "== $s round $r ($([ $s = A ] && echo "$REF" || echo "working tree")), load $(cut -d' ' -f1-3 /proc/loadavg)"
		(cd "$dir" && "$WORK/bench.$s" -test.run '^$' -test.bench "$PATTERN" -test.benchmem)
	done
done
