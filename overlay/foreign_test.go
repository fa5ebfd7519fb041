package overlay

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/packet"
)

// TestCheckForeignInner: inner TCP/UDP from a foreign peer whose checksum
// does not verify (a Linux sender's CHECKSUM_PARTIAL over a veth) is
// counted in the peer's stats (issue 12 item 9).
func TestCheckForeignInner(t *testing.T) {
	var pt PeerTable
	if err := pt.Set([]Peer{
		{Name: "kernel", Underlay: netip.AddrFrom4(underA), RouterMAC: macU, Subnet: netip.MustParsePrefix("10.244.1.0/24"), VNI: 1, Foreign: true},
		{Name: "weftd", Underlay: netip.AddrFrom4(underB), RouterMAC: macV, Subnet: netip.MustParsePrefix("10.244.2.0/24"), VNI: 1},
	}); err != nil {
		t.Fatal(err)
	}
	foreign, _ := pt.Lookup(underA)
	weftd, _ := pt.Lookup(underB)
	frame := func(proto layers.IPProtocol, edit func(l4 []byte)) []byte {
		f := defaultFlow()
		f.Proto = proto
		b := f.Serialize(t)
		if edit != nil {
			edit(b[packet.EthHdrLen+packet.IPv4MinHdrLen:])
		}
		return b
	}
	// partial leaves only the pseudo-header sum in the checksum field, as
	// an offloading Linux sender does.
	partial := func(off int) func(l4 []byte) {
		return func(l4 []byte) {
			ip := [2][4]byte{{10, 244, 1, 3}, {10, 244, 2, 3}}
			p := packet.Fold(packet.PseudoHeaderSum4(ip[0], ip[1], l4Proto(off), uint16(len(l4))))
			l4[off], l4[off+1] = byte(p>>8), byte(p)
		}
	}
	tests := []struct {
		name  string
		peer  *Peer
		f     []byte
		ok    bool
		count uint64
	}{
		{"TCP, good", foreign, frame(layers.IPProtocolTCP, nil), true, 0},
		{"UDP, good", foreign, frame(layers.IPProtocolUDP, nil), true, 0},
		{"TCP, partial", foreign, frame(layers.IPProtocolTCP, partial(packet.TCPOffChecksum)), false, 1},
		{"UDP, partial", foreign, frame(layers.IPProtocolUDP, partial(packet.UDPOffChecksum)), false, 2},
		{"UDP, no checksum", foreign, frame(layers.IPProtocolUDP, func(l4 []byte) { l4[6], l4[7] = 0, 0 }), true, 2},
		{"TCP, payload changed", foreign, frame(layers.IPProtocolTCP, func(l4 []byte) { l4[len(l4)-1] ^= 0xff }), false, 3},
		{"weftd peer, not checked", weftd, frame(layers.IPProtocolTCP, partial(packet.TCPOffChecksum)), true, 0},
		{"truncated", foreign, frame(layers.IPProtocolTCP, nil)[:packet.EthHdrLen+10], true, 3},
	}
	for _, tc := range tests {
		if got := CheckForeignInner(tc.peer, tc.f); got != tc.ok {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.ok)
		}
		if got := tc.peer.Stats().RxBadL4Checksum.Load(); got != tc.count {
			t.Errorf("%s: %s's RxBadL4Checksum = %d, want %d", tc.name, tc.peer.Name, got, tc.count)
		}
	}
	good := frame(layers.IPProtocolTCP, nil)
	if n := testing.AllocsPerRun(100, func() { CheckForeignInner(foreign, good) }); n != 0 {
		t.Errorf("%.1f allocations per call", n)
	}
}

func l4Proto(csumOff int) uint8 {
	if csumOff == packet.TCPOffChecksum {
		return packet.IPProtoTCP
	}
	return packet.IPProtoUDP
}
