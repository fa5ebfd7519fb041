#!/usr/bin/env bash
# bench/record.sh: run benchmarks -count N times, keep the raw output and
# print the medians from it, so that every median in docs/BENCHMARKS.md
# comes from a kept file and a tool, never from hand computation.
#
#   bench/record.sh                          # make bench's packages, -count 3
#   COUNT=5 BENCH='ReplayMix' bench/record.sh ./bench/
#   bench/record.sh replay -pcap bench/testdata/mix.pcap -duration 5s -runs 3
#
# The last form runs `weft-bench replay` instead and keeps its output
# (docs/data/replay-<UTC time>-<commit>.txt); replay prints its own medians.
#
# Writes docs/data/bench-<UTC time>-<commit>.txt: a header of '#' lines
# (time, commit and whether the tree was dirty, Go, CPUs, load before and
# after) and go test's output unchanged; then prints
# `go run ./cmd/weft-bench medians` over it. Environment: COUNT (3),
# BENCH (the -bench regexp, .), BENCHTIME (1s).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
COUNT=${COUNT:-3}
BENCH=${BENCH:-.}
BENCHTIME=${BENCHTIME:-1s}
if [ $# -eq 0 ]; then
	set -- ./bench/ ./datapath/ ./packet/ ./switch/ ./overlay/ ./ipam/ ./registry/...
fi
commit=$(git describe --always --dirty)
header() {
	echo "# $1"
	echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, $(go version), $(nproc) CPUs, kernel $(uname -r)"
	echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
}
if [ "${1:-}" = replay ]; then
	shift
	out=docs/data/replay-$(date -u +%Y%m%dT%H%M)-$commit.txt
	mkdir -p docs/data
	go build -o /tmp/weft-bench.$$ ./cmd/weft-bench
	header "weft-bench replay $*" >"$out"
	/tmp/weft-bench.$$ replay "$@" | tee -a "$out"
	rm -f /tmp/weft-bench.$$
	echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%H:%M UTC')" >>"$out"
	echo "raw output: $out"
	exit 0
fi
out=docs/data/bench-$(date -u +%Y%m%dT%H%M)-$commit.txt
mkdir -p docs/data
header "go test -run '^\$' -bench '$BENCH' -benchmem -benchtime $BENCHTIME -count $COUNT $*" >"$out"
go test -run '^$' -bench "$BENCH" -benchmem -benchtime "$BENCHTIME" -count "$COUNT" "$@" | tee -a "$out"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%H:%M UTC')" >>"$out"
echo "raw output: $out"
go run ./cmd/weft-bench medians "$out"
