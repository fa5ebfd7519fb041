package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftnet/weft/objects"
)

// A small cluster for the unit tests: x/web (10.0.1.10, named port http =
// TCP 8080), x/db (10.0.1.11, http = TCP 9090), y/cli (10.0.2.10); the
// node's own address is 10.0.1.2.
func smallInput(pols ...*networkingv1.NetworkPolicy) Input {
	return Input{
		Namespaces: []Namespace{{Name: "x", Labels: map[string]string{"team": "a"}}, {Name: "y"}},
		Pods: []Pod{
			{Namespace: "x", Name: "web", Labels: map[string]string{"app": "web"}, IP: netip.MustParseAddr("10.0.1.10"),
				Ports: []NamedPort{{Name: "http", Port: 8080}}},
			{Namespace: "x", Name: "db", Labels: map[string]string{"app": "db"}, IP: netip.MustParseAddr("10.0.1.11"),
				Ports: []NamedPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 9090}}},
			{Namespace: "y", Name: "cli", Labels: map[string]string{"app": "cli"}, IP: netip.MustParseAddr("10.0.2.10")},
		},
		Policies:  pols,
		HostAddrs: []netip.Addr{netip.MustParseAddr("10.0.1.2")},
	}
}

func np(ns, name string, sel map[string]string, spec func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}}}
	if spec != nil {
		spec(&p.Spec)
	}
	return p
}

func flow(src, dst string, proto uint8, port uint16) Flow {
	return Flow{Src: netip.MustParseAddr(src).As4(), Dst: netip.MustParseAddr(dst).As4(), Proto: proto, DstPort: port}
}

const (
	web  = "10.0.1.10"
	db   = "10.0.1.11"
	cli  = "10.0.2.10"
	node = "10.0.1.2"
)

func TestNotReadyDeniesEverything(t *testing.T) {
	e := NewEngine()
	d := e.Load().Decide(flow(node, web, ProtoTCP, 80), CheckBoth)
	if d.Allowed || d.Why != WhyNotReady {
		t.Fatalf("before the first Update: %+v, want denied not-ready", d)
	}
	if !e.Load().Active() {
		t.Fatal("a not-ready snapshot must be active (it denies)")
	}
	s := e.Update(smallInput())
	if d := s.Decide(flow(cli, web, ProtoTCP, 80), CheckBoth); !d.Allowed || s.Generation() != 1 || d.Gen != 1 {
		t.Fatalf("after Update without policies: %+v gen %d, want allowed at generation 1", d, s.Generation())
	}
	if s.Active() {
		t.Fatal("no policies: the snapshot must be inactive")
	}
	// A policy that selects no pod isolates nothing either.
	if s := e.Update(smallInput(np("x", "none", map[string]string{"app": "ghost"}, nil))); s.Active() {
		t.Fatal("a policy selecting no pod made the snapshot active")
	}
	if s := e.Update(smallInput(denyAllIngress("y"))); !s.Active() {
		t.Fatal("a pod isolated: the snapshot must be active")
	}
}

func denyAllIngress(ns string) *networkingv1.NetworkPolicy {
	return np(ns, "deny", nil, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	})
}

func TestNodeToPodAlwaysAllowed(t *testing.T) {
	s := Compile(smallInput(denyAllIngress("x")), 1)
	if d := s.Decide(flow(node, web, ProtoTCP, 8080), CheckBoth); !d.Allowed || d.Why != WhyNode {
		t.Errorf("node -> isolated pod: %+v, want allowed (node)", d)
	}
	// Another node's address is an outside address like any other.
	if d := s.Decide(flow("10.0.2.2", web, ProtoTCP, 8080), CheckBoth); d.Allowed {
		t.Errorf("other node -> isolated pod: %+v, want denied", d)
	}
}

