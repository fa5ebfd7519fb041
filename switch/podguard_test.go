package vswitch

import (
	"net/netip"

	"testing"

	"github.com/weftnet/weft/packet"
)

// Issue 12 item 8: what a pod may put on the switch. The tests name drop
// reasons by their metric label, the names operators see in weft counters.

func dropCount(s *Switch, name string) uint64 {
	c := s.Counters()
	for r := DropReason(1); r < NumDropReasons; r++ {
		if r.String() == name {
			return c.Drops[r]
		}
	}
	return 0
}

// ndFrame is an ICMPv6 neighbour-discovery message (router advertisement:
// type 134; neighbour solicitation: 135) from src to the all-nodes group.
func ndFrame(src packet.MAC, icmpType byte) []byte {
	f := ipv6Frame(packet.MAC{0x33, 0x33, 0, 0, 0, 1}, src, 16)
	ip := f[packet.EthHdrLen:]
	ip[packet.IPv6OffNextHeader] = 58 // ICMPv6
	ip[packet.IPv6OffHopLimit] = 255  // RFC 4861 §6.1.2
	ip[packet.IPv6HdrLen] = icmpType
	return f
}

// TestPodIPv6Dropped: a router advertisement from a pod reached its
// neighbours, which then routed IPv6 via the attacker. weft does not carry
// IPv6 yet, so every IPv6 frame from a pod port is dropped, as
// pod_ipv6_unsupported; the host port (trusted) keeps switching it.
func TestPodIPv6Dropped(t *testing.T) {
	const reason = "pod_ipv6_unsupported"
	tests := []struct {
		name string
		f    []byte
	}{
		{"router advertisement", ndFrame(podAMAC, 134)},
		{"neighbour solicitation", ndFrame(podAMAC, 135)},
		{"unicast UDP to a neighbour pod", ipv6Frame(podBMAC, podAMAC, 8)},
		{"to the router MAC", ipv6Frame(routerMAC, podAMAC, 8)},
	}
	s := newTestSwitch(t, nil)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := process(s, withCap(tc.f), portA, sec)
			if v.Action != ActionDrop || v.Reason.String() != reason {
				t.Errorf("verdict %+v (%s), want drop %s", v, v.Reason, reason)
			}
			if got := dropCount(s, reason); got != uint64(i+1) {
				t.Errorf("%s counted %d, want %d", reason, got, i+1)
			}
		})
	}
	if v, _ := process(s, withCap(ndFrame(hostMAC, 135)), portHost, sec); v.Action != ActionFlood {
		t.Errorf("IPv6 neighbour solicitation from the host port: %+v, want flood", v)
	}
}

// TestL2DeliveryRespectsDestinationMTU: a 65 KB frame from one pod reached a
// 1450-MTU pod. Switched frames (deliver and flood) must fit the MTU of
// every port they go to, counted as l2_too_big when they do not; a GSO
// super-frame is judged by the segments the device will make of it.
func TestL2DeliveryRespectsDestinationMTU(t *testing.T) {
	const reason = "l2_too_big"
	frameOfIPLen := func(dst packet.MAC, ipLen int) []byte {
		return withCap(udpFrame(dst, podAMAC, podAIP, podBIP, 64, ipLen-packet.IPv4MinHdrLen-packet.UDPHdrLen))
	}
	tests := []struct {
		name   string
		dst    packet.MAC // podBMAC is learned on port B; otherMAC is unknown (flood)
		ipLen  int
		gsoLen uint16 // the segment IP length of a GSO super-frame; 0 = not GSO
		want   Action
	}{
		{"deliver, at the MTU", podBMAC, 1450, 0, ActionDeliver},
		{"deliver, one byte over", podBMAC, 1451, 0, ActionDrop},
		{"deliver, 65 KB", podBMAC, 65000, 0, ActionDrop},
		{"deliver, GSO super-frame of 1450-byte segments", podBMAC, 65000, 1450, ActionDeliver},
		{"deliver, GSO super-frame of 1451-byte segments", podBMAC, 65000, 1451, ActionDrop},
		{"flood, at the MTU", otherMAC, 1450, 0, ActionFlood},
		{"flood, one byte over", otherMAC, 1451, 0, ActionDrop},
		{"broadcast, 9000 bytes", packet.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9000, 0, ActionDrop},
	}
	s := newTestSwitch(t, nil)
	// Port B announces itself, so that its MAC is learned.
	process(s, withCap(arpFrame(packet.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, packet.ARPOpRequest, podBMAC, podBIP, packet.MAC{}, gwIP)), portB, sec)
	var drops uint64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frames := [][]byte{frameOfIPLen(tc.dst, tc.ipLen)}
			out := make([]Verdict, 1)
			s.ProcessGSO(frames, []uint16{tc.gsoLen}, portA, out, sec)
			v := out[0]
			if v.Action != tc.want {
				t.Fatalf("verdict %+v (%s), want %v", v, v.Reason, tc.want)
			}
			if tc.want == ActionDrop {
				drops++
				if v.Reason.String() != reason {
					t.Errorf("drop reason %s, want %s", v.Reason, reason)
				}
			}
			if got := dropCount(s, reason); got != drops {
				t.Errorf("%s counted %d, want %d", reason, got, drops)
			}
		})
	}
}

