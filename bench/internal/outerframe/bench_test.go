package outerframe

import (
	"testing"

	"github.com/weftnet/weft/overlay"
)

func BenchmarkEncapIPv4(b *testing.B) {
	for _, size := range []struct {
		name  string
		inner int
	}{{"64B", 64}, {"1450B", 1450}} {
		b.Run(size.name, func(b *testing.B) {
			f := defaultFlow()
			f.PayloadLen = size.inner - 14 - 20 - 8
			inner := f.Serialize(b)
			buf, off := withHeadroom(inner, overlay.OuterIPv4Len)
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

func BenchmarkDecapFrame(b *testing.B) {
	d := NewDecapper(1, 0, testPeers(b, 1))
	f := defaultFlow()
	f.PayloadLen = 1400
	inner := f.Serialize(b)
	buf, off := withHeadroom(inner, overlay.OuterIPv4Len)
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