func TestOutsideAddressesAndIPBlock(t *testing.T) {
	block := np("x", "from-outside", map[string]string{"app": "web"}, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{"192.168.5.0/24", "192.168.7.7/32"}}},
			{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/8"}},
		}}}
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}},
		}}}
	})
	s := Compile(smallInput(block), 1)
	for _, tc := range []struct {
		f    Flow
		want bool
	}{
		{flow("192.168.0.1", web, ProtoTCP, 80), true},
		{flow("192.168.255.255", web, ProtoUDP, 53), true},
		{flow("192.168.5.9", web, ProtoTCP, 80), false}, // except
		{flow("192.168.7.7", web, ProtoTCP, 80), false}, // except /32
		{flow("192.168.7.8", web, ProtoTCP, 80), true},
		{flow("192.169.0.1", web, ProtoTCP, 80), false},
		{flow("0.0.0.0", web, ProtoTCP, 80), false},
		{flow("255.255.255.255", web, ProtoTCP, 80), false},
		{flow(cli, web, ProtoTCP, 80), false}, // a pod outside the block
		{flow(web, "8.8.8.8", ProtoUDP, 53), true},
		{flow(web, "255.255.255.255", ProtoUDP, 53), true},
		{flow(web, "10.1.2.3", ProtoTCP, 443), false}, // except 10/8
		{flow(web, db, ProtoTCP, 80), false},          // pod addresses are in 10/8 too
		{flow(db, "10.1.2.3", ProtoTCP, 443), true},   // db is not selected
		{flow("8.8.8.8", "1.1.1.1", ProtoTCP, 443), true},
	} {
		if d := s.Decide(tc.f, CheckBoth); d.Allowed != tc.want {
			t.Errorf("%v: %+v (%s), want allowed=%v", tc.f, d, s.Explain(tc.f, d), tc.want)
		}
	}
}

func TestInvalidPolicyFailsClosed(t *testing.T) {
	badExcept := np("x", "bad-except", map[string]string{"app": "web"}, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"11.0.0.0/8"}}}}}}
	})
	s := Compile(smallInput(badExcept), 1)
	if len(s.Problems()) != 1 {
		t.Fatalf("Problems = %v, want one", s.Problems())
	}
	// The invalid rule allows nothing; the selected pod is isolated both ways.
	if d := s.Decide(flow(cli, web, ProtoTCP, 80), CheckBoth); d.Allowed {
		t.Errorf("into a pod selected by an invalid policy: %+v, want denied", d)
	}
	if d := s.Decide(flow(web, cli, ProtoTCP, 80), CheckBoth); d.Allowed {
		t.Errorf("out of a pod selected by an invalid policy: %+v, want denied", d)
	}
	if d := s.Decide(flow(cli, db, ProtoTCP, 80), CheckBoth); !d.Allowed {
		t.Errorf("a pod the invalid policy does not select: %+v, want allowed", d)
	}

	badSelector := np("x", "bad-selector", nil, func(s *networkingv1.NetworkPolicySpec) {
		s.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Roughly"}}
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
	})
	s = Compile(smallInput(badSelector), 1)
	if d := s.Decide(flow(cli, db, ProtoTCP, 80), CheckBoth); d.Allowed {
		t.Errorf("an invalid podSelector: %+v, want its whole namespace isolated", d)
	}
	if d := s.Decide(flow(web, cli, ProtoTCP, 80), CheckBoth); d.Allowed {
		t.Errorf("an invalid podSelector: %+v, want egress isolated too", d)
	}
}

// TestEmptyResolutionDenies is Cilium CVE-2025-64715's shape: a rule whose
// peers resolve to no pod must allow nothing, not everything.
func TestEmptyResolutionDenies(t *testing.T) {
	for name, peer := range map[string]networkingv1.NetworkPolicyPeer{
		"podSelector matches nothing":       {PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ghost"}}},
		"namespaceSelector matches nothing": {NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "ghost"}}},
		"both, namespace empty":             {NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "nowhere"}}, PodSelector: &metav1.LabelSelector{}},
		"In with unused values":             {PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"ghost"}}}}},
		"ipv6 block on an ipv4 network":     {IPBlock: &networkingv1.IPBlock{CIDR: "::/0"}},
	} {
		t.Run(name, func(t *testing.T) {
			p := np("x", "p", map[string]string{"app": "web"}, func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{peer}}}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{peer}}}
			})
			s := Compile(smallInput(p), 1)
			if len(s.Problems()) > 0 {
				t.Fatal(s.Problems())
			}
			for _, f := range []Flow{flow(cli, web, ProtoTCP, 80), flow(db, web, ProtoUDP, 53), flow("1.2.3.4", web, ProtoTCP, 80),
				flow(web, cli, ProtoTCP, 80), flow(web, "1.2.3.4", 1, 0)} {
				if d := s.Decide(f, CheckBoth); d.Allowed {
					t.Errorf("%v: %+v (%s), want denied", f, d, s.Explain(f, d))
				}
			}
		})
	}
}

