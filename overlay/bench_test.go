package overlay

import (
	"net/netip"
	"testing"
)

func BenchmarkEncap(b *testing.B) {
	f := defaultFlow()
	inner := f.Serialize(b)
	buf, off := withHeadroom(inner, HeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encap(buf, off, len(inner), 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecap(b *testing.B) {
	d := NewDecapper(1, testPeers(b, 1))
	f := defaultFlow()
	f.PayloadLen = 1400
	inner := f.Serialize(b)
	buf, off := withHeadroom(inner, HeaderLen)
	if _, err := Encap(buf, off, len(inner), 1); err != nil {
		b.Fatal(err)
	}
	from := netip.AddrPortFrom(netip.AddrFrom4(underA), 40000)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, r := d.Decap(buf, from); r != DropNone {
			b.Fatal(r)
		}
	}
}

func BenchmarkFlowSrcPort(b *testing.B) {
	f := defaultFlow()
	inner := f.Serialize(b)
	var sink uint16
	b.ReportAllocs()
	for b.Loop() {
		sink += FlowSrcPort(inner, 0, 0)
	}
	_ = sink
}

func BenchmarkPeerLookup(b *testing.B) {
	pt := testPeers(b, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := pt.Lookup(underB); !ok {
			b.Fatal("not found")
		}
	}
}
