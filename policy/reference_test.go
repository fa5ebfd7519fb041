package policy

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// reference is the API's text turned into code with no precomputed
// tables: decide walks every policy for one flow. The engine must agree
// with it on every flow (FuzzCompile, TestReferenceAgrees). It holds only
// what does not change between flows: the pods by address (first by
// namespace/name wins, as in Compile) and which policies validate.
type reference struct {
	in    Input
	byIP  map[netip.Addr]*Pod
	valid map[*networkingv1.NetworkPolicy]bool
}

func newReference(in Input) *reference {
	pods := slices.Clone(in.Pods)
	slices.SortStableFunc(pods, func(a, b Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	byIP := map[netip.Addr]*Pod{}
	for i := range pods {
		if p := &pods[i]; p.IP.Is4() && byIP[p.IP] == nil {
			byIP[p.IP] = p
		}
	}
	valid := map[*networkingv1.NetworkPolicy]bool{}
	for _, np := range in.Policies {
		valid[np] = Validate(np) == nil
	}
	return &reference{in: in, byIP: byIP, valid: valid}
}

func (ref *reference) decide(f Flow, check Check) bool {
	in, byIP := ref.in, ref.byIP
	srcIP, dstIP := netip.AddrFrom4(f.Src), netip.AddrFrom4(f.Dst)
	src, dst := byIP[srcIP], byIP[dstIP]
	if src == nil && dst != nil && slices.Contains(in.HostAddrs, srcIP) {
		return true
	}
	nsLabels := func(ns string) labels.Set {
		set := labels.Set{}
		for _, n := range in.Namespaces {
			if n.Name == ns {
				set = labels.Set{}
				for k, v := range n.Labels {
					set[k] = v
				}
			}
		}
		set[NamespaceNameLabel] = ns
		return set
	}
	// side decides one pod's direction: isolated by any policy selecting
	// it for that direction, and then allowed only by one of their rules.
	side := func(pod *Pod, egress bool, peerPod *Pod, peerIP netip.Addr) bool {
		isolated := false
		for _, np := range in.Policies {
			if np.Namespace != pod.Namespace {
				continue
			}
			valid := ref.valid[np]
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			if err != nil {
				sel = labels.Everything()
			}
			if !sel.Matches(labels.Set(pod.Labels)) {
				continue
			}
			ing, eg := !valid, !valid
			if len(np.Spec.PolicyTypes) == 0 {
				ing, eg = true, eg || len(np.Spec.Egress) > 0
			}
			for _, t := range np.Spec.PolicyTypes {
				ing = ing || t == networkingv1.PolicyTypeIngress
				eg = eg || t == networkingv1.PolicyTypeEgress
			}
			if (egress && !eg) || (!egress && !ing) {
				continue
			}
			isolated = true
			if !valid {
				continue
			}
			dstPod := pod // named ports resolve on the destination
			if egress {
				dstPod = peerPod
			}
			if egress {
				for _, r := range np.Spec.Egress {
					if referencePeers(np, r.To, peerPod, peerIP, nsLabels) && referencePorts(r.Ports, f, dstPod) {
						return true
					}
				}
			} else {
				for _, r := range np.Spec.Ingress {
					if referencePeers(np, r.From, peerPod, peerIP, nsLabels) && referencePorts(r.Ports, f, dstPod) {
						return true
					}
				}
			}
		}
		return !isolated
	}
	if check&CheckEgress != 0 && src != nil && !side(src, true, dst, dstIP) {
		return false
	}
	if check&CheckIngress != 0 && dst != nil && !side(dst, false, src, srcIP) {
		return false
	}
	return true
}

func referencePeers(np *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, pod *Pod, ip netip.Addr, nsLabels func(string) labels.Set) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
			if err != nil || !cidr.Masked().Contains(ip) {
				continue
			}
			excluded := false
			for _, e := range p.IPBlock.Except {
				if ep, err := netip.ParsePrefix(e); err == nil && ep.Masked().Contains(ip) {
					excluded = true
				}
			}
			if !excluded {
				return true
			}
			continue
		}
		if pod == nil {
			continue
		}
		nsOK := pod.Namespace == np.Namespace
		if p.NamespaceSelector != nil {
			sel, _ := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
			nsOK = sel.Matches(nsLabels(pod.Namespace))
		}
		podOK := true
		if p.PodSelector != nil {
			sel, _ := metav1.LabelSelectorAsSelector(p.PodSelector)
			podOK = sel.Matches(labels.Set(pod.Labels))
		}
		if nsOK && podOK {
			return true
		}
	}
	return false
}

func referencePorts(ports []networkingv1.NetworkPolicyPort, f Flow, dst *Pod) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto == corev1.ProtocolSCTP || protoNumber(proto) != f.Proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.String:
			if dst == nil {
				continue
			}
			for _, cp := range dst.Ports {
				if cp.Name == p.Port.StrVal && protoNumber(cp.Protocol) == f.Proto && int(cp.Port) == int(f.DstPort) {
					return true
				}
			}
		default:
			end := p.Port.IntVal
			if p.EndPort != nil {
				end = *p.EndPort
			}
			if int32(f.DstPort) >= p.Port.IntVal && int32(f.DstPort) <= end {
				return true
			}
		}
	}
	return false
}
