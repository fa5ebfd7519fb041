package bench

import (
	"fmt"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/bench/internal/outerframe"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

const (
	// Headroom is the space in front of every frame in a read buffer, as
	// in the node's data path.
	Headroom = datapath.Headroom
	// BatchSize is the most frames of one ingress port the replay queues
	// at once: what a plain TAP read or a UDP read returns at most.
	BatchSize = 64
	bufSize   = Headroom + MaxFrameLen
)

// Mode is which data path the replay runs, as weftd's --offload picks it.
type Mode uint8

const (
	// ModeOffload is weftd's default: virtio-header TAPs with checksum
	// offload, TSO and USO (reads of up to datapath.SuperReadBatch frames),
	// UDP GRO on the underlay (runs of equal-size datagrams from one peer
	// read as one), and coalescing of deliveries into super-frames.
	ModeOffload Mode = iota
	// ModePlain is --offload=false: plain TAPs (reads of up to 64 frames),
	// one datagram per underlay read slot, no coalescing.
	ModePlain
)

func (m Mode) String() string {
	if m == ModePlain {
		return "plain"
	}
	return "offload"
}

// batch is a run of frames, in capture order, that entered on one port.
type batch struct {
	in       vswitch.PortID
	underlay bool
	first, n int32 // r.order[first : first+n] index r.frames
}

// Replayer runs captured frames through the node's own data path
// (package datapath: Transmitter.Transmit for frames from local ports,
// Receiver.Receive for VXLAN from peers) over stand-in devices, so that it
// measures exactly what weftd runs per frame, less the system calls:
//
//	local port:  write into the port's fake TAP (netdev.Fake, the pod's
//	             end) -> Transmit: read, prepare, Switch.ProcessGSO, emit
//	underlay:    the frame's UDP payload from a fake socket (GRO runs in
//	             ModeOffload) -> Receive: decap, Switch.Process, emit
//	emit:        deliver and flood -> a counting device per port; encap ->
//	             the VXLAN header in the headroom -> a counting socket
//
// Outer Ethernet/IPv4/UDP headers of captured VXLAN frames are stripped
// when the replay is planned, as the kernel strips them before the socket;
// a frame the socket would not receive counts as a decap drop per pass.
// A Replayer belongs to one goroutine and allocates nothing per pass.
type Replayer struct {
	topo  *Topology
	mode  Mode
	sw    *vswitch.Switch
	peers *overlay.PeerTable
	decap *overlay.Decapper
	dp    *datapath.Datapath

	ports []*replayPort // by PortID; nil where the topology has none
	rx    *datapath.Receiver
	src   dgramSource

	frames     [][]byte
	order      []int32
	batches    []batch
	dgrams     []dgram                           // by frame index: underlay frames the socket receives
	outerDrop  []outerframe.DropReason           // by frame index: why the socket would not (DropNone: it would)
	planDrops  [outerframe.NumDropReasons]uint64 // outer drops of one pass
	passFrames uint64
	passBytes  uint64
	skipped    int

	feed  [][]byte         // the frames of the batch being written to a fake TAP
	flood []vswitch.PortID // FloodSet scratch of the verdict observer

	// FillFDB's batch.
	bufs     [][]byte
	cur      [][]byte
	verdicts []vswitch.Verdict

	st        Stats
	swBase    vswitch.Counters
	decapBase [outerframe.NumDropReasons]uint64
	dropBase  [5]uint64 // out_no_headroom, offload_bad_gso, out_port_gone, device and socket drops, offload_bad_partial
	epoch     time.Time
}

// replayPort is one local port: the TAP its transmitter reads the
// capture's frames from, and the transmitter.
type replayPort struct {
	tap *captureTap
	tx  *datapath.Transmitter
}

// NewReplayer is NewReplayerMode in weftd's default mode, ModeOffload.
func NewReplayer(t *Topology, frames [][]byte) (*Replayer, error) {
	return NewReplayerMode(t, frames, ModeOffload)
}

// NewReplayerMode builds t's switch, peer table, decapsulator and data
// path in mode and plans the batches for frames, which it keeps (read
// only) for its lifetime. Frames longer than MaxFrameLen are left out
// (Skipped).
func NewReplayerMode(t *Topology, frames [][]byte, mode Mode) (*Replayer, error) {
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
		topo:     t,
		mode:     mode,
		sw:       sw,
		peers:    pt,
		decap:    overlay.NewDecapper(t.VNI, pt),
		frames:   frames,
		feed:     make([][]byte, 0, BatchSize),
		bufs:     make([][]byte, BatchSize),
		cur:      make([][]byte, BatchSize),
		verdicts: make([]vswitch.Verdict, BatchSize),
		epoch:    time.Now(),
	}
	r.dp = datapath.New(datapath.Config{Switch: sw, Decap: r.decap, Peers: pt, VNI: t.VNI, Port: t.VXLANPort,
		OverlayPort: t.OverlayPort, Coalesce: mode == ModeOffload, Observer: r, Epoch: r.epoch})
	maxPort := t.OverlayPort
	for _, e := range t.Ports() {
		maxPort = max(maxPort, e.Port)
	}
	r.st.Ports = make([]Sink, int(maxPort)+1)
	r.ports = make([]*replayPort, int(maxPort)+1)
	r.flood = make([]vswitch.PortID, 0, len(t.Ports())+1)
	out := encapSink{sink: &r.st.Encap}
	offloads, batchSize := -1, BatchSize
	if mode == ModeOffload {
		offloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_USO4 | unix.TUN_F_USO6
		batchSize = datapath.SuperReadBatch
	}
	for _, e := range t.Ports() {
		sink := sinkDev{name: fmt.Sprintf("port%d", e.Port), sink: &r.st.Ports[e.Port]}
		if offloads >= 0 {
			sink.vnet, sink.offloads = true, offloads
		}
		tap := &captureTap{sinkDev: sink, batch: batchSize}
		p := &datapath.Port{ID: e.Port, Dev: &tap.sinkDev}
		r.ports[e.Port] = &replayPort{tap: tap, tx: r.dp.NewTransmitter(p, tap, out)}
		r.dp.SetPort(p)
	}
	rxBatch, rxBuf := BatchSize, datapath.FrameBufSize
	if mode == ModeOffload {
		rxBatch, rxBuf = datapath.GROReadBatch, datapath.GROBufSize
		r.src.gro = true
	}
	r.rx = r.dp.NewReceiver(&r.src, out, rxBatch, rxBuf, nil)
	for i := range r.bufs {
		r.bufs[i] = make([]byte, bufSize)
	}
	r.plan()
	r.ResetStats()
	return r, nil
}

