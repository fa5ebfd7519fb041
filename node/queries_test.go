package node

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/file"
)

// TestPeersExpiryIsTheRegistrys is issue 12 item 10: `weft peers` showed a
// live peer as "expired 1m52s ago" while `weft subnets` showed it renewed.
// The watch that feeds the peer table sends nothing for a renewal that only
// moves the expiry (package registry), so the expiry it saw last goes
// stale; both queries must read lease state from one place, the registry.
func TestPeersExpiryIsTheRegistrys(t *testing.T) {
	ctx := context.Background()
	pool, err := ipam.NewSubnetPool(netip.MustParsePrefix("10.244.0.0/16"), 24)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := file.Open(file.Config{Dir: t.TempDir(), Options: registry.Options{Subnets: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	seen, err := reg.Acquire(ctx, registry.AcquireRequest{Node: "r2-b", Underlay: netip.MustParseAddr("10.99.0.2"),
		RouterMAC: packet.MAC{0x02, 0xaa, 0, 0, 0, 2}, VNI: 1, TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: Config{NodeName: "r2-a", Registry: reg}, peers: &overlay.PeerTable{}}
	// What the watch delivered when the peer came up.
	n.liveNames.Store(&[]string{seen.Node})
	if err := n.peers.Set([]overlay.Peer{{Name: seen.Node, Underlay: seen.Underlay, RouterMAC: seen.RouterMAC, Subnet: seen.Subnet, VNI: 1}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	renewed, err := reg.Renew(ctx, seen.Node) // no watch event: only the expiry moved
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.Expiry.After(seen.Expiry) {
		t.Fatalf("renewal did not move the expiry: %v then %v", seen.Expiry, renewed.Expiry)
	}
	peers, err := n.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || !peers[0].Expires.Equal(renewed.Expiry) {
		t.Fatalf("peers = %+v, want r2-b expiring at %v as the registry has it (the watch saw %v)", peers, renewed.Expiry, seen.Expiry)
	}
}
