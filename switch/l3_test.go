package vswitch

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/packet"
)

// sum16 is the RFC 1071 reference loop, independent of packet.Checksum.
func sum16(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

type decoded struct {
	eth  *layers.Ethernet
	ip   *layers.IPv4
	icmp *layers.ICMPv4
	arp  *layers.ARP
}

// decode parses a frame with gopacket and checks the IPv4 header checksum
// and (for ICMP) the ICMP checksum over the whole message.
func decode(t *testing.T, f []byte) decoded {
	t.Helper()
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v\n% x", el.Error(), f)
	}
	var d decoded
	d.eth, _ = p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	d.arp, _ = p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if d.ip, _ = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); d.ip != nil {
		hdr := f[14 : 14+int(d.ip.IHL)*4]
		if sum16(hdr) != 0xffff {
			t.Errorf("IPv4 header checksum wrong: % x", hdr)
		}
		if int(d.ip.Length) != len(f)-14 {
			t.Errorf("IP total length %d, frame carries %d", d.ip.Length, len(f)-14)
		}
	}
	if d.icmp, _ = p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); d.icmp != nil {
		msg := f[14+int(d.ip.IHL)*4:]
		if sum16(msg) != 0xffff {
			t.Errorf("ICMP checksum wrong: % x", msg)
		}
	}
	return d
}

func TestRouteToPeer(t *testing.T) {
	s := newTestSwitch(t, nil)
	in := udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 64, 100)
	orig := slices.Clone(in)
	v, out := process(s, in, portA, sec)
	if v != (Verdict{Action: ActionEncap, Peer: peerAddr}) {
		t.Fatalf("verdict %+v", v)
	}
	d := decode(t, out)
	if !bytes.Equal(d.eth.DstMAC, peerMAC[:]) || !bytes.Equal(d.eth.SrcMAC, routerMAC[:]) {
		t.Errorf("MACs %s > %s", d.eth.SrcMAC, d.eth.DstMAC)
	}
	if d.ip.TTL != 63 {
		t.Errorf("TTL %d want 63", d.ip.TTL)
	}
	// Everything after the IP header is untouched.
	if !bytes.Equal(out[34:], orig[34:]) {
		t.Error("payload changed")
	}
}

func TestRouteFromOverlayToLocalPod(t *testing.T) {
	s := newTestSwitch(t, nil)
	in := udpFrame(routerMAC, peerMAC, peerPodIP, podAIP, 17, 100)
	v, out := process(s, in, portOverlay, sec)
	if v != (Verdict{Action: ActionDeliver, Port: portA}) {
		t.Fatalf("verdict %+v", v)
	}
	d := decode(t, out)
	if !bytes.Equal(d.eth.DstMAC, podAMAC[:]) || !bytes.Equal(d.eth.SrcMAC, routerMAC[:]) || d.ip.TTL != 16 {
		t.Errorf("got %s > %s ttl %d", d.eth.SrcMAC, d.eth.DstMAC, d.ip.TTL)
	}
	if len(s.FDB()) != 0 {
		t.Errorf("learned from the overlay: %v", s.FDB())
	}
}

