package file

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/registrytest"
)

// openInternal opens a client of dir with a pool of at least n subnets.
func openInternal(t testing.TB, dir string, n int) *Registry {
	t.Helper()
	var pool registry.SubnetSource
	if n <= 254 {
		pool = registrytest.Subnets(n)
	} else {
		p, err := ipam.NewSubnetPool(netip.MustParsePrefix("10.0.0.0/8"), 24)
		if err != nil {
			t.Fatal(err)
		}
		pool = p
	}
	r, err := Open(Config{Dir: dir, Options: registry.Options{Subnets: pool}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// plant writes node i's lease and claim as Acquire would, without the
// O(nodes) read of Acquire: the benchmarks need thousands.
func plant(t testing.TB, r *Registry, i int, expiry time.Time) record {
	t.Helper()
	p, err := r.subnets.Nth(i)
	if err != nil {
		t.Fatal(err)
	}
	rec := record{Lease: registry.Lease{
		Node: fmt.Sprintf("node-%05d", i), Underlay: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
		Subnet: p, VNI: 1, Expiry: expiry,
	}, Holder: "planted"}
	// The claim as writeClaim makes it, without its fsyncs.
	if err := os.MkdirAll(r.claimsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeFileUnsynced(r.claimsDir, claimFileName(p), []byte(rec.Node+"\n")); err != nil {
		t.Fatal(err)
	}
	if err := r.writeRenewal(rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func eventsString(evs []registry.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%s %s; ", ev.Type, ev.Lease.Node)
	}
	return b.String()
}

// TestWatchPollReadsOnlyWhatChanged drives one watch's polls by hand (its
// own clock) and checks what each poll sees: nothing while idle, a
// renewal without an event, a lapse as Removed within the poll after the
// expiry, a logged change at once, and a file the log never mentions
// within rescanEvery.
func TestWatchPollReadsOnlyWhatChanged(t *testing.T) {
	dir := t.TempDir()
	r := openInternal(t, dir, 8)
	now := time.Now()
	a := plant(t, r, 0, now.Add(10*time.Second))
	plant(t, r, 1, now.Add(time.Hour))

	w := r.newLeaseWatch()
	view, err := w.readAll(now)
	if err != nil || len(view) != 2 {
		t.Fatalf("readAll = %v, %v; want 2 leases", view, err)
	}
	w.sent = view
	poll := func(at time.Time, want string) {
		t.Helper()
		evs, err := w.poll(at)
		if err != nil {
			t.Fatal(err)
		}
		if got := eventsString(evs); got != want {
			t.Errorf("poll at +%s: events %q, want %q", at.Sub(now), got, want)
		}
	}
	poll(now.Add(time.Second), "")

	// node-00000 renews on time: no log entry, no event; the watch reads
	// the file once its old expiry has passed and learns the new one.
	a.Expiry = now.Add(20 * time.Second)
	if err := r.writeRenewal(a); err != nil {
		t.Fatal(err)
	}
	poll(now.Add(2*time.Second), "")
	poll(now.Add(11*time.Second), "")
	if got := w.sent[a.Node].Expiry; !got.Equal(a.Expiry) {
		t.Fatalf("after its old expiry the watch knows expiry %s, want the renewed %s", got, a.Expiry)
	}
	// It stops renewing: Removed in the first poll after the expiry.
	poll(now.Add(19*time.Second), "")
	poll(now.Add(20*time.Second+time.Millisecond), "removed node-00000; ")

	// A late renewal logs itself: the lease is back at the next poll.
	a.Expiry = now.Add(40 * time.Second)
	if err := r.writeRenewal(a); err != nil {
		t.Fatal(err)
	}
	if err := r.logChanges(a.Node); err != nil {
		t.Fatal(err)
	}
	poll(now.Add(20*time.Second+2*time.Millisecond), "added node-00000; ")

	// A file written by hand (no log entry): seen at the next rescan.
	// (The last rescan was the poll at +11 s.)
	plant(t, r, 2, now.Add(time.Hour))
	poll(now.Add(11*time.Second+rescanEvery-time.Second), "")
	poll(now.Add(11*time.Second+rescanEvery), "added node-00002; ")

	// Acquired and released (both logged): seen at once.
	ctx := context.Background()
	if _, err := r.Acquire(ctx, registry.AcquireRequest{Node: "node-r", Underlay: netip.MustParseAddr("192.0.2.9")}); err != nil {
		t.Fatal(err)
	}
	poll(now.Add(12*time.Second+rescanEvery), "added node-r; ")
	if err := r.Release(ctx, "node-r"); err != nil {
		t.Fatal(err)
	}
	poll(now.Add(13*time.Second+rescanEvery), "removed node-r; ")
}

// TestWatchSurvivesTrimmedLog: a change log replaced while a watch is
// away (trimmed past maxChangeLog) makes it read everything once, and it
// misses nothing.
func TestWatchSurvivesTrimmedLog(t *testing.T) {
	dir := t.TempDir()
	r := openInternal(t, dir, 8)
	now := time.Now()
	plant(t, r, 0, now.Add(time.Hour))
	w := r.newLeaseWatch()
	view, err := w.readAll(now)
	if err != nil {
		t.Fatal(err)
	}
	w.sent = view
	if err := os.WriteFile(r.changesPath, []byte(strings.Repeat("node-x\n", maxChangeLog/7+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := w.poll(now.Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	// An Acquire trims the log (a new inode) and plants another lease.
	if _, err := r.Acquire(context.Background(), registry.AcquireRequest{Node: "node-b", Underlay: netip.MustParseAddr("192.0.2.2")}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(r.changesPath); err != nil || fi.Size() > maxChangeLog {
		t.Fatalf("change log after Acquire: %v, %v; want trimmed", fi.Size(), err)
	}
	evs, err := w.poll(now.Add(200 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if got := eventsString(evs); got != "added node-b; " {
		t.Errorf("poll after the log was trimmed: %q, want node-b added", got)
	}
}

// BenchmarkWatchIdle is one poll of an idle cluster of N nodes renewing
// 30 s leases every 10 s (the defaults): per poll, the files of the
// leases renewed during one poll interval are rewritten (not timed), then
// the watch polls (timed). cpu% is the share of one core a weftd's
// registry watch costs at the default 200 ms poll interval, from the
// process's CPU time (getrusage), not the wall clock, which a busy machine
// stretches. rusage counts every thread: the benchmark runs alone.
func BenchmarkWatchIdle(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			r := openInternal(b, dir, n)
			const ttl, renewEvery = 30 * time.Second, 10 * time.Second
			start := time.Now()
			recs := make([]record, n)
			for i := range n {
				// Spread the renewals over the period, as nodes started at
				// different times renew.
				last := start.Add(-time.Duration(i) * renewEvery / time.Duration(n))
				recs[i] = plant(b, r, i, last.Add(ttl))
			}
			w := r.newLeaseWatch()
			view, err := w.readAll(start)
			if err != nil {
				b.Fatal(err)
			}
			w.sent = view
			now := start
			next := 0 // the next node to renew, round robin
			var cpu time.Duration
			// One TTL of virtual time untimed first: the steady state, in
			// which every lease's known expiry comes round.
			warmup := int(ttl / DefaultPollInterval)
			perPoll := float64(n) * float64(DefaultPollInterval) / float64(renewEvery)
			due := 0.0
			b.ResetTimer()
			for i := range warmup + b.N {
				if i == warmup {
					cpu = 0
					b.ResetTimer()
				}
				b.StopTimer()
				now = now.Add(DefaultPollInterval)
				for due += perPoll; due >= 1; due-- {
					recs[next].Expiry = now.Add(ttl)
					if err := r.writeRenewal(recs[next]); err != nil {
						b.Fatal(err)
					}
					next = (next + 1) % n
				}
				b.StartTimer()
				before := cpuTime()
				evs, err := w.poll(now)
				cpu += cpuTime() - before
				if err != nil || len(evs) != 0 {
					b.Fatalf("idle poll: %v, %v", eventsString(evs), err)
				}
			}
			b.StopTimer()
			reportCPU(b, cpu)
		})
	}
}

// BenchmarkReadEverything is what List costs, and what every poll of a
// watch cost before issue 16: read and decode every node file and claim.
func BenchmarkReadEverything(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("leases=%d", n), func(b *testing.B) {
			r := openInternal(b, b.TempDir(), n)
			for i := range n {
				plant(b, r, i, time.Now().Add(time.Hour))
			}
			b.ResetTimer()
			before := cpuTime()
			for range b.N {
				if _, err := r.liveView(time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpuTime()-before)
		})
	}
}

// cpuTime is the CPU (user and system) this process has used: on a shared
// machine it, not the wall clock, says what a poll costs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports CPU per operation (one poll) and as the share of one
// core at one poll per DefaultPollInterval.
func reportCPU(b *testing.B, cpu time.Duration) {
	perOp := cpu / time.Duration(b.N)
	b.ReportMetric(float64(perOp.Microseconds()), "cpu-µs/poll")
	b.ReportMetric(100*perOp.Seconds()/DefaultPollInterval.Seconds(), "cpu%")
}

// TestWatchReadsReacquiredFileInFull: a node acquired again with another
// underlay (logged) and renewed before the watch looks (so its file has a
// renewal's future mtime) is read in full, not taken for a renewal of the
// record the watch had.
func TestWatchReadsReacquiredFileInFull(t *testing.T) {
	dir := t.TempDir()
	a, b := openInternal(t, dir, 4), openInternal(t, dir, 4)
	ctx := context.Background()
	req := registry.AcquireRequest{Node: "node-x", Underlay: netip.MustParseAddr("192.0.2.1")}
	if _, err := a.Acquire(ctx, req); err != nil {
		t.Fatal(err)
	}
	w := a.newLeaseWatch()
	view, err := w.readAll(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.sent = view
	req.Underlay = netip.MustParseAddr("192.0.2.2")
	if _, err := b.Acquire(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Renew(ctx, "node-x"); err != nil {
		t.Fatal(err)
	}
	evs, err := w.poll(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Type != registry.Changed || evs[0].Lease.Underlay != req.Underlay {
		t.Fatalf("events %+v, want node-x changed to underlay %s", evs, req.Underlay)
	}
}

// TestWatchSeesReclaim: a reclaim replaces a claim index entry under the
// same name (the subnet's) with another node's: a watch that knew the old
// entry lists the new owner's lease at its next poll.
func TestWatchSeesReclaim(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(Config{Dir: dir, Options: registry.Options{Subnets: registrytest.Subnets(1), ReclaimAfter: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	a, err := r.Acquire(ctx, registry.AcquireRequest{Node: "node-a", Underlay: netip.MustParseAddr("192.0.2.1"), TTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // expired, and past ReclaimAfter
	w := r.newLeaseWatch()
	view, err := w.readAll(time.Now())
	if err != nil || len(view) != 0 {
		t.Fatalf("readAll = %v, %v; want nothing live", view, err)
	}
	w.sent = view
	b, err := r.Acquire(ctx, registry.AcquireRequest{Node: "node-b", Underlay: netip.MustParseAddr("192.0.2.2")})
	if err != nil || b.Subnet != a.Subnet {
		t.Fatalf("node-b: %+v, %v; want node-a's %s reclaimed", b, err, a.Subnet)
	}
	evs, err := w.poll(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := eventsString(evs); got != "added node-b; " {
		t.Fatalf("events after the reclaim: %q, want node-b added", got)
	}
}
