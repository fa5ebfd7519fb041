package overlay

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzDecap feeds arbitrary UDP payloads and senders to Decap. Invariants: no
// panic; an accepted payload yields payload[8:] without a copy, a known peer,
// and a header that PutHeader reproduces exactly (reserved bits zero but
// weft's FlagPartialCsum, never from a foreign peer);
// exactly one counter moves per call.
func FuzzDecap(f *testing.F) {
	valid := make([]byte, MinPayloadLen+4)
	PutHeader(valid, testVNI)
	f.Add(valid, underA[:], uint16(4789))
	partial := bytes.Clone(valid)
	MarkPartialCsum(partial)
	f.Add(partial, underA[:], uint16(4789))
	f.Add(valid[:MinPayloadLen-1], underA[:], uint16(1))
	f.Add([]byte{0x08, 0, 0, 1, 0, 0, 42, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, underB[:], uint16(4789))
	f.Add(valid, []byte{10, 99, 0, 3}, uint16(4789))
	f.Add(valid, []byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(4789))
	d := NewDecapper(testVNI, testPeers(f, testVNI))
	f.Fuzz(func(t *testing.T, payload, addr []byte, port uint16) {
		a, _ := netip.AddrFromSlice(addr)
		before := dropTotal(d.Drops)
		inner, peer, r := d.Decap(payload, netip.AddrPortFrom(a, port))
		moved := dropTotal(d.Drops) - before
		if r != DropNone {
			if inner != nil || peer != nil || moved != 1 {
				t.Fatalf("drop %v: inner=%v peer=%v counted %d", r, inner != nil, peer, moved)
			}
			return
		}
		if moved != 0 || peer == nil || len(inner) != len(payload)-HeaderLen || &inner[0] != &payload[HeaderLen] {
			t.Fatalf("accepted: counted %d, peer %v, len %d of %d", moved, peer, len(inner), len(payload))
		}
		var hdr [HeaderLen]byte
		PutHeader(hdr[:], d.VNI)
		if PartialCsum(payload) {
			if peer.Foreign {
				t.Fatal("accepted FlagPartialCsum from a foreign peer")
			}
			MarkPartialCsum(hdr[:])
		}
		if !bytes.Equal(hdr[:], payload[:HeaderLen]) {
			t.Fatalf("accepted header % x, canonical % x", payload[:HeaderLen], hdr)
		}
	})
}

func dropTotal(c *Counters) uint64 {
	var n uint64
	for r := 1; r < NumDropReasons; r++ {
		n += c.Get(DropReason(r))
	}
	return n
}
