package vswitch

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/packet"
)

const benchBatch = 64

// benchProcess runs batches of copies of f through Process and reports
// ns/frame and Mpps. restore copies the template back before each batch
// for paths that rewrite the frame (a 64-byte copy, part of the cost).
func benchProcess(b *testing.B, s *Switch, f []byte, in PortID, want Action, restore bool) {
	frames := make([][]byte, benchBatch)
	for i := range frames {
		frames[i] = withCap(f)
	}
	out := make([]Verdict, benchBatch)
	s.Process(frames, in, out, sec)
	if out[0].Action != want {
		b.Fatalf("verdict %+v want %s", out[0], want)
	}
	b.ReportAllocs()
	now := int64(2 * sec)
	n := 0
	for b.Loop() {
		if restore {
			for i := range frames {
				frames[i] = frames[i][:len(f)]
				copy(frames[i], f)
			}
		}
		s.Process(frames, in, out, now)
		// 100 µs per batch: the ICMP bucket (1e6/s in the ICMP benchmark)
		// refills faster than a batch drains it, so the benchmark keeps
		// measuring the path it set out to.
		now += 100_000
		n += benchBatch
	}
	if out[0].Action != want {
		b.Fatalf("path changed during the run: %+v", out[0])
	}
	reportPerFrame(b, n)
}

func reportPerFrame(b *testing.B, frames int) {
	ns := float64(b.Elapsed().Nanoseconds()) / float64(frames)
	b.ReportMetric(ns, "ns/frame")
	b.ReportMetric(1e3/ns, "Mpps")
}

// frame64 pads a frame to 64 bytes.
func frame64(f []byte) []byte {
	if len(f) < 64 {
		f = append(f, make([]byte, 64-len(f))...)
	}
	return f
}

func BenchmarkL2Forward64(b *testing.B) {
	s := newTestSwitch(b, nil)
	process(s, udpFrame(bcast, podBMAC, podBIP, podAIP, 64, 1), portB, sec)
	benchProcess(b, s, udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 64-42), portA, ActionDeliver, false)
}

func BenchmarkFlood64(b *testing.B) {
	s := newTestSwitch(b, nil)
	benchProcess(b, s, udpFrame(bcast, podAMAC, podAIP, podBIP, 64, 64-42), portA, ActionFlood, false)
}

func BenchmarkRouteToPeer64(b *testing.B) {
	s := newTestSwitch(b, nil)
	benchProcess(b, s, udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 64, 64-42), portA, ActionEncap, true)
}

func BenchmarkRouteOverlayToPod64(b *testing.B) {
	s := newTestSwitch(b, nil)
	benchProcess(b, s, udpFrame(routerMAC, peerMAC, peerPodIP, podAIP, 64, 64-42), portOverlay, ActionDeliver, true)
}

func BenchmarkARPReply(b *testing.B) {
	s := newTestSwitch(b, nil)
	benchProcess(b, s, frame64(arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP)), portA, ActionDeliver, true)
}

func BenchmarkICMPTimeExceeded(b *testing.B) {
	s := newTestSwitch(b, func(c *Config) { c.ICMPRate, c.ICMPBurst = 1_000_000, 1_000_000 })
	benchProcess(b, s, udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 1, 64-42), portA, ActionDeliver, true)
}

// BenchmarkRouteToPeerManyRoutes routes to random peers among 5,000 mixed
// routes, so the LPM works from memory rather than one hot line.
func BenchmarkRouteToPeerManyRoutes(b *testing.B) {
	s := newTestSwitch(b, nil)
	r := rand.New(rand.NewPCG(1, 1))
	routes, dsts := benchRoutes(r, 5000)
	if err := s.SetRoutes(routes); err != nil {
		b.Fatal(err)
	}
	frames := make([][]byte, benchBatch)
	tmpl := make([][]byte, benchBatch)
	for i := range frames {
		tmpl[i] = udpFrame(routerMAC, podAMAC, podAIP, dsts[r.IntN(len(dsts))], 64, 64-42)
		frames[i] = withCap(tmpl[i])
	}
	out := make([]Verdict, benchBatch)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range frames {
			frames[i] = frames[i][:len(tmpl[i])]
			copy(frames[i], tmpl[i])
		}
		s.Process(frames, portA, out, sec)
		n += benchBatch
	}
	if out[0].Action != ActionEncap {
		b.Fatalf("verdict %+v", out[0])
	}
	reportPerFrame(b, n)
}

