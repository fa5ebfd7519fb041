package policytest

import (
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

func TestCoveringPrefix(t *testing.T) {
	m := NewModel("pl-")
	for i, p := range m.Pods {
		p.IP = netip.AddrFrom4([4]byte{10, 244, byte(1 + i%3), byte(3 + i)})
	}
	got := m.CoveringPrefix()
	if got.String() != "10.244.0.0/22" {
		t.Fatalf("CoveringPrefix = %s, want 10.244.0.0/22", got)
	}
	for _, p := range m.Pods {
		if !got.Contains(p.IP) {
			t.Errorf("%s not in %s", p.IP, got)
		}
	}
	if m.Namespaces["x"] != "pl-x" || m.PodObjects()[0].Namespace != "pl-x" || m.NamespaceObjects()[0].Labels["ns"] != "x" {
		t.Error("prefixed model: real names carry the prefix, labels the key")
	}
}

func TestReachabilityReportsMismatches(t *testing.T) {
	m := NewModel("")
	r := NewReachability(m)
	r.ExpectAllIngress(m.Pod("x", "a"), false)
	for _, f := range m.Pods {
		for _, to := range m.Pods {
			r.Observe(f, to, true)
		}
	}
	mm := r.Mismatches()
	if len(mm) != 9 {
		t.Fatalf("%d mismatches, want 9 (everything into x/a): %v", len(mm), mm)
	}
	r.IgnoreLoopback = true
	if len(r.Mismatches()) != 8 {
		t.Fatalf("ignoring loopback: %d mismatches, want 8", len(r.Mismatches()))
	}
	rep := r.Report()
	if !strings.Contains(rep, "y/b -> x/a: expected blocked, observed connected") || !strings.Contains(rep, "x/a\tX\t.") {
		t.Errorf("report:\n%s", rep)
	}
	r2 := NewReachability(m)
	r2.Observe(m.Pod("x", "a"), m.Pod("x", "b"), true)
	if got := r2.Mismatches(); len(got) != 80 || !strings.Contains(got[0], "not observed") {
		t.Errorf("unobserved pairs must be mismatches: %d %v", len(got), got[:1])
	}
}

func TestCasesAreWellFormed(t *testing.T) {
	m := NewModel("")
	for i, p := range m.Pods {
		p.IP = netip.AddrFrom4([4]byte{10, 244, 1, byte(3 + i)})
	}
	names := map[string]bool{}
	for _, c := range Cases() {
		if names[c.Name] || len(c.Steps) == 0 {
			t.Errorf("case %q: duplicate name or no steps", c.Name)
		}
		names[c.Name] = true
		for _, st := range c.Steps {
			for _, np := range st.Policies(m) {
				if _, ok := map[string]bool{"x": true, "y": true, "z": true}[np.Namespace]; !ok {
					t.Errorf("%s/%s: policy in namespace %q", c.Name, st.Name, np.Namespace)
				}
			}
		}
	}
}

// fakeEnv connects every pair except into blocked, and counts probes.
type fakeEnv struct {
	blocked *Pod
	probes  atomic.Int32
}

func (f *fakeEnv) Apply([]*networkingv1.NetworkPolicy) error { return nil }
func (f *fakeEnv) Probe(from, to *Pod, p Probe) bool {
	f.probes.Add(1)
	return to != f.blocked
}

func TestReachabilityFromTo(t *testing.T) {
	m := NewModel("")
	extra := &Pod{NSKey: "x", Namespace: "x", Name: "new"}
	to := []*Pod{m.Pod("x", "a"), extra}
	r := NewReachabilityFromTo(m.Pods, to)
	r.IgnoreLoopback = true
	r.ExpectAllIngress(extra, false)
	env := &fakeEnv{blocked: extra}
	Observe(r, env, Probes[0], 1)
	if n := env.probes.Load(); n != 17 {
		t.Errorf("%d probes, want 17 (9 pods to 2, x/a to itself left out)", n)
	}
	if mm := r.Mismatches(); len(mm) != 0 {
		t.Errorf("mismatches: %v", mm)
	}
	if rep := r.Report(); !strings.Contains(rep, "from\\to\tx/a\tx/new\n") || !strings.Contains(rep, "y/c\t.\tX") {
		t.Errorf("report:\n%s", rep)
	}
	env.blocked = nil
	r2 := NewReachabilityFromTo(m.Pods, to)
	r2.IgnoreLoopback = true
	r2.ExpectAllIngress(extra, false)
	Observe(r2, env, Probes[0], 4)
	if got := len(r2.Mismatches()); got != 9 {
		t.Errorf("%d mismatches with x/new reachable, want 9", got)
	}
}
