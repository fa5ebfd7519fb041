package vswitch

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/switch/conntrack"
)

// The service benchmarks and allocation tests. A populated table holds n
// service flows from pod A: A:sport -> vip:80+i, DNATed to backend i
// (10.244.2.(10+i):8080 on the peer node), i < 16, so n up to ~1M.
const benchFronts = 16

func benchBackend(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, 2, byte(10 + i)}) }

func populatedSwitch(tb testing.TB, flows int) *Switch {
	tb.Helper()
	size := max(conntrack.MinSize, flows+flows/4)
	s := newTestSwitch(tb, func(c *Config) { c.Conntrack = conntrack.Config{Size: size} })
	var svcs []ServiceSpec
	for i := range benchFronts {
		svcs = append(svcs, tcpSvc(fmt.Sprintf("bench/web:%d", i), vipWeb, uint16(80+i), ServiceBackend{Addr: benchBackend(i), Port: 8080, Ready: true}))
	}
	if err := s.SetServices(svcs); err != nil {
		tb.Fatal(err)
	}
	a := ip4Key(podAIP.As4())
	vip := ip4Key(vipWeb.As4())
	var h conntrack.Hit
	for k := range flows {
		i, sport := k%benchFronts, uint16(1024+k/benchFronts)
		fr := s.services.Load().lookup(vip, uint16(80+i), packet.IPProtoTCP)
		o := conntrack.Tuple{Src: a, Dst: vip, SrcPort: sport, DstPort: uint16(80 + i), Proto: packet.IPProtoTCP}
		r := conntrack.Tuple{Src: ip4Key(benchBackend(i).As4()), Dst: a, SrcPort: 8080, DstPort: sport, Proto: packet.IPProtoTCP}
		if err := s.ct.Insert(&o, &r, fr.id, 0, packet.TCPFlagACK, 0, &h); err != nil {
			tb.Fatalf("flow %d: %v", k, err)
		}
	}
	return s
}

// flowFrames returns frames of m flows of the populated table, chosen at
// random: forward (pod A -> cluster IP) or reply (backend -> pod A, from
// the overlay). 64-byte TCP ACKs with 10 bytes of data.
func flowFrames(tb testing.TB, flows, m int, reply bool) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, m)
	for j := range out {
		k := r.IntN(flows)
		i, sport := k%benchFronts, uint16(1024+k/benchFronts)
		if reply {
			out[j] = l4Frame(tb, routerMAC, peerMAC, benchBackend(i), 8080, podAIP, sport, packet.IPProtoTCP, packet.TCPFlagACK, 10)
		} else {
			out[j] = l4Frame(tb, routerMAC, podAMAC, podAIP, sport, vipWeb, uint16(80+i), packet.IPProtoTCP, packet.TCPFlagACK, 10)
		}
	}
	return out
}

// benchFrames cycles batches of benchBatch frames out of templates through
// Process, restoring each frame (NAT and TTL rewrite it) before its batch.
func benchFrames(b *testing.B, s *Switch, templates [][]byte, in PortID, want Action) {
	frames := make([][]byte, benchBatch)
	for i := range frames {
		frames[i] = withCap(templates[0])
	}
	out := make([]Verdict, benchBatch)
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU(b)
	now, n, at := int64(sec), 0, 0
	for b.Loop() {
		for i := range frames {
			t := templates[at]
			at++
			if at == len(templates) {
				at = 0
			}
			frames[i] = frames[i][:len(t)]
			copy(frames[i], t)
		}
		s.Process(frames, in, out, now)
		now += 100_000
		n += benchBatch
	}
	cpu := threadCPU(b) - cpu0
	if out[0].Action != want {
		b.Fatalf("verdict %+v want %s", out[0], want)
	}
	reportPerFrame(b, n)
	b.ReportMetric(float64(cpu)/float64(n), "CPU-ns/frame")
}

// threadCPU is the calling thread's CPU time in ns: on a shared machine it
// leaves out the time the benchmark waited for a core, as bench/'s replay
// does (CLOCK_THREAD_CPUTIME_ID).
func threadCPU(b *testing.B) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return ts.Nano()
}

