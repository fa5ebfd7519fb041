package packet

import (
	"bytes"
	"testing"
)

func TestARPValidAndRoundTrip(t *testing.T) {
	sha := MAC{0x02, 0, 0, 0, 0, 1}
	tha := MAC{0x02, 0, 0, 0, 0, 2}
	good := make([]byte, ARPLen)
	PutARP(good, ARPOpRequest, sha, [4]byte{10, 0, 0, 1}, tha, [4]byte{10, 0, 0, 2})
	with := func(off int, val byte) []byte {
		b := bytes.Clone(good)
		b[off] = val
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"request", good, true},
		{"reply", with(ARPOffOp+1, ARPOpReply), true},
		{"padded", append(bytes.Clone(good), make([]byte, 18)...), true},
		{"short", good[:ARPLen-1], false},
		{"op 3", with(ARPOffOp+1, 3), false},
		{"htype 6", with(ARPOffHType+1, 6), false},
		{"ptype ipv6", with(ARPOffPType, 0x86), false},
		{"hlen 8", with(ARPOffHLen, 8), false},
		{"plen 16", with(ARPOffPLen, 16), false},
	}
	for _, tc := range tests {
		if got := ARP(tc.b).Valid(); got != tc.want {
			t.Errorf("%s: Valid=%v want %v", tc.name, got, tc.want)
		}
	}
	a := ARP(good)
	if a.Op() != ARPOpRequest || a.SenderMAC() != sha || a.TargetMAC() != tha ||
		a.SenderIP().String() != "10.0.0.1" || a.TargetIP4() != [4]byte{10, 0, 0, 2} {
		t.Errorf("accessors: op %d %s %s %s %v", a.Op(), a.SenderMAC(), a.TargetMAC(), a.SenderIP(), a.TargetIP4())
	}
}

// FuzzARP: Valid never panics, and a valid packet survives a round trip
// through its accessors and PutARP.
func FuzzARP(f *testing.F) {
	b := make([]byte, ARPLen)
	PutARP(b, ARPOpReply, MAC{2, 0, 0, 0, 0, 1}, [4]byte{10, 0, 0, 1}, MAC{2, 0, 0, 0, 0, 2}, [4]byte{10, 0, 0, 2})
	f.Add(b)
	f.Add(b[:10])
	f.Fuzz(func(t *testing.T, b []byte) {
		a := ARP(b)
		if !a.Valid() {
			return
		}
		out := make([]byte, ARPLen)
		PutARP(out, a.Op(), a.SenderMAC(), a.SenderIP4(), a.TargetMAC(), a.TargetIP4())
		if !bytes.Equal(out, b[:ARPLen]) {
			t.Errorf("round trip\n got % x\nwant % x", out, b[:ARPLen])
		}
	})
}
