package vswitch

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/packet"
)

var bcast = packet.BroadcastMAC

// TestL2Switching runs sequences of frames: the verdict of the last one is
// checked, the earlier ones set up the FDB.
func TestL2Switching(t *testing.T) {
	aToB := udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 10)
	bToA := udpFrame(podAMAC, podBMAC, podBIP, podAIP, 64, 10)
	hostToA := udpFrame(podAMAC, hostMAC, hostIP, podAIP, 64, 10)
	type in struct {
		f    []byte
		port PortID
	}
	tests := []struct {
		name  string
		setup []in
		last  in
		want  Verdict
	}{
		{"unknown unicast floods", nil, in{aToB, portA}, Verdict{Action: ActionFlood, Port: portA}},
		{"learned unicast delivers", []in{{bToA, portB}}, in{aToB, portA}, Verdict{Action: ActionDeliver, Port: portB}},
		{"reverse direction", []in{{aToB, portA}}, in{bToA, portB}, Verdict{Action: ActionDeliver, Port: portA}},
		{"host to pod", []in{{aToB, portA}}, in{hostToA, portHost}, Verdict{Action: ActionDeliver, Port: portA}},
		{"broadcast floods", nil, in{udpFrame(bcast, podAMAC, podAIP, podBIP, 64, 1), portA}, Verdict{Action: ActionFlood, Port: portA}},
		{"multicast floods", nil, in{udpFrame(packet.MAC{0x01, 0, 0x5e, 0, 0, 1}, podAMAC, podAIP, podBIP, 64, 1), portA}, Verdict{Action: ActionFlood, Port: portA}},
		{"hairpin drops", []in{{udpFrame(bcast, otherMAC, hostIP, podAIP, 64, 1), portHost}}, in{udpFrame(otherMAC, hostMAC, hostIP, podAIP, 64, 1), portHost},
			Verdict{Action: ActionDrop, Reason: DropHairpin}},
		{"to itself drops", nil, in{udpFrame(hostMAC, hostMAC, hostIP, podAIP, 64, 1), portHost},
			Verdict{Action: ActionDrop, Reason: DropHairpin}},
		{"ARP request for a pod floods", nil, in{arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, podBIP), portA}, Verdict{Action: ActionFlood, Port: portA}},
		{"ARP reply unicast to a learned pod", []in{{bToA, portB}}, in{arpFrame(podBMAC, packet.ARPOpReply, podAMAC, podAIP, podBMAC, podBIP), portA}, Verdict{Action: ActionDeliver, Port: portB}},
		// IPv6 from pods is dropped at ingress (TestPodIPv6Dropped); the
		// host port's is switched.
		{"IPv6 unknown floods", nil, in{ipv6Frame(podBMAC, hostMAC, 8), portHost}, Verdict{Action: ActionFlood, Port: portHost}},
		{"IPv6 learned delivers", []in{{bToA, portB}}, in{ipv6Frame(podBMAC, hostMAC, 8), portHost}, Verdict{Action: ActionDeliver, Port: portB}},
		{"IPv6 to the router MAC", nil, in{ipv6Frame(routerMAC, hostMAC, 8), portHost}, Verdict{Action: ActionDrop, Reason: DropIPv6NotRouted}},
		{"IPv6 from a pod", nil, in{ipv6Frame(podBMAC, podAMAC, 8), portA}, Verdict{Action: ActionDrop, Reason: DropPodIPv6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			for _, st := range tc.setup {
				process(s, withCap(st.f), st.port, sec)
			}
			orig := slices.Clone(tc.last.f)
			got, out := process(s, withCap(tc.last.f), tc.last.port, sec)
			if got != tc.want {
				t.Fatalf("verdict %+v want %+v", got, tc.want)
			}
			if got.Action != ActionDrop && !bytes.Equal(out, orig) {
				t.Errorf("switched frame changed:\n got % x\nwant % x", out, orig)
			}
		})
	}
}

