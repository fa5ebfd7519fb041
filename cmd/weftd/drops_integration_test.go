package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/sim"
)

// testDropsExported provokes drops of several stages at n2 (the underlay
// socket, decapsulation, the switch) and checks that each reason's counter
// in `weft counters` (the drop space weft_drops_total{reason} exports too)
// moved by exactly the number provoked.
func testDropsExported(t *testing.T, c *sim.Cluster, cl2 *api.Client, st1, st2 api.Status) {
	n1, p21 := c.Nodes[0], c.Nodes[1].Pods[0]
	to := netip.AddrPortFrom(st2.Underlay, st2.Port)
	inner := echoFrame(t, st2.RouterMAC, st1.RouterMAC, n1.Pods[0].IP(), p21.IP(), 64, 0x7a00)
	badFlags := vxlanPayload(st2.VNI, inner)
	badFlags[0] = 0
	reserved := vxlanPayload(st2.VNI, inner)
	reserved[1] = 0x40
	multicastSrc := echoFrame(t, st2.RouterMAC, packet.MAC{0x01, 0, 0x5e, 0, 0, 1}, p21.IP(), n1.Pods[0].IP(), 64, 0x7a01)
	const count = 3
	for _, tc := range []struct {
		counter string
		provoke func()
	}{
		{"drop.underlay_empty", func() { sendUDP(t, n1.Netns, st1.Underlay, to, repeat([]byte{}, count)...) }},
		{"drop.vxlan_too_short", func() { sendUDP(t, n1.Netns, st1.Underlay, to, repeat([]byte{0x08, 0, 0, 0}, count)...) }},
		{"drop.vxlan_bad_flags", func() { sendUDP(t, n1.Netns, st1.Underlay, to, repeat(badFlags, count)...) }},
		{"drop.vxlan_reserved_bits", func() { sendUDP(t, n1.Netns, st1.Underlay, to, repeat(reserved, count)...) }},
		{"drop.bad_src_mac", func() { sendRaw(t, p21.Netns, "eth0", [][]byte{multicastSrc}, count) }},
	} {
		t.Run(tc.counter, func(t *testing.T) {
			c0 := counters(t, cl2)
			tc.provoke()
			waitFor(t, 5*time.Second, tc.counter, func() (bool, string) {
				d := counter(t, counters(t, cl2), tc.counter) - counter(t, c0, tc.counter)
				return d >= count, ""
			})
			time.Sleep(200 * time.Millisecond) // nothing more may arrive
			if d := counter(t, counters(t, cl2), tc.counter) - counter(t, c0, tc.counter); d != count {
				t.Errorf("%s moved by %d, want %d", tc.counter, d, count)
			}
		})
	}
}

func repeat(b []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}
