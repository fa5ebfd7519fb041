package vswitch

import (
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/switch/conntrack"
)

// conntrack is the pipeline's connection-tracking stage: it finds the
// frame's flow, once, and leaves what it found in c.flow for the stages
// after it. It never settles a verdict itself.
//
// With no service and no policy isolating a pod (c.stateless) nothing
// needs a flow and the stage does nothing. Tracked: IPv4 TCP and UDP that
// carries its L4 header, first fragments included; a later fragment has no
// ports (weft does not reassemble) and takes the addresses its first
// fragment was given (frag.go). Service
// NAT inserts the flows it translates, the policy stage (while some pod is
// isolated) every flow it allows; while the table is empty, or when no
// policy isolates a pod and the packet's addresses and ports are no
// service's frontend or backend, the lookup is skipped.
func (c *frameCtx) conntrack(f []byte) bool {
	fl := &c.flow
	fl.tracked, fl.found, fl.svcEnd = false, false, false
	fl.hit = conntrack.Hit{} // set again by a lookup or an insert for this frame only
	if c.stateless || c.et != packet.EtherTypeIPv4 {
		return true
	}
	ip := packet.IPv4(f[packet.EthHdrLen:])
	proto := ip.Proto()
	var l4Min int
	switch proto {
	case packet.IPProtoTCP:
		l4Min = packet.TCPMinHdrLen
	case packet.IPProtoUDP:
		l4Min = packet.UDPHdrLen
	default:
		return true
	}
	fl.firstFrag = false
	if ip.IsLaterFragment() {
		c.trace(StageConntrack, step{kind: stepUntracked, why: "later IP fragment (no ports)"})
		c.laterFragment(f)
		return true
	}
	// A first fragment carries the ports: it is tracked and translated as
	// its flow is, and the later ones follow it (frag.go).
	fl.firstFrag = ip.IsFragment()
	hl := ip.HeaderLen()
	if packet.EthHdrLen+hl+l4Min > len(f) || hl+l4Min > int(ip.TotalLen()) {
		c.trace(StageConntrack, step{kind: stepUntracked, why: "L4 header truncated"})
		return true
	}
	fl.tracked = true
	fl.l4Off = packet.EthHdrLen + hl
	l4 := f[fl.l4Off:]
	fl.tcpFlags = 0
	if proto == packet.IPProtoTCP {
		fl.tcpFlags = l4[13]
	}
	sp, dp := packet.Ports(l4)
	fl.tuple = conntrack.Tuple{Src: ip4Key(ip.Src4()), Dst: ip4Key(ip.Dst4()), SrcPort: sp, DstPort: dp, Proto: proto}
	// With the policy stage active every flow may be tracked; otherwise
	// only service flows are.
	policyTracks := c.pol != nil && c.pol.Active() // not stateless: services or policy
	fl.svcEnd = policyTracks || c.services.mayTrack(fl.tuple.Src, fl.tuple.Dst, sp, dp, proto)
	if c.s.ct.Len() == 0 || !fl.svcEnd {
		return true
	}
	if c.dry {
		fl.found = c.s.ct.Peek(&fl.tuple, c.now, &fl.hit)
	} else {
		fl.found = c.s.ct.Lookup(&fl.tuple, fl.tcpFlags, c.now, &fl.hit)
	}
	if fl.found {
		c.trace(StageConntrack, step{kind: stepCTHit})
	} else {
		c.trace(StageConntrack, step{kind: stepCTMiss})
	}
	return true
}
