package overlay

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/packet"
)

const testVNI = 42

// fullFrame returns a valid full outer frame from underA carrying the
// default inner flow.
func fullFrame(t testing.TB) []byte {
	t.Helper()
	f := defaultFlow()
	inner := f.serialize(t)
	buf, off := withHeadroom(inner, OuterIPv4Len)
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

func TestDecapRejects(t *testing.T) {
	from := netip.AddrPortFrom(netip.AddrFrom4(underA), 40000)
	valid := func() []byte {
		b := make([]byte, MinPayloadLen+20)
		PutHeader(b, testVNI)
		return b
	}
	edit := func(fn func(b []byte)) []byte { b := valid(); fn(b); return b }
	tests := []struct {
		name    string
		payload []byte
		from    netip.AddrPort
		want    DropReason
	}{
		{"valid", valid(), from, DropNone},
		{"minimal", valid()[:MinPayloadLen], from, DropNone},
		{"empty", nil, from, DropTooShort},
		{"header only", valid()[:HeaderLen], from, DropTooShort},
		{"one short", valid()[:MinPayloadLen-1], from, DropTooShort},
		{"I flag clear", edit(func(b []byte) { b[0] = 0 }), from, DropBadFlags},
		{"only other flags", edit(func(b []byte) { b[0] = 0x80 }), from, DropBadFlags},
		{"G flag with I", edit(func(b []byte) { b[0] = 0x88 }), from, DropReservedBits},
		{"reserved byte 1", edit(func(b []byte) { b[1] = 0x40 }), from, DropReservedBits},
		{"reserved byte 3", edit(func(b []byte) { b[3] = 1 }), from, DropReservedBits},
		{"reserved byte 7", edit(func(b []byte) { b[7] = 1 }), from, DropReservedBits},
		{"wrong VNI", edit(func(b []byte) { PutHeader(b, testVNI+1) }), from, DropWrongVNI},
		{"unknown peer", valid(), netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 99, 0, 3}), 40000), DropUnknownPeer},
		{"IPv6 sender", valid(), netip.MustParseAddrPort("[2001:db8::1]:4789"), DropUnknownPeer},
		{"zero sender", valid(), netip.AddrPort{}, DropUnknownPeer},
		{"4in6 sender", valid(), netip.AddrPortFrom(netip.AddrFrom16(netip.AddrFrom4(underA).As16()), 1), DropNone},
	}
	d := NewDecapper(testVNI, 0, testPeers(t, testVNI))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := d.Drops.Get(tc.want)
			inner, peer, r := d.Decap(tc.payload, tc.from)
			if r != tc.want {
				t.Fatalf("Decap = %v, want %v", r, tc.want)
			}
			if r == DropNone {
				if peer == nil || len(inner) != len(tc.payload)-HeaderLen {
					t.Fatalf("accepted but peer=%v len(inner)=%d", peer, len(inner))
				}
				return
			}
			if inner != nil || peer != nil {
				t.Error("dropped but returned a frame or peer")
			}
			if got := d.Drops.Get(tc.want); got != before+1 {
				t.Errorf("counter %v = %d, want %d", tc.want, got, before+1)
			}
		})
	}
}

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
		{"empty", nil, DropTooShort},
		{"ethernet only", edit(func(b []byte) []byte { return b[:14] }), DropTooShort},
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
		{"UDP length cuts VXLAN", edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[udpOff+4:], 8+HeaderLen+13); return b }), DropTooShort},
		{"IP checksum", edit(func(b []byte) []byte { b[ipOff+10]++; return b }), DropBadChecksum},
		{"UDP checksum, verified", edit(func(b []byte) []byte { b = setUDPChecksum(b); b[udpOff+6]++; return b }), DropBadChecksum},
		{"UDP checksum, not verified", edit(func(b []byte) []byte { b = setUDPChecksum(b); b[udpOff+6]++; return b }), DropNone},
		{"I flag clear", edit(func(b []byte) []byte { b[vxOff] = 0; return b }), DropBadFlags},
		{"reserved bits", edit(func(b []byte) []byte { b[vxOff+7] = 0xff; return b }), DropReservedBits},
		{"wrong VNI", edit(func(b []byte) []byte { PutHeader(b[vxOff:], 7); return b }), DropWrongVNI},
		{"unknown peer", edit(func(b []byte) []byte { b[ipOff+15] = 77; return refixIPv4(b) }), DropUnknownPeer},
	}
	d := NewDecapper(testVNI, 0, testPeers(t, testVNI))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d.VerifyUDPChecksum = !strings.Contains(tc.name, "not verified")
			before := d.Drops.Get(tc.want)
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
			if got := d.Drops.Get(tc.want); got != before+1 {
				t.Errorf("counter %v = %d, want %d", tc.want, got, before+1)
			}
		})
	}
}

