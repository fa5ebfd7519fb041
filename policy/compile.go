package policy

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// compiler holds the resolved input while a Snapshot is built.
type compiler struct {
	s        *Snapshot
	pods     []Pod
	portSig  []int32 // pod index -> id of its named-port set
	nsLabels map[string]labels.Set
	byNS     map[string][]int32 // namespace -> pod indices, ascending
	policies []*networkingv1.NetworkPolicy
	ingress  [][]*rule // per policy, in rule order
	egress   [][]*rule
	// per pod, the policies isolating it in each direction, ascending
	ingressBy, egressBy [][]int32
	listIDs             map[string]uint32
	all                 []*rule // by rule ref
	mark                []int32 // per pod, scratch for compileRule
}

// rule is one ingress or egress rule with its peers resolved.
type rule struct {
	ref      int32
	allPeers bool      // no from/to: every source or destination
	pods     []int32   // pods its selector and ipBlock peers match, ascending
	blocks   []ipRange // address ranges its ipBlock peers match (IPv4)
	allPorts bool      // no ports: every protocol and port
	ports    []portMatch
	named    bool // some port is named
}

type portMatch struct {
	proto       uint8
	first, last uint16
	name        string // named port, resolved on the destination pod
}

// ipRange is an ipBlock: cidr [first, last] minus the except ranges.
type ipRange struct {
	first, last uint32
	except      [][2]uint32
}

func (r ipRange) contains(ip uint32) bool {
	if ip < r.first || ip > r.last {
		return false
	}
	for _, e := range r.except {
		if ip >= e[0] && ip <= e[1] {
			return false
		}
	}
	return true
}

// Compile builds a Snapshot from in. It never fails: a policy that does
// not validate is enforced fail-closed (see Snapshot.Problems), a pod
// without an IPv4 address is selectable but unreachable by address, and a
// second pod claiming an address already taken is reported and ignored.
func Compile(in Input, gen uint64) *Snapshot {
	c := &compiler{
		s:        &Snapshot{gen: gen, ready: true, podByIP: make(map[uint32]int32, len(in.Pods))},
		nsLabels: map[string]labels.Set{},
		byNS:     map[string][]int32{},
		listIDs:  map[string]uint32{},
	}
	c.s.lists = []allowList{{any: NoRule}} // emptyList
	for _, h := range in.HostAddrs {
		if h.Is4() {
			c.s.hosts = append(c.s.hosts, be32(h.As4()))
		}
	}
	c.addNamespaces(in.Namespaces)
	c.addPods(in.Pods)
	c.addPolicies(in.Policies)
	c.buildTables()
	return c.s
}

func (c *compiler) addNamespaces(nss []Namespace) {
	for _, ns := range nss {
		set := labels.Set{}
		maps.Copy(set, ns.Labels)
		set[NamespaceNameLabel] = ns.Name
		c.nsLabels[ns.Name] = set
	}
}

func (c *compiler) addPods(in []Pod) {
	c.pods = slices.Clone(in)
	slices.SortStableFunc(c.pods, func(a, b Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	sigs := map[string]int32{}
	c.s.pods = make([]podEntry, len(c.pods))
	c.portSig = make([]int32, len(c.pods))
	for i, p := range c.pods {
		c.s.pods[i] = podEntry{ingress: -1, egress: -1, name: p.Namespace + "/" + p.Name}
		c.byNS[p.Namespace] = append(c.byNS[p.Namespace], int32(i))
		if _, ok := c.nsLabels[p.Namespace]; !ok {
			c.nsLabels[p.Namespace] = labels.Set{NamespaceNameLabel: p.Namespace}
		}
		key := fmt.Sprint(sortedPorts(p.Ports))
		id, ok := sigs[key]
		if !ok {
			id = int32(len(sigs))
			sigs[key] = id
		}
		c.portSig[i] = id
		if !p.IP.Is4() {
			continue
		}
		ip := be32(p.IP.As4())
		if other, dup := c.s.podByIP[ip]; dup {
			c.s.problems = append(c.s.problems, fmt.Errorf("pod %s has address %s, already pod %s's: ignored as a peer by address",
				c.s.pods[i].name, p.IP, c.s.pods[other].name))
			continue
		}
		c.s.podByIP[ip] = int32(i)
	}
}

func sortedPorts(ps []NamedPort) []NamedPort {
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b NamedPort) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	})
	return out
}

