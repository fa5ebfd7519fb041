package policytest

import (
	"fmt"
	"sync"

	networkingv1 "k8s.io/api/networking/v1"
)

// Env is what a case runs against.
type Env interface {
	// Apply makes policies the complete set in force (earlier ones not in
	// it are deleted) and returns once they are enforced.
	Apply(policies []*networkingv1.NetworkPolicy) error
	// Probe reports whether from can open a connection (TCP) or get an
	// answer (UDP) to to's server for p.
	Probe(from, to *Pod, p Probe) bool
}

// Result is one step and probe of a case.
type Result struct {
	Case, Step string
	Probe      Probe
	Reach      *Reachability
}

// OK is whether observation matched expectation.
func (r Result) OK() bool { return len(r.Reach.Mismatches()) == 0 }

func (r Result) String() string {
	return fmt.Sprintf("%s/%s %s", r.Case, r.Step, r.Probe)
}

// Run runs every step of c: applies its policies, then probes every
// ordered pod pair for every probe, at most parallel at a time.
func Run(m *Model, c Case, env Env, parallel int, ignoreLoopback bool) ([]Result, error) {
	if parallel < 1 {
		parallel = 1
	}
	var out []Result
	for _, st := range c.Steps {
		if err := env.Apply(st.Policies(m)); err != nil {
			return out, fmt.Errorf("%s/%s: apply: %w", c.Name, st.Name, err)
		}
		for _, pr := range Probes {
			r := NewReachability(m)
			r.IgnoreLoopback = ignoreLoopback
			st.Expect(m, r, pr)
			Observe(r, env, pr, parallel)
			out = append(out, Result{Case: c.Name, Step: st.Name, Probe: pr, Reach: r})
		}
	}
	return out, nil
}

// Observe probes every pair r covers for pr, at most parallel at a time,
// and records what it saw (a pod to itself is left out when r ignores
// loopback).
func Observe(r *Reachability, env Env, pr Probe, parallel int) {
	parallel = max(parallel, 1)
	type pair struct{ from, to *Pod }
	work := make(chan pair)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				ok := env.Probe(p.from, p.to, pr)
				mu.Lock()
				r.Observe(p.from, p.to, ok)
				mu.Unlock()
			}
		}()
	}
	for _, f := range r.from {
		for _, t := range r.to {
			if f != t || !r.IgnoreLoopback {
				work <- pair{f, t}
			}
		}
	}
	close(work)
	wg.Wait()
}
