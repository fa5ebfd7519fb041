package outerframe

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

func TestEncapIPv4MatchesGopacket(t *testing.T) {
	base := OuterIPv4{SrcMAC: macU, DstMAC: macV, Src: underA, Dst: underB, VNI: 1}
	tests := []struct {
		name  string
		flow  func(f *flow)
		outer func(h *OuterIPv4)
	}{
		{"defaults", nil, nil},
		{"64B inner", func(f *flow) { f.PayloadLen = 64 - 14 - 20 - 8 }, nil},
		{"1450B inner", func(f *flow) { f.PayloadLen = 1450 - 14 - 20 - 8 }, nil},
		{"tcp inner", func(f *flow) { f.Proto = layers.IPProtocolTCP; f.PayloadLen = 1000 }, nil},
		{"max VNI", nil, func(h *OuterIPv4) { h.VNI = overlay.MaxVNI }},
		{"VNI 0", nil, func(h *OuterIPv4) { h.VNI = 0 }},
		{"explicit source port", nil, func(h *OuterIPv4) { h.SrcPort = 4789 }},
		{"custom dst port", nil, func(h *OuterIPv4) { h.DstPort = 8472 }},
		{"ttl 1 and id", nil, func(h *OuterIPv4) { h.TTL = 1; h.ID = 0xbeef }},
		{"ttl 255", nil, func(h *OuterIPv4) { h.TTL = 255 }},
		{"custom port range", nil, func(h *OuterIPv4) { h.PortMin, h.PortMax = 50000, 50010 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := defaultFlow()
			if tc.flow != nil {
				tc.flow(&f)
			}
			h := base
			if tc.outer != nil {
				tc.outer(&h)
			}
			inner := f.Serialize(t)
			buf, off := withHeadroom(inner, overlay.OuterIPv4Len+7)
			start, err := EncapIPv4(buf, off, len(inner), &h)
			if err != nil {
				t.Fatalf("EncapIPv4: %v", err)
			}
			if start != off-overlay.OuterIPv4Len {
				t.Fatalf("start = %d, want %d", start, off-overlay.OuterIPv4Len)
			}
			got := buf[start:]
			sport := h.SrcPort
			if sport == 0 {
				sport = overlay.FlowSrcPort(inner, h.PortMin, h.PortMax)
			}
			want := gopacketOuter(t, &h, sport, inner)
			if !bytes.Equal(got, want) {
				t.Fatalf("EncapIPv4 differs from gopacket:\n got % x\nwant % x", got, want)
			}
			if !bytes.Equal(buf[off:], inner) {
				t.Fatal("inner frame was modified")
			}
			// Decode it back with gopacket as an independent reading.
			p := gopacket.NewPacket(got, layers.LayerTypeEthernet, gopacket.Default)
			udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if udp == nil {
				t.Fatalf("gopacket does not see UDP: %v", p)
			}
			// gopacket only dispatches port 4789 to VXLAN; decode it by hand.
			var vx layers.VXLAN
			if err := vx.DecodeFromBytes(udp.Payload, gopacket.NilDecodeFeedback); err != nil {
				t.Fatal(err)
			}
			if vx.VNI != h.VNI || !vx.ValidIDFlag || udp.Checksum != 0 {
				t.Errorf("decoded VNI %d I=%v udp csum %#x", vx.VNI, vx.ValidIDFlag, udp.Checksum)
			}
			if min, max := rangeOf(&h); h.SrcPort == 0 && (uint16(udp.SrcPort) < min || uint16(udp.SrcPort) >= max) {
				t.Errorf("source port %d outside [%d, %d)", udp.SrcPort, min, max)
			}
		})
	}
}

func rangeOf(h *OuterIPv4) (uint16, uint16) {
	if h.PortMin >= h.PortMax {
		return overlay.DefaultPortMin, overlay.DefaultPortMax
	}
	return h.PortMin, h.PortMax
}

