package policy_test

import (
	"errors"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weftnet/weft/policy"
	"github.com/weftnet/weft/policy/policytest"
)

// engineEnv runs the netpol suite against the engine: an observation is
// the engine's decision for the flow's first packet, both sides checked.
type engineEnv struct {
	t     *testing.T
	m     *policytest.Model
	eng   *policy.Engine
	flows []policy.Flow // flows seen allowed, to re-check on the next Apply
	decs  []policy.Decision
}

// newModel gives the nine pods addresses on three nodes' subnets
// (namespace x on 10.244.1.0/24, y on .2, z on .3), as the sim would.
func newModel() *policytest.Model {
	m := policytest.NewModel("")
	for i, p := range m.Pods {
		p.IP = netip.AddrFrom4([4]byte{10, 244, byte(1 + i/3), byte(3 + i%3)})
	}
	return m
}

func input(m *policytest.Model, pols []*networkingv1.NetworkPolicy) (policy.Input, error) {
	in := policy.Input{Policies: pols, HostAddrs: []netip.Addr{netip.MustParseAddr("10.244.1.2")}}
	for _, ns := range m.NamespaceObjects() {
		in.Namespaces = append(in.Namespaces, policy.NamespaceFromObject(ns))
	}
	for _, po := range m.PodObjects() {
		p, err := policy.PodFromObject(po)
		if err != nil {
			return in, err
		}
		in.Pods = append(in.Pods, p)
	}
	var errs []error
	for _, np := range pols {
		errs = append(errs, policy.Validate(np))
	}
	return in, errors.Join(errs...)
}

func (e *engineEnv) Apply(pols []*networkingv1.NetworkPolicy) error {
	in, err := input(e.m, pols)
	if err != nil {
		return err
	}
	s := e.eng.Update(in)
	if p := s.Problems(); len(p) > 0 {
		return errors.Join(p...)
	}
	// Established flows are re-checked against the new generation: each
	// must now get exactly what a new flow would.
	for i, f := range e.flows {
		d, _ := s.Recheck(f, policy.CheckBoth, e.decs[i])
		if fresh := s.Decide(f, policy.CheckBoth); d.Allowed != fresh.Allowed || d.Gen != s.Generation() {
			e.t.Errorf("re-check of %v: %+v, a new flow gets %+v", f, d, fresh)
		}
	}
	e.flows, e.decs = e.flows[:0], e.decs[:0]
	return nil
}

func (e *engineEnv) Probe(from, to *policytest.Pod, p policytest.Probe) bool {
	proto := policy.ProtoTCP
	if p.Protocol == corev1.ProtocolUDP {
		proto = policy.ProtoUDP
	}
	f := policy.Flow{Src: from.IP.As4(), Dst: to.IP.As4(), Proto: proto, DstPort: uint16(p.Port)}
	s := e.eng.Load()
	d := s.Decide(f, policy.CheckBoth)
	// A node enforces one side each; the two sides must agree with both.
	eg, in := s.Decide(f, policy.CheckEgress), s.Decide(f, policy.CheckIngress)
	if d.Allowed != (eg.Allowed && in.Allowed) {
		e.t.Errorf("%s -> %s %s: both sides %v, egress %v, ingress %v", from, to, p, d.Allowed, eg.Allowed, in.Allowed)
	}
	if d.Allowed {
		e.flows = append(e.flows, f)
		e.decs = append(e.decs, d)
	}
	return d.Allowed
}

// TestNetpolSuite runs every policytest case against the engine and
// compares the full 9x9 matrix per probe, loopback included (the engine
// decides a pod's flow to itself like any other).
func TestNetpolSuite(t *testing.T) {
	for _, c := range policytest.Cases() {
		t.Run(c.Name, func(t *testing.T) {
			m := newModel()
			env := &engineEnv{t: t, m: m, eng: policy.NewEngine()}
			results, err := policytest.Run(m, c, env, 1, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(results) != len(c.Steps)*len(policytest.Probes) {
				t.Fatalf("%d results, want %d", len(results), len(c.Steps)*len(policytest.Probes))
			}
			for _, r := range results {
				if !r.OK() {
					t.Errorf("%s:\n%s", r, r.Reach.Report())
				}
			}
		})
	}
}

// TestNetpolSuiteCanFail runs each case's expectations against an engine
// that enforces nothing: every case that denies something must report a
// mismatch, so the suite above cannot pass by comparing an engine with
// itself.
func TestNetpolSuiteCanFail(t *testing.T) {
	for _, c := range policytest.Cases() {
		m := newModel()
		env := &noPolicyEnv{env: engineEnv{t: t, m: m, eng: policy.NewEngine()}}
		results, err := policytest.Run(m, c, env, 2, false)
		if err != nil {
			t.Fatal(err)
		}
		failed := 0
		for _, r := range results {
			if !r.OK() {
				failed++
			}
		}
		if failed == 0 {
			t.Errorf("case %s: an engine without policies passes it", c.Name)
		}
	}
}

type noPolicyEnv struct{ env engineEnv }

func (n *noPolicyEnv) Apply([]*networkingv1.NetworkPolicy) error { return n.env.Apply(nil) }
func (n *noPolicyEnv) Probe(from, to *policytest.Pod, p policytest.Probe) bool {
	s := n.env.eng.Load()
	return s.Decide(policy.Flow{Src: from.IP.As4(), Dst: to.IP.As4(), Proto: protoOf(p), DstPort: uint16(p.Port)}, policy.CheckBoth).Allowed
}

func protoOf(p policytest.Probe) uint8 {
	if p.Protocol == corev1.ProtocolUDP {
		return policy.ProtoUDP
	}
	return policy.ProtoTCP
}
