package bench

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/weftnet/weft/bench/internal/outerframe"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/netdev"
)

// loadTestdata reads a committed scenario pcap.
func loadTestdata(tb testing.TB, name string) [][]byte {
	tb.Helper()
	c, err := LoadPcap(filepath.Join("testdata", name+".pcap"))
	if err != nil {
		tb.Fatal(err)
	}
	return c.Frames
}

// benchReplay replays frames through both data path modes, weftd's
// default (offload) first, as sub-benchmarks mode=offload and mode=plain.
func benchReplay(b *testing.B, t *Topology, frames [][]byte, fdbFill int) {
	for _, m := range []Mode{ModeOffload, ModePlain} {
		b.Run("mode="+m.String(), func(b *testing.B) { benchReplayMode(b, t, frames, fdbFill, m) })
	}
}

// benchReplayMode replays frames pass after pass in steady state and
// reports per-frame figures; an op is one pass over the capture.
func benchReplayMode(b *testing.B, t *Topology, frames [][]byte, fdbFill int, mode Mode) {
	r, err := NewReplayerMode(t, frames, mode)
	if err != nil {
		b.Fatal(err)
	}
	if fdbFill > 0 {
		r.FillFDB(fdbFill)
	}
	r.Warm()
	b.SetBytes(int64(r.BytesPerPass()))
	b.ReportAllocs()
	// One OS thread throughout, so that its CPU time is the replay's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := procstat.ThreadCPU()
	for b.Loop() {
		r.Pass()
	}
	cpu1 := procstat.ThreadCPU()
	st := r.Stats()
	ns := float64(b.Elapsed().Nanoseconds()) / float64(st.Frames)
	b.ReportMetric(ns, "ns/frame")
	b.ReportMetric(1e3/ns, "Mpps")
	if cpu0 > 0 { // 0: no thread clock, no CPU figure
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(st.Frames), "cpu-ns/frame")
	}
	b.ReportMetric(float64(r.FramesPerPass()), "frames/op")
}

var routeVariants = []int{4, 5000}

// BenchmarkReplayMix replays testdata/mix.pcap with the default 4 peer
// routes and with 5,000.
func BenchmarkReplayMix(b *testing.B) {
	frames := loadTestdata(b, "mix")
	for _, n := range routeVariants {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			benchReplay(b, DefaultTopology().WithRoutes(n), frames, 0)
		})
	}
}

// BenchmarkReplayL2 replays testdata/l2.pcap (pod to pod, 64 bytes), with
// the FDB holding only the local MACs and with it full (8,192 entries).
func BenchmarkReplayL2(b *testing.B) {
	frames := loadTestdata(b, "l2")
	b.Run("fdb=local", func(b *testing.B) { benchReplay(b, DefaultTopology(), frames, 0) })
	b.Run("fdb=8192", func(b *testing.B) { benchReplay(b, DefaultTopology(), frames, 8192) })
}

// BenchmarkReplayRouteEncap64 routes 64-byte frames to peers and builds
// their full outer frames. With 5,000 routes the destinations walk through
// every prefix (and peer), so neither the LPM nor the peer table stays in
// one cache line.
func BenchmarkReplayRouteEncap64(b *testing.B) {
	for _, n := range routeVariants {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			t := DefaultTopology().WithRoutes(n)
			frames := loadTestdata(b, "route-encap-64")
			if n != len(t.Peers) {
				frames = Datas(RouteEncap64(t, max(scenarioFrames, n)))
			}
			benchReplay(b, t, frames, 0)
		})
	}
}

// BenchmarkReplayDecapDeliver decapsulates VXLAN frames from peers and
// delivers their 64-byte inner frames to local pods.
func BenchmarkReplayDecapDeliver(b *testing.B) {
	benchReplay(b, DefaultTopology(), loadTestdata(b, "decap-deliver-64"), 0)
}

// BenchmarkReplayLoadOnly is the stand-in devices' part of every replay
// figure over the mix: the frames copied out of the capture TAPs and the
// datagrams out of the capture socket (the copies a TAP or socket read
// makes), with no switching.
func BenchmarkReplayLoadOnly(b *testing.B) {
	r, err := NewReplayer(DefaultTopology(), loadTestdata(b, "mix"))
	if err != nil {
		b.Fatal(err)
	}
	bufs := make([][]byte, BatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	sizes, segs := make([]int, BatchSize), make([]int, BatchSize)
	hdrs := make([]netdev.VirtioHdr, BatchSize)
	from := make([]netip.AddrPort, BatchSize)
	b.SetBytes(int64(r.BytesPerPass()))
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := procstat.ThreadCPU()
	passes := 0
	for b.Loop() {
		for i := range r.batches {
			bt := &r.batches[i]
			idx := r.order[bt.first : bt.first+bt.n]
			if bt.underlay {
				r.src.dgrams, r.src.next = r.src.dgrams[:0], 0
				for _, ti := range idx {
					if r.outerDrop[ti] == outerframe.DropNone {
						r.src.dgrams = append(r.src.dgrams, r.dgrams[ti])
					}
				}
				for r.src.more() {
					r.src.ReadBatch(bufs[:datapath.GROReadBatch], sizes, segs, Headroom, from)
				}
				continue
			}
			p := r.ports[bt.in]
			r.feed = r.feed[:0]
			for _, ti := range idx {
				r.feed = append(r.feed, r.frames[ti])
			}
			p.tap.frames, p.tap.next = r.feed, 0
			for p.tap.TryReadVnetTurn(bufs, sizes, hdrs, Headroom) > 0 {
			}
		}
		passes++
	}
	cpu1 := procstat.ThreadCPU()
	frames := float64(uint64(passes) * r.FramesPerPass())
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/frames, "ns/frame")
	if cpu0 > 0 { // 0: no thread clock, no CPU figure
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/frames, "cpu-ns/frame")
	}
}

// BenchmarkReplaySimCapture replays the real capture of a two-node
// `weft sim` (testdata/captures/sim-crossnode.pcap) as the node AsNode
// picks by default, with the topology derived from the capture: VXLAN
// frames to the node are decapsulated and delivered to its pod, the
// node's own are replayed from its pod's TAP through routing and encap.
// The underlay's ARP and IPv6 chatter is left out.
func BenchmarkReplaySimCapture(b *testing.B) {
	c, err := AsNode(loadSimCapture(b), netip.Addr{})
	if err != nil {
		b.Fatal(err)
	}
	benchReplay(b, c.Topology, c.Frames, 0)
}