func TestRouteCases(t *testing.T) {
	world := netip.MustParseAddr("8.8.8.8")
	tests := []struct {
		name   string
		routes []Route
		f      []byte
		in     PortID
		want   Verdict
		dstMAC packet.MAC
	}{
		{"pod to pod via gateway", nil, udpFrame(routerMAC, podAMAC, podAIP, podBIP, 64, 1), portA, Verdict{Action: ActionDeliver, Port: portB}, podBMAC},
		{"pod to host address", nil, udpFrame(routerMAC, podAMAC, podAIP, hostIP, 64, 1), portA, Verdict{Action: ActionDeliver, Port: portHost}, hostMAC},
		{"host to remote pod", nil, udpFrame(routerMAC, hostMAC, hostIP, peerPodIP, 64, 1), portHost, Verdict{Action: ActionEncap, Peer: peerAddr}, peerMAC},
		{"default via host", []Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Kind: RouteLocal, Via: hostIP}},
			udpFrame(routerMAC, podAMAC, podAIP, world, 64, 1), portA, Verdict{Action: ActionDeliver, Port: portHost}, hostMAC},
		{"/32 host route to a peer", []Route{{Prefix: netip.MustParsePrefix("10.99.0.1/32"), Kind: RoutePeer, Peer: peerAddr, PeerMAC: otherMAC}},
			udpFrame(routerMAC, podAMAC, podAIP, netip.MustParseAddr("10.99.0.1"), 64, 1), portA, Verdict{Action: ActionEncap, Peer: peerAddr}, otherMAC},
		{"overlay to peer is not relayed", nil, udpFrame(routerMAC, peerMAC, peerPodIP, peerPodIP, 64, 1), portOverlay, Verdict{Action: ActionDrop, Reason: DropHairpin}, packet.MAC{}},
		{"to subnet broadcast", nil, udpFrame(routerMAC, podAMAC, podAIP, netip.MustParseAddr("10.244.1.255"), 64, 1), portA, Verdict{Action: ActionDrop, Reason: DropMartian}, packet.MAC{}},
		{"to multicast", nil, udpFrame(routerMAC, podAMAC, podAIP, netip.MustParseAddr("239.1.1.1"), 64, 1), portA, Verdict{Action: ActionDrop, Reason: DropMartian}, packet.MAC{}},
		{"from loopback (host port)", nil, udpFrame(routerMAC, hostMAC, netip.MustParseAddr("127.0.0.1"), podAIP, 64, 1), portHost, Verdict{Action: ActionDrop, Reason: DropMartian}, packet.MAC{}},
		{"UDP to the gateway", nil, udpFrame(routerMAC, podAMAC, podAIP, gwIP, 64, 1), portA, Verdict{Action: ActionDrop, Reason: DropForRouter}, packet.MAC{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			if tc.routes != nil {
				if err := s.SetRoutes(append(tc.routes, Route{Prefix: peerSubnet, Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC})); err != nil {
					t.Fatal(err)
				}
			}
			v, out := process(s, withCap(tc.f), tc.in, sec)
			if v != tc.want {
				t.Fatalf("verdict %+v want %+v", v, tc.want)
			}
			if v.Action == ActionDrop {
				return
			}
			d := decode(t, out)
			if !bytes.Equal(d.eth.DstMAC, tc.dstMAC[:]) || !bytes.Equal(d.eth.SrcMAC, routerMAC[:]) || d.ip.TTL != 63 {
				t.Errorf("got %s > %s ttl %d", d.eth.SrcMAC, d.eth.DstMAC, d.ip.TTL)
			}
		})
	}
}

func TestTTLDecrementKeepsChecksumForEveryTTL(t *testing.T) {
	s := newTestSwitch(t, nil)
	for ttl := 2; ttl <= 255; ttl++ {
		f := udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, uint8(ttl), ttl%7)
		f[14+1] = byte(ttl * 3) // vary TOS so the checksum varies
		packet.IPv4(f[14:]).ComputeChecksum()
		v, out := process(s, f, portA, sec)
		if v.Action != ActionEncap {
			t.Fatalf("ttl %d: %+v", ttl, v)
		}
		ip := out[14:34]
		if ip[8] != byte(ttl-1) || sum16(ip) != 0xffff {
			t.Fatalf("ttl %d: header % x", ttl, ip)
		}
	}
}

func TestARPReplyBytes(t *testing.T) {
	s := newTestSwitch(t, nil)
	req := arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP)
	req = append(req, make([]byte, 18)...) // padded to 60 bytes, as on a wire
	v, out := process(s, req, portA, sec)
	if v != (Verdict{Action: ActionDeliver, Port: portA, Reply: true}) {
		t.Fatalf("verdict %+v", v)
	}
	want := []byte{
		0x02, 0, 0, 0, 1, 3, // eth dst: pod A
		0x02, 0xaa, 0, 0, 0, 1, // eth src: router
		0x08, 0x06, // ARP
		0, 1, 0x08, 0, 6, 4, 0, 2, // ethernet/IPv4, reply
		0x02, 0xaa, 0, 0, 0, 1, 10, 244, 1, 1, // sender: router MAC, gateway
		0x02, 0, 0, 0, 1, 3, 10, 244, 1, 3, // target: pod A
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("reply\n got % x\nwant % x", out, want)
	}
	d := decode(t, out)
	if d.arp == nil || d.arp.Operation != layers.ARPReply {
		t.Fatalf("gopacket: %+v", d.arp)
	}
	if c := s.Counters(); c.ARPReplies != 1 || c.TotalDrops() != 0 {
		t.Errorf("counters: replies %d drops %d", c.ARPReplies, c.TotalDrops())
	}

	// ARP for any other address is switched, not answered.
	v, _ = process(s, arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, podBIP), portA, sec)
	if v.Action != ActionFlood || v.Reply {
		t.Errorf("ARP for a pod: %+v", v)
	}
	// A unicast refresh to the router MAC is answered too.
	v, _ = process(s, arpFrame(routerMAC, packet.ARPOpRequest, podAMAC, podAIP, routerMAC, gwIP), portA, sec)
	if v.Action != ActionDeliver || !v.Reply {
		t.Errorf("unicast ARP for the gateway: %+v", v)
	}
}

