package datapath

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

const (
	// Headroom is the room in front of every frame in a read buffer: the
	// VXLAN header is written there before the frame goes to the UDP
	// socket (the kernel adds the outer IPv4 and UDP headers).
	Headroom = 64
	// FrameBufSize holds a maximum-size Ethernet frame for MTUs up to 9000
	// after the headroom; ICMP errors built in place need at most 110 bytes.
	FrameBufSize = Headroom + 9216
	// SuperBufSize holds the largest GSO super-frame a TAP hands out (IPv4
	// total length <= 65535, plus Ethernet) after the headroom.
	SuperBufSize = Headroom + packet.EthHdrLen + 0xffff
	// SuperReadBatch is how many frames one read of a TAP that hands out
	// super-frames returns: each buffer holds a whole super-frame, so fewer
	// than a plain TAP's 64 (16 x 64 KiB per transmitter).
	SuperReadBatch = 16
	// encapArenaSize holds the segments of the super-frames of one batch
	// bound for peers before they go out in one send; a batch that needs
	// more is flushed on the way.
	encapArenaSize = 512 << 10
	// maxSegQueue bounds the datagrams queued before a flush (and the
	// segments one super-frame may split into: an MSS below 64 is refused).
	maxSegQueue = 1024
	// splitBufSize holds a super-frame segmented for a port that cannot
	// take it whole: the payload once, headers once per segment.
	splitBufSize = SuperBufSize + maxSegQueue/8*128
)

// Config is what the data path needs of the node.
type Config struct {
	Switch *vswitch.Switch
	Decap  *overlay.Decapper // checks arrivals against the peer table
	Peers  *overlay.PeerTable
	VNI    uint32
	Port   uint16 // VXLAN UDP port of every peer
	// Epoch is when the clock (Now) starts; zero: at New.
	Epoch time.Time
	// OverlayPort is the switch port VXLAN arrivals enter on.
	OverlayPort vswitch.PortID
	// Coalesce makes receivers coalesce consecutive TCP (and, for TAPs
	// with USO, UDP) segments bound for one virtio-header TAP into one
	// super-frame write (the TAP side of GRO).
	Coalesce bool
	// PartialCsum keeps a pod's partial checksums partial (partial.go):
	// a plain frame marked NEEDS_CSUM keeps its mark through the switch
	// and leaves partial for a virtio-header TAP or a peer with
	// Peer.PartialCsum. Off: every such frame is completed on arrival, as
	// before. Super-frames go partial to a peer with Peer.PartialCsum
	// either way (the node sets that only when it runs with the option),
	// and what arrives marked overlay.FlagPartialCsum is always written
	// partial.
	PartialCsum bool
	// RxSpin, if positive, is how long after a transmitter sent to a peer
	// the underlay readers given SpinDeadline spin instead of parking
	// (overlay.GROReader.Spin): the send wakes a parked reader
	// (SetSpinReaders), which then retries its read, polling the sending
	// pod's TAP (SpinIdle) and yielding the CPU between retries, so the
	// peer's answer (an echo reply, an ACK) finds a running reader on a
	// running CPU rather than one an idle vCPU must be woken for. Costs
	// CPU while it spins; 0 (the default): never.
	RxSpin time.Duration
	// Observer, if set, sees every batch's verdicts right after the switch
	// decided them (bench's replay counts the verdict mix with it). nil in
	// the daemon: one nil check per batch.
	Observer Observer
}

// Observer sees the verdicts of each batch: frames that entered on port
// in got verdicts. It must not keep either slice.
type Observer interface {
	ObserveVerdicts(in vswitch.PortID, verdicts []vswitch.Verdict)
}

// Datapath is what the node's transmitters and receivers share: the
// switch, the ports by switch port ID, the peer table, the clock and the
// counters. It is safe for concurrent use; the hot path reads it without
// locks.
type Datapath struct {
	cfg   Config
	sw    *vswitch.Switch
	decap *overlay.Decapper
	peers *overlay.PeerTable
	epoch time.Time

	ports   [vswitch.MaxPorts]atomic.Pointer[Port]
	retired [netdev.NumDropReasons]atomic.Uint64 // device drops of detached ports
	drops   Drops
	work    Work
	pools   pools // the workers' big buffers (bufpool.go)
	arenas  *bufPool
	splits  *bufPool
	// spinUntil is Config.RxSpin's deadline (Unix ns), moved forward by
	// transmitters' sends to peers; spinPort is the port whose
	// transmitter moved it last, which spinning readers poll (SpinIdle).
	spinUntil   atomic.Int64
	spinPort    atomic.Uint32
	spinReaders atomic.Pointer[[]*overlay.GROReader]
}

