package netdev

import (
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
)

// TestTapReadWriteAllocs pins the steady-state data path at zero
// allocations: write an ARP request into a real TAP, read the kernel's reply.
// tun hands a written frame to the stack synchronously, so the reply is
// queued before Read runs and the loop is deterministic.
func TestTapReadWriteAllocs(t *testing.T) {
	testenv.RequireRoot(t)
	for _, vnet := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "vnet"}[vnet], func(t *testing.T) {
			cfg := podTapConfig(newTestNetns(t))
			cfg.VnetHdr = vnet
			tap := createTestTap(t, cfg)
			bufs, sizes := newBatch(8, 2048)
			checkARP(t, tap, bufs, sizes, 0) // warm up: neighbour state, netpoller registration
			req := [][]byte{arpRequest(make([]byte, 64), gwMAC, gwIP, podIP)}
			hdrs := make([]VirtioHdr, len(bufs))
			if err := tap.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name string
				read func() (int, error)
			}{
				{"Read", func() (int, error) { return tap.Read(bufs, sizes, 0) }},
				{"ReadVnet", func() (int, error) { return tap.ReadVnet(bufs, sizes, hdrs, 0) }},
			}
			for _, tc := range tests {
				var failed error
				allocs := testing.AllocsPerRun(200, func() {
					if _, err := tap.Write(req, 0); err != nil {
						failed = err
					}
					if n, err := tc.read(); err != nil || n == 0 {
						failed = err
					}
				})
				if failed != nil {
					t.Fatalf("%s: %v", tc.name, failed)
				}
				if allocs != 0 {
					t.Errorf("%s+Write: %v allocations per round trip, want 0", tc.name, allocs)
				}
			}
		})
	}
}