type icmpCase struct {
	name     string
	f        []byte
	in       PortID
	typ      uint8
	code     uint8
	mtu      uint16
	reason   DropReason
	wantVerd Verdict
	ethDst   packet.MAC
}

func TestICMPErrors(t *testing.T) {
	big := ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, ipv4Packet(podAIP, peerPodIP, packet.IPProtoUDP, 64, true, udpPayload(1500)))
	bigNoDF := ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, ipv4Packet(podAIP, peerPodIP, packet.IPProtoUDP, 64, false, udpPayload(1500)))
	withOpts := func() []byte {
		// 24-byte header (one NOP-padded option word) and TTL 1.
		p := make([]byte, 24+8+4)
		packet.PutIPv4(p, uint16(len(p)), 7, false, 1, packet.IPProtoUDP, podAIP.As4(), peerPodIP.As4())
		p[0] = 0x46
		copy(p[20:24], []byte{1, 1, 1, 0})
		packet.PutUDP(p[24:], 1, 2, 12)
		packet.IPv4(p).ComputeChecksum()
		return ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, p)
	}()
	tests := []icmpCase{
		{name: "ttl expired", f: udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 1, 100), in: portA,
			typ: packet.ICMPTimeExceeded, code: 0, reason: DropTTLExpired, wantVerd: Verdict{Action: ActionDeliver, Port: portA}, ethDst: podAMAC},
		{name: "ttl 0", f: udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 0, 100), in: portA,
			typ: packet.ICMPTimeExceeded, code: 0, reason: DropTTLExpired, wantVerd: Verdict{Action: ActionDeliver, Port: portA}, ethDst: podAMAC},
		{name: "ttl expired with options", f: withOpts, in: portA,
			typ: packet.ICMPTimeExceeded, code: 0, reason: DropTTLExpired, wantVerd: Verdict{Action: ActionDeliver, Port: portA}, ethDst: podAMAC},
		{name: "no route", f: udpFrame(routerMAC, podAMAC, podAIP, netip.MustParseAddr("8.8.8.8"), 64, 3), in: portA,
			typ: packet.ICMPDestUnreachable, code: packet.ICMPCodeNetUnreach, reason: DropNoRoute, wantVerd: Verdict{Action: ActionDeliver, Port: portA}, ethDst: podAMAC},
		{name: "frag needed to peer", f: big, in: portA,
			typ: packet.ICMPDestUnreachable, code: packet.ICMPCodeFragNeeded, mtu: 1450, reason: DropFragNeeded, wantVerd: Verdict{Action: ActionDeliver, Port: portA}, ethDst: podAMAC},
		{name: "ttl expired from overlay goes back to the peer", f: udpFrame(routerMAC, peerMAC, peerPodIP, podAIP, 1, 10), in: portOverlay,
			typ: packet.ICMPTimeExceeded, code: 0, reason: DropTTLExpired, wantVerd: Verdict{Action: ActionEncap, Peer: peerAddr}, ethDst: peerMAC},
		{name: "frag needed from host", f: func() []byte {
			f := withCap(big)
			copy(f[6:12], hostMAC[:])
			ip := packet.IPv4(f[14:])
			ip.SetSrc4(hostIP.As4())
			ip.ComputeChecksum()
			return f
		}(), in: portHost,
			typ: packet.ICMPDestUnreachable, code: packet.ICMPCodeFragNeeded, mtu: 1450, reason: DropFragNeeded, wantVerd: Verdict{Action: ActionDeliver, Port: portHost}, ethDst: hostMAC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			orig := slices.Clone(tc.f)
			v, out := process(s, withCap(tc.f), tc.in, sec)
			want := tc.wantVerd
			want.Reason, want.Reply = tc.reason, true
			if v != want {
				t.Fatalf("verdict %+v want %+v", v, want)
			}
			checkICMPError(t, out, orig, tc)
			c := s.Counters()
			if c.ICMPErrors != 1 || c.Drops[tc.reason] != 1 || c.TotalDrops() != 1 {
				t.Errorf("counters: errors %d, %s %d, total drops %d", c.ICMPErrors, tc.reason, c.Drops[tc.reason], c.TotalDrops())
			}
		})
	}
	t.Run("too big without DF", func(t *testing.T) {
		s := newTestSwitch(t, nil)
		if v, _ := process(s, withCap(bigNoDF), portA, sec); v.Action != ActionDrop || v.Reason != DropTooBig {
			t.Errorf("verdict %+v", v)
		}
	})
}