// TestFloodRateLimitedPerPort: a 10 s broadcast storm from one pod sent
// 484k frames to each neighbour. Floods (broadcast, multicast, unknown
// unicast) are limited per ingress port by a token bucket; the excess is
// dropped as flood_rate_limited, and a storm on one port leaves the other
// ports' floods alone.
func TestFloodRateLimitedPerPort(t *testing.T) {
	const reason = "flood_rate_limited"
	bcast := packet.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	s := newTestSwitch(t, nil)
	storm := func(in PortID, src packet.MAC, srcIP, dstIP [4]byte, n int, now int64) (flooded int) {
		frames := make([][]byte, n)
		for i := range frames {
			frames[i] = withCap(arpFrame(bcast, packet.ARPOpRequest, src, netip.AddrFrom4(srcIP), packet.MAC{}, netip.AddrFrom4(dstIP)))
		}
		out := make([]Verdict, n)
		s.Process(frames, in, out, now)
		for _, v := range out {
			if v.Action == ActionFlood {
				flooded++
			}
		}
		return flooded
	}
	a, b := podAIP.As4(), podBIP.As4()
	other := [4]byte{10, 244, 1, 99}
	// 10 s at 20k frames/s, in batches of 200 every 10 ms.
	total := 0
	for ms := int64(0); ms < 10_000; ms += 10 {
		total += storm(portA, podAMAC, a, other, 200, sec+ms*1e6)
	}
	if total > (DefaultFloodBurst + 10*DefaultFloodRate) {
		t.Errorf("a 10 s storm of 200k broadcasts flooded %d frames, want at most burst %d + 10 s x %d/s", total, DefaultFloodBurst, DefaultFloodRate)
	}
	if total < 10*DefaultFloodRate {
		t.Errorf("a 10 s storm flooded only %d frames, want at least 10 s x %d/s", total, DefaultFloodRate)
	}
	if got, want := dropCount(s, reason), uint64(200_000-total); got != want {
		t.Errorf("%s counted %d, want %d", reason, got, want)
	}
	if got := storm(portB, podBMAC, b, other, 10, sec+10*sec); got != 10 {
		t.Errorf("during port A's storm, port B flooded %d of 10 broadcasts, want all", got)
	}
}

// TestFloodRateConfigurable: Config.FloodRate and FloodBurst set the
// per-port bucket: a burst of FloodBurst, then FloodRate per second.
func TestFloodRateConfigurable(t *testing.T) {
	s := newTestSwitch(t, func(c *Config) { c.FloodRate, c.FloodBurst = 10, 3 })
	bcast := packet.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f := udpFrame(bcast, podAMAC, podAIP, podBIP, 64, 1)
	flooded := func(now int64, n int) (k int) {
		for range n {
			if v, _ := process(s, withCap(f), portA, now); v.Action == ActionFlood {
				k++
			}
		}
		return k
	}
	if got := flooded(sec, 10); got != 3 {
		t.Errorf("burst: %d of 10 flooded, want 3", got)
	}
	if got := flooded(sec+sec/10, 10); got != 1 {
		t.Errorf("100 ms later at 10/s: %d of 10 flooded, want 1", got)
	}
	// A dry run (weft trace) spends no tokens.
	if v, _ := s.Trace(withCap(f), portA, 2*sec); v.Action != ActionFlood {
		t.Errorf("trace after a second: %+v, want flood", v)
	}
	if got := flooded(2*sec, 10); got != 3 {
		t.Errorf("after a second's refill: %d of 10 flooded, want 3 (the trace took none)", got)
	}
}

// TestFloodMTUIsSmallestOfOtherPorts: a flood must fit every port it
// reaches, but a small-MTU port's own floods are not held to its own MTU.
func TestFloodMTUIsSmallestOfOtherPorts(t *testing.T) {
	s := newTestSwitch(t, nil)
	const small PortID = 7
	smallMAC := packet.MAC{0x02, 0, 0, 0, 1, 7}
	smallIP := mustAddr("10.244.1.7")
	if err := s.AddPort(PortConfig{ID: small, Kind: PortPod, MAC: smallMAC, IPv4: smallIP, MTU: 1000}); err != nil {
		t.Fatal(err)
	}
	bcast := packet.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name string
		f    []byte
		in   PortID
		want Action
	}{
		{"from a 1450 port, fits 1000", udpFrame(bcast, podAMAC, podAIP, podBIP, 64, 1000-28), portA, ActionFlood},
		{"from a 1450 port, over 1000", udpFrame(bcast, podAMAC, podAIP, podBIP, 64, 1001-28), portA, ActionDrop},
		{"from the 1000 port, 1450", udpFrame(bcast, smallMAC, smallIP, podBIP, 64, 1450-28), small, ActionFlood},
		{"from the 1000 port, 1451", udpFrame(bcast, smallMAC, smallIP, podBIP, 64, 1451-28), small, ActionDrop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if v, _ := process(s, withCap(tc.f), tc.in, sec); v.Action != tc.want {
				t.Errorf("verdict %+v, want %v", v, tc.want)
			}
		})
	}
	if err := s.RemovePort(small); err != nil {
		t.Fatal(err)
	}
	if v, _ := process(s, withCap(udpFrame(bcast, podAMAC, podAIP, podBIP, 64, 1450-28)), portA, sec); v.Action != ActionFlood {
		t.Errorf("after the 1000 port left, a 1450 flood: %+v, want flood", v)
	}
}
