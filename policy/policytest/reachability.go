package policytest

import (
	"fmt"
	"strings"
)

// Peer matches pods by logical namespace (x) and pod name; an empty field
// matches any.
type Peer struct {
	NS, Pod string
}

func (p Peer) matches(pod *Pod) bool {
	return (p.NS == "" || p.NS == pod.NSKey) && (p.Pod == "" || p.Pod == pod.Name)
}

// Reachability is one probe's expected and observed truth tables. The
// expectation starts all-allowed and is edited with a case's meaning.
type Reachability struct {
	Expected, Observed *TruthTable
	from, to           []*Pod
	// IgnoreLoopback leaves a pod's connection to itself out of the
	// comparison, as upstream does (its semantics are not defined, and in
	// weft a pod's own address never leaves the pod).
	IgnoreLoopback bool
}

// NewReachability makes all-allowed expectations over m's pods, every
// ordered pair.
func NewReachability(m *Model) *Reachability { return NewReachabilityFromTo(m.Pods, m.Pods) }

// NewReachabilityFromTo makes all-allowed expectations from every pod of
// from to every pod of to (which may hold pods outside the model: one a
// case attaches).
func NewReachabilityFromTo(from, to []*Pod) *Reachability {
	names := func(pods []*Pod) []string {
		var out []string
		for _, p := range pods {
			out = append(out, p.String())
		}
		return out
	}
	all := true
	rows, cols := names(from), names(to)
	return &Reachability{Expected: NewTruthTableRect(rows, cols, &all), Observed: NewTruthTableRect(rows, cols, nil), from: from, to: to}
}

// From and To are the sources and destinations the tables cover.
func (r *Reachability) From() []*Pod { return r.from }
func (r *Reachability) To() []*Pod   { return r.to }

// Expect sets one pair.
func (r *Reachability) Expect(from, to *Pod, connected bool) {
	r.Expected.Set(from.String(), to.String(), connected)
}

// ExpectPeer sets every pair from a pod matching from to one matching to.
func (r *Reachability) ExpectPeer(from, to Peer, connected bool) {
	for _, f := range r.from {
		if !from.matches(f) {
			continue
		}
		for _, t := range r.to {
			if to.matches(t) {
				r.Expect(f, t, connected)
			}
		}
	}
}

// ExpectAllIngress sets everything into pod.
func (r *Reachability) ExpectAllIngress(pod *Pod, connected bool) {
	r.ExpectPeer(Peer{}, Peer{NS: pod.NSKey, Pod: pod.Name}, connected)
}

// ExpectAllEgress sets everything out of pod.
func (r *Reachability) ExpectAllEgress(pod *Pod, connected bool) {
	r.ExpectPeer(Peer{NS: pod.NSKey, Pod: pod.Name}, Peer{}, connected)
}

// Observe records one observation.
func (r *Reachability) Observe(from, to *Pod, connected bool) {
	r.Observed.Set(from.String(), to.String(), connected)
}

// Mismatches lists the pairs where observation differs from expectation
// (or is missing).
func (r *Reachability) Mismatches() []string {
	var out []string
	for _, f := range r.from {
		for _, t := range r.to {
			if r.IgnoreLoopback && f == t {
				continue
			}
			want, _ := r.Expected.Get(f.String(), t.String())
			got, ok := r.Observed.Get(f.String(), t.String())
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("%s -> %s: not observed", f, t))
			case got != want:
				out = append(out, fmt.Sprintf("%s -> %s: expected %s, observed %s", f, t, word(want), word(got)))
			}
		}
	}
	return out
}

func word(connected bool) string {
	if connected {
		return "connected"
	}
	return "blocked"
}

// Report prints both matrices and the differences.
func (r *Reachability) Report() string {
	var b strings.Builder
	b.WriteString("expected:\n" + r.Expected.String() + "\n\nobserved:\n" + r.Observed.String() + "\n")
	if mm := r.Mismatches(); len(mm) > 0 {
		b.WriteString("\nmismatches:\n  " + strings.Join(mm, "\n  ") + "\n")
	}
	return b.String()
}