func TestL2MoveAndStaleFDB(t *testing.T) {
	s := newTestSwitch(t, nil)
	// otherMAC appears behind the host port, then moves to pod B's port
	// (not a pod MAC, so only the host port may send it: move host->host
	// is not a move; use a second host-like MAC path via RemovePort).
	process(s, udpFrame(bcast, otherMAC, hostIP, podAIP, 64, 1), portHost, sec)
	if v, _ := process(s, udpFrame(otherMAC, podAMAC, podAIP, hostIP, 64, 1), portA, sec); v.Action != ActionDeliver || v.Port != portHost {
		t.Fatalf("to otherMAC: %+v", v)
	}
	// A second host-kind port; the MAC moves there.
	if err := s.AddPort(PortConfig{ID: 7, Kind: PortHost}); err != nil {
		t.Fatal(err)
	}
	process(s, udpFrame(bcast, otherMAC, hostIP, podAIP, 64, 1), 7, 2*sec)
	if v, _ := process(s, udpFrame(otherMAC, podAMAC, podAIP, hostIP, 64, 1), portA, 2*sec); v.Action != ActionDeliver || v.Port != 7 {
		t.Fatalf("after move: %+v", v)
	}
	if c := s.Counters(); c.FDBMoved != 1 {
		t.Errorf("moved %d want 1", c.FDBMoved)
	}
	// Removing the port flushes its FDB entries: the next frame floods.
	if err := s.RemovePort(7); err != nil {
		t.Fatal(err)
	}
	if v, _ := process(s, udpFrame(otherMAC, podAMAC, podAIP, hostIP, 64, 1), portA, 3*sec); v.Action != ActionFlood {
		t.Fatalf("after port removal: %+v", v)
	}
	for _, e := range s.FDB() {
		if e.Port == 7 {
			t.Errorf("FDB still has %+v", e)
		}
	}
}

func TestFDBAgingThroughSwitch(t *testing.T) {
	s := newTestSwitch(t, func(c *Config) { c.FDBMaxAge = 10_000_000_000 })
	process(s, udpFrame(bcast, podBMAC, podBIP, podAIP, 64, 1), portB, 0)
	s.Expire(10 * sec)
	if v, _ := process(s, udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 1), portA, 10*sec); v.Action != ActionDeliver {
		t.Fatalf("before max age: %+v", v)
	}
	s.Expire(10*sec + 1)
	if v, _ := process(s, udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 1), portA, 10*sec+1); v.Action != ActionFlood {
		t.Fatalf("after max age: %+v", v)
	}
	if c := s.Counters(); c.FDBExpired != 1 {
		t.Errorf("expired %d want 1", c.FDBExpired)
	}
}

func TestFDBEvictionCounted(t *testing.T) {
	s := newTestSwitch(t, func(c *Config) { c.FDBSize = 4 })
	for i := range 10 {
		process(s, udpFrame(bcast, macN(i), hostIP, podAIP, 64, 1), portHost, int64(i))
	}
	c := s.Counters()
	if c.FDBEntries != 4 || c.FDBEvicted != 6 || c.FDBLearned != 10 {
		t.Errorf("entries %d evicted %d learned %d, want 4 6 10", c.FDBEntries, c.FDBEvicted, c.FDBLearned)
	}
}

func TestFloodSet(t *testing.T) {
	s := newTestSwitch(t, nil)
	tests := []struct {
		in   PortID
		want []PortID
	}{
		{portA, []PortID{portHost, portB}},
		{portHost, []PortID{portA, portB}},
		{portOverlay, []PortID{portHost, portA, portB}},
		{99, []PortID{portHost, portA, portB}},
	}
	buf := make([]PortID, 0, 8)
	for _, tc := range tests {
		if got := s.FloodSet(tc.in, buf[:0]); !slices.Equal(got, tc.want) {
			t.Errorf("FloodSet(%d) = %v want %v", tc.in, got, tc.want)
		}
	}
	if err := s.RemovePort(portB); err != nil {
		t.Fatal(err)
	}
	if got := s.FloodSet(portA, nil); !slices.Equal(got, []PortID{portHost}) {
		t.Errorf("after removing B: %v", got)
	}
}