func (c *compiler) addPolicies(in []*networkingv1.NetworkPolicy) {
	c.policies = slices.Clone(in)
	slices.SortStableFunc(c.policies, func(a, b *networkingv1.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	c.ingress = make([][]*rule, len(c.policies))
	c.egress = make([][]*rule, len(c.policies))
	c.mark = make([]int32, len(c.pods))
	c.ingressBy = make([][]int32, len(c.pods))
	c.egressBy = make([][]int32, len(c.pods))
	for pi, np := range c.policies {
		c.s.names = append(c.s.names, np.Namespace+"/"+np.Name)
		selected, ingress, egress := c.selection(np)
		invalid := Validate(np)
		if invalid != nil {
			// Fail closed: isolate every direction it could mean, allow nothing.
			c.s.problems = append(c.s.problems, fmt.Errorf("%w (enforced as deny-all for the pods it selects)", invalid))
			ingress, egress = true, true
		} else {
			for i, r := range np.Spec.Ingress {
				c.ingress[pi] = append(c.ingress[pi], c.compileRule(np, int32(pi), false, i, r.From, r.Ports))
			}
			for i, r := range np.Spec.Egress {
				c.egress[pi] = append(c.egress[pi], c.compileRule(np, int32(pi), true, i, r.To, r.Ports))
			}
		}
		sum := PolicySummary{Namespace: np.Namespace, Name: np.Name, Ingress: ingress, Egress: egress,
			IngressRules: len(np.Spec.Ingress), EgressRules: len(np.Spec.Egress)}
		if invalid != nil {
			sum.Problem = invalid.Error()
		}
		for _, p := range selected {
			sum.Selects = append(sum.Selects, c.s.pods[p].name)
			if ingress {
				c.ingressBy[p] = append(c.ingressBy[p], int32(pi))
			}
			if egress {
				c.egressBy[p] = append(c.egressBy[p], int32(pi))
			}
		}
		c.s.summaries = append(c.s.summaries, sum)
	}
}

// selection resolves which pods np selects and for which directions. An
// invalid podSelector selects the whole namespace (fail closed); an empty
// policyTypes means Ingress, plus Egress when there are egress rules.
func (c *compiler) selection(np *networkingv1.NetworkPolicy) (pods []int32, ingress, egress bool) {
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		sel = labels.Everything()
	}
	for _, p := range c.byNS[np.Namespace] {
		if sel.Matches(labels.Set(c.pods[p].Labels)) {
			pods = append(pods, p)
		}
	}
	if len(np.Spec.PolicyTypes) == 0 {
		return pods, true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		default:
			ingress, egress = true, true
		}
	}
	return pods, ingress, egress
}

// compileRule resolves one rule's peers and ports. It runs only on a
// policy that passed Validate.
func (c *compiler) compileRule(np *networkingv1.NetworkPolicy, pi int32, egress bool, index int,
	peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) *rule {
	r := &rule{ref: int32(len(c.s.rules)), allPeers: len(peers) == 0, allPorts: len(ports) == 0}
	c.all = append(c.all, r)
	c.s.rules = append(c.s.rules, ruleInfo{policy: pi, egress: egress, index: int32(index)})
	// mark[p] == ref+1: pod p is already a member of this rule.
	mark := func(p int32) {
		if c.mark[p] != r.ref+1 {
			c.mark[p] = r.ref + 1
			r.pods = append(r.pods, p)
		}
	}
	for _, peer := range peers {
		if peer.IPBlock != nil {
			cidr, except, _ := parseIPBlock(peer.IPBlock)
			if !cidr.Addr().Is4() {
				continue // IPv6: weft's pod network is IPv4, nothing to match
			}
			b := prefixRange(cidr)
			for _, e := range except {
				er := prefixRange(e)
				b.except = append(b.except, [2]uint32{er.first, er.last})
			}
			r.blocks = append(r.blocks, b)
			// ipBlock matches addresses as seen, pod addresses included
			// (the upstream e2e suite allows egress to a pod by its /32).
			for ip, p := range c.s.podByIP {
				if b.contains(ip) {
					mark(p)
				}
			}
			continue
		}
		for _, p := range c.peerPods(np, peer) {
			mark(p)
		}
	}
	slices.Sort(r.pods)
	for _, pp := range ports {
		proto := ProtoTCP
		if pp.Protocol != nil {
			switch *pp.Protocol {
			case corev1.ProtocolUDP:
				proto = ProtoUDP
			case corev1.ProtocolSCTP:
				proto = ProtoSCTP
			}
		}
		m := portMatch{proto: proto, first: 0, last: 65535}
		switch {
		case pp.Port == nil:
		case pp.Port.Type == intstr.String:
			m.name = pp.Port.StrVal
			r.named = true
		default:
			m.first, m.last = uint16(pp.Port.IntVal), uint16(pp.Port.IntVal)
			if pp.EndPort != nil {
				m.last = uint16(*pp.EndPort)
			}
		}
		r.ports = append(r.ports, m)
	}
	return r
}

// peerPods resolves a selector peer: podSelector alone is the policy's
// namespace; namespaceSelector picks namespaces, and with a podSelector
// too, only the matching pods in them (AND).
func (c *compiler) peerPods(np *networkingv1.NetworkPolicy, peer networkingv1.NetworkPolicyPeer) []int32 {
	podSel := labels.Everything()
	if peer.PodSelector != nil {
		podSel, _ = metav1.LabelSelectorAsSelector(peer.PodSelector)
	}
	var nss []string
	if peer.NamespaceSelector == nil {
		nss = []string{np.Namespace}
	} else {
		nsSel, _ := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		for ns, set := range c.nsLabels {
			if nsSel.Matches(set) {
				nss = append(nss, ns)
			}
		}
	}
	var out []int32
	for _, ns := range nss {
		for _, p := range c.byNS[ns] {
			if podSel.Matches(labels.Set(c.pods[p].Labels)) {
				out = append(out, p)
			}
		}
	}
	return out
}

func prefixRange(p netip.Prefix) ipRange {
	first := be32(p.Addr().As4())
	return ipRange{first: first, last: first | uint32(uint64(1)<<(32-p.Bits())-1)}
}
