package datapath

import (
	"errors"
	"net/netip"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// emitter carries out verdicts: the one dispatcher of transmitters and
// receivers. It owns the scratch the output needs: the datagram queue and
// the arena super-frames are segmented into, the open coalescing run, the
// split buffer. A worker owns one; nothing in it is shared.
type emitter struct {
	dp  *Datapath
	out Writer
	// coalesce: deliveries to a virtio-header TAP are gathered into runs
	// (receivers, with Config.Coalesce).
	coalesce bool
	// drains: remember the ports written to, for Receiver.drain.
	drains bool
	// spins: a send to a peer moves the readers' spin deadline forward
	// (transmitters, with Config.RxSpin) on behalf of port spinFor.
	spins   bool
	spinFor vswitch.PortID

	flood  []vswitch.PortID
	one    [1][]byte
	oneHdr [1]netdev.VirtioHdr

	// The datagram queue: dgrams[:n], each followed by tails[:n], go to
	// to[:n] at the next send. A plain frame's datagram is its VXLAN
	// header and the frame in the frame's own buffer (no tail); a TCP
	// super-frame's are its segments' VXLAN and TCP/IP headers in arena,
	// each with its tail, its payload where the super-frame was read (so
	// the super-frame's buffer must outlive the send: flush comes before
	// the transmitter gives its buffers back); a UDP super-frame's are its
	// segments whole in arena (no tail).
	dgrams [][]byte
	tails  [][]byte
	to     []netip.AddrPort
	n      int
	// arena is [VXLAN gap][segment][VXLAN gap][segment]... (or, for TCP,
	// [VXLAN gap][headers]...), taken from the data path's pool on first
	// need in a batch and given back by send.
	arena      *bufSet
	arenaUsed  int
	offs, lens []int
	chunks     [][]byte // a TCP super-frame's segment payloads, in f; all nil between super-frames

	// One run is open at a time, TCP or UDP, for one port. A TCP run
	// lists its parts in runParts (the segments' payloads stay where they
	// were read: it must be written before their buffers are reused); a
	// UDP run, of small datagrams, is copied into runBuf.
	run      packet.TCPRun
	udpRun   packet.UDPRun
	runPort  vswitch.PortID
	runParts [][]byte
	runBuf   []byte

	// the ports written to since the last drain (a few: past that, their
	// own transmitters read them)
	written  [4]vswitch.PortID
	nWritten int
}

func newEmitter(dp *Datapath, out Writer, queue int) emitter {
	return emitter{
		dp:     dp,
		out:    out,
		flood:  make([]vswitch.PortID, 0, 64),
		dgrams: make([][]byte, queue),
		tails:  make([][]byte, queue),
		to:     make([]netip.AddrPort, queue),
		offs:   make([]int, maxSegQueue),
		lens:   make([]int, maxSegQueue),
		chunks: make([][]byte, maxSegQueue),
	}
}

// emit carries out the verdicts of frames[:len(verdicts)] that entered on
// port in. hdrs[i] is frame i's virtio header (nil: all plain): a GSO
// super-frame's, or NEEDS_CSUM alone for a frame whose checksum is partial
// (partial.go); owners[i] is the buffer frame i lies in (its headroom
// takes the VXLAN header). Datagrams stay queued until flush.
func (e *emitter) emit(frames [][]byte, hdrs []netdev.VirtioHdr, owners [][]byte, verdicts []vswitch.Verdict, in vswitch.PortID) {
	var plain netdev.VirtioHdr
	for i, f := range frames {
		v := &verdicts[i]
		h := &plain
		if hdrs != nil {
			h = &hdrs[i]
			if v.Reply {
				// The switch answered in the frame's place (ARP, ICMP):
				// a plain frame now, whatever the header said.
				*h = netdev.VirtioHdr{}
			}
		}
		switch v.Action {
		case vswitch.ActionDeliver:
			e.deliver(v.Port, f, h)
		case vswitch.ActionFlood:
			e.flushRun() // the run's frames go first
			e.flood = e.dp.sw.FloodSet(in, e.flood[:0])
			for _, id := range e.flood {
				e.write(id, f, h)
			}
		case vswitch.ActionEncap:
			peer, _ := e.dp.peers.Lookup(v.Peer.As4()) // nil: not in the table (counted nowhere)
			if h.GSO() == netdev.GSONone {
				e.encap(owners[i], f, h, v.Peer, peer)
			} else {
				e.encapSuper(f, h, v.Peer, peer)
			}
		}
	}
}

// flush writes the open run and sends the queued datagrams: once per batch.
func (e *emitter) flush() {
	e.flushRun()
	e.send()
}

// deliver writes f to port id: added to the open run if it continues it,
// else as the start of a new run (coalescing emitters, virtio-header
// ports), else as it is.
func (e *emitter) deliver(id vswitch.PortID, f []byte, h *netdev.VirtioHdr) {
	if e.coalesce && h.GSO() == netdev.GSONone {
		partial := needsCsum(h)
		if e.runPort == id && (e.run.Segments() > 0 && e.runAdd(f, partial) || e.udpRun.Segments() > 0 && e.udpRunAdd(f, partial)) {
			return
		}
		e.flushRun()
		if p := e.dp.port(id); p != nil && p.Dev.VnetHdr() {
			if e.runBuf == nil { // once per worker
				e.runBuf = make([]byte, packet.EthHdrLen+0xffff)
				e.runParts = make([][]byte, 0, netdev.MaxGatherParts)
			}
			if e.runStart(f, partial) || netdev.TakesGSO(p.Dev.Offloads(), netdev.GSOUDPL4) && e.udpRunStart(f, partial) {
				e.runPort = id
				return
			}
		}
	}
	e.write(id, f, h)
}

// runStart, runAdd, udpRunStart and udpRunAdd start or continue the TCP
// or UDP run with a frame whose checksum is complete or partial.
func (e *emitter) runStart(f []byte, partial bool) bool {
	if partial {
		return e.run.StartPartial(e.runParts, f)
	}
	return e.run.Start(e.runParts, f)
}

func (e *emitter) runAdd(f []byte, partial bool) bool {
	if partial {
		return e.run.AddPartial(f)
	}
	return e.run.Add(f)
}

func (e *emitter) udpRunStart(f []byte, partial bool) bool {
	if partial {
		return e.udpRun.StartPartial(e.runBuf, f)
	}
	return e.udpRun.Start(e.runBuf, f)
}

func (e *emitter) udpRunAdd(f []byte, partial bool) bool {
	if partial {
		return e.udpRun.AddPartial(f)
	}
	return e.udpRun.Add(f)
}

// write writes one frame to port id: whole (with its virtio header when it
// is a super-frame the device takes, or a partial frame and the device has
// virtio headers), or split into segments when the device cannot take the
// super-frame. A partial frame for a plain device is completed first.
func (e *emitter) write(id vswitch.PortID, f []byte, h *netdev.VirtioHdr) {
	p := e.dp.port(id)
	if p == nil {
		e.dp.drops.Add(DropPortGone, 1)
		return
	}
	e.wrote(id)
	if h.GSO() == netdev.GSONone && needsCsum(h) && !p.Dev.VnetHdr() && netdev.FinishChecksum(f, h) != nil {
		e.dp.drops.Add(DropBadCsum, 1)
		return
	}
	switch {
	case h.GSO() == netdev.GSONone && !needsCsum(h):
		e.one[0] = f
		_, err := p.Dev.Write(e.one[:], 0)
		e.countWrite(p, len(f), err)
	case netdev.TakesGSO(p.Dev.Offloads(), h.GSO()): // GSONone: a partial frame
		e.one[0], e.oneHdr[0] = f, *h
		_, err := p.Dev.WriteVnet(e.one[:], e.oneHdr[:], 0)
		e.countWrite(p, len(f), err)
	default:
		e.writeSplit(p, f, h)
	}
}

// writeSplit segments a super-frame for a port that cannot take it whole,
// in a buffer from the data path's pool.
func (e *emitter) writeSplit(p *Port, f []byte, h *netdev.VirtioHdr) {
	set := e.dp.splits.get()
	defer e.dp.splits.put(set)
	split := set.bufs[0]
	cnt, err := segment(split, 0, f, h, e.offs, e.lens, false)
	if err != nil {
		e.dp.drops.Add(DropBadGSO, 1)
		return
	}
	for i := range cnt {
		seg := split[e.offs[i] : e.offs[i]+e.lens[i]]
		e.one[0] = seg
		_, err := p.Dev.Write(e.one[:], 0)
		e.countWrite(p, len(seg), err)
	}
	e.one[0] = nil
}

// countWrite does the bookkeeping of one frame of size bytes written to p.
func (e *emitter) countWrite(p *Port, size int, err error) {
	if err != nil {
		p.TxErrors.Add(1)
		e.dp.drops.Add(DropTapWrite, 1)
		return
	}
	p.TxFrames.Add(1)
	p.TxBytes.Add(uint64(size))
}

// wrote notes that a frame went to port id, for the drain.
func (e *emitter) wrote(id vswitch.PortID) {
	if !e.drains {
		return
	}
	for _, seen := range e.written[:e.nWritten] {
		if seen == id {
			return
		}
	}
	if e.nWritten < len(e.written) {
		e.written[e.nWritten] = id
		e.nWritten++
	}
}

// flushRun writes the open run, if any: one segment as a plain frame,
// several as a TCP or UDP super-frame with its virtio header; a TCP run
// gathered from its parts.
func (e *emitter) flushRun() {
	var frame []byte
	var parts [][]byte
	var hdr netdev.VirtioHdr
	segs := max(e.run.Segments(), e.udpRun.Segments())
	size := 0
	switch {
	case segs == 0:
		return
	case e.run.Segments() > 0:
		partial := e.run.Partial()
		ps, n, mss, hdrLen := e.run.Finish()
		parts, size = ps, n
		if partial {
			hdr = netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, CsumStart: packet.TCPRunL4Off, CsumOffset: packet.TCPOffChecksum}
		}
		if segs > 1 {
			hdr.GSOType, hdr.HdrLen, hdr.GSOSize = netdev.GSOTCPv4, uint16(hdrLen), uint16(mss)
		}
	default:
		partial := e.udpRun.Partial()
		f, mss := e.udpRun.Finish()
		frame, size = f, len(f)
		if partial {
			hdr = netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, CsumStart: packet.UDPRunHdrLen - packet.UDPHdrLen, CsumOffset: packet.UDPOffChecksum}
		}
		if segs > 1 {
			hdr.GSOType, hdr.HdrLen, hdr.GSOSize = netdev.GSOUDPL4, packet.UDPRunHdrLen, uint16(mss)
		}
	}
	if segs > 1 {
		e.dp.work.Coalesced.Add(uint64(segs))
		e.dp.work.Runs.Add(1)
	}
	p := e.dp.port(e.runPort)
	switch {
	case p == nil:
		e.dp.drops.Add(DropPortGone, 1)
	case parts != nil:
		e.wrote(e.runPort)
		_, err := p.Dev.WriteVnetGather(parts, hdr)
		e.countWrite(p, size, err)
	default:
		e.wrote(e.runPort)
		e.one[0], e.oneHdr[0] = frame, hdr
		_, err := p.Dev.WriteVnet(e.one[:], e.oneHdr[:], 0)
		e.countWrite(p, size, err)
	}
	clear(parts) // no references into the read buffers
}

