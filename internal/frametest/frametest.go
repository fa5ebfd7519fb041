// Package frametest builds the inner Ethernet/IPv4 frames the VXLAN tests
// encapsulate (overlay's and bench's full-frame ones), with gopacket, so
// that the frames under test are not written by the code under test.
package frametest

import (
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/packet"
)

// Flow describes an inner frame.
type Flow struct {
	SrcMAC, DstMAC packet.MAC
	Src, Dst       [4]byte
	Proto          layers.IPProtocol // TCP or UDP; anything else is sent as raw IP payload
	SPort, DPort   uint16
	PayloadLen     int
	TTL            uint8
	ID             uint16
}

// Test addresses: pods' MACs (A, B) and the underlay's (U, V, UnderA,
// UnderB).
var (
	MACA = packet.MAC{0x02, 0x00, 0x00, 0x00, 0x01, 0x01}
	MACB = packet.MAC{0x02, 0x00, 0x00, 0x00, 0x02, 0x01}
	MACU = packet.MAC{0x02, 0x99, 0x00, 0x00, 0x00, 0x01}
	MACV = packet.MAC{0x02, 0x99, 0x00, 0x00, 0x00, 0x02}

	UnderA = [4]byte{10, 99, 0, 1}
	UnderB = [4]byte{10, 99, 0, 2}
)

// DefaultFlow is UDP 10.244.1.3:40000 -> 10.244.2.3:5201 from MACA to
// MACB with 22 payload bytes.
func DefaultFlow() Flow {
	return Flow{
		SrcMAC: MACA, DstMAC: MACB,
		Src: [4]byte{10, 244, 1, 3}, Dst: [4]byte{10, 244, 2, 3},
		Proto: layers.IPProtocolUDP, SPort: 40000, DPort: 5201,
		PayloadLen: 22, TTL: 64,
	}
}

// Serialize builds the frame of f with gopacket.
func (f Flow) Serialize(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(f.SrcMAC[:]), DstMAC: net.HardwareAddr(f.DstMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: f.TTL, Id: f.ID, Protocol: f.Proto,
		SrcIP: net.IP(f.Src[:]), DstIP: net.IP(f.Dst[:])}
	payload := make([]byte, f.PayloadLen)
	for i := range payload {
		payload[i] = byte(i*7 + 1)
	}
	ls := []gopacket.SerializableLayer{eth, ip}
	switch f.Proto {
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.SPort), DstPort: layers.UDPPort(f.DPort)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, udp)
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.SPort), DstPort: layers.TCPPort(f.DPort), ACK: true, Window: 512, Seq: 1000}
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

// WithHeadroom returns a buffer holding frame at offset off, and off.
func WithHeadroom(frame []byte, off int) ([]byte, int) {
	buf := make([]byte, off+len(frame))
	copy(buf[off:], frame)
	return buf, off
}
