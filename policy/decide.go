package policy

// IP protocol numbers a policy port can name (IANA; RFC 793, 768, 4960).
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// Flow is the first packet of a connection as the policy stage sees it:
// after service NAT, so Dst is the backend pod and Src the client.
type Flow struct {
	Src, Dst [4]byte
	Proto    uint8
	DstPort  uint16 // 0 for protocols without ports
}

// Check says which sides of a flow this node enforces: a node checks the
// egress of its own pods and the ingress of its own pods, so a flow between
// two nodes is checked once on each side, each against its own snapshot.
type Check uint8

const (
	CheckEgress  Check = 1 << iota // the source pod's egress policies
	CheckIngress                   // the destination pod's ingress policies
	CheckBoth    = CheckEgress | CheckIngress
)

// Why is the kind of a Decision.
type Why uint8

const (
	// WhyNotReady: no snapshot published yet (weftd starting); everything
	// is denied, so a restarted node has no window of allow-all.
	WhyNotReady Why = iota
	// WhyAllowed: each checked side was either not isolated (rule -1) or
	// allowed by the rule named in Decision.Egress / Decision.Ingress.
	WhyAllowed
	// WhyNode: from this node's own address to a pod, always allowed.
	WhyNode
	// WhyEgressIsolated: the source pod is isolated for egress and no
	// policy selecting it allows this flow.
	WhyEgressIsolated
	// WhyIngressIsolated: the destination pod is isolated for ingress and
	// no policy selecting it allows this flow.
	WhyIngressIsolated
)

func (w Why) String() string {
	switch w {
	case WhyNotReady:
		return "not-ready"
	case WhyAllowed:
		return "allowed"
	case WhyNode:
		return "node"
	case WhyEgressIsolated:
		return "egress-isolated"
	case WhyIngressIsolated:
		return "ingress-isolated"
	}
	return "unknown"
}

// NoRule marks a side that was not isolated, or not checked.
const NoRule int32 = -1

// Decision is the verdict for one new flow, small and flat so conntrack
// can keep it in the flow's entry.
type Decision struct {
	Gen     uint64 // the snapshot generation it was taken under
	Egress  int32  // rule that allowed the source's egress, or NoRule
	Ingress int32  // rule that allowed the destination's ingress, or NoRule
	Allowed bool
	Why     Why
	// deniedBy is the table that denied (an isolated side no rule
	// allowed), or NoRule: CountDrop counts under its policies.
	deniedBy int32
}

// Decide takes the verdict for a new flow. It allocates nothing and may be
// called from any number of goroutines.
func (s *Snapshot) Decide(f Flow, check Check) Decision {
	d := Decision{Gen: s.gen, Egress: NoRule, Ingress: NoRule, deniedBy: NoRule}
	if !s.ready {
		return d
	}
	src := be32(f.Src)
	dst := be32(f.Dst)
	si, srcIsPod := s.podByIP[src]
	di, dstIsPod := s.podByIP[dst]
	if !srcIsPod && dstIsPod && s.isHost(src) {
		d.Allowed, d.Why = true, WhyNode
		return d
	}
	if check&CheckEgress != 0 && srcIsPod {
		if t := s.pods[si].egress; t >= 0 {
			if d.Egress = s.allowedBy(t, di, dstIsPod, dst, &f); d.Egress == NoRule {
				d.Why, d.deniedBy = WhyEgressIsolated, t
				return d
			}
		}
	}
	if check&CheckIngress != 0 && dstIsPod {
		if t := s.pods[di].ingress; t >= 0 {
			if d.Ingress = s.allowedBy(t, si, srcIsPod, src, &f); d.Ingress == NoRule {
				d.Why, d.deniedBy = WhyIngressIsolated, t
				return d
			}
		}
	}
	d.Allowed, d.Why = true, WhyAllowed
	return d
}

// Recheck is what conntrack calls on every packet of an established flow
// (either direction) when the entry's Decision is older than s: it decides
// the flow's original tuple again and reports whether the verdict changed.
// weft cuts a flow that is no longer allowed (the caller drops the packet
// and marks the entry denied) rather than letting it finish.
func (s *Snapshot) Recheck(f Flow, check Check, old Decision) (Decision, bool) {
	if old.Gen == s.gen {
		return old, false
	}
	d := s.Decide(f, check)
	return d, d.Allowed != old.Allowed
}

// allowedBy returns the first rule of table t admitting f from (ingress)
// or to (egress) the peer: pod index peer when peerIsPod, else address
// peerIP. NoRule: nothing does.
func (s *Snapshot) allowedBy(t, peer int32, peerIsPod bool, peerIP uint32, f *Flow) int32 {
	tab := &s.tables[t]
	list := tab.byAddr(peerIP)
	if peerIsPod {
		list = tab.byPod[peer]
	}
	return s.match(list, f.Proto, f.DstPort)
}

func (s *Snapshot) isHost(ip uint32) bool {
	for _, h := range s.hosts {
		if h == ip {
			return true
		}
	}
	return false
}

// byAddr returns the allow list for an address that is not a pod.
func (t *table) byAddr(ip uint32) uint32 {
	lo, hi := 0, len(t.addrStart)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t.addrStart[m] <= ip {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return emptyList
	}
	return t.addrList[lo-1]
}

// match returns the first rule of allow list l that admits (proto, port),
// or NoRule.
func (s *Snapshot) match(l uint32, proto uint8, port uint16) int32 {
	al := &s.lists[l]
	var spans []portSpan
	switch proto {
	case ProtoTCP:
		spans = s.spans[al.tcp.lo:al.tcp.hi]
	case ProtoUDP:
		spans = s.spans[al.udp.lo:al.udp.hi]
	default:
		// Only a rule without ports admits other protocols (ICMP, and SCTP:
		// weft does not read SCTP ports, so SCTP port rules match nothing).
		return al.any
	}
	lo, hi := 0, len(spans)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if spans[m].first <= port {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 || port > spans[lo-1].last {
		return NoRule
	}
	return spans[lo-1].rule
}
