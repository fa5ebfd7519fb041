package vswitch

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/packet"
)

// A node with subnet 10.244.1.0/24: host port 1 (.2), pods on ports 3 and 4
// (.3, .4), the overlay on port 100, and a peer node owning 10.244.2.0/24.
var (
	routerMAC = packet.MAC{0x02, 0xaa, 0, 0, 0, 0x01}
	hostMAC   = packet.MAC{0x02, 0, 0, 0, 1, 2}
	podAMAC   = packet.MAC{0x02, 0, 0, 0, 1, 3}
	podBMAC   = packet.MAC{0x02, 0, 0, 0, 1, 4}
	peerMAC   = packet.MAC{0x02, 0xaa, 0, 0, 0, 0x02}
	otherMAC  = packet.MAC{0x02, 0, 0, 0, 9, 9}

	subnet     = netip.MustParsePrefix("10.244.1.0/24")
	gwIP       = netip.MustParseAddr("10.244.1.1")
	hostIP     = netip.MustParseAddr("10.244.1.2")
	podAIP     = netip.MustParseAddr("10.244.1.3")
	podBIP     = netip.MustParseAddr("10.244.1.4")
	peerSubnet = netip.MustParsePrefix("10.244.2.0/24")
	peerPodIP  = netip.MustParseAddr("10.244.2.7")
	peerAddr   = netip.MustParseAddr("192.168.0.2")
)

const (
	portHost    PortID = 1
	portA       PortID = 3
	portB       PortID = 4
	portOverlay PortID = 100

	bufCap = 2048
)

func newTestSwitch(t testing.TB, mod func(*Config)) *Switch {
	t.Helper()
	cfg := Config{RouterMAC: routerMAC, Subnet: subnet}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range []PortConfig{
		{ID: portHost, Kind: PortHost, MAC: hostMAC, IPv4: hostIP},
		{ID: portA, Kind: PortPod, MAC: podAMAC, IPv4: podAIP},
		{ID: portB, Kind: PortPod, MAC: podBMAC, IPv4: podBIP},
		{ID: portOverlay, Kind: PortOverlay},
	} {
		if err := s.AddPort(pc); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetRoutes([]Route{{Prefix: peerSubnet, Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// withCap copies b into a buffer of capacity bufCap, as frames in the
// node's batches are.
func withCap(b []byte) []byte {
	buf := make([]byte, len(b), max(bufCap, len(b)))
	copy(buf, b)
	return buf
}

func ethFrame(dst, src packet.MAC, et uint16, payload []byte) []byte {
	b := make([]byte, packet.EthHdrLen+len(payload), max(bufCap, packet.EthHdrLen+len(payload)))
	packet.PutEth(b, dst, src, et)
	copy(b[packet.EthHdrLen:], payload)
	return b
}

// ipv4Packet builds an IPv4 packet with a correct header checksum around l4.
func ipv4Packet(src, dst netip.Addr, proto, ttl uint8, df bool, l4 []byte) []byte {
	b := make([]byte, packet.IPv4MinHdrLen+len(l4))
	packet.PutIPv4(b, uint16(len(b)), 0x1234, df, ttl, proto, src.As4(), dst.As4())
	copy(b[packet.IPv4MinHdrLen:], l4)
	return b
}

// udpPayload is a UDP header (ports 1000 -> 2000, checksum 0) and n data bytes.
func udpPayload(n int) []byte {
	b := make([]byte, packet.UDPHdrLen+n)
	packet.PutUDP(b, 1000, 2000, uint16(len(b)))
	for i := range n {
		b[packet.UDPHdrLen+i] = byte(i)
	}
	return b
}

func icmpEcho(typ uint8, n int) []byte {
	b := make([]byte, packet.ICMPHdrLen+n)
	packet.PutICMPHeader(b, typ, 0, 0x00420001)
	for i := range n {
		b[packet.ICMPHdrLen+i] = byte(i)
	}
	packet.SetICMPChecksum(b)
	return b
}

func udpFrame(dst, src packet.MAC, srcIP, dstIP netip.Addr, ttl uint8, n int) []byte {
	return ethFrame(dst, src, packet.EtherTypeIPv4, ipv4Packet(srcIP, dstIP, packet.IPProtoUDP, ttl, true, udpPayload(n)))
}

func arpFrame(ethDst packet.MAC, op uint16, sha packet.MAC, spa netip.Addr, tha packet.MAC, tpa netip.Addr) []byte {
	a := make([]byte, packet.ARPLen)
	packet.PutARP(a, op, sha, spa.As4(), tha, tpa.As4())
	return ethFrame(ethDst, sha, packet.EtherTypeARP, a)
}

func ipv6Frame(dst, src packet.MAC, n int) []byte {
	p := make([]byte, packet.IPv6HdrLen+n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[packet.IPv6OffPayloadLen:], uint16(n))
	p[packet.IPv6OffNextHeader] = packet.IPProtoUDP
	p[packet.IPv6OffHopLimit] = 64
	p[packet.IPv6OffSrc] = 0xfe
	p[packet.IPv6OffSrc+1] = 0x80
	p[packet.IPv6OffDst] = 0xfe
	p[packet.IPv6OffDst+1] = 0x80
	return ethFrame(dst, src, packet.EtherTypeIPv6, p)
}

// process runs one frame and returns its verdict and the frame as it leaves.
func process(s *Switch, f []byte, in PortID, now int64) (Verdict, []byte) {
	frames := [][]byte{f}
	out := make([]Verdict, 1)
	s.Process(frames, in, out, now)
	return out[0], frames[0]
}

const sec = int64(1e9)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
