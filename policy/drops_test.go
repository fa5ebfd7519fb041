package policy

import (
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func dropsOf(e *Engine) map[string]PolicyDrops {
	m := map[string]PolicyDrops{}
	for _, d := range e.DropCounts() {
		m[d.Policy] = d
	}
	return m
}

func TestDropsCountPerIsolatingPolicy(t *testing.T) {
	// x/db isolated for ingress by two policies (one allows x/web on TCP
	// 9090); y/cli isolated for egress by one that allows nothing.
	dbOnlyWeb := np("x", "db-from-web", map[string]string{"app": "db"}, func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}}}
	})
	dbDeny := np("x", "db-deny", map[string]string{"app": "db"}, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	})
	cliNoEgress := np("y", "cli-no-egress", nil, func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	})
	e := NewEngine()
	s := e.Load()
	s.CountDrop(s.Decide(flow(cli, db, ProtoTCP, 9090), CheckBoth)) // not ready: no policy
	s = e.Update(smallInput(dbOnlyWeb, dbDeny, cliNoEgress))
	for _, c := range []struct {
		f    Flow
		deny bool
	}{
		{flow(web, db, ProtoTCP, 9090), false}, // allowed: counts nothing
		{flow(node, db, ProtoTCP, 9090), false},
		{flow(cli, db, ProtoTCP, 9090), true},          // cli's egress
		{flow(cli, web, ProtoUDP, 53), true},           // cli's egress
		{flow("10.9.9.9", db, ProtoTCP, 9090), true},   // db's ingress
		{flow("10.9.9.9", web, ProtoTCP, 9090), false}, // web not isolated
	} {
		d := s.Decide(c.f, CheckBoth)
		if d.Allowed == c.deny {
			t.Fatalf("%+v: %+v", c.f, d)
		}
		s.CountDrop(d)
	}
	want := map[string]PolicyDrops{
		"x/db-from-web":   {Policy: "x/db-from-web", Ingress: 1},
		"x/db-deny":       {Policy: "x/db-deny", Ingress: 1},
		"y/cli-no-egress": {Policy: "y/cli-no-egress", Egress: 2},
	}
	got := dropsOf(e)
	if len(got) != len(want) {
		t.Fatalf("drops %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %+v, want %+v", k, got[k], w)
		}
	}

	// An update keeps the counts of the policies still there (a counter
	// never goes down) and forgets a deleted one's.
	s = e.Update(smallInput(dbOnlyWeb, cliNoEgress))
	s.CountDrop(s.Decide(flow(cli, db, ProtoTCP, 9090), CheckIngress))
	got = dropsOf(e)
	if _, ok := got["x/db-deny"]; ok || len(got) != 2 {
		t.Errorf("after deleting x/db-deny: %v", got)
	}
	if got["x/db-from-web"].Ingress != 2 || got["y/cli-no-egress"].Egress != 2 {
		t.Errorf("counts across an update: %v", got)
	}
	// A snapshot compiled without an Engine counts nowhere, and says so by
	// not panicking.
	Compile(smallInput(dbDeny), 1).CountDrop(s.Decide(flow(cli, db, ProtoTCP, 9090), CheckIngress))
}

func TestDecideAndCountDropNoAllocs(t *testing.T) {
	e := NewEngine()
	s := e.Update(smallInput(denyAllIngress("x")))
	f := flow(cli, db, ProtoTCP, 9090)
	if n := testing.AllocsPerRun(1000, func() { s.CountDrop(s.Decide(f, CheckBoth)) }); n != 0 {
		t.Fatalf("Decide+CountDrop: %v allocs per denied flow, want 0", n)
	}
	if dropsOf(e)["x/deny"].Ingress == 0 {
		t.Fatalf("nothing counted: %v", e.DropCounts())
	}
}
