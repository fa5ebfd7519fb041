package vswitch

import (
	"encoding/binary"
	"errors"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/switch/conntrack"
)

// icmpCodePortUnreach is ICMP destination unreachable code 3 (RFC 792):
// what a host's stack answers for a closed UDP port and what kube-proxy's
// REJECT rule sends for a service without endpoints; Linux fails a TCP
// connect() on it at once with ECONNREFUSED.
const icmpCodePortUnreach = 3

// serviceNAT is the service stage. A packet of a tracked service flow is
// rewritten from its conntrack entry: original direction to the backend,
// reply direction back to the cluster IP. A flow's first packet to a
// frontend (cluster IP, port, protocol) picks a backend (affinity, else
// Maglev over the eligible backends), is recorded in conntrack, then
// rewritten the same way. Without eligible backends the connection is
// refused with ICMP port unreachable from the cluster IP (rate-limited
// like every ICMP error).
//
// Hairpin: a pod whose flow lands on itself would receive a packet from
// its own address, which its stack drops as a martian. As kube-proxy
// masquerades hairpin traffic, the flow's source becomes the gateway
// address (.1) with the client's port kept; the reply, to the gateway,
// is reverse-translated like any other.
func (c *frameCtx) serviceNAT(fp *[]byte, v *Verdict) bool {
	fl := &c.flow
	if !fl.tracked {
		return true
	}
	if fl.found {
		if fl.hit.Service == 0 {
			return true // a tracked flow without NAT (policy's, later)
		}
		if fl.hit.Dir == conntrack.DirOriginal {
			c.trace(StageService, step{kind: stepSvcHit})
		} else {
			c.trace(StageService, step{kind: stepSvcReply})
		}
		c.rewrite(*fp, &fl.hit.Other)
		return true
	}
	fr := c.services.lookup(fl.tuple.Dst, fl.tuple.DstPort, fl.tuple.Proto)
	if fr == nil {
		return true
	}
	if fl.tcpFlags&packet.TCPFlagRST != 0 {
		// A RST for a flow we do not know (expired, flushed) must not
		// open one; the kernel marks it INVALID and kube-proxy drops it.
		return c.drop(v, DropCTInvalid, StageService)
	}
	set := fr.set()
	if len(set.list) == 0 {
		if !c.dry {
			fr.stats.noBackend.Add(1)
		}
		if fr.local && len(fr.eligible.list) > 0 {
			c.trace(StageService, step{kind: stepSvcNoLocal, svc: fr.id})
			return c.drop(v, DropSvcNoLocal, StageService)
		}
		c.trace(StageService, step{kind: stepSvcReject, svc: fr.id})
		var vip [4]byte
		binary.BigEndian.PutUint32(vip[:], fr.vip)
		c.icmpErrorFrom(fp, v, StageService, vip, DropSvcNoEndpoints, packet.ICMPDestUnreachable, icmpCodePortUnreach, 0)
		return false
	}
	be, why := c.pickBackend(fr, set)
	reply := conntrack.Tuple{Src: be.ip, Dst: fl.tuple.Src, SrcPort: be.port, DstPort: fl.tuple.SrcPort, Proto: fl.tuple.Proto}
	if be.ip == fl.tuple.Src {
		reply.Dst = ip4Key(c.s.gw4) // hairpin: masquerade to the gateway
		why += ", hairpin: source NAT to the gateway"
	}
	c.trace(StageService, step{kind: stepSvcNew, svc: fr.id, ip: be.ip, n: int32(be.port), why: why})
	if c.dry {
		fl.hit = conntrack.Hit{Dir: conntrack.DirOriginal, Other: reply, Service: fr.id}
	} else {
		switch err := c.s.ct.Insert(&fl.tuple, &reply, fr.id, 0, fl.tcpFlags, c.now, &fl.hit); {
		case errors.Is(err, conntrack.ErrFull):
			return c.drop(v, DropCTFull, StageService)
		case err != nil:
			return c.drop(v, DropCTClash, StageService)
		}
		fr.stats.newFlows.Add(1)
	}
	c.rewrite(*fp, &fl.hit.Other)
	return true
}

