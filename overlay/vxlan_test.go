package overlay

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
)

func TestPutHeaderParseHeader(t *testing.T) {
	for _, vni := range []uint32{0, 1, 0x10203, MaxVNI} {
		b := make([]byte, MinPayloadLen)
		for i := range b {
			b[i] = 0xff
		}
		PutHeader(b, vni)
		want := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
		if !bytes.Equal(b[:HeaderLen], want) {
			t.Errorf("PutHeader(%#x) = % x, want % x", vni, b[:HeaderLen], want)
		}
		got, r := ParseHeader(b)
		if r != DropNone || got != vni {
			t.Errorf("ParseHeader after PutHeader(%#x) = %#x, %v", vni, got, r)
		}
	}
}

func TestOuterIPv4Constants(t *testing.T) {
	if OuterIPv4Len != 50 || HeaderLen != 8 || DefaultPort != 4789 {
		t.Fatalf("OuterIPv4Len=%d HeaderLen=%d DefaultPort=%d: RFC 7348 over IPv4 is 50, 8, 4789", OuterIPv4Len, HeaderLen, DefaultPort)
	}
}

func TestEncapDecapRoundTrip(t *testing.T) {
	const vni = 0x123456
	d := NewDecapper(vni, testPeers(t, vni))
	for _, size := range []int{0, 1, 46, 1000, 1408, 8900} {
		f := defaultFlow()
		f.PayloadLen = size
		inner := f.Serialize(t)
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			buf, off := withHeadroom(inner, HeaderLen)
			start, err := Encap(buf, off, len(inner), vni)
			if err != nil {
				t.Fatal(err)
			}
			got, peer, r := d.Decap(buf[start:], netip.AddrPortFrom(netip.AddrFrom4(underA), 33333))
			if r != DropNone {
				t.Fatalf("size %d: Decap dropped: %v", size, r)
			}
			if !bytes.Equal(got, inner) || peer.Name != "node-a" {
				t.Fatalf("size %d: round trip gave peer %q and %d bytes", size, peer.Name, len(got))
			}
			if &got[0] != &buf[off] {
				t.Error("Decap copied the inner frame")
			}
		})
	}
}