func checkICMPError(t *testing.T, out, orig []byte, tc icmpCase) {
	t.Helper()
	d := decode(t, out)
	if d.icmp == nil {
		t.Fatalf("no ICMP layer in % x", out)
	}
	if !bytes.Equal(d.eth.DstMAC, tc.ethDst[:]) || !bytes.Equal(d.eth.SrcMAC, routerMAC[:]) {
		t.Errorf("eth %s > %s", d.eth.SrcMAC, d.eth.DstMAC)
	}
	origIP := packet.IPv4(orig[14:])
	if !d.ip.SrcIP.Equal(net.IP(gwIP.AsSlice())) || !d.ip.DstIP.Equal(net.IP(origIP.Src().AsSlice())) {
		t.Errorf("ip %s > %s", d.ip.SrcIP, d.ip.DstIP)
	}
	if d.ip.Protocol != layers.IPProtocolICMPv4 || d.ip.TTL != 64 || d.ip.Flags&layers.IPv4MoreFragments != 0 {
		t.Errorf("ip header %+v", d.ip)
	}
	if d.icmp.TypeCode.Type() != tc.typ || d.icmp.TypeCode.Code() != tc.code {
		t.Errorf("type/code %s", d.icmp.TypeCode)
	}
	if d.icmp.Seq != tc.mtu || (tc.mtu == 0 && d.icmp.Id != 0) {
		t.Errorf("rest of header id %d seq %d, want next-hop MTU %d", d.icmp.Id, d.icmp.Seq, tc.mtu)
	}
	quote := origIP[:origIP.HeaderLen()+8]
	if !bytes.Equal(d.icmp.Payload, quote) {
		t.Errorf("quote\n got % x\nwant % x", d.icmp.Payload, quote)
	}
}

func TestNoICMPErrorAbout(t *testing.T) {
	icmpErr := ipv4Packet(podAIP, peerPodIP, packet.IPProtoICMP, 1, false, func() []byte {
		b := make([]byte, 8+28)
		packet.PutICMPHeader(b, packet.ICMPDestUnreachable, 1, 0)
		return b
	}())
	echo := ipv4Packet(podAIP, peerPodIP, packet.IPProtoICMP, 1, false, icmpEcho(packet.ICMPEchoRequest, 8))
	laterFrag := ipv4Packet(podAIP, peerPodIP, packet.IPProtoUDP, 1, false, make([]byte, 16))
	binary.BigEndian.PutUint16(laterFrag[6:], 0x2000|10) // MF, offset 80
	packet.IPv4(laterFrag).ComputeChecksum()
	firstFrag := ipv4Packet(podAIP, peerPodIP, packet.IPProtoUDP, 1, false, make([]byte, 16))
	binary.BigEndian.PutUint16(firstFrag[6:], 0x2000) // MF, offset 0
	packet.IPv4(firstFrag).ComputeChecksum()
	tests := []struct {
		name    string
		ip      []byte
		in      PortID
		src     packet.MAC
		answers bool
		reason  DropReason
	}{
		{"about an ICMP error", icmpErr, portA, podAMAC, false, DropTTLExpired},
		{"about an echo request", echo, portA, podAMAC, true, DropTTLExpired},
		{"about a later fragment", laterFrag, portA, podAMAC, false, DropTTLExpired},
		{"about a first fragment", firstFrag, portA, podAMAC, true, DropTTLExpired},
		{"from 0.0.0.0 (host port)", ipv4Packet(netip.IPv4Unspecified(), peerPodIP, packet.IPProtoUDP, 1, false, udpPayload(0)), portHost, hostMAC, false, DropMartian},
		{"from a source with no route back (overlay)", ipv4Packet(netip.MustParseAddr("10.9.9.9"), podAIP, packet.IPProtoUDP, 1, false, udpPayload(0)), portOverlay, peerMAC, false, DropTTLExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			v, _ := process(s, ethFrame(routerMAC, tc.src, packet.EtherTypeIPv4, tc.ip), tc.in, sec)
			if v.Reply != tc.answers || v.Reason != tc.reason {
				t.Errorf("verdict %+v, want reply=%v reason %s", v, tc.answers, tc.reason)
			}
			if c := s.Counters(); c.Drops[tc.reason] != 1 || (c.ICMPErrors == 1) != tc.answers {
				t.Errorf("counters %s=%d icmp errors=%d", tc.reason, c.Drops[tc.reason], c.ICMPErrors)
			}
		})
	}
}

