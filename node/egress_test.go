package node

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/nft"
)

func TestComplement(t *testing.T) {
	for _, tc := range []struct {
		name string
		excl []string
		want int // prefixes in the complement
	}{
		{"cluster /16", []string{"10.244.0.0/16"}, 16},
		{"cluster and services", []string{"10.244.0.0/16", "10.96.0.0/12"}, 8 + 3 + 7},
		{"nothing", nil, 1},
		{"everything", []string{"0.0.0.0/0"}, 0},
		{"host route", []string{"203.0.113.7/32"}, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var excl []netip.Prefix
			for _, s := range tc.excl {
				excl = append(excl, netip.MustParsePrefix(s))
			}
			got := complement(excl)
			if len(got) != tc.want {
				t.Errorf("%d prefixes, want %d: %v", len(got), tc.want, got)
			}
			for i, p := range got {
				for _, e := range excl {
					if p.Overlaps(e) {
						t.Errorf("%s overlaps the excluded %s", p, e)
					}
				}
				for _, q := range got[i+1:] {
					if p.Overlaps(q) {
						t.Errorf("%s and %s overlap", p, q)
					}
				}
			}
			// Every address is in exactly one of excl or got.
			r := rand.New(rand.NewPCG(1, 2))
			for range 20000 {
				a := netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
				in := slices.ContainsFunc(excl, func(e netip.Prefix) bool { return e.Contains(a) })
				out := slices.ContainsFunc(got, func(p netip.Prefix) bool { return p.Contains(a) })
				if in == out {
					t.Fatalf("%s: excluded %v, covered %v", a, in, out)
				}
			}
		})
	}
}

func TestNonMasquerade(t *testing.T) {
	cluster := netip.MustParsePrefix("10.244.0.0/16")
	other := netip.MustParsePrefix("192.168.0.0/16")
	for _, tc := range []struct {
		name string
		eg   EgressConfig
		want []netip.Prefix
	}{
		{"default", EgressConfig{}, []netip.Prefix{cluster, nft.LinkLocal}},
		{"given", EgressConfig{NonMasqueradeCIDRs: []netip.Prefix{other}}, []netip.Prefix{other, nft.LinkLocal}},
		{"link-local masqueraded", EgressConfig{MasqueradeLinkLocal: true}, []netip.Prefix{cluster}},
		{"empty list", EgressConfig{NonMasqueradeCIDRs: []netip.Prefix{}, MasqueradeLinkLocal: true}, []netip.Prefix{}},
	} {
		c := Config{ClusterCIDR: cluster, Egress: tc.eg}
		if got := c.nonMasquerade(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