// benchRoutes makes n peer routes of mixed lengths outside the node subnet
// and one destination inside each.
func benchRoutes(r *rand.Rand, n int) ([]Route, []netip.Addr) {
	var routes []Route
	var dsts []netip.Addr
	for _, p := range randomPrefixes(r, n*2) {
		pr := netip.PrefixFrom(keyIP4(p.addr), int(p.bits))
		if p.bits < 8 || pr.Overlaps(subnet) {
			continue
		}
		routes = append(routes, Route{Prefix: pr, Kind: RoutePeer, Peer: netip.AddrFrom4([4]byte{192, 168, byte(p.val >> 8), byte(p.val)}), PeerMAC: peerMAC})
		size := uint32(1)<<(32-p.bits) - 1
		dst := keyIP4(p.addr | r.Uint32()&size)
		if !(&Switch{}).martianAddr(dst) {
			dsts = append(dsts, dst)
		}
		if len(routes) == n {
			break
		}
	}
	return routes, dsts
}

func (s *Switch) martianAddr(a netip.Addr) bool {
	k := ip4Key(a.As4())
	return k>>24 == 0 || k>>24 == 127 || k>>28 >= 0xe
}

func BenchmarkLPMLookup5000(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	ps := randomPrefixes(r, 5000)
	t := buildLPM(ps)
	// Addresses inside the prefixes (hits at every depth), in random order.
	addrs := make([]uint32, 4096)
	for i := range addrs {
		p := ps[r.IntN(len(ps))]
		size := uint32(0xffffffff)
		if p.bits > 0 {
			size = 1<<(32-p.bits) - 1
		}
		addrs[i] = p.addr | r.Uint32()&size
	}
	b.ReportAllocs()
	var sink uint32
	n := 0
	for b.Loop() {
		for _, a := range addrs {
			v, _ := t.lookup(a)
			sink += v
		}
		n += len(addrs)
	}
	_ = sink
	ns := float64(b.Elapsed().Nanoseconds()) / float64(n)
	b.ReportMetric(ns, "ns/lookup")
}

func BenchmarkFDBLookup8192(b *testing.B) {
	f := newFDB(8192, int64(DefaultFDBMaxAge), 3)
	keys := make([]uint64, 8192)
	for i := range keys {
		keys[i] = macKey(macN(i * 7919))
		f.learn(keys[i], PortID(i%16), 0)
	}
	b.ReportAllocs()
	n := 0
	var sink PortID
	for b.Loop() {
		for _, k := range keys {
			p, _ := f.lookup(k)
			sink += p
		}
		n += len(keys)
	}
	_ = sink
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/lookup")
}

// BenchmarkFDBLearnKnown8192 is the common learning case: a known MAC on
// its port, fresh — a read, no write.
func BenchmarkFDBLearnKnown8192(b *testing.B) {
	f := newFDB(8192, int64(DefaultFDBMaxAge), 3)
	keys := make([]uint64, 8192)
	for i := range keys {
		keys[i] = macKey(macN(i * 7919))
		f.learn(keys[i], PortID(i%16), 0)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i, k := range keys {
			f.learn(k, PortID(i%16), 1)
		}
		n += len(keys)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/learn")
}

// BenchmarkFDBLearnNew8192 is the worst case: every learn is a new MAC in
// a full table, so each one evicts the oldest (lock, delete, insert).
func BenchmarkFDBLearnNew8192(b *testing.B) {
	f := newFDB(8192, int64(DefaultFDBMaxAge), 3)
	for i := range 8192 {
		f.learn(macKey(macN(i)), 1, 0)
	}
	b.ReportAllocs()
	i := 8192
	for b.Loop() {
		f.learn(macKey(macN(i)), 1, int64(i))
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i-8192), "ns/learn")
}

// BenchmarkL2ForwardParallel runs L2 forwarding on every P at once, each
// worker with its own batch, as the node's workers do.
func BenchmarkL2ForwardParallel(b *testing.B) {
	s := newTestSwitch(b, nil)
	process(s, udpFrame(bcast, podBMAC, podBIP, podAIP, 64, 1), portB, sec)
	f := udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 64-42)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		frames := make([][]byte, benchBatch)
		for i := range frames {
			frames[i] = withCap(f)
		}
		out := make([]Verdict, benchBatch)
		for pb.Next() {
			s.Process(frames, portA, out, sec)
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/frame")
}