func TestAntiSpoofing(t *testing.T) {
	zero := netip.IPv4Unspecified()
	tests := []struct {
		name string
		f    []byte
		in   PortID
		want DropReason // DropNone = accepted
	}{
		{"own MAC and IP", udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 1), portA, DropNone},
		{"other pod's MAC", udpFrame(podBMAC, podBMAC, podBIP, podAIP, 64, 1), portA, DropSpoofed},
		{"own MAC, other IP", udpFrame(podBMAC, podAMAC, podBIP, podAIP, 64, 1), portA, DropSpoofed},
		{"own MAC, 0.0.0.0", udpFrame(bcast, podAMAC, zero, netip.IPv4Unspecified(), 64, 1), portA, DropSpoofed},
		{"router MAC as source", udpFrame(podBMAC, routerMAC, podAIP, podBIP, 64, 1), portA, DropSpoofed},
		{"router MAC as source on host port", udpFrame(podBMAC, routerMAC, hostIP, podBIP, 64, 1), portHost, DropSpoofed},
		{"multicast source", udpFrame(podBMAC, packet.MAC{0x01, 0, 0, 0, 0, 1}, podAIP, podBIP, 64, 1), portHost, DropBadSrcMAC},
		{"zero source MAC", udpFrame(podBMAC, packet.MAC{}, podAIP, podBIP, 64, 1), portHost, DropBadSrcMAC},
		{"ARP own", arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, podBIP), portA, DropNone},
		{"ARP probe 0.0.0.0", arpFrame(bcast, packet.ARPOpRequest, podAMAC, zero, packet.MAC{}, podAIP), portA, DropNone},
		{"ARP other sender IP", arpFrame(bcast, packet.ARPOpRequest, podAMAC, podBIP, packet.MAC{}, gwIP), portA, DropSpoofed},
		{"ARP sender MAC differs from frame", func() []byte {
			f := arpFrame(bcast, packet.ARPOpReply, podBMAC, podAIP, podBMAC, podBIP)
			copy(f[6:12], podAMAC[:])
			return f
		}(), portA, DropSpoofed},
		{"ARP claiming the gateway", arpFrame(bcast, packet.ARPOpReply, podAMAC, gwIP, bcast, gwIP), portA, DropSpoofed},
		{"IPv6 own MAC", ipv6Frame(podBMAC, podAMAC, 0), portA, DropPodIPv6},
		{"IPv6 other MAC", ipv6Frame(podBMAC, otherMAC, 0), portA, DropSpoofed},
		{"host port is trusted", udpFrame(podBMAC, otherMAC, netip.MustParseAddr("1.2.3.4"), podBIP, 64, 1), portHost, DropNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			v, _ := process(s, withCap(tc.f), tc.in, sec)
			if got := v.Reason; v.Action == ActionDrop && got != tc.want || v.Action != ActionDrop && tc.want != DropNone {
				t.Errorf("verdict %+v, want reason %s", v, tc.want)
			}
			if c := s.Counters(); tc.want != DropNone && c.Drops[tc.want] != 1 {
				t.Errorf("counter %s = %d want 1", tc.want, c.Drops[tc.want])
			}
			if tc.want == DropSpoofed && len(s.FDB()) != 0 {
				t.Errorf("learned from a spoofed frame: %v", s.FDB())
			}
		})
	}
}

