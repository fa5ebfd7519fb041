package datapath

import (
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// Transmitter forwards what one queue of a port's device reads: frames a
// pod (or the node, through its host port) sends. It owns its batch
// (virtio headers, verdicts), its dispatcher and the underlay socket it
// sends on; the read buffers it takes from the data path's pool for each
// batch (bufpool.go), so an idle pod holds none.
type Transmitter struct {
	dp   *Datapath
	port *Port
	q    netdev.Device
	pool *bufPool // read buffers: full size, headroom included

	sizes    []int
	hdrs     []netdev.VirtioHdr
	ipLens   []uint16 // per frame: IP length of a super-frame's largest segment; 0 plain
	frames   [][]byte // frames[k] is a sub-slice of owners[k]
	owners   [][]byte
	verdicts []vswitch.Verdict
	e        emitter
}

// NewTransmitter makes the transmitter of queue q of port p, sending on
// out (the transmitter's own socket), and adds it to p's transmitters.
// Call it before SetPort publishes p. Buffers hold super-frames when q
// takes TSO or USO, else maximum-size frames.
func (dp *Datapath) NewTransmitter(p *Port, q netdev.Device, out Writer) *Transmitter {
	batch := q.BatchSize()
	bufSize := FrameBufSize
	if netdev.TakesGSO(q.Offloads(), netdev.GSOTCPv4) || netdev.TakesGSO(q.Offloads(), netdev.GSOUDPL4) {
		bufSize = SuperBufSize
	}
	t := &Transmitter{
		dp: dp, port: p, q: q,
		pool:     dp.pools.pool(batch, bufSize),
		sizes:    make([]int, batch),
		hdrs:     make([]netdev.VirtioHdr, batch),
		ipLens:   make([]uint16, batch),
		frames:   make([][]byte, batch),
		owners:   make([][]byte, batch),
		verdicts: make([]vswitch.Verdict, batch),
		e:        newEmitter(dp, out, maxSegQueue),
	}
	t.e.spins, t.e.spinFor = dp.cfg.RxSpin > 0, p.ID
	p.tx = append(p.tx, t)
	return t
}

// Run transmits batch after batch until the device fails (closed, or
// removed with its namespace), and returns that error.
func (t *Transmitter) Run() error {
	for {
		if _, err := t.Transmit(true); err != nil {
			return err
		}
	}
}

// Transmit forwards one batch read from the queue and returns how many
// frames it read:
//
//  1. read: a batch of frames with their virtio headers (zero on a plain
//     TAP) into a set of buffers from the pool, taking the queue's read
//     turn;
//  2. prepare: finish the checksum of a plain frame marked NEEDS_CSUM
//     (or, with Config.PartialCsum, keep it partial: partial.go); for a
//     TSO/USO super-frame, work out the IP length of its largest
//     segment (the switch checks the MTU against that, not the
//     super-frame's);
//  3. decide: Switch.ProcessGSO, once per frame or super-frame;
//  4. emit: deliver, flood, or encapsulate for a peer (a super-frame is
//     split into segments there), flush once, and give the buffers back.
//
// With wait the call blocks until frames come (the transmitter's own
// goroutine, Run), holding no buffers while it waits; it may still return
// 0 frames when another reader took them first. Without wait it is the
// drain-after-write: a Receiver that just wrote to this port calls it,
// because the pod's stack answers inside that write (an ACK, an echo
// reply, the TCP burst an ACK let go) and its frames are often queued
// already; forwarding them here saves waking this transmitter's goroutine,
// one context switch per round trip.
// It reads only if it gets the read turn (the goroutine is not mid-batch)
// and something is queued. Either way the caller holds the read turn from
// read to flush, and the turn is what makes it the owner of the
// transmitter for the call: nobody else touches its buffers or its socket
// meanwhile, and the queue's frames leave in order.
func (t *Transmitter) Transmit(wait bool) (int, error) {
	if wait {
		if err := t.q.WaitRead(); err != nil {
			return 0, err
		}
	}
	set := t.pool.get()
	var cnt int
	if wait {
		var err error
		if cnt, err = t.q.ReadVnetTurnNow(set.bufs, t.sizes, t.hdrs, Headroom); err != nil || cnt == 0 {
			t.pool.put(set)
			return 0, err
		}
	} else {
		if cnt = t.q.TryReadVnetTurn(set.bufs, t.sizes, t.hdrs, Headroom); cnt == 0 {
			t.pool.put(set)
			return 0, nil
		}
		t.dp.work.Drained.Add(uint64(cnt))
	}
	t.forward(set.bufs, cnt)
	t.q.EndTurn()
	t.pool.put(set)
	return cnt, nil
}

// forward does steps 2 to 4 for the cnt frames read into bufs.
func (t *Transmitter) forward(bufs [][]byte, cnt int) {
	p := t.port
	if p.Hist != nil {
		p.Hist.Observe(cnt)
	}
	var bytes uint64
	k := 0
	for i := range cnt {
		f := bufs[i][Headroom : Headroom+t.sizes[i]]
		bytes += uint64(len(f))
		ipLen, reason := t.prepare(f, &t.hdrs[i])
		if reason != 0 {
			t.dp.drops.Add(reason, 1)
			continue
		}
		t.frames[k], t.owners[k], t.hdrs[k], t.ipLens[k] = f, bufs[i], t.hdrs[i], ipLen
		k++
	}
	p.RxFrames.Add(uint64(cnt))
	p.RxBytes.Add(bytes)
	if k > 0 {
		t.dp.sw.ProcessGSO(t.frames[:k], t.ipLens[:k], p.ID, t.verdicts, t.dp.Now())
		if o := t.dp.cfg.Observer; o != nil {
			o.ObserveVerdicts(p.ID, t.verdicts[:k])
		}
		t.e.emit(t.frames[:k], t.hdrs[:k], t.owners[:k], t.verdicts[:k], p.ID)
		t.e.flush()
		clear(t.frames[:k]) // no references into the set past the batch
		clear(t.owners[:k])
	}
}

// prepare readies frame f, read with virtio header h, for the switch: a
// plain frame gets its checksum finished and a zero header; a super-frame
// keeps its header (HdrLen fixed) and returns the IP length of its largest
// segment. With Config.PartialCsum a plain TCP or UDP/IPv4 frame marked
// NEEDS_CSUM keeps a NEEDS_CSUM header and returns its IP length: to the
// switch it is a super-frame of one segment, whose L4 field is a partial
// sum. A frame it cannot ready returns the reason.
func (t *Transmitter) prepare(f []byte, h *netdev.VirtioHdr) (uint16, Reason) {
	switch h.GSO() {
	case netdev.GSONone:
		if needsCsum(h) && t.dp.cfg.PartialCsum {
			if ph, ipLen, ok := partialHdr(f); ok && ph.CsumStart == h.CsumStart && ph.CsumOffset == h.CsumOffset {
				*h = ph
				return ipLen, 0
			}
		}
		if netdev.FinishChecksum(f, h) != nil {
			return 0, DropBadCsum
		}
		*h = netdev.VirtioHdr{} // a plain, whole frame from here on
		return 0, 0
	case netdev.GSOTCPv4, netdev.GSOTCPv6, netdev.GSOUDPL4:
		l, ok := gsoSegmentIPLen(f, h)
		if !ok {
			return 0, DropBadGSO
		}
		t.dp.work.SuperFrames.Add(1)
		return l, 0
	}
	return 0, DropGSOType
}

// gsoSegmentIPLen checks a TCP or UDP super-frame's header just enough to
// size its segments and returns the IP length of its largest one, for the
// switch's MTU check. It also fixes HdrLen, which the kernel may have set
// to the whole first packet, so the header can be written back out as is.
func gsoSegmentIPLen(f []byte, h *netdev.VirtioHdr) (uint16, bool) {
	l4 := int(h.CsumStart)
	l4Len := packet.UDPHdrLen
	if h.GSO() == netdev.GSOUDPL4 {
		if l4 < packet.EthHdrLen || l4+packet.UDPHdrLen > len(f) || h.CsumOffset != packet.UDPOffChecksum {
			return 0, false
		}
	} else {
		if l4 < packet.EthHdrLen || l4+packet.TCPMinHdrLen > len(f) || h.CsumOffset != packet.TCPOffChecksum {
			return 0, false
		}
		l4Len = int(f[l4+12]>>4) * 4
		if l4Len < packet.TCPMinHdrLen || l4+l4Len > len(f) {
			return 0, false
		}
	}
	h.HdrLen = uint16(l4 + l4Len)
	ipLen := l4 - packet.EthHdrLen + l4Len + int(h.GSOSize)
	if ipLen > 0xffff {
		ipLen = 0xffff
	}
	return uint16(ipLen), true
}

// drain runs the port's transmitters in the caller's place (Transmit
// without wait), after the caller wrote to the port.
func (p *Port) drain() {
	for _, t := range p.tx {
		t.Transmit(false) // a read failure is the owner's to report
	}
}
