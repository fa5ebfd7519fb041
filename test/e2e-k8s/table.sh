#!/usr/bin/env bash
# table.sh [RESULTS]: the results table run.sh wrote (default
# bin/e2e-k8s/results.tsv) as the Markdown rows of docs/CONFORMANCE.md.
set -euo pipefail
results=${1:-bin/e2e-k8s/results.tsv}
echo '| result | time | spec | note |'
echo '|---|---:|---|---|'
awk -F'\t' '{
  t = ($2 == "-") ? "" : $2 " s"
  note = $4; gsub(/\|/, "\\|", note)
  printf "| %s | %s | %s | %s |\n", $1, t, $3, note
}' "$results"
