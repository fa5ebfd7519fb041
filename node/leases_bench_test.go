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
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("appear/%d", n), func(b *testing.B) {
			ev := benchSnapshot(n)
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
			nd := benchLeaseNode(b, n)
			l := benchLease(n / 2)
			moved := l
			moved.Underlay = netip.MustParseAddr("192.0.2.200")
			b.ReportAllocs()
			cpu := procstat.ThreadCPU()
			i := 0
			for b.Loop() {
				ev := registry.Event{Type: registry.Changed, Lease: l}
				if i%2 == 0 {
					ev.Lease = moved
				}
				nd.view.note(ev)
				nd.applyPending()
				i++
			}
			b.ReportMetric(float64(procstat.ThreadCPU()-cpu)/float64(i), "cpu-ns/op")
		})
		b.Run(fmt.Sprintf("vanish/%d", n), func(b *testing.B) {
			nd := benchLeaseNode(b, n)
			l := benchLease(n / 2)
			b.ReportAllocs()
			cpu := procstat.ThreadCPU()
			i := 0
			for b.Loop() {
				ev := registry.Event{Type: registry.Removed, Lease: l}
				if i%2 == 1 {
					ev.Type = registry.Added
				}
				nd.view.note(ev)
				nd.applyPending()
				i++
			}
			b.ReportMetric(float64(procstat.ThreadCPU()-cpu)/float64(i), "cpu-ns/op")
		})
	}
}
