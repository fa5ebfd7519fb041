package outerframe

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

const testVNI = 42

func TestDecapFrameRejects(t *testing.T) {
	edit := func(fn func(b []byte) []byte) []byte { return fn(fullFrame(t)) }
	ipOff := packet.EthHdrLen
	udpOff := ipOff + packet.IPv4MinHdrLen
	vxOff := udpOff + packet.UDPHdrLen
	tests := []struct {
		name  string
		frame []byte
		want  DropReason
	}{
		{"valid", fullFrame(t), DropNone},
		{"ethernet padding", edit(func(b []byte) []byte { return append(b, 0, 0, 0, 0) }), DropNone},
		{"correct UDP checksum", edit(setUDPChecksum), DropNone},
		{"UDP shorter than IP payload", edit(func(b []byte) []byte {
			// Trailing bytes beyond the UDP length are ignored.
			b = append(b, 1, 2, 3)
			binary.BigEndian.PutUint16(b[ipOff+2:], uint16(len(b)-ipOff))
			return refixIPv4(b)
		}), DropNone},
		{"IP options", edit(func(b []byte) []byte {
			out := append([]byte{}, b[:udpOff]...)
			out = append(out, 1, 1, 1, 0) // NOP NOP NOP EOL
			out = append(out, b[udpOff:]...)
			out[ipOff] = 0x46
			binary.BigEndian.PutUint16(out[ipOff+2:], uint16(len(out)-ipOff))
			return refixIPv4(out)
		}), DropNone},
		{"empty", nil, Decap(overlay.DropTooShort)},
		{"ethernet only", edit(func(b []byte) []byte { return b[:14] }), Decap(overlay.DropTooShort)},
		{"no VXLAN header", edit(func(b []byte) []byte { return b[:vxOff] }), DropBadOuter},
		{"ARP", edit(func(b []byte) []byte { b[12], b[13] = 0x08, 0x06; return b }), DropNotVXLAN},
		{"IPv6 ethertype", edit(func(b []byte) []byte { b[12], b[13] = 0x86, 0xdd; return b }), DropNotVXLAN},
		{"TCP", edit(func(b []byte) []byte { b[ipOff+9] = packet.IPProtoTCP; return refixIPv4(b) }), DropNotVXLAN},
		{"wrong UDP port", edit(func(b []byte) []byte { b[udpOff+3]++; return b }), DropNotVXLAN},
		{"IP version 6", edit(func(b []byte) []byte { b[ipOff] = 0x65; return b }), DropBadOuter},
		{"IHL 4", edit(func(b []byte) []byte { b[ipOff] = 0x44; return b }), DropBadOuter},
		{"IP total length beyond frame", edit(func(b []byte) []byte { return b[:len(b)-1] }), DropBadOuter},
		{"fragment MF", edit(func(b []byte) []byte { b[ipOff+6] |= 0x20; return refixIPv4(b) }), DropBadOuter},
		{"fragment offset", edit(func(b []byte) []byte { b[ipOff+7] = 1; return refixIPv4(b) }), DropBadOuter},
		{"IP total length below UDP header", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[ipOff+2:], 24)
			return refixIPv4(b)
		}), DropBadOuter},
		{"UDP length below 8", edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[udpOff+4:], 7); return b }), DropBadOuter},
		{"UDP length beyond IP", edit(func(b []byte) []byte { b[udpOff+5]++; return b }), DropBadOuter},
		{"UDP length cuts VXLAN", edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[udpOff+4:], 8+overlay.HeaderLen+13); return b }), Decap(overlay.DropTooShort)},
		{"IP checksum", edit(func(b []byte) []byte { b[ipOff+10]++; return b }), DropBadChecksum},
		{"UDP checksum, verified", edit(func(b []byte) []byte { b = setUDPChecksum(b); b[udpOff+6]++; return b }), DropBadChecksum},
		{"UDP checksum, not verified", edit(func(b []byte) []byte { b = setUDPChecksum(b); b[udpOff+6]++; return b }), DropNone},
		{"I flag clear", edit(func(b []byte) []byte { b[vxOff] = 0; return b }), Decap(overlay.DropBadFlags)},
		{"reserved bits", edit(func(b []byte) []byte { b[vxOff+7] = 0xff; return b }), Decap(overlay.DropReservedBits)},
		{"wrong VNI", edit(func(b []byte) []byte { overlay.PutHeader(b[vxOff:], 7); return b }), Decap(overlay.DropWrongVNI)},
		{"unknown peer", edit(func(b []byte) []byte { b[ipOff+15] = 77; return refixIPv4(b) }), Decap(overlay.DropUnknownPeer)},
	}
	d := NewDecapper(testVNI, 0, testPeers(t, testVNI))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d.VerifyUDPChecksum = !strings.Contains(tc.name, "not verified")
			// Overlay's decapsulator counts the reasons it decides; the
			// outer ones (a frame too short for the outer headers included)
			// are the caller's to count.
			outerLen := packet.EthHdrLen + packet.IPv4MinHdrLen + packet.UDPHdrLen
			counted := int(tc.want) < overlay.NumDropReasons && len(tc.frame) >= outerLen
			before := dropTotal(d.Drops)
			inner, peer, r := d.DecapFrame(tc.frame)
			if r != tc.want {
				t.Fatalf("DecapFrame = %v, want %v", r, tc.want)
			}
			if r == DropNone {
				if peer == nil || peer.Name != "node-a" || len(inner) < packet.EthHdrLen {
					t.Fatalf("accepted but peer=%v len(inner)=%d", peer, len(inner))
				}
				if packet.EthSrc(inner) != macA {
					t.Errorf("inner frame starts at the wrong place: % x", inner[:14])
				}
				return
			}
			if inner != nil || peer != nil {
				t.Error("dropped but returned a frame or peer")
			}
			want := before
			if counted {
				want++
			}
			if got := dropTotal(d.Drops); got != want {
				t.Errorf("decapsulator counted %d drops, want %d (%v)", got, want, d.Drops.Snapshot())
			}
		})
	}
}

