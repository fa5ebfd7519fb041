#!/usr/bin/env bash
# bench/ab.sh: A/B of weftd end to end. Builds weftd at BASE_REF (A) and
# from the working tree (B), then runs each in turn REPS times in a
# two-node `weft sim` (one pod per node): iperf3 TCP 1 stream (and 4 with
# TCP4=1, and UDP with 64-byte datagrams at full rate with UDP64=1, in
# thousands of datagrams received per second) for T seconds, then ping -c
# 300 -i 0.01; prints every run and the medians. Alternating A and B (each pair in the
# other order than the last) spreads slow drifts of the machine over
# both. This is how the A/B figures in docs/BENCHMARKS.md were made.
#
#   sudo bench/ab.sh HEAD~1 4
#   sudo ARGS_B="--workers=2" TCP4=1 bench/ab.sh HEAD 3
#
# Environment: T (default 5), TCP4 (1: also 4 streams), UDP64 (1: also
# UDP 64-byte datagrams, -u -l 64 -b 0), ARGS_A/ARGS_B
# (extra weftd flags), ENVS_A/ENVS_B (environment for weftd, e.g.
# GOMAXPROCS=1). Needs root, iperf3, ping, jq (make deps).
set -euo pipefail
REF=${1:-HEAD}
REPS=${2:-3}
T=${T:-5}
ROOT=$(git rev-parse --show-toplevel)
WORK=$(mktemp -d /tmp/weft-ab.XXXXXX)
NAME=wab$$
IPERF_PID=
cleanup() {
	[ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null || true
	"$WORK/weft" sim down --name "$NAME" >/dev/null 2>&1 || true
	git -C "$ROOT" worktree remove --force "$WORK/base" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

git -C "$ROOT" worktree add --detach "$WORK/base" "$REF" >/dev/null
(cd "$WORK/base" && go build -o "$WORK/weftd.A" ./cmd/weftd)
(cd "$ROOT" && go build -o "$WORK/weftd.B" ./cmd/weftd && go build -o "$WORK/weft" ./cmd/weft)

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }

# run BIN ENV ARGS: one sim, one set of measurements, printed as
# "tcp1 tcp4 ping udp64 cpu_s_per_gb".
run() {
	printf '#!/bin/sh\nexec env %s %s "$@" %s\n' "$2" "$1" "$3" >"$WORK/wrap"
	chmod +x "$WORK/wrap"
	"$WORK/weft" sim up --name "$NAME" --nodes 2 --pods-per-node 1 --weftd "$WORK/wrap" >/dev/null
	local j p1 p2 ip2 g1 g4=- rtt u64=- t1 c0 c1 spg
	j=$("$WORK/weft" sim status --name "$NAME" -o json)
	p1=$(jq -r '.nodes[0].pods[0].netns' <<<"$j")
	p2=$(jq -r '.nodes[1].pods[0].netns' <<<"$j")
	ip2=$(jq -r '.nodes[1].pods[0].address' <<<"$j" | cut -d/ -f1)
	ip netns exec "$p2" iperf3 -s -B "$ip2" -D -I "$WORK/iperf.pid" >/dev/null
	sleep 0.5
	IPERF_PID=$(cat "$WORK/iperf.pid")
	ip netns exec "$p1" ping -c 5 -i 0.2 -q "$ip2" >/dev/null
	c0=$(weftd_ticks "$1")
	t1=$(ip netns exec "$p1" iperf3 -c "$ip2" -t "$T" -J)
	c1=$(weftd_ticks "$1")
	g1=$(jq -r '.end.sum_received.bits_per_second/1e9' <<<"$t1")
	spg=$(jq -r --argjson c "$((c1 - c0))" --argjson hz "$(getconf CLK_TCK)" \
		'($c / $hz) / (.end.sum_received.bytes / 1e9)' <<<"$t1")
	if [ "${TCP4:-}" = 1 ]; then
		g4=$(ip netns exec "$p1" iperf3 -c "$ip2" -t "$T" -P 4 -J | jq -r '.end.sum_received.bits_per_second/1e9')
	fi
	if [ "${UDP64:-}" = 1 ]; then
		u64=$(ip netns exec "$p1" iperf3 -c "$ip2" -t "$T" -u -l 64 -b 0 -J |
			jq -r '.end.sum | ((.packets - .lost_packets) / .seconds / 1000)')
	fi
	rtt=$(ip netns exec "$p1" ping -c 300 -i 0.01 -q "$ip2" | tail -1 | cut -d/ -f5)
	kill "$IPERF_PID" 2>/dev/null || true
	IPERF_PID=
	"$WORK/weft" sim down --name "$NAME" >/dev/null
	echo "$g1 $g4 $rtt $u64 $spg"
}

# weftd_ticks BIN: utime + stime of every running BIN (both nodes' weftds;
# the wrapper execs it), in clock ticks.
weftd_ticks() {
	local p t=0
	for p in $(pgrep -f "^$1( |\$)"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}

: >"$WORK/results"
runA() {
	local r
	r=$(run "$WORK/weftd.A" "${ENVS_A:-}" "${ARGS_A:-}")
	echo "A $r" | tee -a "$WORK/results"
}
runB() {
	local r
	r=$(run "$WORK/weftd.B" "${ENVS_B:-}" "${ARGS_B:-}")
	echo "B $r" | tee -a "$WORK/results"
}
# Pairs alternate which side goes first (AB, BA, AB, ...): with A always
# first, a side once lost on small-packet figures in every pair for the
# order alone (docs/data/2026-12-04-gather-tx-ab.txt).
for i in $(seq "$REPS"); do
	if [ $((i % 2)) = 1 ]; then runA; runB; else runB; runA; fi
done
for s in A B; do
	echo "$s ($([ $s = A ] && echo "$REF" || echo "working tree")) median:" \
		"tcp1=$(awk -v s=$s '$1==s {print $2}' "$WORK/results" | median) Gbit/s" \
		"tcp4=$(awk -v s=$s '$1==s {print $3}' "$WORK/results" | median) Gbit/s" \
		"ping=$(awk -v s=$s '$1==s {print $4}' "$WORK/results" | median) ms" \
		"udp64=$(awk -v s=$s '$1==s {print $5}' "$WORK/results" | median) kpps" \
		"cpu=$(awk -v s=$s '$1==s {print $6}' "$WORK/results" | median) s/GB"
done
