package overlay

import (
	"net/netip"
	"testing"
)

const testVNI = 42

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
		{"partial csum", edit(func(b []byte) { MarkPartialCsum(b) }), from, DropNone},
		{"partial csum and RCO", edit(func(b []byte) { MarkPartialCsum(b); b[1] |= 0x20 }), from, DropReservedBits},
		{"reserved byte 3", edit(func(b []byte) { b[3] = 1 }), from, DropReservedBits},
		{"reserved byte 7", edit(func(b []byte) { b[7] = 1 }), from, DropReservedBits},
		{"wrong VNI", edit(func(b []byte) { PutHeader(b, testVNI+1) }), from, DropWrongVNI},
		{"unknown peer", valid(), netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 99, 0, 3}), 40000), DropUnknownPeer},
		{"IPv6 sender", valid(), netip.MustParseAddrPort("[2001:db8::1]:4789"), DropUnknownPeer},
		{"zero sender", valid(), netip.AddrPort{}, DropUnknownPeer},
		{"4in6 sender", valid(), netip.AddrPortFrom(netip.AddrFrom16(netip.AddrFrom4(underA).As16()), 1), DropNone},
	}
	d := NewDecapper(testVNI, testPeers(t, testVNI))
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

// TestDecapPartialCsum: FlagPartialCsum round-trips through Encap and
// Decap from a weft peer, is off unless marked, and a foreign peer (a
// kernel VXLAN node, which never sets it) is refused for it.
func TestDecapPartialCsum(t *testing.T) {
	var pt PeerTable
	err := pt.Set([]Peer{
		{Name: "weft", Underlay: netip.AddrFrom4(underA), Subnet: netip.MustParsePrefix("10.244.1.0/24"), VNI: testVNI},
		{Name: "kernel", Underlay: netip.AddrFrom4(underB), Subnet: netip.MustParsePrefix("10.244.2.0/24"), VNI: testVNI, Foreign: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecapper(testVNI, &pt)
	for _, c := range []struct {
		name    string
		from    [4]byte
		partial bool
		want    DropReason
	}{
		{"weft full", underA, false, DropNone},
		{"weft partial", underA, true, DropNone},
		{"foreign full", underB, false, DropNone},
		{"foreign partial", underB, true, DropReservedBits},
	} {
		b := make([]byte, MinPayloadLen+20)
		start, err := Encap(b, HeaderLen, len(b)-HeaderLen, testVNI)
		if err != nil {
			t.Fatal(err)
		}
		if c.partial {
			MarkPartialCsum(b[start:])
		}
		if vni, r := ParseHeader(b); r != DropNone || vni != testVNI {
			t.Fatalf("%s: ParseHeader = %d, %v", c.name, vni, r)
		}
		_, _, r := d.Decap(b, netip.AddrPortFrom(netip.AddrFrom4(c.from), 1))
		if r != c.want {
			t.Errorf("%s: Decap = %v, want %v", c.name, r, c.want)
		}
		if PartialCsum(b) != c.partial {
			t.Errorf("%s: PartialCsum = %v", c.name, !c.partial)
		}
	}
}

func TestDecapTruncated(t *testing.T) {
	inner := defaultFlow().Serialize(t)
	buf, off := withHeadroom(inner, HeaderLen)
	start, err := Encap(buf, off, len(inner), testVNI)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecapper(testVNI, testPeers(t, testVNI))
	payload := buf[start:]
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
	d := NewDecapper(testVNI, testPeers(t, testVNI))
	from := netip.AddrPortFrom(netip.AddrFrom4(underA), 40000)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := defaultFlow()
			f.Src = tc.src
			inner := f.Serialize(t)
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
		})
	}
}
