package bench

import (
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/bench/internal/outerframe"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// malformed returns the edge cases and the malformed frames of the mix:
// each is built the normal way and then bent where needed. The cases that
// make the router send an ICMP error or an ARP request stay well inside
// the switch's default burst (50) for two passes, so a warm-up pass and a
// counted pass see the same verdicts.
func (g *gen) malformed() []Frame {
	t := g.t
	a, b := &t.Pods[0], &t.Pods[1]
	pa, pb := &t.Peers[0], &t.Peers[1]
	la := t.localSide(a)
	far := t.remoteSide(pa, 7)
	unknownNeigh := hostIn(t.Subnet, 77)

	drop := func(r vswitch.DropReason) Expect { return Expect{Action: vswitch.ActionDrop, Reason: r} }
	answer := func(r vswitch.DropReason) Expect {
		return Expect{Action: vswitch.ActionDeliver, Port: a.Port, Reply: true, Reason: r}
	}
	udp := func(n int) []gopacket.SerializableLayer {
		return []gopacket.SerializableLayer{&layers.UDP{SrcPort: 5000, DstPort: 6000}, g.payload(n)}
	}
	// routed builds a pod's UDP frame to the router for dst.
	routed := func(dst netip.Addr, ttl uint8, df bool, frameLen int) []byte {
		ip := g.ipv4(a.IP, dst, ttl, layers.IPProtocolUDP, df)
		u := &layers.UDP{SrcPort: 5000, DstPort: 6000}
		_ = u.SetNetworkLayerForChecksum(ip)
		return serialize(eth(t.RouterMAC, a.MAC, layers.EthernetTypeIPv4), ip, u, g.payload(frameLen-udpOverhead))
	}
	l2udp := func(dst packet.MAC) []byte {
		f := g.ipFrame(la, t.localSide(b), "udp", 64, udp(100)...)
		copy(f.Data[0:6], dst[:])
		return f.Data
	}
	// inner builds the inner frame a peer's router would send for a UDP
	// packet from far to dst.
	inner := func(ethDst packet.MAC, dst netip.Addr, ttl uint8) []byte {
		ip := g.ipv4(far.ip, dst, ttl, layers.IPProtocolUDP, true)
		u := &layers.UDP{SrcPort: 5000, DstPort: 6000}
		_ = u.SetNetworkLayerForChecksum(ip)
		return serialize(eth(ethDst, pa.RouterMAC, layers.EthernetTypeIPv4), ip, u, g.payload(100))
	}
	good := inner(t.RouterMAC, a.IP, 63)
	decapDrop := func(r outerframe.DropReason) Expect { return Expect{Underlay: true, DecapDrop: r} }
	overlayDrop := func(r vswitch.DropReason) Expect {
		return Expect{Underlay: true, Action: vswitch.ActionDrop, Reason: r}
	}

	cases := []struct {
		class  Class
		n      int
		data   func() []byte
		expect Expect
	}{
		{ClassUnknownUnicast, 2, func() []byte { return l2udp(packet.MAC{0x02, 0, 0, 0, 0x99, 0x99}) },
			Expect{Action: vswitch.ActionFlood, Port: a.Port}},
		{ClassHairpin, 1, func() []byte { return l2udp(a.MAC) }, drop(vswitch.DropHairpin)},
		{ClassTTLExpired, 2, func() []byte { return routed(hostIn(pb.Subnet, 5), 1, true, 100) }, answer(vswitch.DropTTLExpired)},
		{ClassNoRoute, 2, func() []byte { return routed(netip.MustParseAddr("8.8.8.8"), 64, true, 80) }, answer(vswitch.DropNoRoute)},
		{ClassFragNeeded, 2, func() []byte { return routed(hostIn(pb.Subnet, 5), 64, true, 1514) }, answer(vswitch.DropFragNeeded)},
		{ClassTooBig, 1, func() []byte { return routed(hostIn(pb.Subnet, 5), 64, false, 1514) }, drop(vswitch.DropTooBig)},
		{ClassNeighMiss, 2, func() []byte { return routed(unknownNeigh, 64, true, 80) },
			Expect{Action: vswitch.ActionFlood, Port: a.Port, Reply: true, Reason: vswitch.DropNeighMiss}},
		{ClassIPv6ToRouter, 1, func() []byte {
			ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
				SrcIP: netip.MustParseAddr("fd00::3").AsSlice(), DstIP: netip.MustParseAddr("fd00::1").AsSlice()}
			u := &layers.UDP{SrcPort: 5000, DstPort: 6000}
			_ = u.SetNetworkLayerForChecksum(ip6)
			return serialize(eth(t.RouterMAC, a.MAC, layers.EthernetTypeIPv6), ip6, u, g.payload(40))
		}, drop(vswitch.DropPodIPv6)}, // a pod's IPv6 stops at ingress
		{ClassMartian, 1, func() []byte { return routed(hostIn(t.Subnet, 255), 64, true, 80) }, drop(vswitch.DropMartian)},

		{ClassRunt, 2, func() []byte { return g.payload(10) }, drop(vswitch.DropTooShort)},
		{ClassTruncatedIPv4, 1, func() []byte { return l2udp(b.MAC)[:packet.EthHdrLen+10] }, drop(vswitch.DropTooShort)},
		{ClassBadIPVersion, 1, func() []byte {
			f := l2udp(b.MAC)
			f[packet.EthHdrLen] = 0x65
			return f
		}, drop(vswitch.DropBadIPv4)},
		{ClassBadIPChecksum, 2, func() []byte {
			f := routed(hostIn(pb.Subnet, 5), 64, true, 200)
			f[packet.EthHdrLen+packet.IPv4OffChecksum] ^= 0x5a
			return f
		}, drop(vswitch.DropBadIPv4)},
		{ClassVLAN, 2, func() []byte {
			ip := g.ipv4(a.IP, b.IP, 64, layers.IPProtocolUDP, true)
			u := &layers.UDP{SrcPort: 5000, DstPort: 6000}
			_ = u.SetNetworkLayerForChecksum(ip)
			return serialize(eth(b.MAC, a.MAC, layers.EthernetTypeDot1Q),
				&layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeIPv4}, ip, u, g.payload(60))
		}, drop(vswitch.DropVLAN)},
		{ClassUnknownEthType, 1, func() []byte {
			return serialize(eth(packet.MAC{0x01, 0x80, 0xc2, 0, 0, 0x0e}, a.MAC, layers.EthernetTypeLinkLayerDiscovery), g.payload(46))
		}, drop(vswitch.DropUnknownEtherType)},
		{ClassMulticastSrc, 1, func() []byte {
			f := l2udp(b.MAC)
			copy(f[6:12], []byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb})
			return f
		}, drop(vswitch.DropBadSrcMAC)},
		{ClassSpoofedIP, 2, func() []byte {
			f := l2udp(b.MAC)
			ip := packet.IPv4(f[packet.EthHdrLen:])
			ip.SetSrc4(hostIn(t.Subnet, 99).As4())
			ip.ComputeChecksum()
			return f
		}, drop(vswitch.DropSpoofed)},
		{ClassSpoofedARP, 1, func() []byte {
			return arpFrame(packet.BroadcastMAC, packet.ARPOpRequest, a.MAC, hostIn(t.Subnet, 99), packet.MAC{}, t.Gateway)
		}, drop(vswitch.DropSpoofed)},

		{ClassVXLANWrongVNI, 1, func() []byte { return g.vxlan(pa.Underlay, good, vxlanOpts{vni: t.VNI + 1}) }, decapDrop(outerframe.Decap(overlay.DropWrongVNI))},
		{ClassVXLANUnknownPeer, 1, func() []byte {
			return g.vxlan(netip.MustParseAddr("192.168.1.99"), good, vxlanOpts{})
		}, decapDrop(outerframe.Decap(overlay.DropUnknownPeer))},
		{ClassVXLANBadFlags, 1, func() []byte { return g.vxlan(pa.Underlay, good, vxlanOpts{flags: 0x04}) }, decapDrop(outerframe.Decap(overlay.DropBadFlags))},
		{ClassVXLANReservedBits, 1, func() []byte {
			return g.vxlan(pa.Underlay, good, vxlanOpts{flags: overlay.FlagVNI | 0x80})
		}, decapDrop(outerframe.Decap(overlay.DropReservedBits))},
		{ClassVXLANTruncated, 1, func() []byte { return g.vxlan(pa.Underlay, good[:6], vxlanOpts{}) }, decapDrop(outerframe.Decap(overlay.DropTooShort))},
		{ClassVXLANBadChecksum, 1, func() []byte {
			f := g.vxlan(pa.Underlay, good, vxlanOpts{})
			f[packet.EthHdrLen+packet.IPv4OffChecksum] ^= 0xa5
			return f
		}, decapDrop(outerframe.DropBadChecksum)},
		{ClassVXLANNotVXLAN, 1, func() []byte { return g.vxlan(pa.Underlay, good, vxlanOpts{dstPort: 53}) }, decapDrop(outerframe.DropNotVXLAN)},
		{ClassVXLANFragment, 1, func() []byte { return g.vxlan(pa.Underlay, good, vxlanOpts{fragment: true}) }, decapDrop(outerframe.DropBadOuter)},

		{ClassOverlayNotRouter, 1, func() []byte { return g.vxlan(pa.Underlay, inner(a.MAC, a.IP, 63), vxlanOpts{}) },
			overlayDrop(vswitch.DropOverlayNotRouter)},
		{ClassOverlayARP, 1, func() []byte {
			return g.vxlan(pa.Underlay, arpFrame(t.RouterMAC, packet.ARPOpRequest, pa.RouterMAC, far.ip, packet.MAC{}, t.Gateway), vxlanOpts{})
		}, overlayDrop(vswitch.DropOverlayNotIPv4)},
		{ClassOverlayTTL, 1, func() []byte { return g.vxlan(pa.Underlay, inner(t.RouterMAC, a.IP, 1), vxlanOpts{}) },
			Expect{Underlay: true, Action: vswitch.ActionEncap, Peer: pa.Underlay, Reply: true, Reason: vswitch.DropTTLExpired}},
		{ClassOverlayHairpin, 1, func() []byte {
			return g.vxlan(pa.Underlay, inner(t.RouterMAC, hostIn(pb.Subnet, 5), 63), vxlanOpts{})
		}, overlayDrop(vswitch.DropHairpin)},
		{ClassOverlayNeighMiss, 1, func() []byte {
			return g.vxlan(pa.Underlay, inner(t.RouterMAC, unknownNeigh, 63), vxlanOpts{})
		}, Expect{Underlay: true, Action: vswitch.ActionFlood, Port: t.OverlayPort, Reply: true, Reason: vswitch.DropNeighMiss}},
	}
	var out []Frame
	for _, c := range cases {
		for range c.n {
			out = append(out, Frame{Class: c.class, Data: c.data(), Expect: c.expect})
		}
	}
	return out
}
