package registrytest

import (
	"context"
	"testing"
	"time"

	"github.com/weftnet/weft/registry"
)

// BenchAcquireRelease measures Acquire+Release cycles of one node on c (a
// client whose pool has at least one free subnet), reported as cycles/s.
// Both calls are durable writes in every backend, so this is the rate at
// which nodes can join and leave.
func BenchAcquireRelease(b *testing.B, c registry.Registry) {
	ctx := context.Background()
	req := request("bench-node", 1, 30*time.Second)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := c.Acquire(ctx, req); err != nil {
			b.Fatal(err)
		}
		if err := c.Release(ctx, req.Node); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "cycles/s")
}
