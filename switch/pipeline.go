package vswitch

import (
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/policy"
	"github.com/weftnet/weft/switch/conntrack"
)

// Stage names, as Trace reports them.
const (
	StageIngress   = "ingress"
	StageConntrack = "conntrack"
	StageService   = "service"
	StageL2        = "l2"
	StageL3        = "l3"
	StageOutput    = "output"
)

// answer is the kind of frame the router produced in place of the input.
type answer uint8

const (
	answerNone answer = iota
	answerARPReply
	answerARPRequest
	answerICMPError
	answerEchoReply
)

// frameCtx carries what the stages of one batch share: the snapshots loaded
// once per batch, the clock, and the tracer. dry (a trace) means: no
// learning, no counters, no rate-limit tokens, no conntrack or affinity
// writes. Stages report what they did through c.trace, which is a no-op on
// the hot path (tr nil).
type frameCtx struct {
	s        *Switch
	in       *portState
	inID     PortID
	ports    *portTable
	routes   *routeTable
	static   *neighSnap
	services *svcTable
	pol      *policy.Snapshot // nil: no policy stage
	// stateless: no service frontend and no policy isolating a pod, so no
	// stage needs a flow: the conntrack stage does nothing.
	stateless bool
	now       int64
	tr        *tracer
	dry       bool

	// per frame
	et      uint16 // EtherType
	ipLen   int    // GSO: IP length of the largest segment; 0 = total length
	partial bool   // GSO: the L4 checksum field holds the pseudo-header sum (virtio NEEDS_CSUM)
	answer  answer
	flow    flowCtx // the conntrack stage's findings
}

// flowCtx is what the conntrack stage found out about a frame's flow, for
// the stages after it (service NAT, later policy).
type flowCtx struct {
	tracked   bool  // IPv4 TCP/UDP, not a later fragment, L4 header present
	firstFrag bool  // tracked, and the first fragment of a datagram
	found     bool  // the flow is in conntrack: hit is valid
	l4Off     int   // offset of the L4 header in the frame
	tcpFlags  uint8 // TCP flags (0 for UDP)
	// svcEnd: a service frontend or backend is the frame's destination or
	// source (svcTable.ends), or policy tracks every flow; otherwise the
	// service stage has nothing to do with the frame.
	svcEnd bool
	tuple  conntrack.Tuple // the frame's own tuple (before NAT)
	hit    conntrack.Hit
}

func (s *Switch) newCtx(in PortID, now int64, tr *tracer) frameCtx {
	c := frameCtx{s: s, inID: in, ports: s.ports.Load(), routes: s.routes.Load(), static: s.static.Load(),
		services: s.services.Load(), pol: s.policy.Load(), now: now, tr: tr, dry: tr != nil}
	c.in = c.ports.get(in)
	c.stateless = len(c.services.fronts) == 0 && (c.pol == nil || !c.pol.Active())
	return c
}

// Process decides the fate of a batch of frames that arrived on port in:
// out[i] receives the verdict for frames[i] (len(out) >= len(frames)).
// now is a monotonic clock in ns.
//
// Frames are borrowed for the call and rewritten in place: routed frames
// get new MACs and a decremented TTL and are trimmed to their IP length;
// ARP and ICMP answers are built in the frame's own buffer, so Process may
// set frames[i] = frames[i][:n] with n up to cap(frames[i]) (an ICMP error
// needs up to 110 bytes). Process never allocates. Safe for concurrent use.
func (s *Switch) Process(frames [][]byte, in PortID, out []Verdict, now int64) {
	s.ProcessGSO(frames, nil, in, out, now)
}

// ProcessGSO is Process for batches that may hold GSO super-packets (a TAP
// read with a virtio-net header): when ipLens is non-nil (then
// len(ipLens) >= len(frames)) and ipLens[i] != 0,
// it is the IP length of the largest packet frame i will be segmented into,
// and the MTU check of a routed frame uses it instead of the IP total
// length. The TTL is decremented once, in the super-packet's header, which
// segmentation copies into every segment. Such a frame's L4 checksum must
// be partial (virtio NEEDS_CSUM: the field holds the folded pseudo-header
// sum, as a TAP hands out a TSO/USO super-frame): service NAT patches it as
// such, so both segmentation and a TAP writing the frame whole complete it
// correctly. Frames with ipLens[i] == 0 carry complete checksums.
func (s *Switch) ProcessGSO(frames [][]byte, ipLens []uint16, in PortID, out []Verdict, now int64) {
	out = out[:len(frames)]
	c := s.newCtx(in, now, nil)
	for i := range frames {
		c.ipLen = 0
		if ipLens != nil {
			c.ipLen = int(ipLens[i])
		}
		c.partial = c.ipLen != 0
		c.pipeline(&frames[i], &out[i])
	}
}

