package policy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftnet/weft/objects"
)

func ptr[T any](v T) *T { return &v }

func TestValidate(t *testing.T) {
	base := func(f func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"}}
		f(&np.Spec)
		return np
	}
	ingressPort := func(p networkingv1.NetworkPolicyPort) func(*networkingv1.NetworkPolicySpec) {
		return func(s *networkingv1.NetworkPolicySpec) {
			s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{p}}}
		}
	}
	fromPeer := func(p networkingv1.NetworkPolicyPeer) func(*networkingv1.NetworkPolicySpec) {
		return func(s *networkingv1.NetworkPolicySpec) {
			s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{p}}}
		}
	}
	num := func(n int32) *intstr.IntOrString { v := intstr.FromInt32(n); return &v }
	name := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	block := func(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
		return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
	}
	tests := []struct {
		name    string
		np      *networkingv1.NetworkPolicy
		wantErr string // "" = valid
	}{
		{"empty policy", base(func(*networkingv1.NetworkPolicySpec) {}), ""},
		{"numeric port", base(ingressPort(networkingv1.NetworkPolicyPort{Port: num(80)})), ""},
		{"named port", base(ingressPort(networkingv1.NetworkPolicyPort{Port: name("http")})), ""},
		{"range", base(ingressPort(networkingv1.NetworkPolicyPort{Port: num(80), EndPort: ptr(int32(90))})), ""},
		{"sctp accepted", base(ingressPort(networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.ProtocolSCTP), Port: num(80)})), ""},
		{"ipv6 block accepted", base(fromPeer(block("fd00::/64"))), ""},
		{"host bits in cidr", base(fromPeer(block("192.168.1.1/24", "192.168.1.0/25"))), ""},
		{"port 0", base(ingressPort(networkingv1.NetworkPolicyPort{Port: num(0)})), "spec.ingress[0].ports[0].port"},
		{"port 65536", base(ingressPort(networkingv1.NetworkPolicyPort{Port: num(65536)})), "spec.ingress[0].ports[0].port"},
		{"endPort below port", base(ingressPort(networkingv1.NetworkPolicyPort{Port: num(90), EndPort: ptr(int32(80))})), "less than port"},
		{"endPort out of range", base(ingressPort(networkingv1.NetworkPolicyPort{Port: num(90), EndPort: ptr(int32(70000))})), "endPort"},
		{"endPort with named port", base(ingressPort(networkingv1.NetworkPolicyPort{Port: name("http"), EndPort: ptr(int32(90))})), "named"},
		{"endPort without port", base(ingressPort(networkingv1.NetworkPolicyPort{EndPort: ptr(int32(90))})), "without port"},
		{"bad port name", base(ingressPort(networkingv1.NetworkPolicyPort{Port: name("Not_A-Name")})), "spec.ingress[0].ports[0].port"},
		{"unknown protocol", base(ingressPort(networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.Protocol("ICMP")), Port: num(1)})), "unsupported value \"ICMP\""},
		{"bad cidr", base(fromPeer(block("10.0.0.0/33"))), "cidr \"10.0.0.0/33\""},
		{"not a cidr", base(fromPeer(block("banana"))), "cidr \"banana\""},
		{"except outside cidr", base(fromPeer(block("10.0.0.0/24", "10.0.1.0/28"))), "not a strict subset"},
		{"except equal to cidr", base(fromPeer(block("10.0.0.0/24", "10.0.0.0/24"))), "not a strict subset"},
		{"except other family", base(fromPeer(block("10.0.0.0/8", "fd00::/64"))), "not a strict subset"},
		{"ipBlock with selector", base(fromPeer(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, PodSelector: &metav1.LabelSelector{}})), "may not be combined"},
		{"empty peer", base(fromPeer(networkingv1.NetworkPolicyPeer{})), "must specify"},
		{"bad selector operator", base(func(s *networkingv1.NetworkPolicySpec) {
			s.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}
		}), "spec.podSelector"},
		{"In without values", base(fromPeer(networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn}}}})), "podSelector"},
		{"bad label value", base(fromPeer(networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
			MatchLabels: map[string]string{"a": "has space"}}})), "namespaceSelector"},
		{"bad policy type", base(func(s *networkingv1.NetworkPolicySpec) { s.PolicyTypes = []networkingv1.PolicyType{"Sideways"} }), "Sideways"},
		{"duplicate policy type", base(func(s *networkingv1.NetworkPolicySpec) {
			s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeIngress}
		}), "duplicate"},
		{"egress path named", base(func(s *networkingv1.NetworkPolicySpec) {
			s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{block("x")}}}
		}), "spec.egress[0].to[0].ipBlock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.np)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Validate = nil, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("Validate = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidateObjects(t *testing.T) {
	objs, err := objects.Decode(strings.NewReader(`apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: good, namespace: shop}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  podSelector: {}
  egress: [{ports: [{port: 0}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	err = ValidateObjects(objs)
	if err == nil || !strings.Contains(err.Error(), "NetworkPolicy shop/bad: spec.egress[0].ports[0].port") || strings.Contains(err.Error(), "good") {
		t.Fatalf("ValidateObjects = %v", err)
	}
	if err := ValidateObjects(objs[:2]); err != nil {
		t.Fatalf("ValidateObjects(valid) = %v", err)
	}
}

// TestUnknownFieldsRefused: a misspelt field must never be dropped
// silently, at any depth: `podSelectr` would leave podSelector empty
// (every pod of the namespace), `fromm` an ingress rule with no peers
// (everything), `excpt` an ipBlock without its holes. objects.Decode is
// the one decoder weft apply and the registries use.
func TestUnknownFieldsRefused(t *testing.T) {
	const head = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n"
	for _, c := range []struct{ spec, field string }{
		{"spec: {podSelectr: {matchLabels: {app: db}}}", "podSelectr"},
		{"spec: {podSelector: {matchLabel: {app: db}}}", "matchLabel"},
		{"spec: {podSelector: {}, ingress: [{fromm: [{podSelector: {}}]}]}", "fromm"},
		{"spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, excpt: [10.1.0.0/16]}}]}]}", "excpt"},
		{"spec: {podSelector: {}, egress: [{ports: [{prot: UDP, port: 53}]}]}", "prot"},
		{"spec: {podSelector: {}, policyType: [Egress]}", "policyType"},
		{"spec: {podSelector: {}}\nstatus: {}", "status"},
	} {
		_, err := objects.Decode(strings.NewReader(head + c.spec + "\n"))
		if err == nil || !strings.Contains(err.Error(), "unknown field") || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: err = %v, want an unknown field error naming %q", c.spec, err, c.field)
		}
	}
	// Case matters as in the API server: podselector is not podSelector.
	if _, err := objects.Decode(strings.NewReader(head + "spec: {podselector: {}}\n")); err == nil {
		t.Error("podselector (wrong case) accepted")
	}
	// A field given twice is refused rather than one of them winning.
	if _, err := objects.Decode(strings.NewReader(head + "spec:\n  podSelector: {}\n  podSelector: {matchLabels: {app: db}}\n")); err == nil {
		t.Error("duplicate podSelector accepted")
	}
}
