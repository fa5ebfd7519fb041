package overlay

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func peer(name, underlay, subnet string) Peer {
	return Peer{Name: name, Underlay: netip.MustParseAddr(underlay), Subnet: netip.MustParsePrefix(subnet), VNI: 1}
}

func TestPeerTableLookupAndList(t *testing.T) {
	var pt PeerTable
	if _, ok := pt.Lookup(underA); ok || pt.Len() != 0 || pt.List() != nil {
		t.Fatal("zero PeerTable is not empty")
	}
	in := []Peer{peer("b", "10.99.0.2", "10.244.2.0/24"), peer("a", "10.99.0.1", "10.244.1.0/24")}
	if err := pt.Set(in); err != nil {
		t.Fatal(err)
	}
	in[0].Name = "changed" // Set must have copied
	p, ok := pt.Lookup(underB)
	if !ok || p.Name != "b" || p.Stats() == nil {
		t.Fatalf("Lookup(%v) = %+v, %v", underB, p, ok)
	}
	if _, ok := pt.Lookup([4]byte{10, 99, 0, 3}); ok {
		t.Error("Lookup found a peer that was never set")
	}
	list := pt.List()
	if len(list) != 2 || list[0].Name != "b" || list[1].Name != "a" || list[1].Stats() == nil {
		t.Fatalf("List = %+v", list)
	}
	list[0].Name = "mutated"
	if p, _ := pt.Lookup(underB); p.Name != "b" {
		t.Error("List returned the table's own storage")
	}
}

func TestPeerTableSetValidation(t *testing.T) {
	tests := []struct {
		name    string
		peers   []Peer
		wantErr string
	}{
		{"empty", nil, ""},
		{"4in6 underlay accepted", []Peer{{Name: "x", Underlay: netip.MustParseAddr("::ffff:10.99.0.1"), Subnet: netip.MustParsePrefix("10.244.1.0/24")}}, ""},
		{"unmasked subnet accepted", []Peer{peer("x", "10.99.0.1", "10.244.1.9/24")}, ""},
		{"IPv6 underlay", []Peer{peer("x", "2001:db8::1", "10.244.1.0/24")}, "not IPv4"},
		{"no underlay", []Peer{{Name: "x", Subnet: netip.MustParsePrefix("10.244.1.0/24")}}, "not IPv4"},
		{"no subnet", []Peer{{Name: "x", Underlay: netip.MustParseAddr("10.99.0.1")}}, "not a valid IPv4 prefix"},
		{"IPv6 subnet", []Peer{peer("x", "10.99.0.1", "fd00::/64")}, "not a valid IPv4 prefix"},
		{"VNI too big", []Peer{{Name: "x", Underlay: netip.MustParseAddr("10.99.0.1"), Subnet: netip.MustParsePrefix("10.244.1.0/24"), VNI: MaxVNI + 1}}, "24 bits"},
		{"duplicate underlay", []Peer{peer("x", "10.99.0.1", "10.244.1.0/24"), peer("y", "10.99.0.1", "10.244.2.0/24")}, "share underlay"},
		{"same subnet", []Peer{peer("x", "10.99.0.1", "10.244.1.0/24"), peer("y", "10.99.0.2", "10.244.1.0/24")}, "overlap"},
		{"nested subnet", []Peer{peer("x", "10.99.0.1", "10.244.1.128/25"), peer("y", "10.99.0.2", "10.244.0.0/16"), peer("z", "10.99.0.3", "10.245.0.0/24")}, "overlap"},
		{"nested, not neighbours", []Peer{peer("x", "10.99.0.1", "10.0.0.0/8"), peer("y", "10.99.0.2", "10.1.0.0/24"), peer("z", "10.99.0.3", "10.2.0.0/24")}, "overlap"},
		{"adjacent subnets fine", []Peer{peer("x", "10.99.0.1", "10.244.0.0/24"), peer("y", "10.99.0.2", "10.244.1.0/24")}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pt PeerTable
			if err := pt.Set([]Peer{peer("old", "10.99.9.9", "10.9.9.0/24")}); err != nil {
				t.Fatal(err)
			}
			err := pt.Set(tc.peers)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Set: %v", err)
				}
				if pt.Len() != len(tc.peers) {
					t.Errorf("Len = %d, want %d", pt.Len(), len(tc.peers))
				}
				for _, p := range pt.List() {
					if !p.Underlay.Is4() || p.Subnet != p.Subnet.Masked() {
						t.Errorf("stored peer not normalised: %+v", p)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Set error = %v, want one containing %q", err, tc.wantErr)
			}
			if _, ok := pt.Lookup([4]byte{10, 99, 9, 9}); !ok || pt.Len() != 1 {
				t.Error("failed Set replaced the old table")
			}
		})
	}
}

func TestPeerStatsStableAcrossSet(t *testing.T) {
	var pt PeerTable
	a, b := peer("a", "10.99.0.1", "10.244.1.0/24"), peer("b", "10.99.0.2", "10.244.2.0/24")
	if err := pt.Set([]Peer{a, b}); err != nil {
		t.Fatal(err)
	}
	pa, _ := pt.Lookup(underA)
	pb, _ := pt.Lookup(underB)
	sa, sb := pa.Stats(), pb.Stats()
	if sa == sb {
		t.Fatal("two peers share one PeerStats")
	}
	sa.TxFrames.Add(3)

	a.Name, a.Subnet = "a-renamed", netip.MustParsePrefix("10.244.7.0/24")
	if err := pt.Set([]Peer{a}); err != nil { // b removed, a changed
		t.Fatal(err)
	}
	pa2, _ := pt.Lookup(underA)
	if pa2.Stats() != sa || pa2.Stats().TxFrames.Load() != 3 || pa2.Name != "a-renamed" {
		t.Error("peer a lost its stats across Set")
	}
	if pa.Name != "a" || pa.Stats() != sa {
		t.Error("an old *Peer changed under its holder")
	}
	if err := pt.Set([]Peer{a, b}); err != nil { // b back
		t.Fatal(err)
	}
	pb2, _ := pt.Lookup(underB)
	if pb2.Stats() == sb || pb2.Stats() == nil {
		t.Error("a removed and re-added peer kept stale stats (want fresh)")
	}
}

// TestPeerTableConcurrent is for -race: readers look up while the control
// plane keeps replacing the table.
func TestPeerTableConcurrent(t *testing.T) {
	var pt PeerTable
	sets := [][]Peer{
		{peer("a", "10.99.0.1", "10.244.1.0/24")},
		{peer("a", "10.99.0.1", "10.244.1.0/24"), peer("b", "10.99.0.2", "10.244.2.0/24")},
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1e6 && time.Now().Before(deadline); i++ {
				if p, ok := pt.Lookup(underA); ok {
					p.Stats().RxFrames.Add(1)
				}
				if p, ok := pt.Lookup(underB); ok && p.Name != "b" {
					t.Errorf("read a torn peer %+v", p)
					return
				}
			}
		}()
	}
	for i := 0; i < 1e5 && time.Now().Before(deadline); i++ {
		if err := pt.Set(sets[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	p, ok := pt.Lookup(underA)
	if !ok || p.Stats().RxFrames.Load() == 0 {
		t.Error("readers never saw peer a")
	}
}
