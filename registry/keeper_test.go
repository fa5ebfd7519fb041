package registry_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/file"
	"github.com/weftnet/weft/registry/registrytest"
)

var errInjected = errors.New("injected: store unreachable")

// flaky fails Acquire and Renew while fail is set, as an unreachable store
// would.
type flaky struct {
	registry.Registry
	fail     atomic.Bool
	acquires atomic.Int32
}

func (f *flaky) Acquire(ctx context.Context, req registry.AcquireRequest) (registry.Lease, error) {
	if f.fail.Load() {
		return registry.Lease{}, errInjected
	}
	f.acquires.Add(1)
	return f.Registry.Acquire(ctx, req)
}

func (f *flaky) Renew(ctx context.Context, node string) (registry.Lease, error) {
	if f.fail.Load() {
		return registry.Lease{}, errInjected
	}
	return f.Registry.Renew(ctx, node)
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

// count returns how many messages contain substr.
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

func openFile(t *testing.T, dir string, pool registry.SubnetSource) registry.Registry {
	t.Helper()
	r, err := file.Open(file.Config{Dir: dir, Options: registry.Options{Subnets: pool}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func keeperRequest(node string, underlay byte) registry.AcquireRequest {
	return registry.AcquireRequest{
		Node:      node,
		Underlay:  netip.AddrFrom4([4]byte{192, 0, 2, underlay}),
		RouterMAC: packet.MAC{2, 0, 0, 0, 0, underlay},
		VNI:       1,
		TTL:       time.Second,
	}
}

// startKeeper runs k until the test ends and waits for its first lease.
func startKeeper(t *testing.T, k *registry.Keeper) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := k.Run(ctx); err != nil {
			t.Errorf("Keeper.Run: %v", err)
		}
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	select {
	case <-k.Acquired():
	case <-time.After(5 * time.Second):
		t.Fatalf("keeper acquired nothing in 5 s: %+v", k.Health())
	}
	return stop
}

// waitHealth polls k until cond holds, failing after 10 s.
func waitHealth(t *testing.T, k *registry.Keeper, what string, cond func(registry.Health) bool) registry.Health {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := k.Health()
		if cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("keeper never %s: %+v", what, h)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKeeperRenewsPastTTL(t *testing.T) {
	reg := openFile(t, t.TempDir(), registrytest.Subnets(2))
	k, err := registry.NewKeeper(reg, registry.KeeperConfig{Request: keeperRequest("node-a", 1)})
	if err != nil {
		t.Fatal(err)
	}
	startKeeper(t, k)
	first, _ := k.Lease()
	h := waitHealth(t, k, "renewed past its first expiry", func(h registry.Health) bool {
		return h.Lease.Expiry.After(first.Expiry.Add(time.Second))
	})
	if h.State != registry.HealthOK || h.Failures != 0 {
		t.Errorf("health %+v, want ok with no failures", h)
	}
	leases, err := reg.List(context.Background())
	if err != nil || len(leases) != 1 || leases[0].Subnet != first.Subnet {
		t.Errorf("List = %+v, %v; want node-a on %v", leases, err, first.Subnet)
	}
}

// TestKeeperDegradedThenRecovers: a store outage makes the keeper degraded
// (logged once) while it keeps the last known lease, and its end makes it
// ok again (logged once) on the same subnet. An outage that ends while the
// lease is still valid is bridged by renewal (one acquire in all); one that
// lasts past the lease's expiry makes the keeper acquire again (two).
//
// The outages are defined by conditions, not by sleeps, so that a loaded
// machine cannot turn one case into the other: the short one ends as soon
// as two attempts have failed, with a lease of 20 s renewed every 200 ms
// (it would take a 20 s stall to expire it); the long one lasts until the
// last lease the keeper got has expired.
func TestKeeperDegradedThenRecovers(t *testing.T) {
	tests := []struct {
		name            string
		ttl, renewEvery time.Duration
		outlastExpiry   bool // keep failing until the lease has expired
		wantAcquires    int32
	}{
		{"short outage", 20 * time.Second, 200 * time.Millisecond, false, 1},
		{"outage past expiry", time.Second, 0, true, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := &flaky{Registry: openFile(t, t.TempDir(), registrytest.Subnets(2))}
			logs := &logRecorder{}
			req := keeperRequest("node-a", 1)
			req.TTL = tc.ttl
			k, err := registry.NewKeeper(reg, registry.KeeperConfig{
				Request:    req,
				RenewEvery: tc.renewEvery,
				MinBackoff: 50 * time.Millisecond,
				Logger:     slog.New(logs),
			})
			if err != nil {
				t.Fatal(err)
			}
			startKeeper(t, k)
			before, _ := k.Lease()

			reg.fail.Store(true)
			h := waitHealth(t, k, "degraded", func(h registry.Health) bool { return h.State == registry.HealthDegraded })
			if !strings.Contains(h.LastError, errInjected.Error()) || h.Since.IsZero() {
				t.Errorf("degraded health %+v: want the injected error and a start time", h)
			}
			last, ok := k.Lease()
			if !ok || last.Subnet != before.Subnet {
				t.Errorf("Lease() while degraded = %+v, %v; want the last known lease", last, ok)
			}
			h = waitHealth(t, k, "retried", func(h registry.Health) bool { return h.Failures >= 2 })
			if tc.outlastExpiry {
				// No renewal succeeds during the outage, so last is the lease
				// the store holds; wait until it has run out (plus a margin
				// for the two clocks' reads).
				for time.Now().Before(last.Expiry.Add(200 * time.Millisecond)) {
					time.Sleep(20 * time.Millisecond)
				}
			} else if time.Now().After(last.Expiry) {
				t.Fatalf("the short outage outlasted the lease (expiry %s): the machine stalled for %s", last.Expiry, tc.ttl)
			}
			reg.fail.Store(false)

			waitHealth(t, k, "recovered", func(h registry.Health) bool { return h.State == registry.HealthOK })
			after, _ := k.Lease()
			if after.Subnet != before.Subnet {
				t.Errorf("subnet %v after recovery, had %v", after.Subnet, before.Subnet)
			}
			if got := reg.acquires.Load(); got != tc.wantAcquires {
				t.Errorf("%d acquires, want %d", got, tc.wantAcquires)
			}
			if n := logs.count("degraded"); n != 1 {
				t.Errorf("logged degraded %d times over %d failures, want once: %q", n, h.Failures, logs.msgs)
			}
			if n := logs.count("recovered"); n != 1 {
				t.Errorf("logged recovery %d times, want once: %q", n, logs.msgs)
			}
		})
	}
}

func TestKeeperReacquiresAfterTakeover(t *testing.T) {
	dir := t.TempDir()
	reg := openFile(t, dir, registrytest.Subnets(2))
	var acquired atomic.Int32
	k, err := registry.NewKeeper(reg, registry.KeeperConfig{
		Request:   keeperRequest("node-a", 1),
		OnAcquire: func(registry.Lease) { acquired.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	startKeeper(t, k)

	thief := openFile(t, dir, registrytest.Subnets(2))
	if _, err := thief.Acquire(context.Background(), keeperRequest("node-a", 99)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for acquired.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("keeper did not acquire again after a takeover: %+v", k.Health())
		}
		time.Sleep(20 * time.Millisecond)
	}
	leases, err := reg.List(context.Background())
	if err != nil || len(leases) != 1 || leases[0].Underlay != keeperRequest("node-a", 1).Underlay {
		t.Errorf("List = %+v, %v; want node-a back on the keeper's underlay", leases, err)
	}
	if h := k.Health(); h.State != registry.HealthOK {
		t.Errorf("health %+v after a takeover, want ok", h)
	}
}

func TestKeeperStop(t *testing.T) {
	tests := []struct {
		name          string
		releaseOnStop bool
		wantListed    bool
	}{
		{"release on stop", true, false},
		{"keep claim on stop", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := openFile(t, t.TempDir(), registrytest.Subnets(2))
			k, err := registry.NewKeeper(reg, registry.KeeperConfig{
				Request:       keeperRequest("node-a", 1),
				ReleaseOnStop: tc.releaseOnStop,
			})
			if err != nil {
				t.Fatal(err)
			}
			stop := startKeeper(t, k)
			stop()
			leases, err := reg.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if listed := len(leases) == 1; listed != tc.wantListed {
				t.Errorf("after stop: listed = %v, want %v", listed, tc.wantListed)
			}
		})
	}
}

func TestKeeperDegradedUntilFirstAcquire(t *testing.T) {
	dir := t.TempDir()
	reg := openFile(t, dir, registrytest.Subnets(1))
	if _, err := reg.Acquire(context.Background(), keeperRequest("node-b", 2)); err != nil {
		t.Fatal(err)
	}
	k, err := registry.NewKeeper(reg, registry.KeeperConfig{Request: keeperRequest("node-a", 1), MinBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.Run(ctx) }()
	defer func() { cancel(); <-done }()

	h := waitHealth(t, k, "degraded by a full pool", func(h registry.Health) bool { return h.State == registry.HealthDegraded })
	if !strings.Contains(h.LastError, registry.ErrPoolExhausted.Error()) {
		t.Errorf("LastError %q, want the pool exhaustion", h.LastError)
	}
	if _, ok := k.Lease(); ok {
		t.Error("Lease() reports a lease that was never acquired")
	}
	if err := reg.Release(context.Background(), "node-b"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.Acquired():
	case <-time.After(5 * time.Second):
		t.Fatalf("keeper did not acquire once the pool had room: %+v", k.Health())
	}
}

func TestKeeperRunsOnce(t *testing.T) {
	reg := openFile(t, t.TempDir(), registrytest.Subnets(1))
	k, err := registry.NewKeeper(reg, registry.KeeperConfig{Request: keeperRequest("node-a", 1)})
	if err != nil {
		t.Fatal(err)
	}
	startKeeper(t, k)
	if err := k.Run(context.Background()); err == nil {
		t.Error("second Run of a running keeper returned nil")
	}
}

func TestNewKeeperRejectsBadRequest(t *testing.T) {
	reg := openFile(t, t.TempDir(), registrytest.Subnets(1))
	if _, err := registry.NewKeeper(reg, registry.KeeperConfig{Request: keeperRequest("bad/name", 1)}); err == nil {
		t.Error("NewKeeper accepted a node name with a slash")
	}
}

// TestKeeperNeverMovesSubnet is issue 12 item 4 at the keeper: a node whose
// claim was lost (released by someone else, its subnet then taken) must
// not re-acquire another subnet and advertise it while its pods stay on
// the first one. The keeper asks for the subnet it first got, and reports
// the conflict instead.
func TestKeeperNeverMovesSubnet(t *testing.T) {
	dir := t.TempDir()
	reg := openFile(t, dir, registrytest.Subnets(3))
	var mu sync.Mutex
	var got []netip.Prefix
	k, err := registry.NewKeeper(reg, registry.KeeperConfig{
		Request:   keeperRequest("node-a", 1),
		OnAcquire: func(l registry.Lease) { mu.Lock(); got = append(got, l.Subnet); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	startKeeper(t, k)
	first, _ := k.Lease()

	// Someone releases node-a's claim (a forged or mistaken operation) and
	// node-b takes its subnet.
	other := openFile(t, dir, registrytest.Subnets(3))
	for _, f := range []string{"nodes/node-a.json", "subnets/" + first.Subnet.Addr().String() + "_" + strconv.Itoa(first.Subnet.Bits())} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := other.Acquire(context.Background(), keeperRequest("node-b", 2)); err != nil || l.Subnet != first.Subnet {
		t.Fatalf("node-b: %+v, %v; want node-a's old %v", l, err, first.Subnet)
	}
	h := waitHealth(t, k, "reports the subnet conflict", func(h registry.Health) bool {
		return h.State == registry.HealthDegraded && strings.Contains(h.LastError, registry.ErrSubnetConflict.Error())
	})
	mu.Lock()
	defer mu.Unlock()
	for _, s := range got {
		if s != first.Subnet {
			t.Errorf("keeper acquired %v after starting on %v (health %+v)", s, first.Subnet, h)
		}
	}
}

// deadlines records, for each Renew, its context's deadline and the
// expiry of the lease it renews (what the registry holds before it).
type deadlines struct {
	registry.Registry
	mu   sync.Mutex
	seen [][2]time.Time // {deadline, expiry before}
	last time.Time
}

func (d *deadlines) Acquire(ctx context.Context, req registry.AcquireRequest) (registry.Lease, error) {
	l, err := d.Registry.Acquire(ctx, req)
	d.mu.Lock()
	d.last = l.Expiry
	d.mu.Unlock()
	return l, err
}

func (d *deadlines) Renew(ctx context.Context, node string) (registry.Lease, error) {
	dl, _ := ctx.Deadline()
	l, err := d.Registry.Renew(ctx, node)
	d.mu.Lock()
	d.seen = append(d.seen, [2]time.Time{dl, d.last})
	if err == nil {
		d.last = l.Expiry
	}
	d.mu.Unlock()
	return l, err
}

// TestKeeperLastRenewalRunsToExpiry (issue 16): when a renewal given up
// after CallTimeout would leave no time for another attempt before the
// lease runs out (as with the defaults: renewal every TTL/3, CallTimeout
// the same), it may run until the lease's expiry rather than be cut short
// and retried too late; when there is room, CallTimeout bounds it, so an
// outage still shows at once and is retried.
func TestKeeperLastRenewalRunsToExpiry(t *testing.T) {
	tests := []struct {
		name                         string
		ttl, renewEvery, callTimeout time.Duration
		toExpiry                     bool
	}{
		{"defaults (TTL/3)", 3 * time.Second, 0, 0, true},
		{"room to retry", 5 * time.Second, 300 * time.Millisecond, 500 * time.Millisecond, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := &deadlines{Registry: openFile(t, t.TempDir(), registrytest.Subnets(2))}
			req := keeperRequest("node-a", 1)
			req.TTL = tc.ttl
			k, err := registry.NewKeeper(reg, registry.KeeperConfig{Request: req, RenewEvery: tc.renewEvery, CallTimeout: tc.callTimeout})
			if err != nil {
				t.Fatal(err)
			}
			startKeeper(t, k)
			waitHealth(t, k, "renewed twice", func(registry.Health) bool {
				reg.mu.Lock()
				defer reg.mu.Unlock()
				return len(reg.seen) >= 2
			})
			reg.mu.Lock()
			defer reg.mu.Unlock()
			for i, s := range reg.seen[:2] {
				deadline, expiry := s[0], s[1]
				if got := deadline.Equal(expiry); got != tc.toExpiry {
					t.Errorf("renewal %d: deadline %s, lease expiry %s: want deadline == expiry: %v",
						i, deadline.Format(time.StampMilli), expiry.Format(time.StampMilli), tc.toExpiry)
				}
			}
		})
	}
}
