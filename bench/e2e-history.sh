#!/usr/bin/env bash
# bench/e2e-history.sh: every `make bench-e2e` run ever recorded in
# docs/BENCHMARKS.md, from git history: for each commit that changed the
# file (oldest first), the e2e block's run line (time, commit, load) and its
# ratio line, each run once. The throughput table in docs/BENCHMARKS.md
# quotes these; docs/data/e2e-history.txt is this script's output.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
seen=""
for c in $(git log --reverse --format=%h -- docs/BENCHMARKS.md); do
	block=$(git show "$c:docs/BENCHMARKS.md" | sed -n '/<!-- e2e:begin -->/,/<!-- e2e:end -->/p')
	run=$(grep -m1 ' UTC, commit ' <<<"$block" || true)
	[ -n "$run" ] || continue
	case "$seen" in *"|$run|"*) continue ;; esac
	seen="$seen|$run|"
	echo "== recorded in $c ($(git show -s --format=%ad --date=iso-strict "$c"))"
	echo "$run"
	grep -m1 '^`e2e ratio' <<<"$block" || true
	grep -m1 '^| TCP, 1 stream' <<<"$block" || true
	grep -m1 '^| ping, avg' <<<"$block" || true
done
