package vswitch

import (
	"encoding/binary"

	"github.com/weftnet/weft/packet"
)

// Frame layout of the answers the router builds in place:
//
//	ARP:        | eth 14 | arp 28 |                                  = 42
//	ICMP error: | eth 14 | ip 20 | icmp 8 | quoted ip hdr + 8 (<= 68) | <= 110
const (
	arpFrameLen   = packet.EthHdrLen + packet.ARPLen
	icmpQuoteOff  = packet.EthHdrLen + packet.IPv4MinHdrLen + packet.ICMPHdrLen
	maxICMPErrLen = icmpQuoteOff + 60 + packet.ICMPErrorQuoteLen

	replyTTL = 64
)

// l3 routes an IPv4 frame addressed to the router MAC, or answers an ARP
// packet for the router. It always settles the verdict (returns false).
func (c *frameCtx) l3(fp *[]byte, v *Verdict) bool {
	c.route(fp, v)
	return false
}

func (c *frameCtx) route(fp *[]byte, v *Verdict) {
	if c.et == packet.EtherTypeARP {
		c.arpForRouter(fp, v)
		return
	}
	s := c.s
	f := *fp
	ip := packet.IPv4(f[packet.EthHdrLen:])
	if !headerChecksumOK(ip) {
		c.drop(v, DropBadIPv4, StageL3)
		return
	}
	// Ethernet padding after the IP packet must not travel on.
	tl := int(ip.TotalLen())
	f = f[:packet.EthHdrLen+tl]
	*fp = f
	ip = ip[:tl]
	dst := ip4Key(ip.Dst4())
	if dst == ip4Key(s.gw4) {
		c.forGateway(fp, v)
		return
	}
	if s.martian(dst) || s.martian(ip4Key(ip.Src4())) {
		c.drop(v, DropMartian, StageL3)
		return
	}
	r := c.routes.lookup(dst)
	if r == nil {
		c.icmpError(fp, v, DropNoRoute, packet.ICMPDestUnreachable, packet.ICMPCodeNetUnreach, 0)
		return
	}
	if ip.TTL() <= 1 {
		c.icmpError(fp, v, DropTTLExpired, packet.ICMPTimeExceeded, packet.ICMPCodeTTLExceeded, 0)
		return
	}
	var mtu int
	var nextMAC packet.MAC
	var out Verdict
	switch r.kind {
	case RouteLocal:
		nh := dst
		if r.hasVia {
			nh = r.via
		}
		n, ok := c.neighbour(nh)
		var op *portState
		if ok {
			op = c.ports.get(n.port)
		}
		if op == nil || op.kind == PortOverlay {
			c.neighMiss(fp, v, nh)
			return
		}
		mtu, nextMAC = op.mtu, n.mac
		out = Verdict{Action: ActionDeliver, Port: n.port}
	case RoutePeer:
		// A full mesh never needs a third node to relay; refusing it keeps
		// two nodes with disagreeing routes from bouncing a packet until
		// its TTL runs out.
		if c.in.kind == PortOverlay {
			c.drop(v, DropHairpin, StageL3)
			return
		}
		mtu, nextMAC = s.mtu, r.peerMAC
		out = Verdict{Action: ActionEncap, Peer: r.peer}
	}
	l := tl
	if c.ipLen != 0 {
		l = c.ipLen
	}
	if l > mtu {
		if ip.DF() {
			c.icmpError(fp, v, DropFragNeeded, packet.ICMPDestUnreachable, packet.ICMPCodeFragNeeded, mtu)
		} else {
			c.drop(v, DropTooBig, StageL3)
		}
		return
	}
	ip.DecTTL()
	copy(f[0:6], nextMAC[:])
	copy(f[6:12], s.routerMAC[:])
	*v = out
	c.trace(StageL3, step{kind: stepRouted, ip: dst, mac: macKey(nextMAC), n: int32(ip.TTL())})
}

// headerChecksumOK is packet.IPv4.HeaderChecksumOK with the common
// option-less header summed inline as five 32-bit words (the generic loop
// is a call and a quarter of the routing cost for a 20-byte header).
func headerChecksumOK(ip packet.IPv4) bool {
	if ip.HeaderLen() != packet.IPv4MinHdrLen || len(ip) < packet.IPv4MinHdrLen {
		return ip.HeaderChecksumOK()
	}
	s := uint64(binary.BigEndian.Uint32(ip[0:4])) + uint64(binary.BigEndian.Uint32(ip[4:8])) +
		uint64(binary.BigEndian.Uint32(ip[8:12])) + uint64(binary.BigEndian.Uint32(ip[12:16])) +
		uint64(binary.BigEndian.Uint32(ip[16:20]))
	s = s>>32 + s&0xffffffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return s == 0xffff
}

