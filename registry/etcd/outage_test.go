package etcd_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/etcd"
	"github.com/weftnet/weft/registry/etcd/etcdtest"
	"github.com/weftnet/weft/registry/registrytest"
)

func request(node string, underlay byte, ttl time.Duration) registry.AcquireRequest {
	return registry.AcquireRequest{
		Node:      node,
		Underlay:  netip.AddrFrom4([4]byte{192, 0, 2, underlay}),
		RouterMAC: packet.MAC{2, 0, 0, 0, 0, underlay},
		VNI:       1,
		TTL:       ttl,
	}
}

func open(t *testing.T, endpoint, cluster string, log *slog.Logger) *etcd.Registry {
	t.Helper()
	r, err := etcd.Open(etcd.Config{
		Endpoints:      []string{endpoint},
		Cluster:        cluster,
		RequestTimeout: time.Second,
		Options:        registry.Options{Subnets: registrytest.Subnets(8), Logger: log},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// logRecorder is a slog handler that keeps the messages it is given.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, rec.Message)
	r.mu.Unlock()
	return nil
}

func (r *logRecorder) count(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

func TestUnreachableEtcdFailsClearly(t *testing.T) {
	// A port nothing listens on: bind one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	ln.Close()

	r, err := etcd.Open(etcd.Config{
		Endpoints:      []string{endpoint},
		RequestTimeout: 300 * time.Millisecond,
		Options:        registry.Options{Subnets: registrytest.Subnets(2)},
	})
	if err != nil {
		t.Fatalf("Open must not wait for etcd: %v", err)
	}
	defer r.Close()
	ctx := context.Background()
	_, acquireErr := r.Acquire(ctx, request("node-a", 1, time.Minute))
	_, listErr := r.List(ctx)
	releaseErr := r.Release(ctx, "node-a")
	for name, err := range map[string]error{"Acquire": acquireErr, "List": listErr, "Release": releaseErr} {
		if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), endpoint) {
			t.Errorf("%s against a dead endpoint: err = %v; want ErrUnavailable naming %s", name, err, endpoint)
		}
	}

	// Watch does not fail: it waits for etcd, and ends with its context.
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	ch, err := r.Watch(wctx)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	for ev := range ch {
		t.Errorf("event %v from an unreachable etcd", ev.Type)
	}
}

// nextEvent returns the next watch event, failing after d.
func nextEvent(t *testing.T, ch <-chan registry.Event, d time.Duration) registry.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(d):
		t.Fatalf("no watch event within %v", d)
	}
	panic("unreachable")
}

func waitKeeper(t *testing.T, k *registry.Keeper, state registry.HealthState) registry.Health {
	t.Helper()
	return waitHealth(t, k, func(h registry.Health) bool { return h.State == state })
}

