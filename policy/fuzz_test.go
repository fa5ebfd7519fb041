package policy

import (
	"bytes"
	"math/rand/v2"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weftnet/weft/objects"
)

// FuzzCompile decodes a YAML stream of Namespaces, Pods and
// NetworkPolicies (as `weft apply` would), adds seed-chosen random
// policies, and compiles. Nothing may panic, and the last policy P must
// add exactly the union semantics: for every flow and direction, with
// S0 = the others, Sp = P alone and S1 = all,
//
//	allowed(S1) = not isolated by either, or allowed(S0) where S0 isolates,
//	              or allowed(Sp) where P isolates
//
// so adding a policy never widens what an isolated pod accepts beyond the
// union of its policies, and never narrows it below. Every decision must
// also equal the reference's, which reads the API text with no tables.
func FuzzCompile(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"), uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		in := fuzzInput(data, seed)
		if len(in.Policies) == 0 {
			return
		}
		for _, np := range in.Policies {
			_ = Validate(np)
		}
		all := Compile(in, 1)
		p := in.Policies[len(in.Policies)-1]
		rest := in
		rest.Policies = in.Policies[:len(in.Policies)-1]
		alone := in
		alone.Policies = []*networkingv1.NetworkPolicy{p}
		s0, sp, ref := Compile(rest, 1), Compile(alone, 1), newReference(in)
		for _, fl := range fuzzFlows(in) {
			for _, check := range []Check{CheckEgress, CheckIngress, CheckBoth} {
				if got, want := all.Decide(fl, check).Allowed, ref.decide(fl, check); got != want {
					d := all.Decide(fl, check)
					t.Fatalf("%v check %d: engine allowed=%v (%s), reference %v", fl, check, got, all.Explain(fl, d), want)
				}
			}
			for _, egress := range []bool{false, true} {
				check, pod := CheckIngress, fl.Dst
				if egress {
					check, pod = CheckEgress, fl.Src
				}
				iso0, isoP := s0.isolated(pod, egress), sp.isolated(pod, egress)
				want := (!iso0 && !isoP) ||
					(iso0 && s0.Decide(fl, check).Allowed) ||
					(isoP && sp.Decide(fl, check).Allowed)
				got := all.Decide(fl, check)
				if got.Allowed != want {
					t.Fatalf("%v egress=%v: allowed=%v (%s), want %v (isolated before %v, by the new policy %v)\npolicy: %+v",
						fl, egress, got.Allowed, all.Explain(fl, got), want, iso0, isoP, p.Spec)
				}
				if all.isolated(pod, egress) != (iso0 || isoP) {
					t.Fatalf("%v egress=%v: isolation %v, want %v", fl, egress, all.isolated(pod, egress), iso0 || isoP)
				}
			}
		}
	})
}

// isolated reports whether the pod at ip is isolated in a direction.
func (s *Snapshot) isolated(ip [4]byte, egress bool) bool {
	i, ok := s.podByIP[be32(ip)]
	if !ok {
		return false
	}
	if egress {
		return s.pods[i].egress >= 0
	}
	return s.pods[i].ingress >= 0
}

// fuzzInput decodes data (any object that does not decode is skipped) and
// appends seed%4 random policies; without pods it uses smallInput's.
func fuzzInput(data []byte, seed uint64) Input {
	var in Input
	if objs, err := objects.Decode(bytes.NewReader(data)); err == nil {
		in, _ = InputFromObjects(objs, nil)
	}
	if len(in.Pods) == 0 {
		small := smallInput()
		in.Pods, in.Namespaces = small.Pods, append(in.Namespaces, small.Namespaces...)
	}
	r := rand.New(rand.NewPCG(seed, seed>>7))
	for i := range seed % 4 {
		ns := in.Pods[r.IntN(len(in.Pods))].Namespace
		in.Policies = append(in.Policies, randomPolicy(r, ns, "fuzz"+string(rune('a'+i)), 1+r.IntN(3)))
	}
	return in
}

// fuzzFlows: every ordered pair of pod and outside addresses, on a few
// ports of each protocol.
func fuzzFlows(in Input) []Flow {
	addrs := [][4]byte{{192, 168, 1, 1}, {172, 16, 1, 20}, {10, 244, 0, 7}}
	for _, p := range in.Pods {
		if p.IP.Is4() {
			addrs = append(addrs, p.IP.As4())
		}
	}
	if len(addrs) > 16 {
		addrs = addrs[:16]
	}
	var out []Flow
	for _, a := range addrs {
		for _, b := range addrs {
			for _, pp := range testPorts {
				out = append(out, Flow{Src: a, Dst: b, Proto: pp.proto, DstPort: pp.port})
			}
		}
	}
	return out
}
