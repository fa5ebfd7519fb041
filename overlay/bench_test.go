package overlay

import (
	"net/netip"
	"testing"
)

func BenchmarkEncapIPv4(b *testing.B) {
	for _, size := range []struct {
		name  string
		inner int
	}{{"64B", 64}, {"1450B", 1450}} {
		b.Run(size.name, func(b *testing.B) {
			f := defaultFlow()
			f.payloadLen = size.inner - 14 - 20 - 8
			inner := f.serialize(b)
			buf, off := withHeadroom(inner, OuterIPv4Len)
			h := &OuterIPv4{SrcMAC: macU, DstMAC: macV, Src: underA, Dst: underB, VNI: 1}
			b.SetBytes(int64(len(inner)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncapIPv4(buf, off, len(inner), h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncap(b *testing.B) {
	f := defaultFlow()
	inner := f.serialize(b)
	buf, off := withHeadroom(inner, HeaderLen)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encap(buf, off, len(inner), 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecap(b *testing.B) {
	d := NewDecapper(1, 0, testPeers(b, 1))
	f := defaultFlow()
	f.payloadLen = 1400
	inner := f.serialize(b)
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

func BenchmarkDecapFrame(b *testing.B) {
	d := NewDecapper(1, 0, testPeers(b, 1))
	f := defaultFlow()
	f.payloadLen = 1400
	inner := f.serialize(b)
	buf, off := withHeadroom(inner, OuterIPv4Len)
	start, err := EncapIPv4(buf, off, len(inner), &OuterIPv4{Src: underA, Dst: underB, VNI: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, r := d.DecapFrame(buf[start:]); r != DropNone {
			b.Fatal(r)
		}
	}
}

func BenchmarkFlowSrcPort(b *testing.B) {
	f := defaultFlow()
	inner := f.serialize(b)
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