// Work counts what the offload machinery did, by kind.
type Work struct {
	SuperFrames atomic.Uint64 // TSO/USO super-frames read from TAPs
	Segments    atomic.Uint64 // segments they were split into for peers
	Runs        atomic.Uint64 // super-frames coalesced for TAPs
	Coalesced   atomic.Uint64 // segments those runs merged
	Drained     atomic.Uint64 // frames a receiver read from a TAP it had written to
	PartialTx   atomic.Uint64 // frames and segments sent to peers with their checksum partial
	PartialRx   atomic.Uint64 // frames received from peers with their checksum partial
}

// New returns a data path over cfg's switch and peers.
func New(cfg Config) *Datapath {
	dp := &Datapath{cfg: cfg, sw: cfg.Switch, decap: cfg.Decap, peers: cfg.Peers, epoch: cfg.Epoch}
	if dp.epoch.IsZero() {
		dp.epoch = time.Now()
	}
	dp.arenas = dp.pools.pool(1, encapArenaSize)
	dp.splits = dp.pools.pool(1, splitBufSize)
	return dp
}

// Now is the monotonic clock (ns since Config.Epoch) the switch ages entries by;
// workers read it once per batch.
func (dp *Datapath) Now() int64 { return int64(time.Since(dp.epoch)) }

// SpinDeadline is the deadline an underlay reader spins until
// (overlay.GROReader.Spin), or nil when Config.RxSpin is off.
func (dp *Datapath) SpinDeadline() *atomic.Int64 {
	if dp.cfg.RxSpin <= 0 {
		return nil
	}
	return &dp.spinUntil
}

// SetSpinReaders names the underlay readers a send to a peer wakes to
// spin (Config.RxSpin). Transmitters may be running already.
func (dp *Datapath) SetSpinReaders(rs []*overlay.GROReader) { dp.spinReaders.Store(&rs) }

// armSpin moves the readers' spin deadline to Config.RxSpin from now, on
// behalf of port id's transmitter, and wakes the parked readers.
func (dp *Datapath) armSpin(id vswitch.PortID) {
	dp.spinUntil.Store(time.Now().Add(dp.cfg.RxSpin).UnixNano())
	dp.spinPort.Store(uint32(id))
	if rs := dp.spinReaders.Load(); rs != nil {
		for _, r := range *rs {
			r.Wake()
		}
	}
}

// SpinIdle is what a spinning underlay reader does between its retries
// (overlay.GROReader.SpinIdle): it forwards what the pod whose send armed
// the spin has queued since (its transmitter's goroutine may not get the
// P while the reader spins: GOMAXPROCS can be 1), then yields the CPU
// (sched_yield(2)), so that the spin takes only time nobody else on that
// CPU wants.
func (dp *Datapath) SpinIdle() {
	if p := dp.port(vswitch.PortID(dp.spinPort.Load())); p != nil {
		p.drain()
	}
	unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
}

// Drops is the data path's own drop counters.
func (dp *Datapath) Drops() *Drops { return &dp.drops }

// Work is the offload work counters.
func (dp *Datapath) Work() *Work { return &dp.work }

// Port is a local switch port as the data path sees it: the device frames
// for it are written to, the transmitters that read its queues, and its
// traffic counters.
type Port struct {
	ID vswitch.PortID
	// Dev takes the writes (a multi-queue TAP's first queue).
	Dev netdev.Device
	// Hist observes the size of every batch read from the port (nil: none).
	Hist interface{ Observe(n int) }

	RxFrames, RxBytes atomic.Uint64 // from the pod (TAP reads)
	TxFrames, TxBytes atomic.Uint64 // to the pod (TAP writes)
	TxErrors          atomic.Uint64

	tx []*Transmitter // one per queue; fixed once the port is published
}

// Queues is how many queues (transmitters) read the port.
func (p *Port) Queues() int { return len(p.tx) }

// addDeviceDrops adds the port's queues' device drops to sum.
func (p *Port) addDeviceDrops(sum *[netdev.NumDropReasons]uint64) {
	devs := []netdev.Device{p.Dev}
	if len(p.tx) > 0 {
		devs = devs[:0]
		for _, t := range p.tx {
			devs = append(devs, t.q)
		}
	}
	for _, d := range devs {
		for r := range sum {
			sum[r] += d.Drops(netdev.DropReason(r))
		}
	}
}

// SetPort publishes p under p.ID, with the transmitters made for it so
// far. From here on frames may be written to p.Dev.
func (dp *Datapath) SetPort(p *Port) { dp.ports[p.ID].Store(p) }

// RemovePort unpublishes port id (frames for it are then DropPortGone)
// and keeps its device drops in the totals.
func (dp *Datapath) RemovePort(id vswitch.PortID) {
	p := dp.ports[id].Swap(nil)
	if p == nil {
		return
	}
	var sum [netdev.NumDropReasons]uint64
	p.addDeviceDrops(&sum)
	for r, v := range sum {
		dp.retired[r].Add(v)
	}
}

// port is the published port id, or nil.
func (dp *Datapath) port(id vswitch.PortID) *Port {
	if int(id) >= len(dp.ports) {
		return nil
	}
	return dp.ports[id].Load()
}
