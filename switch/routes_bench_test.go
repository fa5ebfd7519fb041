package vswitch

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/weftnet/weft/internal/procstat"
)

// nodeRoutes is what a node's route table holds in a cluster of n nodes:
// one peer route per other node's /24 out of 10.0.0.0/8 (the node subnet
// 10.244.1.0/24 skipped), next hop 192.168.x.y.
func nodeRoutes(n int) []Route {
	routes := make([]Route, 0, n)
	for i := 0; len(routes) < n; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		if p == subnet {
			continue
		}
		routes = append(routes, Route{Prefix: p, Kind: RoutePeer, Peer: netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), PeerMAC: peerMAC})
	}
	return routes
}

// BenchmarkSetRoutes replaces a table of n node routes with one that
// differs in one route: what a node pays per applied registry update.
// cpu-ns/op is the benchmark thread's CPU time (wall time on a shared
// machine counts the waits for a core).
func BenchmarkSetRoutes(b *testing.B) {
	for _, n := range []int{100, 1000, 5000, 20000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := newTestSwitch(b, nil)
			a, c := nodeRoutes(n), nodeRoutes(n)
			c[n/2].Peer = netip.MustParseAddr("192.0.2.99")
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu := procstat.ThreadCPU()
			i := 0
			for b.Loop() {
				rs := a
				if i%2 == 1 {
					rs = c
				}
				if err := s.SetRoutes(rs); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(procstat.ThreadCPU()-cpu)/float64(i), "cpu-ns/op")
		})
	}
}