// ObserveVerdicts implements datapath.Observer: the verdict mix and the
// flood copies.
func (r *Replayer) ObserveVerdicts(in vswitch.PortID, verdicts []vswitch.Verdict) {
	for i := range verdicts {
		v := &verdicts[i]
		r.st.count(v)
		if v.Action == vswitch.ActionFlood {
			r.flood = r.sw.FloodSet(in, r.flood[:0])
			r.st.FloodCopies += uint64(len(r.flood))
		}
	}
}

// plan groups the frames into batches per ingress port, keeping capture
// order within a port: a port's batch is emitted when it is full, and the
// partial ones at the end in the order their first frames were captured.
// Underlay frames are reduced to what the node's socket would receive.
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
	r.dgrams = make([]dgram, len(r.frames))
	r.outerDrop = make([]outerframe.DropReason, len(r.frames))
	r.planDrops = [outerframe.NumDropReasons]uint64{}
	outer := outerframe.NewDecapper(r.topo.VNI, r.topo.VXLANPort, r.peers)
	for i, f := range r.frames {
		if len(f) > MaxFrameLen {
			r.skipped++
			continue
		}
		in, underlay := r.topo.Ingress(f)
		if underlay {
			d, ok := udpPayload(f, r.topo.VXLANPort)
			if !ok {
				// Not for the socket: classified by the full-frame checks
				// of a decapsulator of its own, so the replay's counts only
				// what its data path did.
				_, _, reason := outer.DecapFrame(f)
				if reason == outerframe.DropNone {
					reason = outerframe.DropNotVXLAN
				}
				r.outerDrop[i] = reason
				r.planDrops[reason]++
			}
			r.dgrams[i] = d
		}
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
	r.src.dgrams = make([]dgram, 0, BatchSize)
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

// Mode returns the data path mode the replay runs.
func (r *Replayer) Mode() Mode { return r.mode }

// FramesPerPass and BytesPerPass size one pass.
func (r *Replayer) FramesPerPass() uint64 { return r.passFrames }
func (r *Replayer) BytesPerPass() uint64  { return r.passBytes }

// Batches returns the number of ingress batches per pass.
func (r *Replayer) Batches() int { return len(r.batches) }

// Skipped returns the number of frames left out for being longer than
// MaxFrameLen.
func (r *Replayer) Skipped() int { return r.skipped }

// Pass replays every frame once.
func (r *Replayer) Pass() {
	for i := range r.batches {
		b := &r.batches[i]
		idx := r.order[b.first : b.first+b.n]
		if b.underlay {
			r.underlayBatch(idx)
		} else {
			r.portBatch(b.in, idx)
		}
	}
	r.st.Passes++
	r.st.Frames += r.passFrames
	r.st.Bytes += r.passBytes
	r.st.Batches += uint64(len(r.batches))
}

// portBatch queues a batch at the port's TAP, as the pod's stack would,
// and runs the port's transmitter until it has read them all.
func (r *Replayer) portBatch(in vswitch.PortID, idx []int32) {
	p := r.ports[in]
	if p == nil {
		return
	}
	r.feed = r.feed[:0]
	for _, ti := range idx {
		r.feed = append(r.feed, r.frames[ti])
	}
	p.tap.frames, p.tap.next = r.feed, 0
	for {
		n, _ := p.tx.Transmit(false)
		if n == 0 {
			break
		}
	}
}

// underlayBatch hands a batch's datagrams to the receiver's socket and
// runs the receiver until it has read them all.
func (r *Replayer) underlayBatch(idx []int32) {
	r.src.dgrams, r.src.next = r.src.dgrams[:0], 0
	for _, ti := range idx {
		if r.outerDrop[ti] == outerframe.DropNone {
			r.src.dgrams = append(r.src.dgrams, r.dgrams[ti])
		}
	}
	r.st.Underlay += uint64(len(idx))
	for r.src.more() {
		r.rx.Receive()
	}
}

// ResetStats zeroes the replay's statistics (the switch keeps its state).
func (r *Replayer) ResetStats() {
	ports := r.st.Ports
	clear(ports)
	r.st = Stats{Ports: ports}
	r.swBase = r.sw.Counters()
	for i := range r.decapBase {
		r.decapBase[i] = r.decap.Drops.Get(overlay.DropReason(i))
	}
	r.dropBase = r.dpDrops()
}

func (r *Replayer) dpDrops() [5]uint64 {
	d := r.dp.Drops()
	dev := d.Get(datapath.DropUnderlayEmpty) + d.Get(datapath.DropUnderlayTruncated)
	for _, p := range r.ports {
		if p != nil {
			for reason := range netdev.NumDropReasons {
				dev += p.tap.Drops(reason)
			}
		}
	}
	return [5]uint64{d.Get(datapath.DropNoHeadroom), d.Get(datapath.DropBadGSO), d.Get(datapath.DropPortGone), dev, d.Get(datapath.DropBadPartial)}
}

// Stats returns the statistics since the last ResetStats.
func (r *Replayer) Stats() Stats {
	s := r.st
	s.Ports = slices.Clone(r.st.Ports)
	s.Switch = counterDelta(r.sw.Counters(), r.swBase)
	for i := range s.DecapDrops {
		s.DecapDrops[i] = r.decap.Drops.Get(overlay.DropReason(i)) - r.decapBase[i] + r.planDrops[i]*s.Passes
	}
	s.Decapped = s.Underlay - s.DecapDropped()
	d := r.dpDrops()
	s.EncapErrors = d[0] - r.dropBase[0] + d[1] - r.dropBase[1]
	s.PortGone = d[2] - r.dropBase[2]
	s.DeviceDrops = d[3] - r.dropBase[3]
	s.PartialDrops = d[4] - r.dropBase[4]
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
	cpu0 := procstat.ThreadCPU() // 0: the clock is not available, report no CPU figure
	start := time.Now()
	for {
		r.Pass()
		if time.Since(start) >= d {
			break
		}
	}
	el := time.Since(start)
	cpu1 := procstat.ThreadCPU()
	runtime.ReadMemStats(&m1)
	s := r.Stats()
	res := Result{
		Passes: s.Passes, Frames: s.Frames, Bytes: s.Bytes, Elapsed: el,
		Allocs: m1.Mallocs - m0.Mallocs, AllocBytes: m1.TotalAlloc - m0.TotalAlloc,
		Stats: s,
	}
	if cpu0 > 0 {
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