func waitHealth(t *testing.T, k *registry.Keeper, cond func(registry.Health) bool) registry.Health {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		h := k.Health()
		if cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("keeper health not as expected after 15 s: %+v", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOutage takes etcd away under a running Keeper and Watch: frozen
// (SIGSTOP, requests hang) or killed and restarted on the same data. The
// keeper must report degraded while it is gone and recover after, keeping
// its lease (etcd extends leases across a restart); the watcher must pick
// up what changes once etcd is back, without dropping the node.
func TestOutage(t *testing.T) {
	tests := []struct {
		name         string
		down, up     func(*etcdtest.Server) error
		wantAcquires int32
	}{
		{"pause", (*etcdtest.Server).Pause, (*etcdtest.Server).Resume, 1},
		{"kill and restart", func(s *etcdtest.Server) error { s.Kill(); return nil }, (*etcdtest.Server).Restart, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := etcdtest.Start(t)
			logs := &logRecorder{}
			log := slog.New(logs)
			keeperReg := open(t, srv.Endpoint(), "outage", log)
			watcherReg := open(t, srv.Endpoint(), "outage", log)

			var acquires atomic.Int32
			k, err := registry.NewKeeper(keeperReg, registry.KeeperConfig{
				Request:     request("node-a", 1, 5*time.Second),
				RenewEvery:  300 * time.Millisecond,
				CallTimeout: 500 * time.Millisecond,
				MinBackoff:  100 * time.Millisecond,
				MaxBackoff:  500 * time.Millisecond,
				OnAcquire:   func(registry.Lease) { acquires.Add(1) },
				Logger:      log,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); k.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			select {
			case <-k.Acquired():
			case <-time.After(10 * time.Second):
				t.Fatalf("no lease: %+v", k.Health())
			}
			nodeA, _ := k.Lease()

			ch, err := watcherReg.Watch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ev := nextEvent(t, ch, 5*time.Second); ev.Type != registry.Snapshot || len(ev.Leases) != 1 {
				t.Fatalf("first event %v %+v, want a snapshot of node-a", ev.Type, ev.Leases)
			}

			if err := tc.down(srv); err != nil {
				t.Fatal(err)
			}
			waitKeeper(t, k, registry.HealthDegraded)
			if l, ok := k.Lease(); !ok || l.Subnet != nodeA.Subnet {
				t.Errorf("Lease() while degraded = %+v, %v; want the last known lease", l, ok)
			}
			// Several failures in one outage: logged once, not per failure.
			h := waitHealth(t, k, func(h registry.Health) bool { return h.Failures >= 3 })
			if n := logs.count("lease degraded"); n != 1 || h.State != registry.HealthDegraded {
				t.Errorf("after %d failures in a row (state %v): degraded logged %d times, want once", h.Failures, h.State, n)
			}
			if err := tc.up(srv); err != nil {
				t.Fatal(err)
			}
			waitKeeper(t, k, registry.HealthOK)
			// A renewal that times out while a resumed etcd works off its
			// backlog is a second, real outage: so compare, do not pin to 1.
			if d, r := logs.count("lease degraded"), logs.count("lease recovered"); r < 1 || d != r {
				t.Errorf("logged degraded %d and recovered %d times: want one recovery per outage", d, r)
			}
			if got := acquires.Load(); got != tc.wantAcquires {
				t.Errorf("keeper acquired %d times, want %d (the lease should survive the outage)", got, tc.wantAcquires)
			}

			// A node that joins after the outage reaches the watcher,
			// whenever its connection comes back.
			writer := open(t, srv.Endpoint(), "outage", log)
			wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer wcancel()
			nodeB, err := writer.Acquire(wctx, request("node-b", 2, 30*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for {
				ev := nextEvent(t, ch, 10*time.Second)
				if ev.Type == registry.Removed && ev.Lease.Node == "node-a" {
					t.Fatal("watcher dropped node-a, whose lease survived")
				}
				if ev.Type == registry.Added && ev.Lease.SameAs(nodeB) {
					break
				}
			}
		})
	}
}

// proxy is a TCP relay the test can cut, so one client loses etcd while
// others keep writing to it.
type proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{target: target, addr: ln.Addr().String(), ln: ln, conns: make(map[net.Conn]bool)}
	go p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close(); c.Close() }()
		go func() { io.Copy(c, u); u.Close(); c.Close() }()
	}
}

// cut stops accepting and closes every relayed connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// restore listens again on the same address.
func (p *proxy) restore(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.serve(ln)
}

// TestWatchCatchesUp cuts one watcher off etcd, changes the registry
// meanwhile (and compacts its history, in one case), reconnects it, and
// checks it reports exactly what changed.
func TestWatchCatchesUp(t *testing.T) {
	tests := []struct {
		name    string
		compact bool
	}{
		{"resume from revision", false},
		{"re-list after compaction", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := etcdtest.Start(t)
			px := newProxy(t, srv.Addr())
			logs := &logRecorder{}
			watcherReg := open(t, "http://"+px.addr, "catchup", slog.New(logs))
			writer := open(t, srv.Endpoint(), "catchup", nil)
			ctx := context.Background()
			for i, node := range []string{"node-a", "node-c", "node-d"} {
				if _, err := writer.Acquire(ctx, request(node, byte(i+1), 30*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := watcherReg.Watch(wctx)
			if err != nil {
				t.Fatal(err)
			}
			view := registry.LeaseMap(nextEvent(t, ch, 5*time.Second).Leases)
			if len(view) != 3 {
				t.Fatalf("snapshot has %d leases, want 3", len(view))
			}

			px.cut()
			nodeB, err := writer.Acquire(ctx, request("node-b", 2, 30*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if err := writer.Release(ctx, "node-c"); err != nil {
				t.Fatal(err)
			}
			nodeD, err := writer.Acquire(ctx, request("node-d", 44, 30*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if tc.compact {
				compactAll(t, srv.Endpoint())
			}
			px.restore(t)

			want := map[string]registry.EventType{"node-b": registry.Added, "node-c": registry.Removed, "node-d": registry.Changed}
			got := make(map[string]registry.EventType)
			for len(got) < len(want) {
				ev := nextEvent(t, ch, 15*time.Second)
				got[ev.Lease.Node] = ev.Type
				switch ev.Type {
				case registry.Added, registry.Changed:
					view[ev.Lease.Node] = ev.Lease
				case registry.Removed:
					delete(view, ev.Lease.Node)
				default:
					t.Fatalf("%v event after reconnecting", ev.Type)
				}
			}
			for node, typ := range want {
				if got[node] != typ {
					t.Errorf("%s: got %v, want %v", node, got[node], typ)
				}
			}
			if !view["node-b"].SameAs(nodeB) || !view["node-d"].SameAs(nodeD) || len(view) != 3 {
				t.Errorf("watcher's view after catching up: %+v", view)
			}
			if n := logs.count("compacted"); (n > 0) != tc.compact {
				t.Errorf("re-listed after compaction %d times, compacted: %v", n, tc.compact)
			}
		})
	}
}

// compactAll compacts etcd's history up to its current revision.
func compactAll(t *testing.T, endpoint string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
}