var benchSizes = []struct {
	name  string
	flows int
}{{"1k", 1000}, {"100k", 100_000}, {"1M", 1_000_000}}

// BenchmarkServiceHit: packets of established service flows, conntrack
// hit + NAT + route, at 1k/100k/1M tracked flows.
//
//	base:    the same frames with no service and an empty table: route
//	         to the peer, and from the overlay to pod A
//	hot:     one flow, DNAT, route to the peer (compare base/route)
//	spread:  1024 random flows of the table, DNAT, route to the peer
//	reply:   1024 random flows, reverse NAT from the overlay to pod A
//	         (compare base/overlay-to-pod)
//	nosvc:   plain pod -> peer pod routing with the table populated: the
//	         conntrack miss + service lookup every non-service packet pays
func BenchmarkServiceHit(b *testing.B) {
	b.Run("base/route", func(b *testing.B) {
		s := newTestSwitch(b, nil)
		f := l4Frame(b, routerMAC, podAMAC, podAIP, 999, peerPodIP, 80, packet.IPProtoTCP, packet.TCPFlagACK, 10)
		benchFrames(b, s, [][]byte{f}, portA, ActionEncap)
	})
	b.Run("base/overlay-to-pod", func(b *testing.B) {
		s := newTestSwitch(b, nil)
		f := l4Frame(b, routerMAC, peerMAC, peerPodIP, 80, podAIP, 999, packet.IPProtoTCP, packet.TCPFlagACK, 10)
		benchFrames(b, s, [][]byte{f}, portOverlay, ActionDeliver)
	})
	for _, sz := range benchSizes {
		var s *Switch // built on first use, so a -bench filter skips the others
		get := func(b *testing.B) *Switch {
			if s == nil {
				s = populatedSwitch(b, sz.flows)
			}
			return s
		}
		b.Run(sz.name+"/hot", func(b *testing.B) {
			benchFrames(b, get(b), flowFrames(b, sz.flows, 1, false), portA, ActionEncap)
		})
		b.Run(sz.name+"/spread", func(b *testing.B) {
			benchFrames(b, get(b), flowFrames(b, sz.flows, 1024, false), portA, ActionEncap)
		})
		b.Run(sz.name+"/reply", func(b *testing.B) {
			benchFrames(b, get(b), flowFrames(b, sz.flows, 1024, true), portOverlay, ActionDeliver)
		})
		b.Run(sz.name+"/nosvc", func(b *testing.B) {
			f := l4Frame(b, routerMAC, podAMAC, podAIP, 999, peerPodIP, 80, packet.IPProtoTCP, packet.TCPFlagACK, 10)
			benchFrames(b, get(b), [][]byte{f}, portA, ActionEncap)
		})
	}
}

// BenchmarkServiceNewFlow: every packet opens a new service flow (service
// lookup, Maglev pick, conntrack insert, NAT, route), with the table
// holding 1k/100k/1M flows. The table is flushed back to its starting
// population, off the clock, before it fills.
func BenchmarkServiceNewFlow(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			s := populatedSwitch(b, sz.flows)
			frames := make([][]byte, benchBatch)
			tmpl := l4Frame(b, routerMAC, podAMAC, podAIP, 1, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 10)
			for i := range frames {
				frames[i] = withCap(tmpl)
			}
			out := make([]Verdict, benchBatch)
			room := s.ct.Config().Size - sz.flows - benchBatch
			// New flows come from the host port's address (10.244.1.2),
			// ports 1..65535 x destination ports 80..95: distinct from
			// the populated ones.
			host := hostIP.As4()
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var cpu int64
			now, n, next := int64(sec), 0, 0
			for b.Loop() {
				if next+benchBatch > room {
					b.StopTimer()
					s.FlushConntrack(ConntrackFilter{IP: hostIP})
					next = 0
					b.StartTimer()
				}
				cpu0 := threadCPU(b)
				for i := range frames {
					f := frames[i][:len(tmpl)]
					copy(f, tmpl)
					k := next + i
					packet.IPv4(f[packet.EthHdrLen:]).SetSrc4(host)
					setPorts(f, uint16(1+k%65535), uint16(80+(k/65535)%benchFronts))
					frames[i] = f
				}
				next += benchBatch
				s.Process(frames, portHost, out, now)
				cpu += threadCPU(b) - cpu0
				now += 100_000
				n += benchBatch
			}
			if out[0].Action != ActionEncap {
				b.Fatalf("verdict %+v", out[0])
			}
			reportPerFrame(b, n)
			b.ReportMetric(float64(cpu)/float64(n), "CPU-ns/frame")
		})
	}
}

