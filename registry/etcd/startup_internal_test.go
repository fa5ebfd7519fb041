package etcd

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/etcd/etcdtest"
	"github.com/weftnet/weft/registry/registrytest"
)

// countingKV counts the reads of one key prefix.
type countingKV struct {
	clientv3.KV
	prefix string
	gets   atomic.Int32
}

func (c *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if key == c.prefix {
		c.gets.Add(1)
	}
	return c.KV.Get(ctx, key, opts...)
}

// TestStartupListsOnce (issue 16): a node lists its peers (List), then
// watches; the watch starts from List's read and revision rather than
// reading every node key again, and still sees what changed in between.
func TestStartupListsOnce(t *testing.T) {
	srv := etcdtest.Start(t)
	open := func() *Registry {
		r, err := Open(Config{Endpoints: []string{srv.Endpoint()}, Cluster: "startup",
			Options: registry.Options{Subnets: registrytest.Subnets(4)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	writer, node := open(), open()
	req := func(name string, b byte) registry.AcquireRequest {
		return registry.AcquireRequest{Node: name, Underlay: netip.AddrFrom4([4]byte{192, 0, 2, b}), TTL: time.Minute}
	}
	if _, err := writer.Acquire(ctx, req("node-a", 1)); err != nil {
		t.Fatal(err)
	}
	kv := &countingKV{KV: node.cli.KV, prefix: node.nodesPrefix()}
	node.cli.KV = kv

	leases, err := node.List(ctx)
	if err != nil || len(leases) != 1 {
		t.Fatalf("List = %+v, %v; want node-a", leases, err)
	}
	b, err := writer.Acquire(ctx, req("node-b", 2)) // between the List and the Watch
	if err != nil {
		t.Fatal(err)
	}
	ch, err := node.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func() registry.Event {
		select {
		case ev := <-ch:
			return ev
		case <-ctx.Done():
			t.Fatal("no watch event")
		}
		panic("unreachable")
	}
	if ev := next(); ev.Type != registry.Snapshot || len(ev.Leases) != 1 || ev.Leases[0].Node != "node-a" {
		t.Fatalf("first event %v %+v, want the snapshot List read (node-a)", ev.Type, ev.Leases)
	}
	if ev := next(); ev.Type != registry.Added || !ev.Lease.SameAs(b) {
		t.Fatalf("second event %v %+v, want node-b added", ev.Type, ev.Lease)
	}
	if n := kv.gets.Load(); n != 1 {
		t.Errorf("nodes/ read %d times by List then Watch, want once", n)
	}
}
