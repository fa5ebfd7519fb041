package policy

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weftnet/weft/objects"
)

// Validate checks a NetworkPolicy the way the API server's validation
// does for the parts weft reads, so `weft apply` (and the API) can refuse
// it with a message that names the field. It returns nil or one error
// joining every problem found.
//
// What is valid upstream but can never match in weft is accepted and
// documented rather than refused: SCTP ports (weft carries SCTP but does
// not parse its ports, so an SCTP port rule matches nothing) and IPv6
// ipBlocks (weft's pod network is IPv4).
func Validate(np *networkingv1.NetworkPolicy) error {
	var errs []error
	add := func(path, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
	}
	if np.Name == "" {
		add("metadata.name", "required")
	}
	spec := &np.Spec
	if _, err := metav1.LabelSelectorAsSelector(&spec.PodSelector); err != nil {
		add("spec.podSelector", "%v", err)
	}
	seen := map[networkingv1.PolicyType]bool{}
	for i, t := range spec.PolicyTypes {
		p := fmt.Sprintf("spec.policyTypes[%d]", i)
		switch t {
		case networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress:
		default:
			add(p, "unsupported value %q: want Ingress or Egress", t)
		}
		if seen[t] {
			add(p, "duplicate %q", t)
		}
		seen[t] = true
	}
	for i, r := range spec.Ingress {
		for j, port := range r.Ports {
			validatePort(fmt.Sprintf("spec.ingress[%d].ports[%d]", i, j), port, add)
		}
		for j, peer := range r.From {
			validatePeer(fmt.Sprintf("spec.ingress[%d].from[%d]", i, j), peer, add)
		}
	}
	for i, r := range spec.Egress {
		for j, port := range r.Ports {
			validatePort(fmt.Sprintf("spec.egress[%d].ports[%d]", i, j), port, add)
		}
		for j, peer := range r.To {
			validatePeer(fmt.Sprintf("spec.egress[%d].to[%d]", i, j), peer, add)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("NetworkPolicy %s/%s: %w", np.Namespace, np.Name, errors.Join(errs...))
}

func validatePort(path string, p networkingv1.NetworkPolicyPort, add func(string, string, ...any)) {
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			add(path+".protocol", "unsupported value %q: want TCP, UDP or SCTP", *p.Protocol)
		}
	}
	if p.Port == nil {
		if p.EndPort != nil {
			add(path+".endPort", "may not be set without port")
		}
		return
	}
	switch p.Port.Type {
	case intstr.Int:
		for _, msg := range validation.IsValidPortNum(int(p.Port.IntVal)) {
			add(path+".port", "%d: %s", p.Port.IntVal, msg)
		}
		if p.EndPort != nil {
			if *p.EndPort < p.Port.IntVal {
				add(path+".endPort", "%d is less than port %d", *p.EndPort, p.Port.IntVal)
			}
			for _, msg := range validation.IsValidPortNum(int(*p.EndPort)) {
				add(path+".endPort", "%d: %s", *p.EndPort, msg)
			}
		}
	case intstr.String:
		for _, msg := range validation.IsValidPortName(p.Port.StrVal) {
			add(path+".port", "%q: %s", p.Port.StrVal, msg)
		}
		if p.EndPort != nil {
			add(path+".endPort", "may not be set when port is named (%q)", p.Port.StrVal)
		}
	default:
		add(path+".port", "neither a number nor a name")
	}
}

func validatePeer(path string, p networkingv1.NetworkPolicyPeer, add func(string, string, ...any)) {
	n := 0
	if p.PodSelector != nil {
		n++
		if _, err := metav1.LabelSelectorAsSelector(p.PodSelector); err != nil {
			add(path+".podSelector", "%v", err)
		}
	}
	if p.NamespaceSelector != nil {
		n++
		if _, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector); err != nil {
			add(path+".namespaceSelector", "%v", err)
		}
	}
	if p.IPBlock != nil {
		if n > 0 {
			add(path, "ipBlock may not be combined with podSelector or namespaceSelector")
		}
		n++
		if _, _, err := parseIPBlock(p.IPBlock); err != nil {
			add(path+".ipBlock", "%v", err)
		}
	}
	if n == 0 {
		add(path, "must specify a podSelector, namespaceSelector or ipBlock")
	}
}

// parseIPBlock parses cidr and except. As upstream, the CIDR may have host
// bits set ("192.168.1.1/24" means 192.168.1.0/24) and each except must be
// a strict subset of it, of the same family.
func parseIPBlock(b *networkingv1.IPBlock) (netip.Prefix, []netip.Prefix, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("cidr %q: %w", b.CIDR, err)
	}
	cidr = cidr.Masked()
	var except []netip.Prefix
	for i, e := range b.Except {
		ep, err := netip.ParsePrefix(e)
		if err != nil {
			return netip.Prefix{}, nil, fmt.Errorf("except[%d] %q: %w", i, e, err)
		}
		ep = ep.Masked()
		if ep.Addr().Is4() != cidr.Addr().Is4() || !cidr.Contains(ep.Addr()) || ep.Bits() <= cidr.Bits() {
			return netip.Prefix{}, nil, fmt.Errorf("except[%d] %q is not a strict subset of cidr %q", i, e, b.CIDR)
		}
		except = append(except, ep)
	}
	return cidr, except, nil
}

// ValidateObjects validates every NetworkPolicy among objs (what `weft
// apply` is about to store) and returns one error naming each invalid
// policy and field, or nil. Other kinds are not looked at.
func ValidateObjects(objs []objects.Object) error {
	var errs []error
	for _, o := range objs {
		if o.NetworkPolicy != nil {
			if err := Validate(o.NetworkPolicy); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