func TestMalformedFrames(t *testing.T) {
	good := udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 10)
	mut := func(f func(b []byte) []byte) []byte { return f(withCap(good)) }
	tests := []struct {
		name string
		f    []byte
		in   PortID
		want DropReason
	}{
		{"empty", nil, portA, DropTooShort},
		{"13 bytes", good[:13], portA, DropTooShort},
		{"eth only", good[:14], portA, DropTooShort},
		{"ipv4 header cut", good[:14+19], portA, DropTooShort},
		{"ipv4 total length beyond frame", good[:len(good)-1], portA, DropBadIPv4},
		{"ipv4 version 5", mut(func(b []byte) []byte { b[14] = 0x55; return b }), portA, DropBadIPv4},
		{"ipv4 ihl 4", mut(func(b []byte) []byte { b[14] = 0x44; return b }), portA, DropBadIPv4},
		{"ipv4 ihl 15 beyond total length", mut(func(b []byte) []byte { b[14] = 0x4f; return b }), portA, DropBadIPv4},
		{"ipv4 bad checksum routed", mut(func(b []byte) []byte { copy(b, routerMAC[:]); b[24] ^= 0xff; return b }), portA, DropBadIPv4},
		{"ARP cut", arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP)[:14+27], portA, DropTooShort},
		{"ARP op 3", mut(func([]byte) []byte {
			f := arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP)
			f[14+7] = 3
			return f
		}), portA, DropBadARP},
		{"ARP hlen 8", mut(func([]byte) []byte {
			f := arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP)
			f[14+4] = 8
			return f
		}), portA, DropBadARP},
		{"IPv6 cut", ipv6Frame(podBMAC, podAMAC, 0)[:14+39], portA, DropTooShort},
		{"IPv6 version 4", mut(func([]byte) []byte { f := ipv6Frame(podBMAC, podAMAC, 0); f[14] = 0x40; return f }), portA, DropBadIPv6},
		{"VLAN tag", ethFrame(podBMAC, podAMAC, packet.EtherTypeVLAN, make([]byte, 46)), portA, DropVLAN},
		{"QinQ tag", ethFrame(podBMAC, podAMAC, 0x88a8, make([]byte, 46)), portA, DropVLAN},
		{"802.3 length", ethFrame(podBMAC, podAMAC, 46, make([]byte, 46)), portA, DropUnknownEtherType},
		{"LLDP", ethFrame(podBMAC, podAMAC, 0x88cc, make([]byte, 46)), portHost, DropUnknownEtherType},
		{"unknown port", good, 55, DropUnknownPort},
		{"overlay not to router", good, portOverlay, DropOverlayNotRouter},
		{"overlay ARP", arpFrame(routerMAC, packet.ARPOpRequest, peerMAC, peerPodIP, packet.MAC{}, gwIP), portOverlay, DropOverlayNotIPv4},
		{"overlay IPv6", ipv6Frame(routerMAC, peerMAC, 0), portOverlay, DropIPv6NotRouted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			v, _ := process(s, withCap(tc.f), tc.in, sec)
			if v.Action != ActionDrop || v.Reason != tc.want {
				t.Errorf("verdict %+v want drop %s", v, tc.want)
			}
			if got := s.Counters().Drops[tc.want]; got != 1 {
				t.Errorf("counter %s = %d want 1", tc.want, got)
			}
		})
	}
}

// TestEthernetPaddingIsTrimmedWhenRouted: a 60-byte minimum frame carrying
// a 28-byte IP packet leaves without its padding.
func TestEthernetPaddingIsTrimmedWhenRouted(t *testing.T) {
	s := newTestSwitch(t, nil)
	f := udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 64, 0)
	f = append(f, make([]byte, 60-len(f))...)
	v, out := process(s, f, portA, sec)
	if v.Action != ActionEncap || len(out) != 14+28 {
		t.Fatalf("verdict %+v len %d", v, len(out))
	}
}

func TestBatchVerdictsIndependent(t *testing.T) {
	s := newTestSwitch(t, nil)
	frames := [][]byte{
		withCap(udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 64, 10)),
		withCap(udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 10)),
		withCap(good13()),
		withCap(arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP)),
	}
	out := make([]Verdict, len(frames))
	s.Process(frames, portA, out, sec)
	want := []Action{ActionEncap, ActionFlood, ActionDrop, ActionDeliver}
	for i, v := range out {
		if v.Action != want[i] {
			t.Errorf("frame %d: %+v want %s", i, v, want[i])
		}
	}
}

func good13() []byte { return make([]byte, 13) }