// pipeline runs the stages over one frame in their fixed order (DESIGN.md):
// port checks -> conntrack -> service NAT -> [policy] -> L2 -> L3 ->
// output. Each stage returns false when it has settled the frame's
// verdict. Conntrack is looked up once here; service NAT (and later
// policy) decides on a flow's first packet and keeps the decision in the
// flow's entry, so a packet of an established flow costs one lookup.
func (c *frameCtx) pipeline(fp *[]byte, v *Verdict) {
	*v = Verdict{}
	c.answer = answerNone
	_ = c.ingress(*fp, v) &&
		c.conntrack(*fp) &&
		c.serviceNAT(fp, v) &&
		c.policyStage(*fp, v) &&
		c.l2(*fp, v) &&
		c.l3(fp, v)
	c.output(*fp, v)
}

// drop sets a drop verdict and returns false so stages can `return c.drop(...)`.
func (c *frameCtx) drop(v *Verdict, r DropReason, stage string) bool {
	*v = Verdict{Action: ActionDrop, Reason: r}
	c.trace(stage, step{kind: stepDrop, reason: r})
	return false
}

// ingress checks the frame against its port: known port, sane headers,
// and for pod ports the anti-spoofing rules.
func (c *frameCtx) ingress(f []byte, v *Verdict) bool {
	p := c.in
	if p == nil {
		return c.drop(v, DropUnknownPort, StageIngress)
	}
	if len(f) < packet.EthHdrLen {
		return c.drop(v, DropTooShort, StageIngress)
	}
	c.et = packet.EthType(f)
	l3 := f[packet.EthHdrLen:]
	switch c.et {
	case packet.EtherTypeIPv4:
		if len(l3) < packet.IPv4MinHdrLen {
			return c.drop(v, DropTooShort, StageIngress)
		}
		if !packet.IPv4(l3).Valid() {
			return c.drop(v, DropBadIPv4, StageIngress)
		}
	case packet.EtherTypeARP:
		if len(l3) < packet.ARPLen {
			return c.drop(v, DropTooShort, StageIngress)
		}
		if !packet.ARP(l3).Valid() {
			return c.drop(v, DropBadARP, StageIngress)
		}
	case packet.EtherTypeIPv6:
		if len(l3) < packet.IPv6HdrLen {
			return c.drop(v, DropTooShort, StageIngress)
		}
		if l3[0]>>4 != 6 {
			return c.drop(v, DropBadIPv6, StageIngress)
		}
	case packet.EtherTypeVLAN, etherTypeQinQ, etherTypeVLANOld:
		return c.drop(v, DropVLAN, StageIngress)
	default:
		return c.drop(v, DropUnknownEtherType, StageIngress)
	}

	if p.kind == PortOverlay {
		if dstKey(f) != c.s.routerKey {
			return c.drop(v, DropOverlayNotRouter, StageIngress)
		}
		switch c.et {
		case packet.EtherTypeIPv4:
		case packet.EtherTypeIPv6:
			return c.drop(v, DropIPv6NotRouted, StageIngress)
		default:
			return c.drop(v, DropOverlayNotIPv4, StageIngress)
		}
		c.trace(StageIngress, step{kind: stepOverlayAccepted, port: p.id})
		return true
	}

	src := srcKey(f)
	if src&(1<<40) != 0 || src == 0 {
		return c.drop(v, DropBadSrcMAC, StageIngress)
	}
	if src == c.s.routerKey {
		return c.drop(v, DropSpoofed, StageIngress)
	}
	if p.kind == PortPod {
		if src != p.macKey {
			return c.drop(v, DropSpoofed, StageIngress)
		}
		switch c.et {
		case packet.EtherTypeIPv4:
			if ip4Key(packet.IPv4(l3).Src4()) != p.ip4Key {
				return c.drop(v, DropSpoofed, StageIngress)
			}
		case packet.EtherTypeIPv6:
			// Until weft carries IPv6, a pod's IPv6 has nowhere to go
			// but its neighbours, where a router advertisement or a
			// neighbour advertisement (RFC 4861) redirects their IPv6.
			return c.drop(v, DropPodIPv6, StageIngress)
		case packet.EtherTypeARP:
			// A sender address of 0.0.0.0 is an RFC 5227 probe.
			spa := ip4Key(packet.ARP(l3).SenderIP4())
			if macKeyAt(l3[packet.ARPOffSHA:]) != p.macKey || (spa != p.ip4Key && spa != 0) {
				return c.drop(v, DropSpoofed, StageIngress)
			}
		}
	}
	c.trace(StageIngress, step{kind: stepAccepted, port: p.id, n: int32(c.et)})
	return true
}

const (
	etherTypeQinQ    = 0x88a8
	etherTypeVLANOld = 0x9100
)

