package bench

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

const (
	// Headroom is the space in front of every frame in a batch buffer, as
	// in the node's workers; EncapIPv4 needs overlay.OuterIPv4Len of it.
	Headroom = 64
	// BatchSize is the most frames one Process call gets, as a TAP or UDP
	// read returns at most this many.
	BatchSize = 64
	bufSize   = Headroom + MaxFrameLen
)

// batch is a run of frames, in capture order, that entered on one port.
type batch struct {
	in       vswitch.PortID
	underlay bool
	first, n int32 // r.order[first : first+n] index r.frames
}

// Replayer runs captured frames through the node's pipeline with counting
// sinks in place of devices: the work of the node's workers (node/
// dataplane.go) per frame, without the syscalls. A pass walks the capture
// in batches of up to BatchSize frames per ingress port:
//
//	local port:  copy into the batch buffer -> Switch.Process -> verdicts
//	underlay:    copy -> Decapper.DecapFrame -> Switch.Process(overlay port) -> verdicts
//	verdicts:    deliver -> port sink; flood -> FloodSet -> a port sink each;
//	             encap -> overlay.EncapIPv4 writes the full outer frame into
//	             the headroom (a raw-socket path; the node's Conn path only
//	             prepends the 8-byte VXLAN header) -> encap sink
//
// Peer statistics are counted per frame as the node counts them. A
// Replayer belongs to one goroutine and allocates nothing per pass.
type Replayer struct {
	topo  *Topology
	sw    *vswitch.Switch
	peers *overlay.PeerTable
	decap *overlay.Decapper
	outer overlay.OuterIPv4

	frames     [][]byte
	order      []int32
	batches    []batch
	passFrames uint64
	passBytes  uint64
	skipped    int

	// One worker's batch, allocated once and reused.
	bufs     [][]byte
	cur      [][]byte
	bufIdx   []int
	verdicts []vswitch.Verdict
	flood    []vswitch.PortID

	st     Stats
	swBase vswitch.Counters
	epoch  time.Time
}

// NewReplayer builds t's switch, peer table and decapsulator and plans the
// batches for frames, which it keeps (read only) for its lifetime. Frames
// longer than MaxFrameLen are left out (Skipped).
func NewReplayer(t *Topology, frames [][]byte) (*Replayer, error) {
	if t == nil {
		t = DefaultTopology()
	}
	sw, err := t.NewSwitch()
	if err != nil {
		return nil, err
	}
	pt, err := t.NewPeerTable()
	if err != nil {
		return nil, err
	}
	r := &Replayer{
		topo:  t,
		sw:    sw,
		peers: pt,
		decap: overlay.NewDecapper(t.VNI, t.VXLANPort, pt),
		outer: overlay.OuterIPv4{
			SrcMAC: t.UnderlayMAC, DstMAC: t.UnderlayGatewayMAC,
			Src: t.Underlay.As4(), DstPort: t.VXLANPort, VNI: t.VNI,
		},
		frames:   frames,
		bufs:     make([][]byte, BatchSize),
		cur:      make([][]byte, BatchSize),
		bufIdx:   make([]int, BatchSize),
		verdicts: make([]vswitch.Verdict, BatchSize),
		epoch:    time.Now(),
	}
	maxPort := t.OverlayPort
	for _, e := range t.Ports() {
		maxPort = max(maxPort, e.Port)
	}
	r.st.Ports = make([]Sink, int(maxPort)+1)
	r.flood = make([]vswitch.PortID, 0, len(t.Ports())+1)
	for i := range r.bufs {
		r.bufs[i] = make([]byte, bufSize)
	}
	r.plan()
	r.ResetStats()
	return r, nil
}

// plan groups the frames into batches per ingress port, keeping capture
// order within a port: a port's batch is emitted when it is full, and the
// partial ones at the end in the order their first frames were captured.
func (r *Replayer) plan() {
	type pending struct {
		in       vswitch.PortID
		underlay bool
		idx      []int32
	}
	var open []*pending
	byPort := map[vswitch.PortID]*pending{}
	emit := func(p *pending) {
		r.batches = append(r.batches, batch{in: p.in, underlay: p.underlay, first: int32(len(r.order)), n: int32(len(p.idx))})
		r.order = append(r.order, p.idx...)
		p.idx = p.idx[:0]
	}
	for i, f := range r.frames {
		if len(f) > MaxFrameLen {
			r.skipped++
			continue
		}
		in, underlay := r.topo.Ingress(f)
		p := byPort[in]
		if p == nil {
			p = &pending{in: in, underlay: underlay}
			byPort[in] = p
			open = append(open, p)
		}
		p.idx = append(p.idx, int32(i))
		r.passFrames++
		r.passBytes += uint64(len(f))
		if len(p.idx) == BatchSize {
			emit(p)
		}
	}
	open = slices.DeleteFunc(open, func(p *pending) bool { return len(p.idx) == 0 })
	slices.SortFunc(open, func(a, b *pending) int { return int(a.idx[0] - b.idx[0]) })
	for _, p := range open {
		emit(p)
	}
}

