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
		{"IPv6 switched", ipv6Frame(podBMAC, hostMAC, 20), portHost, ActionDeliver},
		{"IPv6 from a pod", ipv6Frame(podBMAC, podAMAC, 20), portA, ActionDrop},
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

// TestZeroAllocsLearningAndMiss covers the write paths: new source MACs
// into a full FDB (each one evicts), and neighbour misses answered with an
// ARP request.
func TestZeroAllocsLearningAndMiss(t *testing.T) {
	s := newTestSwitch(t, func(c *Config) { c.FDBSize = 16; c.ICMPRate, c.ICMPBurst = 1_000_000, 1_000_000 })
	learn := udpFrame(bcast, macN(0), hostIP, podAIP, 64, 18)
	miss := udpFrame(routerMAC, peerMAC, peerPodIP, netip.MustParseAddr("10.244.1.99"), 64, 18)
	frames := [][]byte{withCap(learn), withCap(miss)}
	out := make([]Verdict, 1)
	i, now := 0, int64(sec)
	run := func() {
		i++
		frames[0] = frames[0][:len(learn)]
		copy(frames[0], learn)
		frames[0][11] = byte(i) // a new source MAC every run
		frames[0][10] = byte(i >> 8)
		s.Process(frames[:1], portHost, out, now)
		frames[1] = frames[1][:len(miss)]
		copy(frames[1], miss)
		s.Process(frames[1:], portOverlay, out, now)
		now += 1000
	}
	run()
	if out[0].Action != ActionFlood || out[0].Reason != DropNeighMiss {
		t.Fatalf("miss verdict %+v", out[0])
	}
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Errorf("%.1f allocations per run", n)
	}
	if c := s.Counters(); c.FDBEvicted == 0 || c.ARPRequests < 200 {
		t.Errorf("paths not taken: %+v", c)
	}
}
