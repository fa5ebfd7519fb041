package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// The pol1 row: TCP 1 stream from pod 1 to pod 2 with a permissive
// NetworkPolicy in force, so that both weftds run the policy stage on
// every new flow and track every flow in conntrack (the verdict riding in
// the entry), and the established stream pays the conntrack lookup. It
// runs right after tcp1 (no policy), whose figure it is compared with
// (issue 15: within 3 %).

// policyName is the policy the pol1 row applies, in the sim pods'
// namespace (sim.PodNamespace).
const (
	policyNS   = "sim"
	policyName = "e2e-allow-all"
)

// policyYAML selects every sim pod and isolates it both ways, with one
// rule per direction that admits everything.
func policyYAML() string {
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: %s, namespace: %s}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
  egress: [{}]
`, policyName, policyNS)
}

// weftAt runs `weft --socket SOCK ARGS...` against node i's weftd.
func (s *weftSim) weftAt(ctx context.Context, i int, args ...string) ([]byte, error) {
	argv := append([]string{"--socket", s.state.Nodes[i].Socket}, args...)
	return exec.CommandContext(ctx, s.cfg.WeftBin, argv...).Output()
}

// applyPolicy stores the policy (or deletes it) and waits until both
// weftds enforce exactly that: it, selecting both pods, or no policy.
func (s *weftSim) applyPolicy(ctx context.Context, log func(format string, args ...any), remove bool) error {
	sub := "apply"
	if remove {
		sub = "delete"
	}
	cmd := s.weftCmd(ctx, sub, "-f", "-")
	cmd.Stdin = strings.NewReader(policyYAML())
	out, err := cmd.CombinedOutput()
	log("weft sim %s: %s", sub, strings.TrimSpace(string(out)))
	if err != nil {
		return fmt.Errorf("weft sim %s (policy %s/%s): %w", sub, policyNS, policyName, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if last = s.policyLag(ctx, remove); last == "" {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("policy %s/%s not in force on both nodes within 30 s: %s", policyNS, policyName, last)
}

// policyLag says which node does not yet enforce what applyPolicy wants.
func (s *weftSim) policyLag(ctx context.Context, removed bool) string {
	for i := range s.state.Nodes {
		out, err := s.weftAt(ctx, i, "policies", "-o", "json")
		if err != nil {
			return fmt.Sprintf("node %d: weft policies: %v", i+1, err)
		}
		var list struct {
			Ready    bool `json:"ready"`
			Policies []struct {
				Namespace string   `json:"namespace"`
				Name      string   `json:"name"`
				Selects   []string `json:"selects"`
			} `json:"policies"`
		}
		if err := json.Unmarshal(out, &list); err != nil {
			return fmt.Sprintf("node %d: weft policies: %v", i+1, err)
		}
		switch {
		case !list.Ready:
			return fmt.Sprintf("node %d: not ready", i+1)
		case removed && len(list.Policies) != 0:
			return fmt.Sprintf("node %d: %d policies left", i+1, len(list.Policies))
		case !removed && (len(list.Policies) != 1 || list.Policies[0].Name != policyName || len(list.Policies[0].Selects) != 2):
			return fmt.Sprintf("node %d: policies %+v", i+1, list.Policies)
		}
	}
	return ""
}

// conntrackInserts is node i's conntrack insert count (weft counters).
func (s *weftSim) conntrackInserts(ctx context.Context, i int) (uint64, error) {
	out, err := s.weftAt(ctx, i, "counters", "-o", "json")
	if err != nil {
		return 0, fmt.Errorf("weft counters: %w", err)
	}
	var c map[string]uint64
	if err := json.Unmarshal(out, &c); err != nil {
		return 0, fmt.Errorf("weft counters: %w", err)
	}
	return c["conntrack.inserts"], nil
}

// policyRow brackets one pol1 repetition: it applies the policy and
// returns the function that checks the flows went through conntrack
// (inserts grew on node 2, the server's) and deletes the policy again.
func (s *weftSim) policyRow(ctx context.Context, log func(format string, args ...any)) (done func() error, err error) {
	if err := s.applyPolicy(ctx, log, false); err != nil {
		return nil, err
	}
	before, err := s.conntrackInserts(ctx, 1)
	if err != nil {
		s.applyPolicy(ctx, log, true)
		return nil, err
	}
	log("policy %s/%s in force on both nodes (selects both pods, admits everything)", policyNS, policyName)
	return func() error {
		after, cerr := s.conntrackInserts(ctx, 1)
		if cerr == nil {
			log("pol1: node 2 inserted %d conntrack flows during the policy run (the policy stage tracked them)", after-before)
			if after == before {
				cerr = fmt.Errorf("pol1: no conntrack insert on node 2: the policy stage did not see the flows")
			}
		}
		derr := s.applyPolicy(context.Background(), log, true)
		return errors.Join(cerr, derr)
	}, nil
}
