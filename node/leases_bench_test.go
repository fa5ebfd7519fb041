package node

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/procstat"

	"github.com/weftnet/weft/registry"
)

var benchSizes = []int{100, 1000, 5000, 20000}

// benchLeaseNode is a node that knows n leases (benchLease) and logs
// nothing.
func benchLeaseNode(b *testing.B, n int) *Node {
	nd, _ := leaseNode(b)
	nd.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if n > 0 {
		nd.view.note(benchSnapshot(n))
		nd.applyPending()
	}
	return nd
}

func benchSnapshot(n int) registry.Event {
	leases := make([]registry.Lease, n)
	for i := range leases {
		leases[i] = benchLease(i)
	}
	return registry.Event{Type: registry.Snapshot, Leases: leases}
}

// BenchmarkApplyLeases is the node's side of issue 16's scale benchmark,
// in process: what weftd's lease watch spends on n leases appearing at
// once (one snapshot), then on one of them changing (its underlay address)
// and one vanishing, each applied as it comes. `make bench-scale` runs it
// next to a real weftd. cpu-ns/op is the benchmark thread's CPU time (wall
// time on a shared machine counts the waits for a core).
func BenchmarkApplyLeases(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("appear/%d", n), func(b *testing.B) {
			ev := benchSnapshot(n)
			runtime.LockOSThread() // for procstat.ThreadCPU
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			var cpu time.Duration
			runs := 0
			for b.Loop() {
				b.StopTimer()
				nd := benchLeaseNode(b, 0)
				b.StartTimer()
				c := procstat.ThreadCPU()
				nd.view.note(ev)
				nd.applyPending()
				cpu += procstat.ThreadCPU() - c
				runs++
			}
			b.ReportMetric(float64(cpu)/float64(runs), "cpu-ns/op")
		})
		b.Run(fmt.Sprintf("change/%d", n), func(b *testing.B) {
			l := benchLease(n / 2)
			moved := l
			moved.Underlay = netip.MustParseAddr("192.0.2.200")
			benchEvents(b, n, registry.Event{Type: registry.Changed, Lease: moved}, registry.Event{Type: registry.Changed, Lease: l})
		})
		b.Run(fmt.Sprintf("vanish/%d", n), func(b *testing.B) {
			l := benchLease(n / 2)
			benchEvents(b, n, registry.Event{Type: registry.Removed, Lease: l}, registry.Event{Type: registry.Added, Lease: l})
		})
	}
}

// benchEvents applies ev and undo in turn, each as its own update, to a
// node that knows n leases.
func benchEvents(b *testing.B, n int, ev, undo registry.Event) {
	nd := benchLeaseNode(b, n)
	runtime.LockOSThread() // for procstat.ThreadCPU
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	cpu := procstat.ThreadCPU()
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			nd.view.note(ev)
		} else {
			nd.view.note(undo)
		}
		nd.applyPending()
		i++
	}
	b.ReportMetric(float64(procstat.ThreadCPU()-cpu)/float64(i), "cpu-ns/op")
}