func TestEncapRoundTrip(t *testing.T) {
	const vni = 0x123456
	d := NewDecapper(vni, 0, testPeers(t, vni))
	for _, size := range []int{0, 1, 46, 1000, 1408, 8900} {
		f := defaultFlow()
		f.PayloadLen = size
		inner := f.Serialize(t)

		t.Run(fmt.Sprint(size), func(t *testing.T) {
			buf, off := withHeadroom(inner, overlay.OuterIPv4Len)
			h := OuterIPv4{SrcMAC: macU, DstMAC: macV, Src: underA, Dst: underB, VNI: vni}
			start, err := EncapIPv4(buf, off, len(inner), &h)
			if err != nil {
				t.Fatal(err)
			}
			got, peer, r := d.DecapFrame(buf[start:])
			if r != DropNone {
				t.Fatalf("size %d: DecapFrame dropped: %v", size, r)
			}
			if !bytes.Equal(got, inner) || peer.Name != "node-a" {
				t.Fatalf("size %d: round trip gave peer %q and %d bytes, want node-a and %d", size, peer.Name, len(got), len(inner))
			}
			if &got[0] != &buf[off] {
				t.Error("DecapFrame copied the inner frame")
			}
		})
	}
}

func TestEncapErrors(t *testing.T) {
	good := make([]byte, 100)
	tests := []struct {
		name     string
		buflen   int
		off, n   int
		vni      uint32
		wantFull error // EncapIPv4
		wantSock error // overlay.Encap
	}{
		{"ok", 100, 50, 50, 1, nil, nil},
		{"no headroom full", 100, 49, 50, 1, overlay.ErrNoHeadroom, nil},
		{"no headroom socket", 100, 7, 50, 1, overlay.ErrNoHeadroom, overlay.ErrNoHeadroom},
		{"headroom zero", 100, 0, 50, 1, overlay.ErrNoHeadroom, overlay.ErrNoHeadroom},
		{"frame past end", 100, 50, 51, 1, overlay.ErrBadLength, overlay.ErrBadLength},
		{"offset past end", 100, 101, 14, 1, overlay.ErrBadLength, overlay.ErrBadLength},
		{"negative offset", 100, -1, 14, 1, overlay.ErrBadLength, overlay.ErrBadLength},
		{"negative length", 100, 50, -1, 1, overlay.ErrBadLength, overlay.ErrBadLength},
		{"shorter than ethernet", 100, 50, 13, 1, overlay.ErrBadLength, overlay.ErrBadLength},
		{"vni too big", 100, 50, 50, overlay.MaxVNI + 1, overlay.ErrBadVNI, overlay.ErrBadVNI},
		{"too big", 70000, 50, maxInnerLen + 1, 1, overlay.ErrFrameTooBig, overlay.ErrFrameTooBig},
		{"largest", 70000, 50, maxInnerLen, 1, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, tc.buflen)
			copy(buf, good)
			h := OuterIPv4{VNI: tc.vni, Src: underA, Dst: underB}
			_, err := EncapIPv4(buf, tc.off, tc.n, &h)
			if !errors.Is(err, tc.wantFull) {
				t.Errorf("EncapIPv4 err = %v, want %v", err, tc.wantFull)
			}
			if err != nil && !bytes.Equal(buf[:len(good)], good) {
				t.Error("EncapIPv4 wrote into the buffer despite an error")
			}
			_, err = overlay.Encap(buf, tc.off, tc.n, tc.vni)
			if !errors.Is(err, tc.wantSock) {
				t.Errorf("overlay.Encap err = %v, want %v", err, tc.wantSock)
			}
		})
	}
}

// TestEncapIPv4OuterHeader: the outer IPv4 header EncapIPv4 writes must
// verify and carry DF.
func TestEncapIPv4OuterHeader(t *testing.T) {
	f := defaultFlow()
	inner := f.Serialize(t)
	buf, off := withHeadroom(inner, overlay.OuterIPv4Len)
	start, err := EncapIPv4(buf, off, len(inner), &OuterIPv4{Src: underA, Dst: underB})
	if err != nil {
		t.Fatal(err)
	}
	ip := packet.IPv4(buf[start+packet.EthHdrLen:])
	if !ip.Valid() || !ip.HeaderChecksumOK() || !ip.DF() || ip.TTL() != DefaultTTL || int(ip.TotalLen()) != len(buf)-start-packet.EthHdrLen {
		t.Fatalf("outer IPv4 header wrong: % x", buf[start:off])
	}
}