// encap queues a plain frame for the peer at addr (peer: its table entry,
// nil if none): the VXLAN header goes into the headroom in front of f in
// its buffer owner. A partial frame stays partial, flagged in the VXLAN
// header, for a peer that takes it; for any other it is completed here.
func (e *emitter) encap(owner, f []byte, h *netdev.VirtioHdr, addr netip.Addr, peer *overlay.Peer) {
	if e.n == len(e.dgrams) {
		e.send()
	}
	partial := needsCsum(h)
	if partial && (peer == nil || !peer.PartialCsum) {
		if netdev.FinishChecksum(f, h) != nil {
			e.dp.drops.Add(DropBadCsum, 1)
			return
		}
		partial = false
	}
	off := cap(owner) - cap(f) // f's offset in its buffer: they share the array
	start, err := overlay.Encap(owner, off, len(f), e.dp.cfg.VNI)
	if err != nil {
		e.dp.drops.Add(DropNoHeadroom, 1)
		return
	}
	if partial {
		overlay.MarkPartialCsum(owner[start:])
		e.dp.work.PartialTx.Add(1)
	}
	e.countPeerTx(peer, 1, len(f))
	e.dgrams[e.n], e.tails[e.n] = owner[start:off+len(f)], nil
	e.to[e.n] = netip.AddrPortFrom(addr, e.dp.cfg.Port)
	e.n++
}