func TestNamedPortResolvesOnDestination(t *testing.T) {
	http := intstr.FromString("http")
	p := np("y", "cli-to-http", map[string]string{"app": "cli"}, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &http}}}}
	})
	in := np("x", "http-in", nil, func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &http}}}}
	})
	s := Compile(smallInput(p, in), 1)
	for _, tc := range []struct {
		f    Flow
		want bool
	}{
		{flow(cli, web, ProtoTCP, 8080), true},
		{flow(cli, web, ProtoTCP, 9090), false},
		{flow(cli, db, ProtoTCP, 9090), true},
		{flow(cli, db, ProtoTCP, 8080), false},
		{flow(cli, db, ProtoUDP, 9090), false}, // the container port is TCP
		{flow(cli, "1.1.1.1", ProtoTCP, 8080), false},
		{flow(web, db, ProtoTCP, 9090), true}, // ingress of db resolves on db
		{flow(web, db, ProtoTCP, 8080), false},
		{flow("1.2.3.4", db, ProtoTCP, 9090), true}, // an outside source, the pod's own named port
		{flow("1.2.3.4", db, ProtoTCP, 8080), false},
	} {
		if d := s.Decide(tc.f, CheckBoth); d.Allowed != tc.want {
			t.Errorf("%v: %+v (%s), want allowed=%v", tc.f, d, s.Explain(tc.f, d), tc.want)
		}
	}
}

// TestRecheckCutsRevokedFlows: conntrack keeps the Decision; after a
// policy change the flow is decided again and cut when no longer allowed.
func TestRecheckCutsRevokedFlows(t *testing.T) {
	e := NewEngine()
	f := flow(cli, web, ProtoTCP, 80)
	s1 := e.Update(smallInput())
	d1 := s1.Decide(f, CheckBoth)
	if d, changed := s1.Recheck(f, CheckBoth, d1); changed || d != d1 {
		t.Fatalf("same generation: re-check gave %+v changed=%v", d, changed)
	}
	s2 := e.Update(smallInput(denyAllIngress("x")))
	d2, changed := s2.Recheck(f, CheckBoth, d1)
	if !changed || d2.Allowed || d2.Gen != s2.Generation() || d2.Why != WhyIngressIsolated {
		t.Fatalf("after deny-all: %+v changed=%v, want cut at generation %d", d2, changed, s2.Generation())
	}
	s3 := e.Update(smallInput())
	if d3, changed := s3.Recheck(f, CheckBoth, d2); !changed || !d3.Allowed {
		t.Fatalf("after removing the policy: %+v changed=%v, want allowed again", d3, changed)
	}
}

func TestExplainNamesPolicyAndRule(t *testing.T) {
	p := np("x", "allow-cli", map[string]string{"app": "web"}, func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{
			{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "1.0.0.0/8"}}}},
			{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}},
		}
	})
	s := Compile(smallInput(p, denyAllIngress("x")), 1)
	f := flow(cli, web, ProtoTCP, 80)
	d := s.Decide(f, CheckBoth)
	if got := s.Explain(f, d); !d.Allowed || !strings.Contains(got, "x/allow-cli ingress[1]") || !strings.Contains(got, "y/cli not isolated for egress") {
		t.Errorf("Explain = %q (%+v)", got, d)
	}
	if got := s.RulePolicy(d.Ingress); got != "x/allow-cli" {
		t.Errorf("RulePolicy = %q", got)
	}
	f = flow(cli, db, ProtoTCP, 80)
	d = s.Decide(f, CheckBoth)
	if got := s.Explain(f, d); d.Allowed || !strings.Contains(got, "ingress of x/db isolated by x/deny") {
		t.Errorf("Explain = %q (%+v)", got, d)
	}
}

