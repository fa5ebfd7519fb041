package policytest

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Case is one scenario: steps applied in order (a policy update is two
// steps), each with the policies in force and what they mean.
type Case struct {
	Name  string
	Steps []Step
}

// Step is one set of policies in force and its expected reachability.
type Step struct {
	Name     string
	Policies func(m *Model) []*networkingv1.NetworkPolicy
	// Expect edits r (all-allowed) into what the policies mean for probe p.
	// It is written from the case's meaning, never from an engine.
	Expect func(m *Model, r *Reachability, p Probe)
}

func one(name string, pols func(m *Model) []*networkingv1.NetworkPolicy, expect func(m *Model, r *Reachability, p Probe)) Case {
	return Case{Name: name, Steps: []Step{{Name: "apply", Policies: pols, Expect: expect}}}
}

func none(*Model) []*networkingv1.NetworkPolicy { return nil }

func allAllowed(*Model, *Reachability, Probe) {}

var (
	tcp = corev1.ProtocolTCP
	udp = corev1.ProtocolUDP
)

// Cases are the suite: the upstream netpol e2e scenarios the issue names,
// plus weft's fail-closed checks.
func Cases() []Case {
	return []Case{
		one("default-deny-ingress",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "deny-ingress", all(), func(s *networkingv1.NetworkPolicySpec) { s.PolicyTypes = types(ingress) }))
			},
			func(m *Model, r *Reachability, p Probe) { r.ExpectPeer(Peer{}, Peer{NS: "x"}, false) }),

		one("default-deny-egress",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "deny-egress", all(), func(s *networkingv1.NetworkPolicySpec) { s.PolicyTypes = types(egress) }))
			},
			func(m *Model, r *Reachability, p Probe) { r.ExpectPeer(Peer{NS: "x"}, Peer{}, false) }),

		one("default-deny-all",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "deny-all", all(), func(s *networkingv1.NetworkPolicySpec) { s.PolicyTypes = types(ingress, egress) }))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectPeer(Peer{NS: "x"}, Peer{}, false)
				r.ExpectPeer(Peer{}, Peer{NS: "x"}, false)
			}),

		one("allow-from-same-namespace",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "same-ns", all(), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectPeer(Peer{NS: "y"}, Peer{NS: "x"}, false)
				r.ExpectPeer(Peer{NS: "z"}, Peer{NS: "x"}, false)
			}),

		one("allow-from-namespace-by-label",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "from-y", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("y")}}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectAllIngress(m.Pod("x", "a"), false)
				r.ExpectPeer(Peer{NS: "y"}, Peer{NS: "x", Pod: "a"}, true)
			}),

		one("pod-and-namespace-selector-in-one-peer",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "and", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("y"), PodSelector: podSel("b")}}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectAllIngress(m.Pod("x", "a"), false)
				r.Expect(m.Pod("y", "b"), m.Pod("x", "a"), true)
			}),

		one("pod-or-namespace-selector-two-peers",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "or", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("y")}, {PodSelector: podSel("b")}}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectAllIngress(m.Pod("x", "a"), false)
				r.ExpectPeer(Peer{NS: "y"}, Peer{NS: "x", Pod: "a"}, true)
				r.Expect(m.Pod("x", "b"), m.Pod("x", "a"), true) // podSelector alone: the policy's namespace
			}),

		one("match-expressions",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "expr", all(), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
							{Key: "ns", Operator: metav1.LabelSelectorOpIn, Values: []string{"y", "z"}},
							{Key: "absent", Operator: metav1.LabelSelectorOpDoesNotExist},
						}},
						PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
							{Key: "pod", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"a"}},
							{Key: "pod", Operator: metav1.LabelSelectorOpExists},
						}},
					}}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectPeer(Peer{}, Peer{NS: "x"}, false)
				for _, ns := range []string{"y", "z"} {
					for _, pod := range []string{"b", "c"} {
						r.ExpectPeer(Peer{NS: ns, Pod: pod}, Peer{NS: "x"}, true)
					}
				}
			}),

		one("ingress-ipblock-with-except",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "y", "from-cidr", all(), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
						ipBlock(m.CoveringPrefix().String(), host(m.Pod("x", "a")))}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectPeer(Peer{NS: "x", Pod: "a"}, Peer{NS: "y"}, false)
			}),

		one("egress-ipblock-with-except",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "to-cidr", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.PolicyTypes = types(egress)
					s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
						ipBlock(m.CoveringPrefix().String(), host(m.Pod("y", "b")))}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.Expect(m.Pod("x", "a"), m.Pod("y", "b"), false)
			}),

		one("named-port",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "named", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
						namedPort(tcp, "serve-81-tcp"), namedPort(udp, "serve-80-udp")}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				if p != (Probe{tcp, 81}) && p != (Probe{udp, 80}) {
					r.ExpectAllIngress(m.Pod("x", "a"), false)
				}
			}),

		one("named-port-no-pod-has",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "named-nowhere", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{namedPort(tcp, "serve-99-tcp")}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) { r.ExpectAllIngress(m.Pod("x", "a"), false) }),

		one("endport-range",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "range", all(), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{portRange(tcp, 81, 90), portRange(udp, 70, 80)}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				if p != (Probe{tcp, 81}) && p != (Probe{udp, 80}) {
					r.ExpectPeer(Peer{}, Peer{NS: "x"}, false)
				}
			}),

		one("protocol-only",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "udp-only", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{protoOnly(udp)}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				if p.Protocol != udp {
					r.ExpectAllIngress(m.Pod("x", "a"), false)
				}
			}),

		one("sctp-is-not-tcp",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "sctp", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
						numPort(corev1.ProtocolSCTP, 80), numPort(corev1.ProtocolSCTP, 81)}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) { r.ExpectAllIngress(m.Pod("x", "a"), false) }),

		// policyTypes omitted with an egress section: Ingress and Egress.
		one("policy-types-default-with-egress",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "egress-section", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("z")}}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectAllIngress(m.Pod("x", "a"), false)
				r.ExpectAllEgress(m.Pod("x", "a"), false)
				r.ExpectPeer(Peer{NS: "x", Pod: "a"}, Peer{NS: "z"}, true)
			}),

		one("egress-to-one-pod",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "to-yc", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.PolicyTypes = types(egress)
					s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("y"), PodSelector: podSel("c")}}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectAllEgress(m.Pod("x", "a"), false)
				r.Expect(m.Pod("x", "a"), m.Pod("y", "c"), true)
			}),

		one("egress-ipblock-and-dns-like-udp",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "dns-and-cidr", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.PolicyTypes = types(egress)
					s.Egress = []networkingv1.NetworkPolicyEgressRule{
						{Ports: []networkingv1.NetworkPolicyPort{numPort(udp, 80)}}, // to anywhere, as a DNS rule is
						{To: []networkingv1.NetworkPolicyPeer{ipBlock(host(m.Pod("y", "b")))}},
					}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				if p == (Probe{udp, 80}) {
					return
				}
				r.ExpectAllEgress(m.Pod("x", "a"), false)
				r.Expect(m.Pod("x", "a"), m.Pod("y", "b"), true)
			}),

		one("egress-and-ingress-both-needed",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(
					netpol(m, "x", "a-to-y", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
						s.PolicyTypes = types(egress)
						s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("y")}}}}
					}),
					netpol(m, "y", "a-from-z", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
						s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("z")}}}}
					}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectAllEgress(m.Pod("x", "a"), false)
				r.ExpectPeer(Peer{NS: "x", Pod: "a"}, Peer{NS: "y"}, true)
				r.ExpectAllIngress(m.Pod("y", "a"), false)
				r.ExpectPeer(Peer{NS: "z"}, Peer{NS: "y", Pod: "a"}, true)
			}),

		one("two-policies-add-up",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(
					netpol(m, "x", "from-b", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
						s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("b")}}}}
					}),
					netpol(m, "x", "from-z-on-80", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
						s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
							From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("z")}},
							Ports: []networkingv1.NetworkPolicyPort{numPort(tcp, 80)},
						}}
					}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectAllIngress(m.Pod("x", "a"), false)
				r.Expect(m.Pod("x", "b"), m.Pod("x", "a"), true)
				if p == (Probe{tcp, 80}) {
					r.ExpectPeer(Peer{NS: "z"}, Peer{NS: "x", Pod: "a"}, true)
				}
			}),

		{Name: "policy-update", Steps: []Step{
			{Name: "add-deny-all-ingress",
				Policies: func(m *Model) []*networkingv1.NetworkPolicy {
					return pols(netpol(m, "x", "mutating", all(), func(s *networkingv1.NetworkPolicySpec) { s.PolicyTypes = types(ingress) }))
				},
				Expect: func(m *Model, r *Reachability, p Probe) { r.ExpectPeer(Peer{}, Peer{NS: "x"}, false) }},
			{Name: "update-allow-from-y",
				Policies: func(m *Model) []*networkingv1.NetworkPolicy {
					return pols(netpol(m, "x", "mutating", all(), func(s *networkingv1.NetworkPolicySpec) {
						s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsSel("y")}}}}
					}))
				},
				Expect: func(m *Model, r *Reachability, p Probe) {
					r.ExpectPeer(Peer{}, Peer{NS: "x"}, false)
					r.ExpectPeer(Peer{NS: "y"}, Peer{NS: "x"}, true)
				}},
			{Name: "remove", Policies: none, Expect: allAllowed},
		}},

		one("empty-selection-denies",
			func(m *Model) []*networkingv1.NetworkPolicy {
				return pols(netpol(m, "x", "selects-nothing", podLabel("a"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
						{NamespaceSelector: nsSel("nowhere")},
						{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "no-such-namespace"}}, PodSelector: &metav1.LabelSelector{}},
						{PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{"nobody"}}}}},
					}}}
					s.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: podSel("nobody")}}}}
				}))
			},
			func(m *Model, r *Reachability, p Probe) {
				r.ExpectAllIngress(m.Pod("x", "a"), false)
				r.ExpectAllEgress(m.Pod("x", "a"), false)
			}),
	}
}

func pols(p ...*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy { return p }
