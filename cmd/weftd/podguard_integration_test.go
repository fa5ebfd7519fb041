package main

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/sim"
)

// testPodGuards replays issue 12 item 8's probes from pod a against its
// neighbour b on the same node, through real TAPs: a router advertisement,
// a frame larger than b's MTU, and a broadcast storm. Each is dropped at
// the switch under its own counter, and b's port sends on at most what
// the limits allow.
func testPodGuards(t *testing.T, cl *api.Client, a, b *sim.Pod) {
	aMAC, err := packet.ParseMAC(a.MAC)
	if err != nil {
		t.Fatal(err)
	}
	bMAC, err := packet.ParseMAC(b.MAC)
	if err != nil {
		t.Fatal(err)
	}
	portOf := func(t *testing.T, p *sim.Pod) api.Port {
		for _, q := range ports(t, cl) {
			if q.PodID == p.ID {
				return q
			}
		}
		t.Fatalf("no port for pod %s", p.ID)
		return api.Port{}
	}
	txOf := func(t *testing.T, p *sim.Pod) uint64 { return portOf(t, p).TxFrames }
	rxOf := func(t *testing.T, p *sim.Pod) uint64 { return portOf(t, p).RxFrames }
	// probe sends frames count times from a, waits until weftd has read
	// what it will read of them (a's port RX stops growing; a TAP queue
	// may overflow under a storm), and returns how many frames weft wrote
	// to b meanwhile, the counters before, and the time it took.
	probe := func(t *testing.T, frame []byte, count int) (toB uint64, c0 api.Counters, took time.Duration) {
		t.Helper()
		c0, tx0 := counters(t, cl), txOf(t, b)
		start := time.Now()
		sendRaw(t, a.Netns, "eth0", [][]byte{frame}, count)
		last := rxOf(t, a)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			time.Sleep(250 * time.Millisecond)
			rx := rxOf(t, a)
			if rx == last {
				break
			}
			last = rx
		}
		return txOf(t, b) - tx0, c0, time.Since(start)
	}
	dropped := func(t *testing.T, c0 api.Counters, name string) uint64 {
		return counter(t, counters(t, cl), name) - counter(t, c0, name)
	}
	t.Run("router_advertisement", func(t *testing.T) {
		const count = 50
		toB, c0, _ := probe(t, routerAdvert(t, aMAC), count)
		if toB >= count {
			t.Errorf("pod %s got %d frames while %d router advertisements were sent to it", b.Name, toB, count)
		}
		// (a's own kernel may add IPv6 of its own: DAD, MLD)
		if d := dropped(t, c0, "drop.pod_ipv6_unsupported"); d < count {
			t.Errorf("drop.pod_ipv6_unsupported moved by %d, want at least %d", d, count)
		}
	})
	t.Run("larger_than_mtu", func(t *testing.T) {
		// Pod a raises its own MTU (it owns its namespace) and sends b a
		// frame b's 1450-byte MTU cannot take.
		mustRun(t, a.Netns, "ip", "link", "set", "eth0", "mtu", "9000")
		t.Cleanup(func() { mustRun(t, a.Netns, "ip", "link", "set", "eth0", "mtu", "1450") })
		const count = 20
		toB, c0, _ := probe(t, udpFrameTo(t, bMAC, aMAC, a, b, 8000), count)
		if toB >= count {
			t.Errorf("pod %s got %d frames while %d frames of 8 KB were sent to it", b.Name, toB, count)
		}
		if d := dropped(t, c0, "drop.l2_too_big"); d != count {
			t.Errorf("drop.l2_too_big moved by %d, want %d", d, count)
		}
	})
	t.Run("broadcast_storm", func(t *testing.T) {
		const count = 20000
		toB, c0, took := probe(t, arpFrame(t, aMAC, a.IP(), b.IP().Next().Next()), count)
		// weftd's defaults: a burst of 500, then 1000/s (--flood-rate).
		limit := uint64(500 + 1000*took.Seconds() + 100)
		if toB > limit {
			t.Errorf("a storm of %d broadcasts sent %d frames to pod %s in %v, want at most %d", count, toB, b.Name, took, limit)
		}
		if d := dropped(t, c0, "drop.flood_rate_limited"); d == 0 || d > count {
			t.Errorf("drop.flood_rate_limited moved by %d, want 1..%d", d, count)
		}
	})
}

// routerAdvert is an ICMPv6 router advertisement (RFC 4861 §4.2) from src
// to all nodes, advertising a default router.
func routerAdvert(t *testing.T, src packet.MAC) []byte {
	t.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: []byte{0xfe, 0x80, 14: 0x12, 15: 0x34}, DstIP: []byte{0xff, 0x02, 15: 1}}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeRouterAdvertisement, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	ra := make([]byte, 12)
	ra[0] = 64                               // cur hop limit
	binary.BigEndian.PutUint16(ra[2:], 1800) // router lifetime: a default router
	eth := &layers.Ethernet{SrcMAC: src[:], DstMAC: []byte{0x33, 0x33, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv6}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, icmp, gopacket.Payload(ra)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// udpFrameTo is a UDP datagram of n payload bytes from pod a to pod b.
func udpFrameTo(t *testing.T, dst, src packet.MAC, a, b *sim.Pod, n int) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: src[:], DstMAC: dst[:], EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: a.IP().AsSlice(), DstIP: b.IP().AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 9}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(make([]byte, n))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
