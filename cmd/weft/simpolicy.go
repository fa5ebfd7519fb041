package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/weftnet/weft/policy/policytest"
	"github.com/weftnet/weft/sim"
)

// runPolicySuite is `weft sim test --policy-suite`: the policytest cases
// against the running sim, with the expected and observed matrices of
// every step and probe (the observed one is what real connections did).
func runPolicySuite(ctx context.Context, c *cli, cl *sim.Cluster, workers int, asJSON bool) error {
	if len(cl.Nodes) == 0 {
		return fmt.Errorf("sim %s has no nodes", cl.Name)
	}
	if !asJSON {
		c.progress("policy suite: adding nine pods in namespaces netpol-x, netpol-y, netpol-z")
	}
	env, err := sim.NewPolicySuite(ctx, cl, "netpol-")
	if err != nil {
		return err
	}
	defer env.Close()
	type result struct {
		Case, Step, Probe  string
		OK                 bool
		Expected, Observed string
		Mismatches         []string `json:",omitempty"`
	}
	var out []result
	failed := 0
	// The policy-only cases, then the ones that attach a pod and restart
	// a node (after them, so that the pod they add is in no earlier case).
	// Their matrices are small (every pod to one or two) and are what they
	// prove (first packet blocked, nothing through during the restart), so
	// they are printed whether or not they pass; the others on failure.
	type run struct {
		do   func() ([]policytest.Result, error)
		show bool
	}
	var runs []run
	for _, tc := range policytest.Cases() {
		runs = append(runs, run{do: func() ([]policytest.Result, error) {
			return policytest.Run(env.Model, tc, env, max(workers, 1)*4, true)
		}})
	}
	for _, sc := range sim.PolicySimCases() {
		runs = append(runs, run{do: func() ([]policytest.Result, error) { return sc.Run(env, ctx) }, show: true})
	}
	for _, rn := range runs {
		rs, err := rn.do()
		for _, r := range rs {
			res := result{Case: r.Case, Step: r.Step, Probe: r.Probe.String(), OK: r.OK(),
				Expected: r.Reach.Expected.String(), Observed: r.Reach.Observed.String(), Mismatches: r.Reach.Mismatches()}
			out = append(out, res)
			if !res.OK {
				failed++
			}
			if !asJSON {
				mark := "ok  "
				if !res.OK {
					mark = "FAIL"
				}
				fmt.Fprintf(c.stdout, "%s %s/%s %s\n", mark, r.Case, r.Step, r.Probe)
				if !res.OK || rn.show {
					fmt.Fprintf(c.stdout, "%s\n", r.Reach.Report())
				}
			}
		}
		if err != nil {
			return err
		}
	}
	if err := env.Apply(nil); err != nil {
		return fmt.Errorf("remove the suite's policies: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "\npolicy suite: %d of %d step/probe matrices as expected\n", len(out)-failed, len(out))
	}
	if failed > 0 {
		return &exitCodeError{code: exitError}
	}
	return nil
}