// martian reports addresses that are never routed: this-network 0/8,
// loopback 127/8, multicast and class E (with the limited broadcast), and
// the node subnet's network and broadcast addresses.
func (s *Switch) martian(k uint32) bool {
	return k>>24 == 0 || k>>24 == 127 || k>>28 >= 0xe || k == s.net4 || k == s.bcast4
}

func (c *frameCtx) neighbour(k uint32) (neighVal, bool) {
	if n, ok := c.static.lookup(k); ok {
		return n, true
	}
	n, _, ok := c.s.learned.lookup(k)
	return n, ok
}

// neighMiss drops a frame whose next hop has no neighbour entry and, if the
// ARP bucket allows, turns the frame into an ARP request for the next hop
// from the gateway, flooded to the local ports. The answer, unicast to the
// router MAC, is learned by snoopARP; the dropped packet's sender retries.
func (c *frameCtx) neighMiss(fp *[]byte, v *Verdict, nh uint32) {
	f := *fp
	if cap(f) < arpFrameLen {
		c.drop(v, DropNeighMiss, StageL3)
		return
	}
	if !c.s.arpLimit.allow(c.now, c.dry) {
		c.trace(StageL3, step{kind: stepARPLimited, ip: nh})
		c.drop(v, DropNeighMiss, StageL3)
		return
	}
	f = f[:arpFrameLen]
	var tpa [4]byte
	binary.BigEndian.PutUint32(tpa[:], nh)
	packet.PutEth(f, packet.BroadcastMAC, c.s.routerMAC, packet.EtherTypeARP)
	packet.PutARP(f[packet.EthHdrLen:], packet.ARPOpRequest, c.s.routerMAC, c.s.gw4, packet.MAC{}, tpa)
	*fp = f
	*v = Verdict{Action: ActionFlood, Port: c.inID, Reason: DropNeighMiss, Reply: true}
	c.answer = answerARPRequest
	c.trace(StageL3, step{kind: stepARPRequest, ip: nh})
}

// arpForRouter answers an ARP request for the gateway in place; other ARP
// addressed to the router (replies to our requests, already snooped in L2)
// ends here.
func (c *frameCtx) arpForRouter(fp *[]byte, v *Verdict) {
	s := c.s
	f := *fp
	a := packet.ARP(f[packet.EthHdrLen:])
	if a.Op() != packet.ARPOpRequest || a.TargetIP4() != s.gw4 {
		c.drop(v, DropForRouter, StageL3)
		return
	}
	sha, spa := a.SenderMAC(), a.SenderIP4()
	f = f[:arpFrameLen]
	packet.PutEth(f, sha, s.routerMAC, packet.EtherTypeARP)
	packet.PutARP(f[packet.EthHdrLen:], packet.ARPOpReply, s.routerMAC, s.gw4, sha, spa)
	*fp = f
	*v = Verdict{Action: ActionDeliver, Port: c.inID, Reply: true}
	c.answer = answerARPReply
	c.trace(StageL3, step{kind: stepARPReply})
}

// forGateway handles IPv4 addressed to the gateway itself: echo requests
// with a correct checksum (as a host's stack checks them) are answered in
// place, the rest is consumed.
func (c *frameCtx) forGateway(fp *[]byte, v *Verdict) {
	s := c.s
	f := *fp
	ip := packet.IPv4(f[packet.EthHdrLen:])
	hl := ip.HeaderLen()
	if ip.Proto() != packet.IPProtoICMP || ip.IsFragment() || len(ip) < hl+packet.ICMPHdrLen ||
		ip[hl] != packet.ICMPEchoRequest || s.martian(ip4Key(ip.Src4())) ||
		packet.Fold(packet.Checksum(ip[hl:], 0)) != 0xffff {
		c.drop(v, DropForRouter, StageL3)
		return
	}
	src := ip.Src4()
	var out Verdict
	if !c.replyPath(f, ip4Key(src), &out) {
		c.drop(v, DropForRouter, StageL3)
		return
	}
	icmp := ip[hl:]
	old := binary.BigEndian.Uint16(icmp[0:2])
	icmp[packet.ICMPOffType] = packet.ICMPEchoReply
	sum := binary.BigEndian.Uint16(icmp[packet.ICMPOffChecksum:])
	binary.BigEndian.PutUint16(icmp[packet.ICMPOffChecksum:], packet.UpdateChecksum16(sum, old, binary.BigEndian.Uint16(icmp[0:2])))
	ip.SetSrc4(s.gw4)
	ip.SetDst4(src)
	ip[packet.IPv4OffTTL] = replyTTL
	ip.ComputeChecksum()
	*v = out
	v.Reply = true
	c.answer = answerEchoReply
	c.trace(StageL3, step{kind: stepEchoReply})
}