// setFrames replaces the capture and plans its batches anew; the switch
// keeps its state.
func (r *Replayer) setFrames(frames [][]byte) {
	r.frames = frames
	r.order, r.batches = r.order[:0], r.batches[:0]
	r.passFrames, r.passBytes, r.skipped = 0, 0, 0
	r.plan()
	r.ResetStats()
}

// Switch returns the replay's switch.
func (r *Replayer) Switch() *vswitch.Switch { return r.sw }

// Topology returns the topology the replay runs.
func (r *Replayer) Topology() *Topology { return r.topo }

// FramesPerPass and BytesPerPass size one pass.
func (r *Replayer) FramesPerPass() uint64 { return r.passFrames }
func (r *Replayer) BytesPerPass() uint64  { return r.passBytes }

// Batches returns the number of Process batches per pass.
func (r *Replayer) Batches() int { return len(r.batches) }

// Skipped returns the number of frames left out for being longer than
// MaxFrameLen.
func (r *Replayer) Skipped() int { return r.skipped }

// Pass replays every frame once.
func (r *Replayer) Pass() {
	for i := range r.batches {
		b := &r.batches[i]
		idx := r.order[b.first : b.first+b.n]
		// One clock read per batch, as the node's workers do.
		now := int64(time.Since(r.epoch))
		if b.underlay {
			r.underlayBatch(idx, now)
		} else {
			r.portBatch(b.in, idx, now)
		}
	}
	r.st.Passes++
	r.st.Frames += r.passFrames
	r.st.Bytes += r.passBytes
	r.st.Batches += uint64(len(r.batches))
}

// load copies template frame ti into batch buffer k, as a device read
// would, and returns it.
func (r *Replayer) load(k int, ti int32) []byte {
	buf := r.bufs[k]
	n := copy(buf[Headroom:], r.frames[ti])
	return buf[Headroom : Headroom+n]
}

func (r *Replayer) portBatch(in vswitch.PortID, idx []int32, now int64) {
	for k, ti := range idx {
		r.cur[k] = r.load(k, ti)
		r.bufIdx[k] = k
	}
	cnt := len(idx)
	r.sw.Process(r.cur[:cnt], in, r.verdicts, now)
	r.output(cnt, in)
}

func (r *Replayer) underlayBatch(idx []int32, now int64) {
	k := 0
	for j, ti := range idx {
		inner, peer, reason := r.decap.DecapFrame(r.load(j, ti))
		r.st.Underlay++
		if reason != overlay.DropNone {
			r.st.DecapDrops[reason]++ // also counted by the Decapper
			continue
		}
		st := peer.Stats()
		st.RxFrames.Add(1)
		st.RxBytes.Add(uint64(len(inner)))
		r.cur[k] = inner
		r.bufIdx[k] = j
		k++
	}
	r.st.Decapped += uint64(k)
	if k == 0 {
		return
	}
	r.sw.Process(r.cur[:k], r.topo.OverlayPort, r.verdicts, now)
	r.output(k, r.topo.OverlayPort)
}

// output carries out a batch's verdicts into the sinks.
func (r *Replayer) output(cnt int, in vswitch.PortID) {
	for i := range cnt {
		v := &r.verdicts[i]
		r.st.count(v)
		switch v.Action {
		case vswitch.ActionDeliver:
			r.deliver(v.Port, r.cur[i])
		case vswitch.ActionFlood:
			r.flood = r.sw.FloodSet(in, r.flood[:0])
			for _, id := range r.flood {
				r.deliver(id, r.cur[i])
			}
			r.st.FloodCopies += uint64(len(r.flood))
		case vswitch.ActionEncap:
			r.encap(i, v.Peer)
		}
	}
}

func (r *Replayer) deliver(id vswitch.PortID, f []byte) {
	if int(id) >= len(r.st.Ports) {
		r.st.PortGone++
		return
	}
	s := &r.st.Ports[id]
	s.Frames++
	s.Bytes += uint64(len(f))
}

// encap builds the full outer frame for frame i in the headroom in front
// of it, where the frame shares its batch buffer's array.
func (r *Replayer) encap(i int, peer netip.Addr) {
	if !peer.Is4() {
		r.st.EncapErrors++
		return
	}
	buf, f := r.bufs[r.bufIdx[i]], r.cur[i]
	off := cap(buf) - cap(f)
	addr := peer.As4()
	r.outer.Dst = addr
	start, err := overlay.EncapIPv4(buf, off, len(f), &r.outer)
	if err != nil {
		r.st.EncapErrors++
		return
	}
	if p, ok := r.peers.Lookup(addr); ok {
		st := p.Stats()
		st.TxFrames.Add(1)
		st.TxBytes.Add(uint64(len(f)))
	}
	r.st.Encap.Frames++
	r.st.Encap.Bytes += uint64(off + len(f) - start)
}

// ResetStats zeroes the replay's statistics (the switch keeps its state).
func (r *Replayer) ResetStats() {
	ports := r.st.Ports
	clear(ports)
	r.st = Stats{Ports: ports}
	r.swBase = r.sw.Counters()
}

