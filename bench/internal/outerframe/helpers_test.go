package outerframe

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/internal/frametest"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// The inner frames and addresses of the tests: frametest's.
type flow = frametest.Flow

var (
	defaultFlow  = frametest.DefaultFlow
	withHeadroom = frametest.WithHeadroom

	macA, macB, macU, macV = frametest.MACA, frametest.MACB, frametest.MACU, frametest.MACV
	underA, underB         = frametest.UnderA, frametest.UnderB
)

// testPeers returns a overlay.PeerTable holding peers at underA and underB.
func testPeers(t testing.TB, vni uint32) *overlay.PeerTable {
	t.Helper()
	var pt overlay.PeerTable
	err := pt.Set([]overlay.Peer{
		{Name: "node-a", Underlay: netip.AddrFrom4(underA), RouterMAC: macU, Subnet: netip.MustParsePrefix("10.244.1.0/24"), VNI: vni},
		{Name: "node-b", Underlay: netip.AddrFrom4(underB), RouterMAC: macV, Subnet: netip.MustParsePrefix("10.244.2.0/24"), VNI: vni},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &pt
}

// gopacketOuter serializes the expected full outer frame for inner with
// gopacket: each layer's own encoder, the IPv4 checksum computed by gopacket,
// UDP checksum 0.
func gopacketOuter(t testing.TB, h *OuterIPv4, sport uint16, inner []byte) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	noCsum := gopacket.SerializeOptions{FixLengths: true}
	withCsum := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	ttl := h.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	dport := h.DstPort
	if dport == 0 {
		dport = overlay.DefaultPort
	}
	steps := []struct {
		l    gopacket.SerializableLayer
		opts gopacket.SerializeOptions
	}{
		{gopacket.Payload(inner), noCsum},
		{&layers.VXLAN{ValidIDFlag: true, VNI: h.VNI}, noCsum},
		// UDP with ComputeChecksums would fill in a checksum; VXLAN senders
		// use 0, so it is serialized without.
		{&layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, noCsum},
		{&layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Id: h.ID, Flags: layers.IPv4DontFragment,
			Protocol: layers.IPProtocolUDP, SrcIP: net.IP(h.Src[:]), DstIP: net.IP(h.Dst[:])}, withCsum},
		{&layers.Ethernet{SrcMAC: net.HardwareAddr(h.SrcMAC[:]), DstMAC: net.HardwareAddr(h.DstMAC[:]),
			EthernetType: layers.EthernetTypeIPv4}, noCsum},
	}
	for _, s := range steps {
		if err := s.l.SerializeTo(buf, s.opts); err != nil {
			t.Fatalf("gopacket serialize %T: %v", s.l, err)
		}
	}
	return buf.Bytes()
}

// fullFrame returns a valid full outer frame from underA carrying the
// default inner flow.
func fullFrame(t testing.TB) []byte {
	t.Helper()
	f := defaultFlow()
	inner := f.Serialize(t)
	buf, off := withHeadroom(inner, overlay.OuterIPv4Len)
	start, err := EncapIPv4(buf, off, len(inner), &OuterIPv4{SrcMAC: macU, DstMAC: macV, Src: underA, Dst: underB, VNI: testVNI})
	if err != nil {
		t.Fatal(err)
	}
	return buf[start:]
}

// refixIPv4 recomputes the outer IPv4 header checksum after a test edit.
func refixIPv4(b []byte) []byte {
	packet.IPv4(b[packet.EthHdrLen:]).ComputeChecksum()
	return b
}

// setUDPChecksum fills in a correct UDP checksum over the outer UDP datagram.
func setUDPChecksum(b []byte) []byte {
	ip := packet.IPv4(b[packet.EthHdrLen:])
	udp := ip[ip.HeaderLen():ip.TotalLen()]
	udp[6], udp[7] = 0, 0
	sum := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoUDP, uint16(len(udp)))
	c := ^packet.Fold(packet.Checksum(udp, sum))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return b
}
