package outerframe

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// flow describes an inner frame for tests.
type flow struct {
	srcMAC, dstMAC packet.MAC
	src, dst       [4]byte
	proto          layers.IPProtocol // TCP or UDP; anything else is sent as raw IP payload
	sport, dport   uint16
	payloadLen     int
	ttl            uint8
	id             uint16
}

var (
	macA = packet.MAC{0x02, 0x00, 0x00, 0x00, 0x01, 0x01}
	macB = packet.MAC{0x02, 0x00, 0x00, 0x00, 0x02, 0x01}
	macU = packet.MAC{0x02, 0x99, 0x00, 0x00, 0x00, 0x01}
	macV = packet.MAC{0x02, 0x99, 0x00, 0x00, 0x00, 0x02}

	underA = [4]byte{10, 99, 0, 1}
	underB = [4]byte{10, 99, 0, 2}
)

func defaultFlow() flow {
	return flow{
		srcMAC: macA, dstMAC: macB,
		src: [4]byte{10, 244, 1, 3}, dst: [4]byte{10, 244, 2, 3},
		proto: layers.IPProtocolUDP, sport: 40000, dport: 5201,
		payloadLen: 22, ttl: 64,
	}
}

// serialize builds the inner frame of f with gopacket.
func (f flow) serialize(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(f.srcMAC[:]), DstMAC: net.HardwareAddr(f.dstMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: f.ttl, Id: f.id, Protocol: f.proto,
		SrcIP: net.IP(f.src[:]), DstIP: net.IP(f.dst[:])}
	payload := make([]byte, f.payloadLen)
	for i := range payload {
		payload[i] = byte(i*7 + 1)
	}
	ls := []gopacket.SerializableLayer{eth, ip}
	switch f.proto {
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.sport), DstPort: layers.UDPPort(f.dport)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, udp)
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.sport), DstPort: layers.TCPPort(f.dport), ACK: true, Window: 512, Seq: 1000}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, tcp)
	}
	ls = append(ls, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize inner frame: %v", err)
	}
	return buf.Bytes()
}

// withHeadroom returns a buffer holding frame at offset off, and off.
func withHeadroom(frame []byte, off int) ([]byte, int) {
	buf := make([]byte, off+len(frame))
	copy(buf[off:], frame)
	return buf, off
}

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
	inner := f.serialize(t)
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