// TestOrderIndependent: the same policies in any order decide every flow
// the same way, reasons included (rules are numbered in a canonical order).
func TestOrderIndependent(t *testing.T) {
	pols := randomPolicies(rand.New(rand.NewPCG(1, 2)), 12)
	in := smallInput(pols...)
	ref := Compile(in, 1)
	for i := range 5 {
		shuffled := append([]*networkingv1.NetworkPolicy(nil), pols...)
		rand.New(rand.NewPCG(uint64(i), 9)).Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		in.Policies = shuffled
		in.Pods = append(in.Pods[1:], in.Pods[0])
		s := Compile(in, 1)
		for _, f := range allFlows() {
			if a, b := ref.Decide(f, CheckBoth), s.Decide(f, CheckBoth); a != b {
				t.Fatalf("order %d, %v: %+v vs %+v", i, f, a, b)
			}
		}
	}
}

// testPorts are the protocols and ports the flow sets of the tests use.
var testPorts = []struct {
	proto uint8
	port  uint16
}{{ProtoTCP, 80}, {ProtoTCP, 8080}, {ProtoTCP, 9090}, {ProtoTCP, 1500}, {ProtoUDP, 53}, {ProtoUDP, 80}, {ProtoUDP, 81}, {1, 0}, {ProtoSCTP, 80}}

func allFlows() []Flow {
	addrs := []string{web, db, cli, node, "10.0.3.3", "192.168.1.1"}
	var out []Flow
	for _, a := range addrs {
		for _, b := range addrs {
			for _, pp := range testPorts {
				out = append(out, flow(a, b, pp.proto, pp.port))
			}
		}
	}
	return out
}

// TestFirstMatchAgainstReference compares the span painter with a naive
// per-port scan.
func TestFirstMatchAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := range 300 {
		var rs []portRule
		for i := range r.IntN(8) {
			a := uint16(r.IntN(40))
			b := a + uint16(r.IntN(10))
			if r.IntN(10) == 0 {
				a, b = 0, 65535
			}
			rs = append(rs, portRule{a, b, int32(i)})
		}
		want := make([]int32, 65536)
		for p := range want {
			want[p] = NoRule
			for _, x := range rs {
				if uint16(p) >= x.first && uint16(p) <= x.last {
					want[p] = x.rule
					break
				}
			}
		}
		r.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
		spans := firstMatch(rs)
		s := &Snapshot{spans: spans, lists: []allowList{{any: NoRule, tcp: spanRange{0, uint32(len(spans))}}}}
		for p := range 65536 {
			if got := s.match(0, ProtoTCP, uint16(p)); got != want[p] {
				t.Fatalf("iteration %d, rules %v, port %d: %d, want %d (spans %v)", iter, rs, p, got, want[p], spans)
			}
		}
	}
}

func TestDecideNoAllocs(t *testing.T) {
	s := Compile(benchInput(rand.New(rand.NewPCG(5, 6)), 1000, 1000), 1)
	flows := benchFlows(rand.New(rand.NewPCG(7, 8)), s, 256)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		s.Decide(flows[i%len(flows)], CheckBoth)
		i++
	}); n != 0 {
		t.Fatalf("Decide allocates %v times per call", n)
	}
}

func ExampleSnapshot_Explain() {
	p := np("x", "web-from-y", map[string]string{"app": "web"}, func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "y"}}}}}}
	})
	s := Compile(smallInput(p), 1)
	for _, f := range []Flow{flow(cli, web, ProtoTCP, 80), flow(db, web, ProtoTCP, 80)} {
		fmt.Println(s.Explain(f, s.Decide(f, CheckBoth)))
	}
	// Output:
	// allowed: y/cli not isolated for egress; ingress allowed by x/web-from-y ingress[0]
	// denied: ingress of x/web isolated by x/web-from-y, no rule allows it
}