// replyPath decides where an answer to source address src goes and writes
// the answer's Ethernet addresses into f. From a local port the answer goes
// back out of it to the frame's source MAC; from the overlay it is routed
// to the peer whose route covers src.
func (c *frameCtx) replyPath(f []byte, src uint32, out *Verdict) bool {
	var dstMAC packet.MAC
	if c.in.kind == PortOverlay {
		r := c.routes.lookup(src)
		if r == nil || r.kind != RoutePeer {
			return false
		}
		dstMAC = r.peerMAC
		*out = Verdict{Action: ActionEncap, Peer: r.peer}
	} else {
		dstMAC = packet.EthSrc(f)
		*out = Verdict{Action: ActionDeliver, Port: c.inID}
	}
	copy(f[0:6], dstMAC[:])
	copy(f[6:12], c.s.routerMAC[:])
	return true
}

// icmpError replaces the frame with an ICMP error about it (source: the
// gateway), or drops it with reason cause when no error may be sent.
// mtu is the next-hop MTU for fragmentation-needed, else 0.
func (c *frameCtx) icmpError(fp *[]byte, v *Verdict, cause DropReason, typ, code uint8, mtu int) {
	c.icmpErrorFrom(fp, v, StageL3, c.s.gw4, cause, typ, code, mtu)
}

// icmpErrorFrom is icmpError with the error's source address and the
// stage that reports it: the service stage refuses a connection to a
// cluster IP with no endpoints from that cluster IP, as kube-proxy's
// REJECT rule does.
func (c *frameCtx) icmpErrorFrom(fp *[]byte, v *Verdict, stage string, from [4]byte, cause DropReason, typ, code uint8, mtu int) {
	s := c.s
	f := *fp
	ip := packet.IPv4(f[packet.EthHdrLen:])
	if why := s.noICMPAbout(ip); why != "" {
		c.trace(stage, step{kind: stepNoICMP, why: why})
		c.drop(v, cause, stage)
		return
	}
	quote := min(ip.HeaderLen()+packet.ICMPErrorQuoteLen, len(ip))
	n := icmpQuoteOff + quote
	if cap(f) < n {
		c.drop(v, DropNoRoom, stage)
		return
	}
	src := ip.Src4()
	var out Verdict
	if !c.replyPath(f, ip4Key(src), &out) {
		c.trace(stage, step{kind: stepNoICMPRoute, ip: ip4Key(ip.Src4())})
		c.drop(v, cause, stage)
		return
	}
	if !s.icmpLimit.allow(c.now, c.dry) {
		c.drop(v, DropICMPRateLimited, stage)
		return
	}
	f = f[:max(len(f), n)]
	copy(f[icmpQuoteOff:n], f[packet.EthHdrLen:packet.EthHdrLen+quote]) // memmove: overlap is fine
	f = f[:n]
	icmp := f[packet.EthHdrLen+packet.IPv4MinHdrLen:]
	packet.PutICMPHeader(icmp, typ, code, uint32(mtu))
	packet.SetICMPChecksum(icmp)
	packet.PutIPv4(f[packet.EthHdrLen:], uint16(n-packet.EthHdrLen), 0, false, replyTTL, packet.IPProtoICMP, from, src)
	binary.BigEndian.PutUint16(f[12:14], packet.EtherTypeIPv4)
	*fp = f
	*v = out
	v.Reason = cause
	v.Reply = true
	c.answer = answerICMPError
	c.trace(stage, step{kind: stepICMPError, reason: cause, n: int32(typ)<<8 | int32(code), ip: ip4Key(src)})
}

// noICMPAbout returns why no ICMP error may answer ip (RFC 1812 §4.3.2.7),
// or "" if one may.
func (s *Switch) noICMPAbout(ip packet.IPv4) string {
	if ip.IsLaterFragment() {
		return "not the first fragment"
	}
	if s.martian(ip4Key(ip.Src4())) {
		return "source not unicast"
	}
	if s.martian(ip4Key(ip.Dst4())) {
		return "destination broadcast or multicast"
	}
	if ip.Proto() == packet.IPProtoICMP {
		hl := ip.HeaderLen()
		if len(ip) <= hl || !packet.ICMPIsInformational(ip[hl]) {
			return "about an ICMP error"
		}
	}
	return ""
}
