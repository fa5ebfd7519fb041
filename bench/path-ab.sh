#!/usr/bin/env bash
# bench/path-ab.sh: weft's TCP 1-stream paths against each other in ONE
# two-node `weft sim`: direct to pod 2's IP, the same with a permissive
# NetworkPolicy in force (issue 15's target: within 3 %), and through a
# cluster IP whose one endpoint is pod 2 (issue 13's target: >= 0.95 of
# direct). make bench-e2e measures them one after another, three runs each,
# so a drift of the machine during those minutes lands in the ratio; here
# each round runs all three back to back, the order rotating, and the
# ratio is of the medians over ROUNDS rounds. Prints every run (Gbit/s and
# both weftds' CPU seconds per GB) and the medians.
#
#   sudo bench/path-ab.sh 6
#
# Environment: T (seconds per iperf3 run, default 5). Needs root, iperf3,
# jq (make deps) and bin/weft, bin/weftd (make build).
set -euo pipefail
ROUNDS=${1:-5}
T=${T:-5}
ROOT=$(git rev-parse --show-toplevel)
WEFT=$ROOT/bin/weft
NAME=wpab$$
VIP=10.96.0.10
SERVER_PID=
OUT=$(mktemp /tmp/weft-path-ab.XXXXXX)
cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
	"$WEFT" sim down --name "$NAME" >/dev/null 2>&1 || true
	rm -f "$OUT"
}
trap cleanup EXIT

"$WEFT" sim up --name "$NAME" --nodes 2 --pods-per-node 1 --weftd "$ROOT/bin/weftd" >/dev/null
status=$("$WEFT" sim status --name "$NAME" -o json)
pod1=$(jq -r '.nodes[0].pods[0].netns' <<<"$status")
pod2=$(jq -r '.nodes[1].pods[0].netns' <<<"$status")
ip2=$(jq -r '.nodes[1].pods[0].address' <<<"$status" | cut -d/ -f1)
pids=$(pgrep -f "weftd.*$NAME" | tr '\n' ' ')
[ -n "$pids" ] || { echo "path-ab: no weftd of sim $NAME found" >&2; exit 1; }

policy="apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: path-ab-allow-all, namespace: sim}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
  egress: [{}]"
# The same Service and EndpointSlice as make bench-e2e's svc1 row.
service="apiVersion: v1
kind: Service
metadata: {name: path-ab, namespace: default}
spec:
  clusterIP: $VIP
  ports:
  - {name: iperf, port: 5201, protocol: TCP, targetPort: 5201}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: path-ab-1, namespace: default, labels: {kubernetes.io/service-name: path-ab}}
addressType: IPv4
ports:
- {name: iperf, port: 5201, protocol: TCP}
endpoints:
- addresses: [$ip2]
  conditions: {ready: true}"
echo "$service" | "$WEFT" sim apply --name "$NAME" -f - >/dev/null

ip netns exec "$pod2" iperf3 -s -p 5201 >/dev/null 2>&1 &
SERVER_PID=$!
# Until the cluster IP answers: every weftd compiles the Service on its
# next look at the registry (bounded: 30 tries).
for i in $(seq 1 30); do
	ip netns exec "$pod1" iperf3 -c "$VIP" -p 5201 -t 1 >/dev/null 2>&1 && break
	[ "$i" = 30 ] && { echo "path-ab: cluster IP $VIP not reachable" >&2; exit 1; }
	sleep 1
done

cpu_ticks() { local t=0 p; for p in $pids; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

# measure PATH: one iperf3 run to DST; appends "PATH gbps cpu_per_gb".
measure() {
	local path=$1 dst=$ip2 c0 c1 bytes
	[ "$path" = service ] && dst=$VIP
	c0=$(cpu_ticks)
	bytes=$(ip netns exec "$pod1" iperf3 -c "$dst" -p 5201 -t "$T" -J | jq '.end.sum_received.bytes')
	c1=$(cpu_ticks)
	awk -v p="$path" -v b="$bytes" -v c=$((c1 - c0)) -v t="$T" -v hz="$hz" \
		'BEGIN { printf "%s %.3f %.3f\n", p, b * 8 / t / 1e9, c / hz / (b / 1e9) }' | tee -a "$OUT"
}
# policy PATH: the permissive policy in force (apply) or not (delete); a
# weftd picks a change up within its poll interval, hence the wait.
set_policy() {
	echo "$policy" | "$WEFT" sim "$1" --name "$NAME" -f - >/dev/null
	sleep 1.5
}

orders=("direct policy service" "policy service direct" "service direct policy")
for r in $(seq 1 "$ROUNDS"); do
	for path in ${orders[$(((r - 1) % 3))]}; do
		[ "$path" = policy ] && set_policy apply
		measure "$path"
		[ "$path" = policy ] && set_policy delete
	done
done

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "nan"}'; }
echo "medians over $ROUNDS rounds of ${T} s (Gbit/s, weftd CPU s per GB):"
for path in direct policy service; do
	echo "$path $(awk -v p=$path '$1==p {print $2}' "$OUT" | median) $(awk -v p=$path '$1==p {print $3}' "$OUT" | median)"
done | tee "$OUT.med"
awk 'NR==FNR {g[$1]=$2; next} END {
	printf "path-ab policy/direct=%.2f (target >= 0.97) service/direct=%.2f (target >= 0.95)\n", g["policy"]/g["direct"], g["service"]/g["direct"] }' "$OUT.med" /dev/null
rm -f "$OUT.med"
