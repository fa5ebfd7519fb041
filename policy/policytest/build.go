package policytest

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Small builders for the cases' policies, so each case reads as its YAML
// would.

func netpol(m *Model, nsKey, name string, podSel metav1.LabelSelector, spec func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespaces[nsKey], Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: podSel},
	}
	if spec != nil {
		spec(&np.Spec)
	}
	return np
}

func all() metav1.LabelSelector { return metav1.LabelSelector{} }

func podLabel(name string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{"pod": name}}
}

func podSel(name string) *metav1.LabelSelector { s := podLabel(name); return &s }

func nsSel(key string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"ns": key}}
}

func types(t ...networkingv1.PolicyType) []networkingv1.PolicyType { return t }

const (
	ingress = networkingv1.PolicyTypeIngress
	egress  = networkingv1.PolicyTypeEgress
)

func numPort(proto corev1.Protocol, port int32) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(port)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
}

func portRange(proto corev1.Protocol, port, end int32) networkingv1.NetworkPolicyPort {
	p := numPort(proto, port)
	p.EndPort = &end
	return p
}

func namedPort(proto corev1.Protocol, name string) networkingv1.NetworkPolicyPort {
	p := intstr.FromString(name)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
}

func protoOnly(proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &proto}
}

func ipBlock(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

func host(p *Pod) string { return p.IP.String() + "/32" }