func TestDecapFramePort(t *testing.T) {
	f := defaultFlow()
	inner := f.Serialize(t)
	buf, off := withHeadroom(inner, overlay.OuterIPv4Len)
	start, err := EncapIPv4(buf, off, len(inner), &OuterIPv4{Src: underA, Dst: underB, DstPort: 8472, VNI: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, r := NewDecapper(1, 0, testPeers(t, 1)).DecapFrame(buf[start:]); r != DropNotVXLAN {
		t.Errorf("default-port decapper on port 8472: %v, want %v", r, DropNotVXLAN)
	}
	if _, _, r := NewDecapper(1, 8472, testPeers(t, 1)).DecapFrame(buf[start:]); r != DropNone {
		t.Errorf("port-8472 decapper: %v, want accepted", r)
	}
}

func TestDecapFrameTruncated(t *testing.T) {
	frame := fullFrame(t)
	d := NewDecapper(testVNI, 0, testPeers(t, testVNI))
	for n := 0; n < len(frame); n++ {
		// The outer IPv4 total length covers the whole frame, so every
		// truncation is detected.
		if _, _, r := d.DecapFrame(frame[:n]); r == DropNone {
			t.Fatalf("frame truncated to %d of %d bytes accepted", n, len(frame))
		}
	}
}

func TestDropReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for r := 0; r < NumDropReasons; r++ {
		s := DropReason(r).String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("reason %d has name %q (empty, unknown or duplicate)", r, s)
		}
		seen[s] = true
	}
	for r := overlay.DropReason(0); int(r) < overlay.NumDropReasons; r++ {
		if Decap(r).String() != r.String() {
			t.Errorf("overlay reason %v named %q here", r, Decap(r))
		}
	}
	if DropReason(NumDropReasons).String() != "unknown" {
		t.Error("out-of-range reason not named unknown")
	}
}

func dropTotal(c *overlay.Counters) uint64 {
	var n uint64
	for r := 1; r < overlay.NumDropReasons; r++ {
		n += c.Get(overlay.DropReason(r))
	}
	return n
}