// pickBackend chooses a new flow's backend: the client's affinity entry
// if it has one that is still eligible, else Maglev over the flow's hash
// (or over the client's address alone, with affinity on, so the choice
// is stable for the client even before the entry exists).
func (c *frameCtx) pickBackend(fr *frontend, set *backendSet) (backendVal, string) {
	fl := &c.flow
	if fr.affinity == 0 {
		be, _ := set.pick(flowHash(fl.tuple.Src, fl.tuple.Dst, fl.tuple.SrcPort, fl.tuple.DstPort, fl.tuple.Proto))
		return be, "maglev"
	}
	if ip, port, ok := c.s.affinity.lookup(fr.id, fl.tuple.Src, c.now, fr.affinity, !c.dry); ok {
		for _, b := range set.list {
			if b.ip == ip && b.port == port {
				return b, "session affinity"
			}
		}
	}
	be, _ := set.pick(clientHash(fl.tuple.Src))
	if !c.dry {
		c.s.affinity.store(fr.id, fl.tuple.Src, be.ip, be.port, c.now)
	}
	return be, "maglev on the client address, affinity recorded"
}

// rewrite translates a packet of a tracked flow so that it looks like the
// inverse of the other direction's tuple (the kernel's nf_nat rule):
// source = other.Dst:DstPort, destination = other.Src:SrcPort. Checksums
// are patched incrementally (RFC 1624): the IPv4 header's, and the TCP or
// UDP checksum, which covers the addresses through the pseudo-header and
// the ports directly. A partial checksum (GSO super-frame, virtio
// NEEDS_CSUM) holds only the pseudo-header sum, uncomplemented: it takes
// the address change without complement and no port change (the ports
// are summed when the checksum is completed). A UDP checksum of 0 means
// none and stays 0.
func (c *frameCtx) rewrite(f []byte, other *conntrack.Tuple) {
	fl := &c.flow
	ip := packet.IPv4(f[packet.EthHdrLen:])
	l4 := f[fl.l4Off:]
	csumOff := packet.TCPOffChecksum
	if fl.tuple.Proto == packet.IPProtoUDP {
		csumOff = packet.UDPOffChecksum
	}
	ipSum := ip.Checksum()
	l4Sum := binary.BigEndian.Uint16(l4[csumOff:])
	noL4Sum := fl.tuple.Proto == packet.IPProtoUDP && l4Sum == 0 && !c.partial
	newSrc, newDst := other.Dst, other.Src
	if newSrc != fl.tuple.Src {
		ipSum, l4Sum = patchAddr(ipSum, l4Sum, fl.tuple.Src, newSrc, c.partial)
		binary.BigEndian.PutUint32(ip[packet.IPv4OffSrc:], newSrc)
	}
	if newDst != fl.tuple.Dst {
		ipSum, l4Sum = patchAddr(ipSum, l4Sum, fl.tuple.Dst, newDst, c.partial)
		binary.BigEndian.PutUint32(ip[packet.IPv4OffDst:], newDst)
	}
	if p := other.DstPort; p != fl.tuple.SrcPort {
		if !c.partial {
			l4Sum = packet.UpdateChecksum16(l4Sum, fl.tuple.SrcPort, p)
		}
		binary.BigEndian.PutUint16(l4[0:2], p)
	}
	if p := other.SrcPort; p != fl.tuple.DstPort {
		if !c.partial {
			l4Sum = packet.UpdateChecksum16(l4Sum, fl.tuple.DstPort, p)
		}
		binary.BigEndian.PutUint16(l4[2:4], p)
	}
	ip.SetChecksum(ipSum)
	switch {
	case noL4Sum:
		l4Sum = 0
	case l4Sum == 0 && fl.tuple.Proto == packet.IPProtoUDP && !c.partial:
		l4Sum = 0xffff // RFC 768: a computed 0 is sent as all ones
	}
	binary.BigEndian.PutUint16(l4[csumOff:], l4Sum)
}

// patchAddr updates the IPv4 header checksum and the L4 checksum for an
// address changed from old to new. partial: the L4 field is an
// uncomplemented pseudo-header sum, so it is updated as a sum.
func patchAddr(ipSum, l4Sum uint16, old, new uint32, partial bool) (uint16, uint16) {
	var o, n [4]byte
	binary.BigEndian.PutUint32(o[:], old)
	binary.BigEndian.PutUint32(n[:], new)
	ipSum = packet.UpdateChecksum32(ipSum, o, n)
	if partial {
		l4Sum = ^packet.UpdateChecksum32(^l4Sum, o, n)
	} else {
		l4Sum = packet.UpdateChecksum32(l4Sum, o, n)
	}
	return ipSum, l4Sum
}