func TestICMPNoRoomInBuffer(t *testing.T) {
	s := newTestSwitch(t, nil)
	f := udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 1, 8)
	f = f[:len(f):len(f)] // 50 bytes, the error needs 14+20+8+28 = 70
	if v, _ := process(s, f, portA, sec); v.Action != ActionDrop || v.Reason != DropNoRoom {
		t.Errorf("verdict %+v", v)
	}
}

func TestICMPRateLimit(t *testing.T) {
	const rate, burst = 10, 5
	s := newTestSwitch(t, func(c *Config) { c.ICMPRate, c.ICMPBurst = rate, burst })
	expired := udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 1, 8)
	send := func(now int64) Verdict {
		v, _ := process(s, withCap(expired), portA, now)
		return v
	}
	now := 100 * sec
	for i := range burst {
		if v := send(now); !v.Reply {
			t.Fatalf("burst frame %d: %+v", i, v)
		}
	}
	if v := send(now); v.Action != ActionDrop || v.Reason != DropICMPRateLimited {
		t.Fatalf("over the burst: %+v", v)
	}
	// One token every 100 ms.
	if v := send(now + sec/rate - 1); v.Reply {
		t.Fatalf("before the next token: %+v", v)
	}
	if v := send(now + sec/rate); !v.Reply {
		t.Fatalf("at the next token: %+v", v)
	}
	// A second worth of quiet refills only up to the burst.
	now += 10 * sec
	n := 0
	for range 3 * burst {
		if send(now).Reply {
			n++
		}
	}
	if n != burst {
		t.Errorf("after a long pause %d errors, want the burst %d", n, burst)
	}
	if c := s.Counters(); c.Drops[DropICMPRateLimited] != uint64(1+1+2*burst) {
		t.Errorf("rate-limited counter %d want %d", c.Drops[DropICMPRateLimited], 2+2*burst)
	}
}

func TestNeighbourMissSendsARPAndLearns(t *testing.T) {
	s := newTestSwitch(t, nil)
	ghost := netip.MustParseAddr("10.244.1.50")
	ghostMAC := packet.MAC{0x02, 0, 0, 0, 1, 50}
	toGhost := udpFrame(routerMAC, peerMAC, peerPodIP, ghost, 64, 10)
	v, out := process(s, withCap(toGhost), portOverlay, sec)
	if v != (Verdict{Action: ActionFlood, Port: portOverlay, Reason: DropNeighMiss, Reply: true}) {
		t.Fatalf("verdict %+v", v)
	}
	d := decode(t, out)
	if d.arp == nil || d.arp.Operation != layers.ARPRequest || !bytes.Equal(d.eth.DstMAC, bcast[:]) ||
		!bytes.Equal(d.arp.SourceHwAddress, routerMAC[:]) || !bytes.Equal(d.arp.SourceProtAddress, gwIP.AsSlice()) ||
		!bytes.Equal(d.arp.DstProtAddress, ghost.AsSlice()) {
		t.Fatalf("ARP request % x", out)
	}
	// The ghost (behind the host port, not anti-spoofed) answers the router.
	v, _ = process(s, arpFrame(routerMAC, packet.ARPOpReply, ghostMAC, ghost, routerMAC, gwIP), portHost, 2*sec)
	if v.Action != ActionDrop || v.Reason != DropForRouter {
		t.Fatalf("ARP reply to the router: %+v", v)
	}
	v, out = process(s, withCap(toGhost), portOverlay, 3*sec)
	if v != (Verdict{Action: ActionDeliver, Port: portHost}) {
		t.Fatalf("after learning: %+v", v)
	}
	if d := decode(t, out); !bytes.Equal(d.eth.DstMAC, ghostMAC[:]) {
		t.Errorf("dst MAC %s", d.eth.DstMAC)
	}
	ns := s.Neighbours()
	if i := slices.IndexFunc(ns, func(n Neighbour) bool { return n.IP == ghost }); i < 0 || ns[i].Static || ns[i].Port != portHost {
		t.Errorf("neighbours %+v", ns)
	}
	c := s.Counters()
	if c.ARPRequests != 1 || c.Drops[DropNeighMiss] != 1 || c.NeighLearned != 1 {
		t.Errorf("counters %+v", c)
	}
	// Learned neighbours age out; static ones stay.
	s.Expire(3*sec + int64(DefaultNeighMaxAge))
	if v, _ := process(s, withCap(toGhost), portOverlay, 400*sec); v.Reason != DropNeighMiss {
		t.Errorf("after aging: %+v", v)
	}
	if v, _ := process(s, udpFrame(routerMAC, peerMAC, peerPodIP, podAIP, 64, 1), portOverlay, 400*sec); v.Action != ActionDeliver {
		t.Errorf("static neighbour after aging: %+v", v)
	}
}

