package registrytest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
)

// Params is what one test of the suite asks of a fresh store.
type Params struct {
	Subnets      registry.SubnetSource
	ReclaimAfter time.Duration // 0 = the backend's default
}

// NewStore makes an empty store for one test (a temporary directory, a
// fresh etcd key prefix...) and returns a function that opens a new client
// of it, as a restarted daemon would. The suite closes every client it
// opens; Close must be idempotent.
type NewStore func(t *testing.T, p Params) (open func(t *testing.T) registry.Registry)

// ShortTTL is the TTL the suite asks for when it waits for expiry. Backends
// may round it up (etcd grants at least 2 s); the suite goes by the Expiry
// they return.
const ShortTTL = 2 * time.Second

// ExpiryGrace is how long after a lease's expiry a watcher must have seen
// it Removed: the daemon promises peers drop within TTL + 2 s.
const ExpiryGrace = 2 * time.Second

// Run runs the conformance suite against a backend. The tests run in
// parallel, each on its own store; the whole suite takes a few seconds
// (mostly waiting for short leases to expire).
func Run(t *testing.T, newStore NewStore) {
	RunExcept(t, newStore, nil)
}

// RunExcept runs the suite but for the cases named in notApplicable,
// which are reported as skipped with the reason given: for a backend
// whose semantics differ on purpose (the kube backend's subnets come from
// the cluster, and its leases do not expire).
func RunExcept(t *testing.T, newStore NewStore, notApplicable map[string]string) {
	tests := []struct {
		name string
		run  func(*testing.T, NewStore)
	}{
		{"AcquireFresh", testAcquireFresh},
		{"SameNodeKeepsSubnet", testSameNodeKeepsSubnet},
		{"SameNodeKeepsSubnetAfterExpiry", testKeepsSubnetAfterExpiry},
		{"RacingNodesGetDistinctSubnets", testRacingNodes},
		{"PoolExhausted", testPoolExhausted},
		{"ReclaimAfterGrace", testReclaim},
		{"RenewExtends", testRenewExtends},
		{"RenewLost", testRenewLost},
		{"ExpiryRemoves", testExpiryRemoves},
		{"WatchEvents", testWatchEvents},
		{"ReleaseFreesSubnet", testReleaseFrees},
		{"PinnedSubnetNeverMoves", testPinnedSubnet},
		{"ConcurrentClients", testConcurrentClients},
		{"CloseEndsWatch", testClose},
		{"RejectsBadRequests", testBadRequests},
	}
	for name := range notApplicable {
		if !slices.ContainsFunc(tests, func(tc struct {
			name string
			run  func(*testing.T, NewStore)
		}) bool {
			return tc.name == name
		}) {
			t.Errorf("RunExcept: no case %q to leave out", name)
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if why, ok := notApplicable[tc.name]; ok {
				t.Skip("not applicable to this backend: " + why)
			}
			t.Parallel()
			tc.run(t, newStore)
		})
	}
}

// client opens a client and closes it when the test ends.
func client(t *testing.T, open func(*testing.T) registry.Registry) registry.Registry {
	t.Helper()
	c := open(t)
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// request returns a distinct, valid request for node number i; odd
// numbers advertise a capability, so the backends' encodings carry it.
func request(node string, i int, ttl time.Duration) registry.AcquireRequest {
	return registry.AcquireRequest{
		Node:      node,
		Underlay:  netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}),
		RouterMAC: packet.MAC{0x02, 0, 0, 0, byte(i >> 8), byte(i)},
		VNI:       1,
		Port:      4789,
		TTL:       ttl,
		Caps:      registry.Caps(i & 1),
	}
}

func mustAcquire(t *testing.T, c registry.Registry, req registry.AcquireRequest) registry.Lease {
	t.Helper()
	l, err := c.Acquire(testCtx(t), req)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", req.Node, err)
	}
	return l
}