// Stats returns the statistics since the last ResetStats.
func (r *Replayer) Stats() Stats {
	s := r.st
	s.Ports = slices.Clone(r.st.Ports)
	s.Switch = counterDelta(r.sw.Counters(), r.swBase)
	return s
}

// Warm replays the capture once to bring the switch to steady state (every
// MAC that sends learned) and resets the statistics.
func (r *Replayer) Warm() {
	r.Pass()
	r.ResetStats()
}

// Result is a timed replay.
type Result struct {
	Passes  uint64
	Frames  uint64
	Bytes   uint64
	Elapsed time.Duration
	// CPU is the replaying thread's CPU time, Elapsed less the time it
	// waited for a core on a busy machine (0 where not available).
	CPU time.Duration
	// Allocs and AllocBytes are the heap allocations during the run
	// (runtime.MemStats Mallocs and TotalAlloc deltas).
	Allocs, AllocBytes uint64
	Stats              Stats
}

// NsPerFrame returns the mean time per frame.
func (res Result) NsPerFrame() float64 {
	if res.Frames == 0 {
		return 0
	}
	return float64(res.Elapsed.Nanoseconds()) / float64(res.Frames)
}

// Mpps returns millions of frames per second.
func (res Result) Mpps() float64 {
	if res.Elapsed <= 0 {
		return 0
	}
	return float64(res.Frames) / res.Elapsed.Seconds() / 1e6
}

// Gbps returns the input rate in Gbit/s of captured bytes.
func (res Result) Gbps() float64 {
	if res.Elapsed <= 0 {
		return 0
	}
	return float64(res.Bytes) * 8 / res.Elapsed.Seconds() / 1e9
}

// AllocsPerFrame and BytesPerFrame are the heap allocations per frame.
func (res Result) AllocsPerFrame() float64 { return perFrame(res.Allocs, res.Frames) }
func (res Result) BytesPerFrame() float64  { return perFrame(res.AllocBytes, res.Frames) }

func perFrame(n, frames uint64) float64 {
	if frames == 0 {
		return 0
	}
	return float64(n) / float64(frames)
}

// Run replays the capture pass after pass on the calling goroutine for at
// least d (at least one pass) and returns the figures. Call Warm first for
// steady state.
func (r *Replayer) Run(d time.Duration) Result {
	if r.passFrames == 0 {
		return Result{}
	}
	r.ResetStats()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0, cpuOK := threadCPUTime()
	start := time.Now()
	for {
		r.Pass()
		if time.Since(start) >= d {
			break
		}
	}
	el := time.Since(start)
	cpu1, _ := threadCPUTime()
	runtime.ReadMemStats(&m1)
	s := r.Stats()
	res := Result{
		Passes: s.Passes, Frames: s.Frames, Bytes: s.Bytes, Elapsed: el,
		Allocs: m1.Mallocs - m0.Mallocs, AllocBytes: m1.TotalAlloc - m0.TotalAlloc,
		Stats: s,
	}
	if cpuOK {
		res.CPU = cpu1 - cpu0
	}
	return res
}

// CPUNsPerFrame returns the replaying thread's CPU time per frame (0 where
// thread CPU time is not available).
func (res Result) CPUNsPerFrame() float64 {
	if res.Frames == 0 {
		return 0
	}
	return float64(res.CPU.Nanoseconds()) / float64(res.Frames)
}

// String gives a one-line summary.
func (res Result) String() string {
	return fmt.Sprintf("%d frames in %v: %.1f ns/frame (%.1f ns CPU), %.2f Mpps, %.2f Gbit/s, %.3f allocs/frame, %.1f B/frame",
		res.Frames, res.Elapsed.Round(time.Millisecond), res.NsPerFrame(), res.CPUNsPerFrame(), res.Mpps(), res.Gbps(),
		res.AllocsPerFrame(), res.BytesPerFrame())
}

// FillFDB teaches the switch n extra MACs (02:fd:...) as if they had sent
// from the host port, so that the FDB works at that size. With the
// switch's default size (8,192) and n >= 8,192 minus the local ports, the
// table is full; run Warm afterwards so the local ports' MACs are the
// freshest entries.
func (r *Replayer) FillFDB(n int) {
	const frameLen = 60
	tmpl := make([]byte, frameLen)
	bcast := packet.BroadcastMAC
	packet.PutEth(tmpl, bcast, packet.MAC{}, packet.EtherTypeIPv4)
	host := r.topo.Host
	packet.PutIPv4(tmpl[packet.EthHdrLen:], frameLen-packet.EthHdrLen, 1, true, 64, packet.IPProtoUDP,
		host.IP.As4(), r.topo.Gateway.As4())
	now := int64(time.Since(r.epoch))
	for done := 0; done < n; {
		k := min(n-done, BatchSize)
		for j := range k {
			f := r.bufs[j][Headroom : Headroom+frameLen]
			copy(f, tmpl)
			i := uint32(done + j)
			copy(f[6:12], []byte{0x02, 0xfd, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
			r.cur[j] = f
		}
		r.sw.Process(r.cur[:k], host.Port, r.verdicts, now)
		done += k
	}
}
