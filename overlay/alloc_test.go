package overlay

import (
	"net/netip"
	"testing"
)

func TestHotPathAllocs(t *testing.T) {
	const vni = 7
	d := NewDecapper(vni, testPeers(t, vni))
	f := defaultFlow()
	f.PayloadLen = 1400
	inner := f.Serialize(t)
	sock, sockOff := withHeadroom(inner, HeaderLen)
	from := netip.AddrPortFrom(netip.AddrFrom4(underA), 40000)
	var sink uint16

	tests := []struct {
		name string
		fn   func()
	}{
		{"Encap", func() {
			if _, err := Encap(sock, sockOff, len(inner), vni); err != nil {
				t.Fatal(err)
			}
		}},
		{"Decap", func() {
			if _, _, r := d.Decap(sock, from); r != DropNone {
				t.Fatal(r)
			}
		}},
		{"Decap drop", func() {
			if _, _, r := d.Decap(sock[:3], from); r != DropTooShort {
				t.Fatal(r)
			}
		}},
		{"FlowSrcPort", func() { sink += FlowSrcPort(inner, 0, 0) }},
		{"PeerTable.Lookup", func() {
			if _, ok := d.Peers.Lookup(underB); !ok {
				t.Fatal("not found")
			}
		}},
	}
	for _, tc := range tests {
		tc.fn() // warm up, and fail loudly before counting if it is broken
		if got := testing.AllocsPerRun(1000, tc.fn); got != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tc.name, got)
		}
	}
	_ = sink
}