// encapSuper splits a super-frame into segments, each behind its VXLAN
// header, and queues them for the peer at addr (peer: its table entry, nil
// if none): a TCP one as headers in the arena and payloads left in f (the
// socket gathers them: the payload is copied once, by the kernel, not here
// first), a UDP one whole in the arena. A peer with PartialCsum gets the
// segments with their checksums partial and flagged: nobody reads the
// payload here.
func (e *emitter) encapSuper(f []byte, h *netdev.VirtioHdr, addr netip.Addr, peer *overlay.Peer) {
	for attempt := 0; ; attempt++ {
		if e.arena == nil {
			e.arena = e.dp.arenas.get() // until send
		}
		arena := e.arena.bufs[0]
		room := min(len(e.dgrams)-e.n, len(e.offs))
		partial := peer != nil && peer.PartialCsum
		var cnt int
		var err error
		if g := h.GSO(); g == netdev.GSOTCPv4 || g == netdev.GSOTCPv6 {
			cnt, err = packet.SegmentTCPHeaders(arena[e.arenaUsed:], overlay.HeaderLen, f, packet.EthHdrLen, int(h.CsumStart), int(h.GSOSize),
				e.offs[:room], e.lens[:room], e.chunks[:room], partial)
		} else {
			cnt, err = segment(arena[e.arenaUsed:], overlay.HeaderLen, f, h, e.offs[:room], e.lens[:room], partial)
		}
		if err == nil {
			base := e.arenaUsed
			bytes := 0
			to := netip.AddrPortFrom(addr, e.dp.cfg.Port)
			for i := range cnt {
				off := base + e.offs[i]
				start, eerr := overlay.Encap(arena, off, e.lens[i], e.dp.cfg.VNI)
				if eerr != nil { // cannot happen: segment left the gap
					e.dp.drops.Add(DropNoHeadroom, 1)
					continue
				}
				if partial {
					overlay.MarkPartialCsum(arena[start:])
				}
				e.dgrams[e.n], e.tails[e.n] = arena[start:off+e.lens[i]], e.chunks[i]
				e.to[e.n] = to
				bytes += e.lens[i] + len(e.chunks[i])
				e.n++
			}
			clear(e.chunks[:cnt]) // the queue holds them now
			e.arenaUsed = base + e.offs[cnt-1] + e.lens[cnt-1]
			e.dp.work.Segments.Add(uint64(cnt))
			if partial {
				e.dp.work.PartialTx.Add(uint64(cnt))
			}
			e.countPeerTx(peer, cnt, bytes)
			return
		}
		if attempt == 0 && e.n > 0 && (errors.Is(err, packet.ErrGSOShortDst) || errors.Is(err, packet.ErrGSOSegments)) {
			e.send() // make room and try once more
			continue
		}
		e.dp.drops.Add(DropBadGSO, 1)
		return
	}
}

