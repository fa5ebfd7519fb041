package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// refChecksum is the RFC 1071 textbook loop, the oracle for Checksum.
func refChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = (s >> 16) + (s & 0xffff)
	}
	return uint16(s)
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 2048)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for n := 0; n <= len(buf); n++ {
		if got, want := Fold(Checksum(buf[:n], 0)), refChecksum(buf[:n]); got != want {
			t.Fatalf("len %d: got %#04x want %#04x", n, got, want)
		}
	}
	// all-ones data exercises every carry path
	for i := range buf {
		buf[i] = 0xff
	}
	for n := 0; n <= 200; n++ {
		if got, want := Fold(Checksum(buf[:n], 0)), refChecksum(buf[:n]); got != want {
			t.Fatalf("0xff len %d: got %#04x want %#04x", n, got, want)
		}
	}
}

func TestUpdateChecksumEqualsRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 10000; i++ {
		var h [20]byte
		for j := range h {
			h[j] = byte(r.Uint32())
		}
		h[0] = 0x45
		ip := IPv4(h[:])
		ip.ComputeChecksum()
		if !ip.HeaderChecksumOK() {
			t.Fatal("fresh checksum does not verify")
		}
		if ip.TTL() > 1 {
			ip.DecTTL()
			if !ip.HeaderChecksumOK() {
				t.Fatalf("after DecTTL checksum does not verify: % x", h)
			}
		}
		var na [4]byte
		binary.BigEndian.PutUint32(na[:], r.Uint32())
		old := ip.Src4()
		ip.SetChecksum(UpdateChecksum32(ip.Checksum(), old, na))
		ip.SetSrc4(na)
		if !ip.HeaderChecksumOK() {
			t.Fatalf("after address rewrite checksum does not verify: % x", h)
		}
	}
}

func TestDecTTLRefusesExpiry(t *testing.T) {
	for _, ttl := range []uint8{0, 1} {
		var h [20]byte
		h[0] = 0x45
		h[IPv4OffTTL] = ttl
		ip := IPv4(h[:])
		ip.ComputeChecksum()
		sum := ip.Checksum()
		if ip.DecTTL() {
			t.Fatalf("ttl %d: DecTTL forwarded", ttl)
		}
		if ip.TTL() != ttl || ip.Checksum() != sum {
			t.Fatalf("ttl %d: header changed on refusal", ttl)
		}
	}
}

func TestIPv4Valid(t *testing.T) {
	good := make([]byte, 28)
	PutIPv4(good, 28, 1, true, 64, IPProtoUDP, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2})
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"good", good, true},
		{"short", good[:19], false},
		{"v6", append([]byte{0x65}, good[1:]...), false},
		{"ihl4", append([]byte{0x44}, good[1:]...), false},
		{"totlen beyond", good[:27], false},
	}
	for _, tc := range tests {
		if got := IPv4(tc.b).Valid(); got != tc.want {
			t.Errorf("%s: Valid=%v want %v", tc.name, got, tc.want)
		}
	}
	if !IPv4(good).HeaderChecksumOK() || !IPv4(good).DF() {
		t.Error("PutIPv4 header: bad checksum or DF missing")
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := make([]byte, 1500)
	b.SetBytes(1500)
	for b.Loop() {
		Checksum(buf, 0)
	}
}

// TestPseudoHeaderSum6MatchesReference: the IPv6 pseudo-header sum equals
// the textbook sum over the 40-byte pseudo header (RFC 8200 §8.1), also
// for addresses whose sum is near all-ones, where adding the length to
// Checksum's unfolded result once wrapped uint32 (found by FuzzSegmentUDP).
func TestPseudoHeaderSum6MatchesReference(t *testing.T) {
	ones := [16]byte{}
	for i := range ones {
		ones[i] = 0xff
	}
	nearOnes := ones
	nearOnes[15] = 0xe0
	rng := rand.New(rand.NewPCG(6, 6))
	var rnd [16]byte
	for i := range rnd {
		rnd[i] = byte(rng.Uint32())
	}
	cases := []struct {
		name     string
		src, dst [16]byte
		l4len    uint32
	}{
		{"all-ones", ones, ones, 1123},
		{"near-ones", nearOnes, ones, 0xffff},
		{"near-ones-jumbo", nearOnes, nearOnes, 0x1_0000_0},
		{"zero", [16]byte{}, [16]byte{}, 0},
		{"random", rnd, ones, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ph [40]byte
			copy(ph[0:], c.src[:])
			copy(ph[16:], c.dst[:])
			binary.BigEndian.PutUint32(ph[32:], c.l4len)
			ph[39] = IPProtoUDP
			want := refChecksum(ph[:])
			if got := Fold(PseudoHeaderSum6(c.src, c.dst, IPProtoUDP, c.l4len)); got != want && !(got == 0xffff && want == 0 || got == 0 && want == 0xffff) {
				t.Errorf("PseudoHeaderSum6 folds to %#04x, reference %#04x", got, want)
			}
		})
	}
}
