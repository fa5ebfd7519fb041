package vswitch

import (
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/packet"
)

// bruteLPM is the oracle: for each length from /32 down, is the masked
// address one of the prefixes? Plain maps, nothing shared with the trie.
type bruteLPM map[uint8]map[uint32]uint32

func newBruteLPM(ps []lpmPrefix) bruteLPM {
	b := bruteLPM{}
	for _, p := range ps {
		if b[p.bits] == nil {
			b[p.bits] = map[uint32]uint32{}
		}
		b[p.bits][p.addr] = p.val
	}
	return b
}

func (b bruteLPM) lookup(a uint32) (uint32, bool) {
	for bits := 32; bits >= 0; bits-- {
		m := b[uint8(bits)]
		if m == nil {
			continue
		}
		mask := uint32(0)
		if bits > 0 {
			mask = ^uint32(0) << (32 - bits)
		}
		if v, ok := m[a&mask]; ok {
			return v, true
		}
	}
	return 0, false
}

func pfx(s string, val uint32) lpmPrefix {
	p := netip.MustParsePrefix(s).Masked()
	return lpmPrefix{addr: ip4Key(p.Addr().As4()), bits: uint8(p.Bits()), val: val}
}

func sortPrefixes(ps []lpmPrefix) {
	slices.SortFunc(ps, func(a, b lpmPrefix) int { return cmp.Or(cmp.Compare(a.bits, b.bits), cmp.Compare(a.addr, b.addr)) })
}

func TestLPMCases(t *testing.T) {
	ps := []lpmPrefix{
		pfx("0.0.0.0/0", 0),
		pfx("10.0.0.0/8", 1),
		pfx("10.244.0.0/16", 2),
		pfx("10.244.1.0/24", 3),
		pfx("10.244.1.128/25", 4),
		pfx("10.244.1.130/32", 5),
		pfx("10.244.2.0/23", 6),
		pfx("192.168.0.0/17", 7),
		pfx("255.255.255.255/32", 8),
		pfx("10.244.128.0/20", 9),
	}
	sortPrefixes(ps)
	tr := buildLPM(ps)
	tests := []struct {
		addr string
		want uint32
	}{
		{"1.2.3.4", 0},
		{"10.1.1.1", 1},
		{"10.244.0.1", 2},
		{"10.244.1.1", 3},
		{"10.244.1.127", 3},
		{"10.244.1.128", 4},
		{"10.244.1.130", 5},
		{"10.244.1.131", 4},
		{"10.244.3.9", 6},
		{"10.244.4.9", 2},
		{"10.244.143.255", 9},
		{"10.244.144.0", 2},
		{"192.168.127.1", 7},
		{"192.168.128.1", 0},
		{"255.255.255.255", 8},
		{"255.255.255.254", 0},
	}
	for _, tc := range tests {
		got, ok := tr.lookup(ip4Key(netip.MustParseAddr(tc.addr).As4()))
		if !ok || got != tc.want {
			t.Errorf("lookup %s = %d,%v want %d", tc.addr, got, ok, tc.want)
		}
	}
	empty := buildLPM(nil)
	if _, ok := empty.lookup(0x0a000001); ok {
		t.Error("empty table matched")
	}
	noDefault := buildLPM([]lpmPrefix{pfx("10.0.0.0/8", 0)})
	if _, ok := noDefault.lookup(0x0b000001); ok {
		t.Error("11.0.0.1 matched 10/8")
	}
}

// randomPrefixes returns n distinct prefixes with a mix of lengths weighted
// like a routing table (many /24 and /16-/23, some short, some /25-/32),
// clustered in a few /8s so they overlap.
func randomPrefixes(r *rand.Rand, n int) []lpmPrefix {
	lengths := []uint8{0, 8, 12, 16, 18, 20, 22, 23, 24, 24, 24, 24, 25, 26, 28, 30, 32, 32}
	seen := map[[2]uint32]bool{}
	var ps []lpmPrefix
	for len(ps) < n {
		bits := lengths[r.IntN(len(lengths))]
		a := uint32(10+r.IntN(4))<<24 | r.Uint32()&0x00ffffff
		if r.IntN(8) == 0 {
			a = r.Uint32()
		}
		if bits == 0 {
			a = 0
		} else {
			a &= ^uint32(0) << (32 - bits)
		}
		if seen[[2]uint32{a, uint32(bits)}] {
			continue
		}
		seen[[2]uint32{a, uint32(bits)}] = true
		ps = append(ps, lpmPrefix{addr: a, bits: bits, val: uint32(len(ps))})
	}
	sortPrefixes(ps)
	return ps
}

func TestLPMRandomAgainstBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	ps := randomPrefixes(r, 5000)
	tr := buildLPM(ps)
	oracle := newBruteLPM(ps)
	check := func(a uint32) {
		got, gok := tr.lookup(a)
		want, wok := oracle.lookup(a)
		if gok != wok || gok && got != want {
			t.Fatalf("lookup %s = %d,%v want %d,%v", keyIP4(a), got, gok, want, wok)
		}
	}
	for range 20000 {
		check(r.Uint32())
	}
	// Edges of every prefix, where off-by-ones live.
	for _, p := range ps {
		size := uint32(0xffffffff)
		if p.bits > 0 {
			size = 1<<(32-p.bits) - 1
		}
		check(p.addr)
		check(p.addr + size)
		check(p.addr - 1)
		check(p.addr + size + 1)
	}
}

func TestSetRoutesReplacesAndValidates(t *testing.T) {
	s := newTestSwitch(t, nil)
	peer2 := netip.MustParseAddr("192.168.0.3")
	host := netip.MustParsePrefix("10.250.0.9/32")
	lookup := func(a string) *routeEntry {
		return s.routes.Load().lookup(ip4Key(netip.MustParseAddr(a).As4()))
	}
	if err := s.SetRoutes([]Route{
		{Prefix: peerSubnet, Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC},
		{Prefix: netip.MustParsePrefix("10.244.0.0/16"), Kind: RoutePeer, Peer: peer2, PeerMAC: otherMAC},
		{Prefix: host, Kind: RoutePeer, Peer: peer2, PeerMAC: otherMAC},
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Kind: RouteLocal, Via: hostIP},
	}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		kind RouteKind
		peer netip.Addr
	}{
		{"10.244.1.9", RouteLocal, netip.Addr{}}, // node subnet kept although not listed
		{"10.244.2.9", RoutePeer, peerAddr},
		{"10.244.9.9", RoutePeer, peer2},
		{"10.250.0.9", RoutePeer, peer2},
		{"10.250.0.8", RouteLocal, netip.Addr{}},
		{"8.8.8.8", RouteLocal, netip.Addr{}},
	}
	for _, tc := range tests {
		r := lookup(tc.addr)
		if r == nil || r.kind != tc.kind || r.peer != tc.peer {
			t.Errorf("%s: %+v want %s %s", tc.addr, r, tc.kind, tc.peer)
		}
	}
	if r := lookup("8.8.8.8"); !r.hasVia || r.via != ip4Key(hostIP.As4()) {
		t.Errorf("default route via: %+v", r)
	}
	if n := len(s.Routes()); n != 5 {
		t.Errorf("Routes() has %d entries, want 5 (4 + node subnet)", n)
	}

	// Removal: the next snapshot without the /16 and the /32.
	if err := s.SetRoutes([]Route{{Prefix: peerSubnet, Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.244.9.9", "10.250.0.9", "8.8.8.8"} {
		if r := lookup(a); r != nil {
			t.Errorf("%s still routed after removal: %+v", a, r)
		}
	}

	bad := []struct {
		name string
		r    Route
	}{
		{"ipv6", Route{Prefix: netip.MustParsePrefix("fd00::/64"), Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC}},
		{"no kind", Route{Prefix: peerSubnet}},
		{"peer without address", Route{Prefix: peerSubnet, Kind: RoutePeer, PeerMAC: peerMAC}},
		{"peer multicast mac", Route{Prefix: peerSubnet, Kind: RoutePeer, Peer: peerAddr, PeerMAC: packet.BroadcastMAC}},
		{"peer inside node subnet", Route{Prefix: netip.MustParsePrefix("10.244.1.9/32"), Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC}},
		{"node subnet as peer", Route{Prefix: subnet, Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC}},
		{"local via outside subnet", Route{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Kind: RouteLocal, Via: netip.MustParseAddr("10.9.9.9")}},
		{"local with peer", Route{Prefix: netip.MustParsePrefix("10.9.0.0/16"), Kind: RouteLocal, Peer: peerAddr}},
		{"zero prefix", Route{Kind: RouteLocal}},
	}
	for _, tc := range bad {
		if err := s.SetRoutes([]Route{tc.r}); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	dup := Route{Prefix: peerSubnet, Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC}
	if err := s.SetRoutes([]Route{dup, dup}); err == nil {
		t.Error("duplicate prefix accepted")
	}
	if r := lookup("10.244.2.9"); r == nil || r.peer != peerAddr {
		t.Error("a failed SetRoutes changed the table")
	}
}

func FuzzLPM(f *testing.F) {
	f.Add(uint64(1), uint16(100))
	f.Add(uint64(42), uint16(2000))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16) {
		r := rand.New(rand.NewPCG(seed, seed>>1))
		ps := randomPrefixes(r, int(n%3000))
		tr := buildLPM(ps)
		oracle := newBruteLPM(ps)
		for range 500 {
			a := r.Uint32()
			if len(ps) > 0 && r.IntN(2) == 0 {
				a = ps[r.IntN(len(ps))].addr | r.Uint32()&0xff
			}
			got, gok := tr.lookup(a)
			want, wok := oracle.lookup(a)
			if gok != wok || gok && got != want {
				t.Fatalf("lookup %s = %d,%v want %d,%v", keyIP4(a), got, gok, want, wok)
			}
		}
	})
}
