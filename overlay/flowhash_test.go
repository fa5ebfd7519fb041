package overlay

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/packet"
)

func TestFlowSrcPortStablePerFlow(t *testing.T) {
	tests := []struct {
		name string
		a, b func(f *flow) // two frames of one flow
	}{
		{"same frame", nil, nil},
		{"payload differs", nil, func(f *flow) { f.PayloadLen = 900 }},
		{"ttl and id differ", nil, func(f *flow) { f.TTL = 3; f.ID = 777 }},
		{"tcp, payload differs", func(f *flow) { f.Proto = layers.IPProtocolTCP }, func(f *flow) { f.Proto = layers.IPProtocolTCP; f.PayloadLen = 1 }},
		{"reverse direction udp", nil, func(f *flow) {
			f.Src, f.Dst = f.Dst, f.Src
			f.SPort, f.DPort = f.DPort, f.SPort
			f.SrcMAC, f.DstMAC = f.DstMAC, f.SrcMAC
		}},
		{"reverse direction, same address", func(f *flow) { f.Dst = f.Src }, func(f *flow) {
			f.Dst = f.Src
			f.SPort, f.DPort = f.DPort, f.SPort
		}},
		{"MACs differ (routed hop)", nil, func(f *flow) { f.SrcMAC, f.DstMAC = macU, macV }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fa, fb := defaultFlow(), defaultFlow()
			if tc.a != nil {
				tc.a(&fa)
			}
			if tc.b != nil {
				tc.b(&fb)
			}
			a, b := fa.Serialize(t), fb.Serialize(t)
			if ha, hb := FlowHash(a), FlowHash(b); ha != hb {
				t.Errorf("FlowHash differs within one flow: %#x vs %#x", ha, hb)
			}
			for _, r := range [][2]uint16{{0, 0}, {DefaultPortMin, DefaultPortMax}, {1000, 1001}, {1, 65535}} {
				pa, pb := FlowSrcPort(a, r[0], r[1]), FlowSrcPort(b, r[0], r[1])
				if pa != pb {
					t.Errorf("range %v: ports %d vs %d within one flow", r, pa, pb)
				}
			}
		})
	}
}

func TestFlowSrcPortDistinguishesFlows(t *testing.T) {
	base := defaultFlow()
	variants := []func(f *flow){
		func(f *flow) { f.SPort++ },
		func(f *flow) { f.DPort++ },
		func(f *flow) { f.Src[3]++ },
		func(f *flow) { f.Dst[3]++ },
		func(f *flow) { f.Proto = layers.IPProtocolTCP },
	}
	h0 := FlowHash(base.Serialize(t))
	for i, v := range variants {
		f := defaultFlow()
		v(&f)
		if FlowHash(f.Serialize(t)) == h0 {
			t.Errorf("variant %d hashes like the base flow", i)
		}
	}
}

func TestFlowSrcPortRangeAndSpread(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	ranges := [][2]uint16{{0, 0}, {DefaultPortMin, DefaultPortMax}, {49152, 65535}, {10000, 10016}, {5, 5}, {9, 3}}
	const flows = 20000
	// Realistic low-entropy variation: sequential ephemeral ports from a
	// few clients to a few servers. Patched into one serialized frame
	// (FlowHash reads no checksums).
	base := defaultFlow().Serialize(t)
	frames := make([][]byte, flows)
	for i := range frames {
		b := bytes.Clone(base)
		b[14+15] = byte(r.IntN(4))                             // source address, last byte
		b[14+19] = byte(r.IntN(4))                             // destination address, last byte
		binary.BigEndian.PutUint16(b[14+20:], uint16(32768+i)) // UDP source port
		frames[i] = b
	}
	for _, rg := range ranges {
		min, max := rg[0], rg[1]
		if min >= max {
			min, max = DefaultPortMin, DefaultPortMax
		}
		const buckets = 16
		var count [buckets]int
		seen := map[uint16]bool{}
		for _, frame := range frames {
			p := FlowSrcPort(frame, rg[0], rg[1])
			if p < min || p >= max {
				t.Fatalf("range %v: port %d outside [%d, %d)", rg, p, min, max)
			}
			count[int(uint64(p-min)*buckets/uint64(max-min))]++
			seen[p] = true
		}
		// Each bucket should get flows/buckets; allow ±15%, far beyond
		// the binomial standard deviation (~1%) for a uniform hash.
		for i, c := range count {
			exp := flows / buckets
			if c < exp*85/100 || c > exp*115/100 {
				t.Errorf("range %v: bucket %d has %d of %d flows, want about %d", rg, i, c, flows, exp)
			}
		}
		// With many more ports than flows, collisions stay near the
		// birthday bound: at least half the flows get distinct ports.
		if width := int(max - min); width > 4*flows && len(seen) < flows/2 {
			t.Errorf("range %v: only %d distinct ports for %d flows", rg, len(seen), flows)
		}
	}
}

func TestFlowHashNonIP(t *testing.T) {
	arp := make([]byte, 42)
	packet.PutEth(arp, packet.BroadcastMAC, macA, packet.EtherTypeARP)
	h1 := FlowHash(arp)
	if FlowHash(arp) != h1 {
		t.Fatal("FlowHash not deterministic")
	}
	arp[11]++ // another source MAC: another flow
	if FlowHash(arp) == h1 {
		t.Error("source MAC does not affect the non-IP hash")
	}
	arp[11]--
	binary.BigEndian.PutUint16(arp[12:], packet.EtherTypeIPv6) // IPv6 EtherType, garbage header
	if FlowHash(arp) == h1 {
		t.Error("EtherType does not affect the non-IP hash")
	}
	// Short and malformed frames hash without panicking.
	for n := 0; n <= 60; n++ {
		b := make([]byte, n)
		if n >= 14 {
			binary.BigEndian.PutUint16(b[12:], packet.EtherTypeIPv4)
			b[14%n] = 0x4f
		}
		_ = FlowSrcPort(b, 0, 0)
	}
}

func TestFlowHashVLANAndIPv6(t *testing.T) {
	f := defaultFlow()
	plain := f.Serialize(t)
	tagged := make([]byte, 0, len(plain)+4)
	tagged = append(tagged, plain[:12]...)
	tagged = append(tagged, 0x81, 0x00, 0x00, 0x05)
	tagged = append(tagged, plain[12:]...)
	if FlowHash(tagged) != FlowHash(plain) {
		t.Error("802.1Q tag changes the flow hash")
	}

	v6 := func(sport, dport uint16, src, dst byte) []byte {
		b := make([]byte, 14+40+8)
		packet.PutEth(b, macB, macA, packet.EtherTypeIPv6)
		ip := b[14:]
		ip[0] = 0x60
		ip[packet.IPv6OffNextHeader] = packet.IPProtoUDP
		ip[packet.IPv6OffSrc+15] = src
		ip[packet.IPv6OffDst+15] = dst
		binary.BigEndian.PutUint16(ip[40:], sport)
		binary.BigEndian.PutUint16(ip[42:], dport)
		return b
	}
	if FlowHash(v6(1000, 53, 1, 2)) != FlowHash(v6(53, 1000, 2, 1)) {
		t.Error("IPv6 flow hash is not symmetric")
	}
	if FlowHash(v6(1000, 53, 1, 2)) == FlowHash(v6(1001, 53, 1, 2)) {
		t.Error("IPv6 source port does not affect the hash")
	}
}
