package etcd_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/etcd"
	"github.com/weftnet/weft/registry/etcd/etcdtest"
	"github.com/weftnet/weft/registry/registrytest"
)

// TestForeignLease: a foreign node's lease (registry.ForeignTTL, issue 12
// item 9) is granted by a real etcd, listed as foreign by other clients,
// and released after another client takes it over (weft node remove).
func TestForeignLease(t *testing.T) {
	srv := etcdtest.Start(t)
	cluster := uniqueCluster()
	open := func() registry.Registry {
		r, err := etcd.Open(etcd.Config{Endpoints: []string{srv.Endpoint()}, Cluster: cluster,
			Options: registry.Options{Subnets: registrytest.Subnets(4)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	adder, remover := open(), open()
	req := registry.AcquireRequest{Node: "r2-k", Underlay: netip.MustParseAddr("10.99.0.9"),
		RouterMAC: packet.MAC{2, 0x6b, 0, 0, 0, 1}, VNI: 1, TTL: registry.ForeignTTL, Foreign: true}
	l, err := adder.Acquire(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Foreign || !l.Live(time.Now().Add(9*365*24*time.Hour)) {
		t.Errorf("granted %+v; want foreign, live in nine years", l)
	}
	ls, err := remover.List(ctx)
	if err != nil || len(ls) != 1 || !ls[0].Foreign || ls[0].Subnet != l.Subnet {
		t.Fatalf("another client lists %+v, %v; want the foreign lease", ls, err)
	}
	if _, err := remover.Acquire(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := remover.Release(ctx, req.Node); err != nil {
		t.Fatal(err)
	}
	if ls, err := adder.List(ctx); err != nil || len(ls) != 0 {
		t.Errorf("after release: %+v, %v; want no lease", ls, err)
	}
}
