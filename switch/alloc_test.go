package vswitch

import (
	"net/netip"
	"testing"

	"github.com/weftnet/weft/packet"
)

// TestZeroAllocs pins every hot path at zero allocations per frame. Each
// case processes a fixed batch; frames that Process rewrites are restored
// from a template before each run (copy does not allocate).
func TestZeroAllocs(t *testing.T) {
	s := newTestSwitch(t, func(c *Config) { c.ICMPRate, c.ICMPBurst = 1_000_000, 1_000_000 })
	// Warm the FDB so L2 frames are known unicast.
	process(s, udpFrame(bcast, podBMAC, podBIP, podAIP, 64, 1), portB, 0)
	tests := []struct {
		name string
		f    []byte
		in   PortID
		want Action
	}{
		{"L2 forward", udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 18), portA, ActionDeliver},
		{"flood", udpFrame(bcast, podAMAC, podAIP, podBIP, 64, 18), portA, ActionFlood},
		{"route to peer", udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 64, 18), portA, ActionEncap},
		{"route from overlay to local pod", udpFrame(routerMAC, peerMAC, peerPodIP, podAIP, 64, 18), portOverlay, ActionDeliver},
		{"ARP reply", arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP), portA, ActionDeliver},
		{"ICMP time exceeded", udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 1, 18), portA, ActionDeliver},
		{"ICMP unreachable", udpFrame(routerMAC, podAMAC, podAIP, netip.MustParseAddr("8.8.8.8"), 64, 18), portA, ActionDeliver},
		{"echo reply", ethFrame(routerMAC, podAMAC, packet.EtherTypeIPv4, ipv4Packet(podAIP, gwIP, packet.IPProtoICMP, 64, false, icmpEcho(packet.ICMPEchoRequest, 56))), portA, ActionDeliver},
		{"drop", udpFrame(podBMAC, podBMAC, podBIP, podAIP, 64, 18), portA, ActionDrop},
		{"IPv6 switched", ipv6Frame(podBMAC, podAMAC, 20), portA, ActionDeliver},
	}
	const batch = 32
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frames := make([][]byte, batch)
			for i := range frames {
				frames[i] = withCap(tc.f)
			}
			out := make([]Verdict, batch)
			now := int64(sec)
			run := func() {
				for i := range frames {
					frames[i] = frames[i][:len(tc.f)]
					copy(frames[i], tc.f)
				}
				s.Process(frames, tc.in, out, now)
				now += 1000
			}
			run()
			if out[0].Action != tc.want {
				t.Fatalf("verdict %+v want %s", out[0], tc.want)
			}
			if n := testing.AllocsPerRun(100, run); n != 0 {
				t.Errorf("%.1f allocations per batch of %d", n, batch)
			}
		})
	}
}
