package node

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/file"
)

// TestForeignNodeAddRemove is issue 12 item 9: a kernel VXLAN node could
// join only through a hand-written registry file that nothing renewed.
// weft node add registers it with a subnet from the pool and a lease that
// no weftd has to renew; weft node remove ends it and frees the subnet.
func TestForeignNodeAddRemove(t *testing.T) {
	ctx := context.Background()
	pool, err := ipam.NewSubnetPool(netip.MustParsePrefix("10.244.0.0/16"), 24)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	open := func() registry.Registry {
		reg, err := file.Open(file.Config{Dir: dir, Options: registry.Options{Subnets: pool}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
		return reg
	}
	reg := open()
	self, err := reg.Acquire(ctx, registry.AcquireRequest{Node: "r2-a", Underlay: netip.MustParseAddr("10.99.0.1"),
		RouterMAC: packet.MAC{0x02, 0xaa, 0, 0, 0, 1}, VNI: 1, TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: Config{NodeName: "r2-a", Registry: reg, VNI: 1, Port: 4789}, log: slog.New(slog.DiscardHandler), mtu: 1450}
	kMAC := packet.MAC{0x02, 0x6b, 0, 0, 0, 1}
	req := api.ForeignNodeRequest{Name: "r2-k", Underlay: netip.MustParseAddr("10.99.0.9"), VTEPMAC: kMAC}
	got, err := n.AddForeignNode(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !pool.Contains(got.Subnet) || got.Subnet == self.Subnet || got.VNI != 1 || got.Port != 4789 || got.MTU != 1450 {
		t.Errorf("registration %+v: want a fresh subnet of the pool and the cluster's VXLAN settings", got)
	}
	if len(got.Nodes) != 1 || got.Nodes[0].Node != "r2-a" || got.Nodes[0].Subnet != self.Subnet {
		t.Errorf("nodes to route to: %+v, want r2-a %s", got.Nodes, self.Subnet)
	}

	// Another client (a restarted weftd, another node) sees it live, well
	// past any weftd TTL, with no one renewing it.
	leases, err := open().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var k registry.Lease
	for _, l := range leases {
		if l.Node == "r2-k" {
			k = l
		}
	}
	if !k.Foreign || k.Subnet != got.Subnet || k.RouterMAC != kMAC || !k.Live(time.Now().Add(365*24*time.Hour)) {
		t.Fatalf("foreign lease as the registry lists it: %+v; want foreign, live a year from now", k)
	}

	if again, err := n.AddForeignNode(ctx, req); err != nil || again.Subnet != got.Subnet {
		t.Errorf("adding the same node again: %+v, %v; want the same subnet", again, err)
	}
	for _, tc := range []struct {
		name string
		req  api.ForeignNodeRequest
		want error
	}{
		{"same name, other underlay", api.ForeignNodeRequest{Name: "r2-k", Underlay: netip.MustParseAddr("10.99.0.8"), VTEPMAC: kMAC}, api.ErrConflict},
		{"a weftd node's name", api.ForeignNodeRequest{Name: "r2-a", Underlay: netip.MustParseAddr("10.99.0.7"), VTEPMAC: kMAC}, api.ErrConflict},
		{"another node's underlay", api.ForeignNodeRequest{Name: "r2-j", Underlay: netip.MustParseAddr("10.99.0.1"), VTEPMAC: kMAC}, api.ErrConflict},
		{"bad name", api.ForeignNodeRequest{Name: "r2/k", Underlay: netip.MustParseAddr("10.99.0.6"), VTEPMAC: kMAC}, api.ErrBadRequest},
	} {
		if _, err := n.AddForeignNode(ctx, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}

	if err := n.RemoveForeignNode(ctx, "r2-a"); !errors.Is(err, api.ErrConflict) {
		t.Errorf("removing a weftd node: %v, want a conflict", err)
	}
	if err := n.RemoveForeignNode(ctx, "r2-nope"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("removing an unknown node: %v, want not found", err)
	}
	// Removed through another weftd than the one that added it.
	m := &Node{cfg: Config{NodeName: "r2-b", Registry: open(), VNI: 1, Port: 4789}, log: slog.New(slog.DiscardHandler)}
	if err := m.RemoveForeignNode(ctx, "r2-k"); err != nil {
		t.Fatal(err)
	}
	if leases, _ := reg.List(ctx); len(leases) != 1 || leases[0].Node != "r2-a" {
		t.Errorf("after remove the registry lists %+v, want only r2-a", leases)
	}
	// The subnet is free again: the next node gets it.
	next, err := n.AddForeignNode(ctx, api.ForeignNodeRequest{Name: "r2-j", Underlay: netip.MustParseAddr("10.99.0.5"), VTEPMAC: kMAC})
	if err != nil || next.Subnet != got.Subnet {
		t.Errorf("next foreign node: %+v, %v; want the freed subnet %s", next, err, got.Subnet)
	}
}

// TestForeignNodeCommands: the commands weft node add prints, for a node
// with one weft peer.
func TestForeignNodeCommands(t *testing.T) {
	f := api.ForeignNode{Name: "k", Underlay: netip.MustParseAddr("10.99.0.9"), VTEPMAC: packet.MAC{2, 0x6b, 0, 0, 0, 1},
		Subnet: netip.MustParsePrefix("10.244.3.0/24"), VNI: 1, Port: 4789, MTU: 1450,
		Nodes: []api.Subnet{{Node: "a", Underlay: netip.MustParseAddr("10.99.0.1"), Subnet: netip.MustParsePrefix("10.244.1.0/24"), RouterMAC: packet.MAC{2, 0xaa, 0, 0, 0, 1}}}}
	want := []string{
		"ip link add weft.1 address 02:6b:00:00:00:01 type vxlan id 1 dstport 4789 local 10.99.0.9 dev eth0 nolearning",
		"ip addr add 10.244.3.0/32 dev weft.1",
		"ip link set weft.1 mtu 1450 up",
		"ip route replace 10.244.1.0/24 via 10.244.1.0 dev weft.1 onlink",
		"ip neigh replace 10.244.1.0 lladdr 02:aa:00:00:00:01 dev weft.1 nud permanent",
		"bridge fdb append 02:aa:00:00:00:01 dev weft.1 dst 10.99.0.1",
	}
	got := f.Commands("weft.1", "eth0")
	if len(got) != len(want) {
		t.Fatalf("%d commands, want %d: %q", len(got), len(want), got)
	}
	for i := range want {
		if s := strings.Join(got[i], " "); s != want[i] {
			t.Errorf("command %d: %q, want %q", i, s, want[i])
		}
	}
}
