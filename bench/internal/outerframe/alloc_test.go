package outerframe

import (
	"testing"

	"github.com/weftnet/weft/overlay"
)

func TestAllocs(t *testing.T) {
	const vni = 7
	d := NewDecapper(vni, 0, testPeers(t, vni))
	f := defaultFlow()
	f.PayloadLen = 1400
	inner := f.Serialize(t)
	h := &OuterIPv4{SrcMAC: macU, DstMAC: macV, Src: underA, Dst: underB, VNI: vni}
	full, fullOff := withHeadroom(inner, overlay.OuterIPv4Len)
	tests := []struct {
		name string
		fn   func()
	}{
		{"EncapIPv4", func() {
			if _, err := EncapIPv4(full, fullOff, len(inner), h); err != nil {
				t.Fatal(err)
			}
		}},
		{"EncapIPv4 error", func() {
			if _, err := EncapIPv4(full, 3, len(inner), h); err == nil {
				t.Fatal("no error")
			}
		}},
		{"DecapFrame", func() {
			if _, _, r := d.DecapFrame(full); r != DropNone {
				t.Fatal(r)
			}
		}},
		{"DecapFrame outer drop", func() {
			if _, _, r := d.DecapFrame(full[:20]); r == DropNone {
				t.Fatal("accepted")
			}
		}},
	}
	for _, tc := range tests {
		tc.fn() // warm up, and fail loudly before counting if it is broken
		if got := testing.AllocsPerRun(1000, tc.fn); got != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tc.name, got)
		}
	}
}