// setPorts rewrites a TCP frame's ports and fixes both checksums in full
// (a benchmark helper: the frames must stay valid for the pipeline).
func setPorts(f []byte, sport, dport uint16) {
	ip := packet.IPv4(f[packet.EthHdrLen:])
	ip.ComputeChecksum()
	l4 := f[packet.EthHdrLen+packet.IPv4MinHdrLen:]
	l4[0], l4[1], l4[2], l4[3] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
	l4[packet.TCPOffChecksum], l4[packet.TCPOffChecksum+1] = 0, 0
	sum := ^packet.Fold(packet.Checksum(l4, packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoTCP, uint16(len(l4)))))
	l4[packet.TCPOffChecksum], l4[packet.TCPOffChecksum+1] = byte(sum>>8), byte(sum)
}

// TestServiceZeroAllocs pins the service paths at zero allocations per
// batch: conntrack hit + DNAT, reverse NAT, a new flow (Maglev pick,
// insert), the refusal of a service without endpoints, and a non-service
// packet with flows tracked.
func TestServiceZeroAllocs(t *testing.T) {
	s := populatedSwitch(t, 1000)
	empty := ServiceSpec{Name: "bench/empty:x", ClusterIP: vipDNS, Port: 53, Proto: packet.IPProtoUDP}
	svcs := append(s.Services(), empty)
	if err := s.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
	s.icmpLimit = newLimiter(1_000_000, 1_000_000)
	hit := flowFrames(t, 1000, 64, false)
	reply := flowFrames(t, 1000, 64, true)
	tests := []struct {
		name   string
		frames [][]byte
		in     PortID
		want   Action
		vary   bool // new source port per frame and run
	}{
		{"hit DNAT", hit, portA, ActionEncap, false},
		{"reverse NAT", reply, portOverlay, ActionDeliver, false},
		{"new flow", [][]byte{l4Frame(t, routerMAC, hostMAC, hostIP, 1, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagSYN, 10)}, portHost, ActionEncap, true},
		{"no endpoints", [][]byte{l4Frame(t, routerMAC, podAMAC, podAIP, 5, vipDNS, 53, packet.IPProtoUDP, 0, 10)}, portA, ActionDeliver, false},
		{"not a service", [][]byte{l4Frame(t, routerMAC, podAMAC, podAIP, 5, peerPodIP, 53, packet.IPProtoUDP, 0, 10)}, portA, ActionEncap, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frames := make([][]byte, benchBatch)
			out := make([]Verdict, benchBatch)
			for i := range frames {
				frames[i] = withCap(tc.frames[0])
			}
			port := 0
			run := func() {
				for i := range frames {
					tf := tc.frames[i%len(tc.frames)]
					frames[i] = frames[i][:len(tf)]
					copy(frames[i], tf)
					if tc.vary {
						port++
						setPorts(frames[i], uint16(1+port%60000), 80)
					}
				}
				s.Process(frames, tc.in, out, 2*sec)
			}
			run()
			if out[0].Action != tc.want {
				t.Fatalf("verdict %+v want %s", out[0], tc.want)
			}
			if n := testing.AllocsPerRun(50, run); n != 0 {
				t.Errorf("%.1f allocations per batch of %d", n, benchBatch)
			}
		})
	}
}