// l2 learns the source, snoops ARP for neighbours, and switches. It returns
// true when the frame is for the router (L3).
func (c *frameCtx) l2(f []byte, v *Verdict) bool {
	p := c.in
	if p.kind == PortOverlay {
		c.trace(StageL2, step{kind: stepFromOverlay})
		return true
	}
	s := c.s
	dst := dstKey(f)
	if dst == srcKey(f) {
		// Would be learned on the ingress port first; decided here so
		// that a dry run (which learns nothing) agrees.
		return c.drop(v, DropHairpin, StageL2)
	}
	if c.dry {
		c.trace(StageL2, step{kind: stepWouldLearn, mac: srcKey(f), port: p.id})
	} else {
		s.fdb.learn(srcKey(f), p.id, c.now)
	}
	if c.et == packet.EtherTypeARP {
		a := packet.ARP(f[packet.EthHdrLen:])
		c.snoopARP(a)
		if dst == s.routerKey || (a.Op() == packet.ARPOpRequest && a.TargetIP4() == s.gw4) {
			c.trace(StageL2, step{kind: stepARPForRouter})
			return true
		}
	} else if dst == s.routerKey {
		if c.et == packet.EtherTypeIPv6 {
			return c.drop(v, DropIPv6NotRouted, StageL2)
		}
		c.trace(StageL2, step{kind: stepToRouter, mac: dst})
		return true
	}
	if dst&(1<<40) != 0 { // group bit: broadcast or multicast
		return c.flood(f, v, "broadcast/multicast")
	}
	port, ok := s.fdb.lookup(dst)
	out := c.ports.get(port)
	if !ok || out == nil {
		return c.flood(f, v, "unknown unicast")
	}
	if port == p.id {
		return c.drop(v, DropHairpin, StageL2)
	}
	if mtu := out.mtu; c.l2Len(f) > mtu {
		return c.drop(v, DropL2TooBig, StageL2)
	}
	*v = Verdict{Action: ActionDeliver, Port: port}
	c.trace(StageL2, step{kind: stepFDBHit, mac: dst, port: port})
	return false
}

// flood floods f unless it is larger than the smallest MTU among the ports
// it would reach, or its ingress port has spent its flood budget. It
// returns false (no L3), as the other L2 verdicts do.
func (c *frameCtx) flood(f []byte, v *Verdict, why string) bool {
	if mtu := c.ports.floodMTU(c.inID); mtu != 0 && c.l2Len(f) > mtu {
		return c.drop(v, DropL2TooBig, StageL2)
	}
	if !c.in.flood.allow(c.now, c.dry) {
		return c.drop(v, DropFloodRateLimited, StageL2)
	}
	*v = Verdict{Action: ActionFlood, Port: c.inID}
	c.trace(StageL2, step{kind: stepFlood, why: why})
	return false
}

// l2Len is the length a switched frame has on the output device, as its
// MTU counts it: the L3 length, or for a GSO super-frame the IP length of
// its largest segment (the device segments it; the kernel bridge checks
// the same way, skb_gso_validate_network_len).
func (c *frameCtx) l2Len(f []byte) int {
	if c.ipLen != 0 {
		return c.ipLen
	}
	return len(f) - packet.EthHdrLen
}

// snoopARP learns sender IP -> (MAC, port) from ARP seen on a local port,
// for addresses of the node subnet that have no static entry.
func (c *frameCtx) snoopARP(a packet.ARP) {
	s := c.s
	k := ip4Key(a.SenderIP4())
	if k&s.mask4 != s.net4 || k == s.net4 || k == s.bcast4 || k == ip4Key(s.gw4) {
		return
	}
	if _, ok := c.static.lookup(k); ok {
		return
	}
	nv := neighVal{mac: a.SenderMAC(), port: c.in.id}
	old, seen, ok := s.learned.lookup(k)
	if ok && old == nv && c.now-seen < s.learned.refresh {
		return
	}
	if c.dry {
		c.trace(StageL2, step{kind: stepWouldLearnNeigh, ip: k, mac: macKey(nv.mac), port: nv.port})
		return
	}
	changed, evicted := s.learned.learn(k, nv, c.now)
	if changed {
		s.ctr.neighLearned.Add(1)
	}
	if evicted {
		s.ctr.neighEvicted.Add(1)
	}
}

// localHost reports whether k is a host address of the node subnet other
// than the gateway: a local pod's or the host port's.
func (s *Switch) localHost(k uint32) bool {
	return k&s.mask4 == s.net4 && k != s.net4 && k != s.bcast4 && k != ip4Key(s.gw4)
}

// output counts the verdict. A frame that did not reach where it was
// addressed counts once under its reason, answered or not; the answers
// the router produced count apart.
func (c *frameCtx) output(f []byte, v *Verdict) {
	if c.dry {
		c.traceVerdict(f, v)
		return
	}
	ctr := &c.s.ctr
	if v.Reason != DropNone {
		ctr.drops[v.Reason].Add(1)
	}
	switch c.answer {
	case answerARPReply:
		ctr.arpReplies.Add(1)
	case answerARPRequest:
		ctr.arpRequests.Add(1)
	case answerICMPError:
		ctr.icmpErrors.Add(1)
	case answerEchoReply:
		ctr.echoReplies.Add(1)
	}
}