func TestDecapFramePort(t *testing.T) {
	f := defaultFlow()
	inner := f.serialize(t)
	buf, off := withHeadroom(inner, OuterIPv4Len)
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

func TestDecapTruncated(t *testing.T) {
	frame := fullFrame(t)
	d := NewDecapper(testVNI, 0, testPeers(t, testVNI))
	for n := 0; n < len(frame); n++ {
		// The outer IPv4 total length covers the whole frame, so every
		// truncation is detected.
		if _, _, r := d.DecapFrame(frame[:n]); r == DropNone {
			t.Fatalf("frame truncated to %d of %d bytes accepted", n, len(frame))
		}
	}
	payload := frame[OuterIPv4Len-HeaderLen:]
	from := netip.AddrPortFrom(netip.AddrFrom4(underA), 1)
	for n := 0; n < MinPayloadLen; n++ {
		if _, _, r := d.Decap(payload[:n], from); r != DropTooShort {
			t.Fatalf("payload of %d bytes: %v, want %v", n, r, DropTooShort)
		}
	}
}

func TestDecapNilPeersAndCounters(t *testing.T) {
	d := &Decapper{VNI: testVNI}
	b := make([]byte, MinPayloadLen)
	PutHeader(b, testVNI)
	if _, _, r := d.Decap(b, netip.AddrPortFrom(netip.AddrFrom4(underA), 1)); r != DropUnknownPeer {
		t.Errorf("nil peer table: %v, want %v", r, DropUnknownPeer)
	}
}

func TestCountersSnapshot(t *testing.T) {
	var c Counters
	c.Add(DropWrongVNI)
	c.Add(DropWrongVNI)
	c.Add(DropNone)
	c.Add(DropReason(200))
	m := c.Snapshot()
	if len(m) != NumDropReasons-1 {
		t.Errorf("snapshot has %d reasons, want %d", len(m), NumDropReasons-1)
	}
	if m["wrong_vni"] != 2 || m["too_short"] != 0 {
		t.Errorf("snapshot = %v", m)
	}
	if _, ok := m["none"]; ok {
		t.Error("snapshot lists DropNone")
	}
	seen := map[string]bool{}
	for r := 0; r < NumDropReasons; r++ {
		s := DropReason(r).String()
		if s == "" || s == "unknown" || seen[s] {
			t.Errorf("reason %d has name %q (empty, unknown or duplicate)", r, s)
		}
		seen[s] = true
	}
	if DropReason(NumDropReasons).String() != "unknown" {
		t.Error("out-of-range reason not named unknown")
	}
}

// TestDecapInnerSourceMustBePeers is issue 12 item 7: with a spoofed outer
// source, a datagram from a known peer's underlay address carried inner
// sources of 8.8.8.8 and of the receiving node's own pods, and they were
// delivered. An inner IPv4 source must be in the sending peer's pod subnet
// or be the peer's own (underlay) host address.
func TestDecapInnerSourceMustBePeers(t *testing.T) {
	const spoofed = "spoofed_inner_src"
	tests := []struct {
		name   string
		src    [4]byte
		accept bool
	}{
		{"a pod of the sending peer", [4]byte{10, 244, 1, 3}, true},
		{"the sending peer's gateway", [4]byte{10, 244, 1, 1}, true},
		{"the sending peer's host port", [4]byte{10, 244, 1, 2}, true},
		{"the sending peer's underlay address", underA, true},
		{"a public address", [4]byte{8, 8, 8, 8}, false},
		{"a pod of the other peer", [4]byte{10, 244, 2, 3}, false},
		{"a pod of the receiving node", [4]byte{10, 244, 7, 3}, false},
		{"the other peer's underlay address", underB, false},
		{"zero", [4]byte{}, false},
		{"broadcast", [4]byte{255, 255, 255, 255}, false},
	}
	d := NewDecapper(testVNI, 0, testPeers(t, testVNI))
	from := netip.AddrPortFrom(netip.AddrFrom4(underA), 40000)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := defaultFlow()
			f.src = tc.src
			inner := f.serialize(t)
			payload := make([]byte, HeaderLen+len(inner))
			PutHeader(payload, testVNI)
			copy(payload[HeaderLen:], inner)
			before := d.Drops.Snapshot()[spoofed]
			_, peer, r := d.Decap(payload, from)
			if tc.accept != (r == 0) {
				t.Fatalf("Decap from %v, inner source %v: reason %v, accepted %v, want accepted %v", from, netip.AddrFrom4(tc.src), r, r == 0, tc.accept)
			}
			wantCount := before
			if !tc.accept {
				wantCount++
				if r.String() != spoofed || peer != nil {
					t.Errorf("Decap reason %q peer %v, want %q and no peer", r, peer, spoofed)
				}
			}
			if got := d.Drops.Snapshot()[spoofed]; got != wantCount {
				t.Errorf("counter %s = %d, want %d", spoofed, got, wantCount)
			}

			// The full-frame path (pcap replay) applies the same rule.
			buf, off := withHeadroom(inner, OuterIPv4Len)
			start, err := EncapIPv4(buf, off, len(inner), &OuterIPv4{SrcMAC: macU, DstMAC: macV, Src: underA, Dst: underB, VNI: testVNI})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, r := d.DecapFrame(buf[start:]); tc.accept != (r == 0) {
				t.Errorf("DecapFrame: reason %v, want accepted %v", r, tc.accept)
			}
		})
	}
}
