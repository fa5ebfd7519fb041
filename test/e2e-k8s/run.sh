#!/usr/bin/env bash
# run.sh E2E_TEST SPECS: runs each spec listed in SPECS (one full spec name
# a line, as `e2e.test --list-tests` prints it; '#' lines are comments;
# "skip: NAME | REASON" lines are specs left out, printed with their
# reason) with Kubernetes' e2e.test against the cluster in $KUBECONFIG,
# one spec per e2e.test run (a failure or a hang stays that spec's), and
# prints each result and "N passed, N failed". Logs and a results table go
# to $E2E_OUT (default bin/e2e-k8s). kcluster run starts it inside the
# control plane's namespace.
set -uo pipefail
if [ $# -ne 2 ]; then echo "usage: $0 E2E_TEST SPECS" >&2; exit 2; fi
e2e=$1 specs=$2
out=${E2E_OUT:-bin/e2e-k8s}
: "${KUBECONFIG:?run.sh runs under kcluster run, which sets KUBECONFIG}"
mkdir -p "$out"
results=$out/results.tsv
: >"$results"
pass=0 fail=0 skip=0 n=0 total_start=$(date +%s)
while IFS= read -r line || [ -n "$line" ]; do
  case $line in
    '' | '#'*) continue ;;
    'skip: '*)
      skip=$((skip + 1))
      name=${line#skip: }
      printf 'SKIP  %s\n      (%s)\n' "${name%% | *}" "${name#* | }"
      printf 'SKIP\t-\t%s\t%s\n' "${name%% | *}" "${name#* | }" >>"$results"
      continue ;;
  esac
  n=$((n + 1))
  # The name as a regular expression matching itself.
  focus=$(printf '%s' "$line" | sed 's/[][\\.*^$(){}+?|]/\\&/g')
  log=$out/spec-$n.log
  start=$(date +%s)
  "$e2e" --kubeconfig="$KUBECONFIG" --provider=skeleton --minStartupPods=0 \
    --ginkgo.focus="$focus" --ginkgo.no-color --ginkgo.timeout=15m >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  if ! grep -q 'Ran 1 of' "$log"; then
    res=FAIL why="matched no spec or several (see $log)"
  elif [ $rc = 0 ]; then
    res=PASS why=""
  else
    res=FAIL why=$(grep -m1 -E '^\s*\[FAILED\]' "$log" | sed 's/^\s*//' | cut -c1-200)
  fi
  if [ $res = PASS ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
  printf '%s  %4ss  %s\n' "$res" "$took" "$line"
  [ -n "$why" ] && printf '      %s\n' "$why"
  printf '%s\t%s\t%s\t%s\n' "$res" "$took" "$line" "$why" >>"$results"
done <"$specs"
echo "$pass passed, $fail failed ($skip left out, listed above with their reasons; $(( $(date +%s) - total_start )) s; logs in $out)"
[ $fail = 0 ]