func TestVerdictPacking(t *testing.T) {
	e := NewEngine()
	f := flow(cli, web, ProtoTCP, 80)
	s1 := e.Update(smallInput())
	var none Verdict
	if none.Allowed() || s1.Current(none) {
		t.Fatal("the zero verdict must be neither allowed nor current")
	}
	v := s1.Decide(f, CheckBoth).Verdict()
	if !v.Allowed() || !s1.Current(v) || v == 0 {
		t.Fatalf("verdict %#x: allowed %v current %v", v, v.Allowed(), s1.Current(v))
	}
	if nv, changed := s1.RecheckVerdict(f, CheckBoth, v); changed || nv != v {
		t.Fatalf("same generation re-check: %#x changed=%v", nv, changed)
	}
	s2 := e.Update(smallInput(denyAllIngress("x")))
	if s2.Current(v) {
		t.Fatal("a verdict from generation 1 is current at generation 2")
	}
	nv, changed := s2.RecheckVerdict(f, CheckBoth, v)
	if !changed || nv.Allowed() || !s2.Current(nv) {
		t.Fatalf("after deny-all: %#x changed=%v, want cut and current", nv, changed)
	}
	// A denied verdict's reply direction is re-checked the same way and
	// stays denied without a policy change.
	if again, changed := s2.RecheckVerdict(f, CheckBoth, nv); changed || again.Allowed() {
		t.Fatalf("re-check of a current denied verdict: %#x changed=%v", again, changed)
	}
	s := Compile(smallInput(), 1<<30+1) // generations wrap modulo 2^30
	if d := s.Decide(f, CheckBoth); !s.Current(d.Verdict()) || d.Verdict()&verdictGenMask != 1 {
		t.Fatalf("generation 2^30+1 packs to %#x", d.Verdict())
	}
}

func TestCurrentAndRecheckVerdictNoAllocs(t *testing.T) {
	s := Compile(smallInput(denyAllIngress("x")), 7)
	f := flow(cli, web, ProtoTCP, 80)
	v := Compile(smallInput(), 6).Decide(f, CheckBoth).Verdict()
	if n := testing.AllocsPerRun(1000, func() {
		if !s.Current(v) {
			s.RecheckVerdict(f, CheckBoth, v)
		}
	}); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

func TestPoliciesAndInputFromObjects(t *testing.T) {
	objs, err := objects.Decode(strings.NewReader(`apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: broken, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: not-an-ip}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  podSelector: {matchLabels: {app: none}}
  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	in, err := InputFromObjects(objs, []netip.Addr{netip.MustParseAddr(node)})
	if err == nil || !strings.Contains(err.Error(), "shop/broken") || len(in.Pods) != 2 || len(in.Policies) != 2 {
		t.Fatalf("InputFromObjects: %d pods, %d policies, err %v", len(in.Pods), len(in.Policies), err)
	}
	s := Compile(in, 1)
	if d := s.Decide(flow(cli, web, ProtoTCP, 8080), CheckBoth); !d.Allowed {
		t.Errorf("named port from the Pod object: %+v", d)
	}
	if d := s.Decide(flow(node, web, ProtoTCP, 22), CheckBoth); !d.Allowed {
		t.Errorf("host address: %+v", d)
	}
	ps := s.Policies()
	if len(ps) != 2 || ps[0].Name != "bad" || ps[0].Problem == "" || !ps[0].Ingress || !ps[0].Egress || len(ps[0].Selects) != 0 {
		t.Errorf("Policies()[0] = %+v", ps[0])
	}
	if p := ps[1]; p.Name != "web-http" || !p.Ingress || p.Egress || p.IngressRules != 1 || fmt.Sprint(p.Selects) != "[shop/broken shop/web]" || p.Problem != "" {
		t.Errorf("Policies()[1] = %+v", p)
	}
}

// TestReferenceAgrees compares the engine with the reference on random
// clusters and policies (the fuzz target does the same on its corpus).
func TestReferenceAgrees(t *testing.T) {
	for seed := range uint64(40) {
		r := rand.New(rand.NewPCG(seed, 77))
		in := benchInput(r, 40, 10*(1+r.IntN(6)))
		in.Pods[3].IP = in.Pods[5].IP // a duplicate address
		in.Pods[7].IP = netip.Addr{}  // a pod without one
		s, ref := Compile(in, 1), newReference(in)
		flows := benchFlows(rand.New(rand.NewPCG(seed, 1)), s, 300)
		flows = append(flows, flow("10.244.0.2", "10.244.0.9", ProtoTCP, 80), flow("172.16.2.17", "10.244.0.9", 1, 0))
		for _, f := range flows {
			for _, check := range []Check{CheckEgress, CheckIngress, CheckBoth} {
				if got, want := s.Decide(f, check).Allowed, ref.decide(f, check); got != want {
					t.Fatalf("seed %d, %v check %d: engine %v (%s), reference %v", seed, f, check, got, s.Explain(f, s.Decide(f, check)), want)
				}
			}
		}
	}
}
