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
	if !fl.tracked || !fl.svcEnd {
		return true // no frontend or backend: nothing to translate or recover
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
		return c.untrackedToOrFromBackend(*fp, v)
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
	switch {
	case be.ip == fl.tuple.Src:
		reply.Dst = ip4Key(c.s.gw4) // hairpin: masquerade to the gateway
		why += ", hairpin: source NAT to the gateway"
	case c.hostHairpin(be.ip):
		reply.Dst = ip4Key(c.s.gw4)
		why += ", from the node to a backend behind the node: source NAT to the gateway"
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

// hostHairpin reports whether a new service flow from the host port's own
// address (the node: kubelet, hostNetwork pods) to backend be would go
// straight back out through the host port: a backend the node's stack
// reaches itself (outside the cluster CIDR, routed via the host port: the
// API server of the kubernetes Service, a hostNetwork pod's node
// address). The node's stack drops a packet that comes in on weft0 with
// one of its own addresses as source (a martian, fib_validate_source), so
// the flow is masqueraded to the gateway, as a pod's hairpin is; the
// reply, to the gateway, comes back through weft0 and is translated back.
func (c *frameCtx) hostHairpin(be uint32) bool {
	if c.in == nil || c.in.kind != PortHost || c.flow.tuple.Src != c.in.ip4Key {
		return false
	}
	r := c.routes.lookup(be)
	return r != nil && r.kind == RouteLocal && r.hasVia && r.via == c.in.ip4Key
}

// untrackedToOrFromBackend handles a packet of no tracked flow that is
// not to a frontend. Conntrack is not persisted across a weftd restart
// (docs/CONNTRACK.md), so after one a service flow's reply can come
// before its client's next packet: a retransmitted reply, a server push.
// Left alone it would reach the client from the backend's own address and
// the client would reset the connection. recoverReply takes such a packet
// up as its flow's reply when only one frontend can explain it.
//
// The same packet could be the reply of a connection the client opened
// to the backend's pod address directly (kubelet probes from the host
// port, a pod that resolved the pod IP): nothing in the packet tells the
// two apart. So that steady-state direct traffic is never taken for a
// service reply, the first packet of a direct flow from a local client to
// a backend's (address, port, protocol) is tracked without NAT while no
// policy tracks every flow (with policy, its stage inserts the flow); its
// replies then find that flow. Only a direct flow whose backend speaks
// first after a restart can still be mistaken, and only if Maglev would
// have sent that client's service flow to that same backend.
func (c *frameCtx) untrackedToOrFromBackend(f []byte, v *Verdict) bool {
	fl := &c.flow
	t := &fl.tuple
	if c.services.backs.has(frontKey(t.Src, t.SrcPort, t.Proto)) {
		if done, cont := c.recoverReply(f, v); done {
			return cont
		}
	}
	if !c.services.backs.has(frontKey(t.Dst, t.DstPort, t.Proto)) || !c.s.localHost(t.Src) ||
		fl.tcpFlags&packet.TCPFlagRST != 0 || (c.pol != nil && c.pol.Active()) || c.dry {
		return true
	}
	reply := t.Reverse()
	switch err := c.s.ct.Insert(t, &reply, 0, 0, fl.tcpFlags, c.now, &fl.hit); {
	case errors.Is(err, conntrack.ErrFull):
		return c.drop(v, DropCTFull, StageService)
	case err != nil:
		return c.drop(v, DropCTClash, StageService)
	}
	return true
}

// recoverReply reverse-translates a packet from a backend (address, port,
// protocol) that matched no flow, and tracks its flow, when the answer is
// unambiguous; it returns false (nothing done) otherwise. The packet's
// destination must be a client of this node: service NAT happens on the
// client's node, so only that node could have translated the flow. A
// local address is the client itself; the gateway address is a hairpin
// flow's masqueraded source, whose client is the backend itself. TCP SYN
// and RST open nothing (a SYN-ACK's SYN was this node's to see; a stray
// RST is dropped as conntrack_invalid would). Every frontend that lists
// the backend is asked which backend it would pick for the reconstructed
// original tuple (client:port -> cluster IP:port): affinity entry, else
// Maglev, as pickBackend does, the choice being seedless and so the same
// as before the restart. Exactly one frontend answering this backend
// recovers the flow (counted conntrack.reply_recovered); none or more
// than one leave the packet untouched (conntrack.reply_unrecovered).
// done reports that the packet was taken up (cont: as serviceNAT's
// result; false when it was dropped, the table being full).
func (c *frameCtx) recoverReply(f []byte, v *Verdict) (done, cont bool) {
	fl := &c.flow
	t := &fl.tuple
	if fl.tcpFlags&(packet.TCPFlagSYN|packet.TCPFlagRST) != 0 {
		return false, true
	}
	client := t.Dst
	switch {
	case client == ip4Key(c.s.gw4):
		client = t.Src // hairpin: the backend reached itself
	case !c.s.localHost(client):
		return false, true
	}
	var found *frontend
	for _, i := range c.services.byBackend[frontKey(t.Src, t.SrcPort, t.Proto)] {
		fr := &c.services.fronts[i]
		if !c.wouldPick(fr, client, t.DstPort, t.Src, t.SrcPort) {
			continue
		}
		if found != nil {
			found = nil // two frontends could have sent this client here
			break
		}
		found = fr
	}
	if found == nil {
		if !c.dry {
			c.s.ctr.replyUnrecovered.Add(1)
		}
		c.trace(StageService, step{kind: stepSvcReplyUnrecovered})
		return false, true
	}
	orig := conntrack.Tuple{Src: client, Dst: found.vip, SrcPort: t.DstPort, DstPort: found.port, Proto: t.Proto}
	if !c.dry {
		var h conntrack.Hit
		switch err := c.s.ct.Insert(&orig, t, found.id, 0, fl.tcpFlags, c.now, &h); {
		case errors.Is(err, conntrack.ErrFull):
			return true, c.drop(v, DropCTFull, StageService)
		case err != nil || h.Other != *t:
			// Another worker tracked a different flow with these tuples a
			// moment ago: not this packet's to settle.
			c.s.ctr.replyUnrecovered.Add(1)
			return false, true
		}
		c.s.ctr.replyRecovered.Add(1)
		fl.hit = h
	}
	fl.hit.Dir, fl.hit.Other, fl.hit.Service = conntrack.DirReply, orig, found.id
	fl.found = true
	c.trace(StageService, step{kind: stepSvcReplyRecovered, svc: found.id})
	c.rewrite(f, &fl.hit.Other)
	return true, true
}

// wouldPick reports whether a new flow from client:sport to fr would
// now go to backend ip:port (pickBackend without side effects).
func (c *frameCtx) wouldPick(fr *frontend, client uint32, sport uint16, ip uint32, port uint16) bool {
	set := fr.set()
	var be backendVal
	var ok bool
	switch {
	case fr.affinity == 0:
		be, ok = set.pick(flowHash(client, fr.vip, sport, fr.port, fr.proto))
	default:
		if aip, aport, hit := c.s.affinity.lookup(fr.id, client, c.now, fr.affinity, false); hit {
			for _, b := range set.list {
				if b.ip == aip && b.port == aport {
					return aip == ip && aport == port
				}
			}
		}
		be, ok = set.pick(clientHash(client))
	}
	return ok && be.ip == ip && be.port == port
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
	if fl.firstFrag && !c.dry {
		c.s.frags.put(fragKey{src: fl.tuple.Src, dst: fl.tuple.Dst, id: ip.ID(), proto: fl.tuple.Proto}, newSrc, newDst, c.now)
	}
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