// segment splits a TCP (TSO) or UDP (USO) super-frame into dst, gap bytes
// before each segment; with partial, the segments' checksums are left
// partial.
func segment(dst []byte, gap int, f []byte, h *netdev.VirtioHdr, offs, lens []int, partial bool) (int, error) {
	l4, mss := int(h.CsumStart), int(h.GSOSize)
	switch {
	case h.GSO() == netdev.GSOUDPL4 && partial:
		return packet.SegmentUDPPartial(dst, gap, f, packet.EthHdrLen, l4, mss, offs, lens)
	case h.GSO() == netdev.GSOUDPL4:
		return packet.SegmentUDP(dst, gap, f, packet.EthHdrLen, l4, mss, offs, lens)
	case partial:
		return packet.SegmentTCPPartial(dst, gap, f, packet.EthHdrLen, l4, mss, offs, lens)
	}
	return packet.SegmentTCP(dst, gap, f, packet.EthHdrLen, l4, mss, offs, lens)
}

func (e *emitter) countPeerTx(peer *overlay.Peer, frames, bytes int) {
	if peer != nil {
		st := peer.Stats()
		st.TxFrames.Add(uint64(frames))
		st.TxBytes.Add(uint64(bytes))
	}
}

// send sends the queued datagrams on the worker's own socket, empties the
// queue and gives the arena back. A datagram the socket refuses (EMSGSIZE, an
// unreachable peer) is counted and skipped; the rest still go.
func (e *emitter) send() {
	queued := e.n
	if e.spins && queued > 0 {
		e.dp.armSpin(e.spinFor)
	}
	dgrams, tails, to := e.dgrams[:queued], e.tails[:queued], e.to[:queued]
	e.n, e.arenaUsed = 0, 0
	for len(dgrams) > 0 {
		sent, err := e.out.WriteGather(dgrams, tails, to)
		if err == nil {
			break
		}
		e.dp.drops.Add(DropUDPSend, 1)
		if sent >= len(dgrams) {
			break
		}
		dgrams, tails, to = dgrams[sent+1:], tails[sent+1:], to[sent+1:]
	}
	clear(e.dgrams[:queued]) // no stale references into the buffers
	clear(e.tails[:queued])
	if e.arena != nil {
		e.dp.arenas.put(e.arena)
		e.arena = nil
	}
}
