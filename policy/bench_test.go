package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// benchInput builds a cluster of nPods pods in nPods/20 namespaces and
// policies with nRules rules in all (10 per policy), of every kind the API
// has: pod and namespace selectors, both, ipBlocks with except, rules for
// all peers, numeric, named and ranged ports, ingress and egress.
func benchInput(r *rand.Rand, nPods, nRules int) Input {
	nNS := max(nPods/20, 1)
	var in Input
	for i := range nNS {
		in.Namespaces = append(in.Namespaces, Namespace{Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%5)}})
	}
	for i := range nPods {
		in.Pods = append(in.Pods, Pod{
			Namespace: fmt.Sprintf("ns%d", i%nNS), Name: fmt.Sprintf("pod%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%10), "tier": fmt.Sprintf("t%d", i%3)},
			IP:     netip.AddrFrom4([4]byte{10, 244, byte(i / 200), byte(3 + i%200)}),
			Ports:  []NamedPort{{Name: "http", Port: int32(8000 + i%4)}, {Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}},
		})
	}
	for k := 0; k*10 < nRules; k++ {
		in.Policies = append(in.Policies, randomPolicy(r, fmt.Sprintf("ns%d", k%nNS), fmt.Sprintf("p%d", k), 10))
	}
	in.HostAddrs = []netip.Addr{netip.MustParseAddr("10.244.0.2")}
	return in
}

var (
	labelVals = []string{"app0", "app1", "app2", "app3", "web", "db", "cli", "ghost"}
	teams     = []string{"t0", "t1", "t2", "a", "ghost"}
)

// randomPolicy is a valid policy with nRules rules drawn from every kind
// of peer and port.
func randomPolicy(r *rand.Rand, ns, name string, nRules int) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if r.IntN(5) > 0 {
		p.Spec.PodSelector.MatchLabels = map[string]string{"app": labelVals[r.IntN(len(labelVals))]}
	}
	switch r.IntN(3) {
	case 0:
		p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 1:
		p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	default:
		p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	for i := range nRules {
		peers, ports := randomPeers(r), randomPorts(r)
		if i%2 == 0 {
			p.Spec.Ingress = append(p.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports})
		} else {
			p.Spec.Egress = append(p.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports})
		}
	}
	return p
}

func randomPeers(r *rand.Rand) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for range r.IntN(3) {
		var peer networkingv1.NetworkPolicyPeer
		switch r.IntN(4) {
		case 0:
			peer.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": labelVals[r.IntN(len(labelVals))]}}
		case 1:
			peer.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": teams[r.IntN(len(teams))]}}
		case 2:
			peer.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{teams[r.IntN(len(teams))], teams[r.IntN(len(teams))]}}}}
			peer.PodSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"t0"}}}}
		default:
			a := byte(r.IntN(4))
			cidr := fmt.Sprintf("10.244.%d.0/24", a)
			if r.IntN(2) == 0 {
				cidr = fmt.Sprintf("172.16.%d.0/24", a)
			}
			peer.IPBlock = &networkingv1.IPBlock{CIDR: cidr}
			if r.IntN(2) == 0 {
				peer.IPBlock.Except = []string{cidr[:len(cidr)-4] + fmt.Sprint(16*r.IntN(16)) + "/28"}
			}
		}
		out = append(out, peer)
	}
	return out
}

func randomPorts(r *rand.Rand) []networkingv1.NetworkPolicyPort {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	var out []networkingv1.NetworkPolicyPort
	for range r.IntN(3) {
		var p networkingv1.NetworkPolicyPort
		switch r.IntN(5) {
		case 0:
			v := intstr.FromInt32(int32(80 + r.IntN(4)))
			p.Port = &v
		case 1:
			v := intstr.FromString([]string{"http", "dns", "none"}[r.IntN(3)])
			p.Port, p.Protocol = &v, &tcp
			if v.StrVal == "dns" {
				p.Protocol = &udp
			}
		case 2:
			v := intstr.FromInt32(int32(1000 + r.IntN(1000)))
			end := v.IntVal + int32(r.IntN(500))
			p.Port, p.EndPort = &v, &end
		case 3:
			v := intstr.FromInt32(53)
			p.Port, p.Protocol = &v, &udp
		default:
			p.Protocol = &udp
		}
		out = append(out, p)
	}
	return out
}

func randomPolicies(r *rand.Rand, n int) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for i := range n {
		out = append(out, randomPolicy(r, []string{"x", "y"}[i%2], fmt.Sprintf("p%d", i), 1+r.IntN(4)))
	}
	return out
}

// benchFlows are n new flows between random pods and a few outside
// addresses, on the ports the policies talk about.
func benchFlows(r *rand.Rand, s *Snapshot, n int) []Flow {
	var ips [][4]byte
	for ip := range s.podByIP {
		ips = append(ips, [4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)})
	}
	ips = append(ips, [4]byte{172, 16, 1, 20}, [4]byte{8, 8, 8, 8})
	ports := []uint16{80, 81, 8000, 8001, 53, 1200, 1700, 443}
	out := make([]Flow, n)
	for i := range out {
		proto := ProtoTCP
		if r.IntN(4) == 0 {
			proto = ProtoUDP
		}
		out[i] = Flow{Src: ips[r.IntN(len(ips))], Dst: ips[r.IntN(len(ips))], Proto: proto, DstPort: ports[r.IntN(len(ports))]}
	}
	return out
}

// BenchmarkDecide: one new-flow decision, both sides checked, 1,000 pods.
func BenchmarkDecide(b *testing.B) {
	for _, rules := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", rules), func(b *testing.B) {
			s := Compile(benchInput(rand.New(rand.NewPCG(1, uint64(rules))), 1000, rules), 1)
			flows := benchFlows(rand.New(rand.NewPCG(2, 3)), s, 4096)
			allowed := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if s.Decide(flows[i&4095], CheckBoth).Allowed {
					allowed++
				}
			}
			b.ReportMetric(float64(len(s.tables)), "tables")
			b.ReportMetric(float64(len(s.lists)), "lists")
		})
	}
}

// BenchmarkDecideOnePolicy: the worst shape for a rule scan, 10,000 rules
// in one policy selecting every pod of its namespace.
func BenchmarkDecideOnePolicy(b *testing.B) {
	in := benchInput(rand.New(rand.NewPCG(1, 1)), 1000, 0)
	p := randomPolicy(rand.New(rand.NewPCG(4, 4)), "ns0", "big", 10000)
	p.Spec.PodSelector = metav1.LabelSelector{}
	in.Policies = []*networkingv1.NetworkPolicy{p}
	s := Compile(in, 1)
	flows := benchFlows(rand.New(rand.NewPCG(2, 3)), s, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.Decide(flows[i&4095], CheckBoth)
	}
}

// BenchmarkCompile: building a snapshot off the hot path.
func BenchmarkCompile(b *testing.B) {
	for _, rules := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", rules), func(b *testing.B) {
			in := benchInput(rand.New(rand.NewPCG(1, uint64(rules))), 1000, rules)
			b.ReportAllocs()
			for b.Loop() {
				Compile(in, 1)
			}
		})
	}
}