func nth(t *testing.T, s registry.SubnetSource, i int) netip.Prefix {
	t.Helper()
	p, err := s.Nth(i)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func list(t *testing.T, c registry.Registry) map[string]registry.Lease {
	t.Helper()
	leases, err := c.List(testCtx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for i := 1; i < len(leases); i++ {
		if leases[i-1].Node >= leases[i].Node {
			t.Fatalf("List not sorted by node: %q before %q", leases[i-1].Node, leases[i].Node)
		}
	}
	return registry.LeaseMap(leases)
}

// waitGone waits until l has expired and List no longer has it.
func waitGone(t *testing.T, c registry.Registry, l registry.Lease) {
	t.Helper()
	deadline := l.Expiry.Add(ExpiryGrace)
	for {
		if _, ok := list(t, c)[l.Node]; !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease of %s (expiry %v) still listed %v after expiry", l.Node, l.Expiry.Format(time.StampMilli), ExpiryGrace)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkLease(t *testing.T, got registry.Lease, req registry.AcquireRequest, subnet netip.Prefix) {
	t.Helper()
	want := registry.Lease{Node: req.Node, Underlay: req.Underlay, Subnet: subnet,
		RouterMAC: req.RouterMAC, VNI: req.VNI, Port: req.Port, Caps: req.Caps}
	if !got.SameAs(want) {
		t.Errorf("lease = %+v, want %+v", got, want)
	}
}

func testAcquireFresh(t *testing.T, newStore NewStore) {
	pool := Subnets(4)
	c := client(t, newStore(t, Params{Subnets: pool}))
	tests := []struct {
		node   string
		subnet int
	}{{"node-a", 0}, {"node-b", 1}, {"node.c_3", 2}}
	for i, tc := range tests {
		req := request(tc.node, i+1, 30*time.Second)
		before := time.Now()
		l := mustAcquire(t, c, req)
		checkLease(t, l, req, nth(t, pool, tc.subnet))
		if !l.Expiry.After(before) || l.Expiry.After(time.Now().Add(req.TTL+time.Second)) {
			t.Errorf("%s: expiry %v not within TTL %v of now", tc.node, l.Expiry, req.TTL)
		}
		got, ok := list(t, c)[tc.node]
		if !ok || !got.SameAs(l) {
			t.Errorf("List has %+v (present %v), want %+v", got, ok, l)
		}
	}
	if n := len(list(t, c)); n != len(tests) {
		t.Errorf("List has %d leases, want %d", n, len(tests))
	}
}

func testSameNodeKeepsSubnet(t *testing.T, newStore NewStore) {
	pool := Subnets(4)
	open := newStore(t, Params{Subnets: pool})
	first := client(t, open)
	a := mustAcquire(t, first, request("node-a", 1, 30*time.Second))
	b := mustAcquire(t, first, request("node-b", 2, 30*time.Second))
	first.Close()

	// A restarted daemon: a new client, and the node moved on the underlay.
	second := client(t, open)
	req := request("node-b", 22, 30*time.Second)
	b2 := mustAcquire(t, second, req)
	checkLease(t, b2, req, b.Subnet)
	a2 := mustAcquire(t, second, request("node-a", 1, 30*time.Second))
	if a2.Subnet != a.Subnet {
		t.Errorf("node-a got %v after restart, had %v", a2.Subnet, a.Subnet)
	}
	if got := list(t, second)["node-b"]; got.Underlay != req.Underlay {
		t.Errorf("List shows node-b at %v, want the new underlay %v", got.Underlay, req.Underlay)
	}
}

func testKeepsSubnetAfterExpiry(t *testing.T, newStore NewStore) {
	pool := Subnets(4)
	open := newStore(t, Params{Subnets: pool})
	c := client(t, open)
	a := mustAcquire(t, c, request("node-a", 1, ShortTTL))
	waitGone(t, c, a)

	// The claim outlives the lease: a newcomer must not get node-a's subnet.
	other := client(t, open)
	b := mustAcquire(t, other, request("node-b", 2, 30*time.Second))
	if b.Subnet == a.Subnet {
		t.Fatalf("node-b got %v, still claimed by the expired node-a", b.Subnet)
	}
	again := client(t, open)
	a2 := mustAcquire(t, again, request("node-a", 1, 30*time.Second))
	if a2.Subnet != a.Subnet {
		t.Errorf("node-a got %v back after expiry, had %v", a2.Subnet, a.Subnet)
	}
}

func testRacingNodes(t *testing.T, newStore NewStore) {
	const clients, perClient, sameName = 8, 3, 4
	pool := Subnets(clients*perClient + 1) // +1 for the node all race for
	open := newStore(t, Params{Subnets: pool})
	cs := make([]registry.Registry, clients)
	for i := range cs {
		cs[i] = client(t, open)
	}
	type result struct {
		lease registry.Lease
		err   error
	}
	results := make(chan result, clients*perClient+sameName)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range cs {
		for j := range perClient {
			wg.Go(func() {
				<-start
				l, err := c.Acquire(testCtx(t), request(fmt.Sprintf("race-%d-%d", i, j), i*perClient+j+1, 30*time.Second))
				results <- result{l, err}
			})
		}
	}
	// Several clients acquiring the same name must agree on its subnet.
	for i := range sameName {
		wg.Go(func() {
			<-start
			l, err := cs[i].Acquire(testCtx(t), request("race-same", 200, 30*time.Second))
			results <- result{l, err}
		})
	}
	close(start)
	wg.Wait()
	close(results)

	byNode := make(map[string]netip.Prefix)
	owner := make(map[netip.Prefix]string)
	for r := range results {
		if r.err != nil {
			t.Errorf("Acquire: %v", r.err)
			continue
		}
		if prev, ok := byNode[r.lease.Node]; ok && prev != r.lease.Subnet {
			t.Errorf("%s got both %v and %v", r.lease.Node, prev, r.lease.Subnet)
		}
		byNode[r.lease.Node] = r.lease.Subnet
		if o, ok := owner[r.lease.Subnet]; ok && o != r.lease.Node {
			t.Errorf("subnet %v given to both %s and %s", r.lease.Subnet, o, r.lease.Node)
		}
		owner[r.lease.Subnet] = r.lease.Node
	}
	live := list(t, cs[0])
	if len(live) != clients*perClient+1 {
		t.Errorf("List has %d leases, want %d", len(live), clients*perClient+1)
	}
	for node, l := range live {
		if byNode[node] != l.Subnet {
			t.Errorf("List: %s on %v, Acquire returned %v", node, l.Subnet, byNode[node])
		}
	}
}

func testPoolExhausted(t *testing.T, newStore NewStore) {
	pool := Subnets(2)
	c := client(t, newStore(t, Params{Subnets: pool}))
	a := mustAcquire(t, c, request("node-a", 1, ShortTTL))
	mustAcquire(t, c, request("node-b", 2, 30*time.Second))
	_, err := c.Acquire(testCtx(t), request("node-c", 3, 30*time.Second))
	if !errors.Is(err, registry.ErrPoolExhausted) {
		t.Fatalf("third node in a pool of two: err = %v, want ErrPoolExhausted", err)
	}
	// An expired lease still claims its subnet (default reclaim period).
	waitGone(t, c, a)
	_, err = c.Acquire(testCtx(t), request("node-c", 3, 30*time.Second))
	if !errors.Is(err, registry.ErrPoolExhausted) {
		t.Fatalf("pool full of claims, one expired: err = %v, want ErrPoolExhausted", err)
	}
}

func testReclaim(t *testing.T, newStore NewStore) {
	const reclaim = 500 * time.Millisecond
	pool := Subnets(1)
	open := newStore(t, Params{Subnets: pool, ReclaimAfter: reclaim})
	c := client(t, open)
	a := mustAcquire(t, c, request("node-a", 1, ShortTTL))
	if _, err := c.Acquire(testCtx(t), request("node-b", 2, 30*time.Second)); !errors.Is(err, registry.ErrPoolExhausted) {
		t.Fatalf("node-b while node-a is live: err = %v, want ErrPoolExhausted", err)
	}
	waitGone(t, c, a)
	time.Sleep(time.Until(a.Expiry.Add(reclaim + 300*time.Millisecond)))
	b := mustAcquire(t, client(t, open), request("node-b", 2, 30*time.Second))
	if b.Subnet != a.Subnet {
		t.Fatalf("node-b got %v, want the reclaimed %v", b.Subnet, a.Subnet)
	}
	if _, err := c.Acquire(testCtx(t), request("node-a", 1, 30*time.Second)); !errors.Is(err, registry.ErrPoolExhausted) {
		t.Fatalf("node-a after its subnet was reclaimed: err = %v, want ErrPoolExhausted", err)
	}
}

func testRenewExtends(t *testing.T, newStore NewStore) {
	c := client(t, newStore(t, Params{Subnets: Subnets(2)}))
	// 3 s leaves room for a loaded test machine to stall a renewal or two.
	const ttl = 3 * time.Second
	first := mustAcquire(t, c, request("node-a", 1, ttl))
	// Renew past the first expiry: the lease must stay listed throughout.
	last := first
	for time.Now().Before(first.Expiry.Add(time.Second)) {
		time.Sleep(250 * time.Millisecond)
		l, err := c.Renew(testCtx(t), "node-a")
		if err != nil {
			t.Fatalf("Renew %v after the last one (expiry %v): %v", time.Since(last.Expiry.Add(-ttl)), last.Expiry.Format(time.StampMilli), err)
		}
		if !l.Expiry.After(last.Expiry) || !l.SameAs(first) {
			t.Fatalf("Renew returned %+v after %+v: want the same lease with a later expiry", l, last)
		}
		last = l
		if _, ok := list(t, c)["node-a"]; !ok {
			t.Fatal("renewed lease missing from List")
		}
	}
}

func testRenewLost(t *testing.T, newStore NewStore) {
	open := newStore(t, Params{Subnets: Subnets(4)})
	c1, c2 := client(t, open), client(t, open)

	_, err := c1.Renew(testCtx(t), "never-acquired")
	if !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Renew of a node never acquired: err = %v, want ErrLeaseLost", err)
	}

	// Taken over by another client (a restarted daemon, a duplicate name).
	mustAcquire(t, c1, request("node-b", 2, 30*time.Second))
	mustAcquire(t, c2, request("node-b", 2, 30*time.Second))
	if _, err := c1.Renew(testCtx(t), "node-b"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Renew after another client acquired: err = %v, want ErrLeaseLost", err)
	}
	if err := c1.Release(testCtx(t), "node-b"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Release of a live lease another client holds: err = %v, want ErrLeaseLost", err)
	}
	if _, err := c2.Renew(testCtx(t), "node-b"); err != nil {
		t.Errorf("Renew by the new holder: %v", err)
	}

	// Expired.
	a := mustAcquire(t, c1, request("node-a", 1, ShortTTL))
	waitGone(t, c1, a)
	if _, err := c1.Renew(testCtx(t), "node-a"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Renew after expiry: err = %v, want ErrLeaseLost", err)
	}
	if _, ok := list(t, c1)["node-a"]; ok {
		t.Error("a failed Renew brought the expired lease back")
	}
}

// recv returns the next event, failing the test if none comes by deadline.
func recv(t *testing.T, ch <-chan registry.Event, deadline time.Time) registry.Event {
	t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-timer.C:
		t.Fatalf("no watch event by %v", deadline.Format(time.StampMilli))
	}
	panic("unreachable")
}

func expectEvent(t *testing.T, ch <-chan registry.Event, typ registry.EventType, want registry.Lease, deadline time.Time) {
	t.Helper()
	ev := recv(t, ch, deadline)
	if ev.Type != typ || !ev.Lease.SameAs(want) {
		t.Fatalf("event %v %+v, want %v %+v", ev.Type, ev.Lease, typ, want)
	}
}

func watch(t *testing.T, c registry.Registry) <-chan registry.Event {
	t.Helper()
	ch, err := c.Watch(testCtx(t))
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	return ch
}

func soon() time.Time { return time.Now().Add(5 * time.Second) }

func testExpiryRemoves(t *testing.T, newStore NewStore) {
	c := client(t, newStore(t, Params{Subnets: Subnets(2)}))
	ch := watch(t, c)
	if ev := recv(t, ch, soon()); ev.Type != registry.Snapshot || len(ev.Leases) != 0 {
		t.Fatalf("first event %v with %d leases, want an empty snapshot", ev.Type, len(ev.Leases))
	}
	a := mustAcquire(t, c, request("node-a", 1, ShortTTL))
	expectEvent(t, ch, registry.Added, a, soon())
	expectEvent(t, ch, registry.Removed, a, a.Expiry.Add(ExpiryGrace))
	if _, ok := list(t, c)["node-a"]; ok {
		t.Error("expired lease still listed after its Removed event")
	}
}

func testWatchEvents(t *testing.T, newStore NewStore) {
	open := newStore(t, Params{Subnets: Subnets(4)})
	writer, watcher := client(t, open), client(t, open)
	a := mustAcquire(t, writer, request("node-a", 1, 30*time.Second))
	ch := watch(t, watcher)

	ev := recv(t, ch, soon())
	if ev.Type != registry.Snapshot || len(ev.Leases) != 1 || !ev.Leases[0].SameAs(a) {
		t.Fatalf("first event %v %+v, want a snapshot of [%+v]", ev.Type, ev.Leases, a)
	}
	b := mustAcquire(t, writer, request("node-b", 2, 30*time.Second))
	expectEvent(t, ch, registry.Added, b, soon())

	// A renewal alone sends nothing: the next event must be the change.
	if _, err := writer.Renew(testCtx(t), "node-a"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let a poll-based watcher see the renewal on its own
	moved := mustAcquire(t, writer, request("node-a", 11, 30*time.Second))
	expectEvent(t, ch, registry.Changed, moved, soon())

	if err := writer.Release(testCtx(t), "node-b"); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, ch, registry.Removed, b, soon())

	// A second watch of the same client starts from the current state.
	ev = recv(t, watch(t, watcher), soon())
	if ev.Type != registry.Snapshot || len(ev.Leases) != 1 || !ev.Leases[0].SameAs(moved) {
		t.Fatalf("second watch began with %v %+v, want a snapshot of [%+v]", ev.Type, ev.Leases, moved)
	}
}

func testReleaseFrees(t *testing.T, newStore NewStore) {
	open := newStore(t, Params{Subnets: Subnets(1)})
	c := client(t, open)
	a := mustAcquire(t, c, request("node-a", 1, 30*time.Second))
	if _, err := c.Acquire(testCtx(t), request("node-b", 2, 30*time.Second)); !errors.Is(err, registry.ErrPoolExhausted) {
		t.Fatalf("node-b in a full pool: err = %v, want ErrPoolExhausted", err)
	}
	if err := c.Release(testCtx(t), "node-a"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if n := len(list(t, c)); n != 0 {
		t.Errorf("List has %d leases after Release, want 0", n)
	}
	if err := c.Release(testCtx(t), "node-a"); err != nil {
		t.Errorf("second Release: %v, want nil", err)
	}
	if _, err := c.Renew(testCtx(t), "node-a"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Errorf("Renew after Release: err = %v, want ErrLeaseLost", err)
	}
	b := mustAcquire(t, client(t, open), request("node-b", 2, 30*time.Second))
	if b.Subnet != a.Subnet {
		t.Errorf("node-b got %v, want the released %v", b.Subnet, a.Subnet)
	}
}

// testPinnedSubnet: a node that asks for the subnet it serves
// (AcquireRequest.Subnet) gets that one or ErrSubnetConflict, never
// another (issue 12 item 4: a node re-acquired a different subnet and
// advertised it while its pods stayed on the old one).
func testPinnedSubnet(t *testing.T, newStore NewStore) {
	open := newStore(t, Params{Subnets: Subnets(4)})
	c := client(t, open)
	pinned := func(node string, i int, subnet netip.Prefix) registry.AcquireRequest {
		r := request(node, i, 30*time.Second)
		r.Subnet = subnet
		return r
	}
	a := mustAcquire(t, c, request("node-a", 1, 30*time.Second))
	if l := mustAcquire(t, c, pinned("node-a", 1, a.Subnet)); l.Subnet != a.Subnet {
		t.Fatalf("node-a pinned to %v got %v", a.Subnet, l.Subnet)
	}
	other, _ := Subnets(4).Nth(3)
	if l, err := c.Acquire(testCtx(t), pinned("node-a", 1, other)); !errors.Is(err, registry.ErrSubnetConflict) {
		t.Fatalf("node-a claiming %v but pinned to %v: got %+v, %v; want ErrSubnetConflict", a.Subnet, other, l, err)
	}
	if err := c.Release(testCtx(t), "node-a"); err != nil {
		t.Fatal(err)
	}
	b := mustAcquire(t, c, request("node-b", 2, 30*time.Second))
	if b.Subnet != a.Subnet {
		t.Fatalf("node-b got %v, want the released %v", b.Subnet, a.Subnet)
	}
	if l, err := c.Acquire(testCtx(t), pinned("node-a", 1, a.Subnet)); !errors.Is(err, registry.ErrSubnetConflict) {
		t.Fatalf("node-a pinned to %v that node-b now claims: got %+v, %v; want ErrSubnetConflict", a.Subnet, l, err)
	}
	// A node with no claim gets the free subnet it asks for.
	if l := mustAcquire(t, c, pinned("node-c", 3, other)); l.Subnet != other {
		t.Fatalf("node-c pinned to the free %v got %v", other, l.Subnet)
	}
	for _, l := range list(t, c) {
		if l.Node == "node-a" {
			t.Errorf("a refused Acquire left a lease: %+v", l)
		}
	}
}

// testConcurrentClients runs acquire/renew/release cycles on several
// clients at once while a watcher follows, and checks the watcher's view
// ends equal to List and no two live leases ever share a subnet.
func testConcurrentClients(t *testing.T, newStore NewStore) {
	const clients, nodesPer, rounds = 4, 2, 4
	open := newStore(t, Params{Subnets: Subnets(clients * nodesPer)})
	observer := client(t, open)
	ch := watch(t, observer)
	view := registry.LeaseMap(recv(t, ch, soon()).Leases)

	stop := make(chan struct{})
	var checker sync.WaitGroup
	checker.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			leases, err := observer.List(testCtx(t))
			if err != nil {
				t.Errorf("List: %v", err)
				return
			}
			seen := make(map[netip.Prefix]string)
			for _, l := range leases {
				if o, ok := seen[l.Subnet]; ok {
					t.Errorf("live leases %s and %s share %v", o, l.Node, l.Subnet)
				}
				seen[l.Subnet] = l.Node
			}
		}
	})

	var wg sync.WaitGroup
	for i := range clients {
		c := client(t, open)
		for j := range nodesPer {
			wg.Go(func() {
				node := fmt.Sprintf("conc-%d-%d", i, j)
				for r := range rounds {
					if _, err := c.Acquire(testCtx(t), request(node, i*nodesPer+j+1, 30*time.Second)); err != nil {
						t.Errorf("Acquire(%s): %v", node, err)
						return
					}
					if _, err := c.Renew(testCtx(t), node); err != nil {
						t.Errorf("Renew(%s): %v", node, err)
						return
					}
					if (r+j)%2 == 0 {
						if err := c.Release(testCtx(t), node); err != nil {
							t.Errorf("Release(%s): %v", node, err)
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	close(stop)
	checker.Wait()

	want := list(t, observer)
	deadline := soon()
	for !sameView(view, want) {
		ev := recv(t, ch, deadline)
		switch ev.Type {
		case registry.Added, registry.Changed:
			view[ev.Lease.Node] = ev.Lease
		case registry.Removed:
			delete(view, ev.Lease.Node)
		default:
			t.Fatalf("unexpected %v event mid-watch", ev.Type)
		}
	}
	if len(want) != clients*nodesPer/2 {
		t.Errorf("%d leases left, want %d (every other node released)", len(want), clients*nodesPer/2)
	}
}

func sameView(a, b map[string]registry.Lease) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !w.SameAs(v) {
			return false
		}
	}
	return true
}

func testClose(t *testing.T, newStore NewStore) {
	open := newStore(t, Params{Subnets: Subnets(2)})
	c := client(t, open)

	// Cancelling a watch's context closes its channel.
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	drainUntilClosed(t, ch)

	ch = watch(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	drainUntilClosed(t, ch)
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Acquire(testCtx(t), request("node-a", 1, 30*time.Second)); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Acquire after Close: err = %v, want ErrClosed", err)
	}
	if _, err := c.Watch(testCtx(t)); !errors.Is(err, registry.ErrClosed) {
		t.Errorf("Watch after Close: err = %v, want ErrClosed", err)
	}
}

func drainUntilClosed(t *testing.T, ch <-chan registry.Event) {
	t.Helper()
	deadline := soon()
	for {
		timer := time.NewTimer(time.Until(deadline))
		select {
		case _, ok := <-ch:
			timer.Stop()
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatal("watch channel not closed")
		}
	}
}

func testBadRequests(t *testing.T, newStore NewStore) {
	c := client(t, newStore(t, Params{Subnets: Subnets(2)}))
	good := request("node-a", 1, 30*time.Second)
	tests := []struct {
		name string
		edit func(*registry.AcquireRequest)
	}{
		{"empty name", func(r *registry.AcquireRequest) { r.Node = "" }},
		{"slash in name", func(r *registry.AcquireRequest) { r.Node = "a/b" }},
		{"dot first", func(r *registry.AcquireRequest) { r.Node = ".hidden" }},
		{"dot dot", func(r *registry.AcquireRequest) { r.Node = ".." }},
		{"no underlay", func(r *registry.AcquireRequest) { r.Underlay = netip.Addr{} }},
		{"unspecified underlay", func(r *registry.AcquireRequest) { r.Underlay = netip.IPv4Unspecified() }},
		{"negative TTL", func(r *registry.AcquireRequest) { r.TTL = -time.Second }},
	}
	for _, tc := range tests {
		req := good
		tc.edit(&req)
		if _, err := c.Acquire(testCtx(t), req); err == nil {
			t.Errorf("%s: Acquire accepted %+v", tc.name, req)
		}
	}
	if n := len(list(t, c)); n != 0 {
		t.Errorf("rejected requests left %d leases", n)
	}
}