func TestEchoReplyFromGateway(t *testing.T) {
	tests := []struct {
		name   string
		in     PortID
		src    packet.MAC
		srcIP  netip.Addr
		want   Verdict
		ethDst packet.MAC
	}{
		{"from a pod", portA, podAMAC, podAIP, Verdict{Action: ActionDeliver, Port: portA, Reply: true}, podAMAC},
		{"from a remote pod", portOverlay, peerMAC, peerPodIP, Verdict{Action: ActionEncap, Peer: peerAddr, Reply: true}, peerMAC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			req := ethFrame(routerMAC, tc.src, packet.EtherTypeIPv4, ipv4Packet(tc.srcIP, gwIP, packet.IPProtoICMP, 5, false, icmpEcho(packet.ICMPEchoRequest, 56)))
			v, out := process(s, req, tc.in, sec)
			if v != tc.want {
				t.Fatalf("verdict %+v want %+v", v, tc.want)
			}
			d := decode(t, out)
			if d.icmp == nil || d.icmp.TypeCode.Type() != layers.ICMPv4TypeEchoReply || d.icmp.Id != 0x42 || d.icmp.Seq != 1 {
				t.Fatalf("reply %+v", d.icmp)
			}
			if !d.ip.SrcIP.Equal(gwIP.AsSlice()) || !d.ip.DstIP.Equal(tc.srcIP.AsSlice()) || !bytes.Equal(d.eth.DstMAC, tc.ethDst[:]) {
				t.Errorf("addresses %s > %s, %s", d.ip.SrcIP, d.ip.DstIP, d.eth.DstMAC)
			}
			if c := s.Counters(); c.EchoReplies != 1 || c.TotalDrops() != 0 {
				t.Errorf("counters %+v", c)
			}
		})
	}
}

func TestGSOLengthForMTU(t *testing.T) {
	s := newTestSwitch(t, nil)
	// A 9,000-byte super-packet whose segments are 1,400 bytes passes...
	f := ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, ipv4Packet(podAIP, peerPodIP, packet.IPProtoUDP, 64, true, udpPayload(9000)))
	frames := [][]byte{f, withCap(f)}
	out := make([]Verdict, 2)
	s.ProcessGSO(frames, []uint16{1400, 1451}, portA, out, sec)
	if out[0].Action != ActionEncap {
		t.Errorf("segments within MTU: %+v", out[0])
	}
	// ...one with 1,451-byte segments needs fragmentation.
	if out[1].Reason != DropFragNeeded || !out[1].Reply {
		t.Errorf("segments over MTU: %+v", out[1])
	}
}

func TestHeaderChecksumOKMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for i := range 20000 {
		h := make([]byte, 24)
		for j := range h {
			h[j] = byte(r.Uint32())
		}
		h[0] = 0x45
		if i%4 == 0 {
			h[0] = 0x46
		}
		ip := packet.IPv4(h)
		if i%2 == 0 {
			ip.ComputeChecksum()
		}
		if got, want := headerChecksumOK(ip), sum16(h[:ip.HeaderLen()]) == 0xffff; got != want {
			t.Fatalf("% x: got %v want %v", h, got, want)
		}
	}
}
