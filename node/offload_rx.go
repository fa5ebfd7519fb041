package node

import (
	"net/netip"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// The receive half of the offload data path: UDP GRO on the underlay socket
// hands over runs of VXLAN datagrams from one peer in one buffer; each is
// decapsulated in place, the switch decides, and frames bound for a local
// TAP are coalesced back into TCP super-frames (packet.TCPRun) written with
// one virtio-header write per run instead of one write per segment.

const (
	// groReadBatch is how many GRO buffers one recvmmsg fills.
	groReadBatch = 8
	// groBufSize holds the largest coalesced read.
	groBufSize = headroom + overlay.MaxGROBytes
	// rxFrameBatch is how many inner frames go through the switch at once.
	rxFrameBatch = 256
	// smallSlot is the room a short datagram of a coalesced read is copied
	// into, so that the switch can build an ARP request or ICMP error in
	// place (up to 110 bytes after the VXLAN header) without running into
	// the next datagram of the read.
	smallSlot  = 192
	smallDgram = smallSlot - 64
)

// startOffloadSocket sets up UDP GSO and GRO on the underlay socket when
// the node runs with Offload; each steps down to the plain path, logged
// once, if the kernel refuses it.
func (n *Node) startOffloadSocket() {
	if !n.cfg.Offload {
		return
	}
	if g, err := overlay.NewGSOWriter(n.conn, 0); err != nil {
		n.log.Warn("UDP GSO unavailable; sending one datagram per segment", "err", err)
	} else {
		n.off.gso = g
	}
	n.off.gro = n.groReader(n.conn)
	n.log.Info("underlay offloads", "udp_gso", n.off.gso != nil, "udp_gro", n.off.gro != nil)
}

// groReader turns on UDP GRO for a receiving socket when the node runs
// with Offload; nil when off or refused (that socket is read plainly).
func (n *Node) groReader(c *overlay.Conn) *overlay.GROReader {
	if !n.cfg.Offload {
		return nil
	}
	r, err := overlay.NewGROReader(c, groReadBatch)
	if err != nil {
		n.log.Warn("UDP GRO unavailable; receiving one datagram per read slot", "err", err)
		return nil
	}
	return r
}

// runUnderlayOffload is runUnderlay for a GRO socket.
func (n *Node) runUnderlayOffload(r *overlay.GROReader) {
	defer n.wg.Done()
	bufs := make([][]byte, groReadBatch)
	for i := range bufs {
		bufs[i] = make([]byte, groBufSize)
	}
	sizes := make([]int, groReadBatch)
	segs := make([]int, groReadBatch)
	from := make([]netip.AddrPort, groReadBatch)
	w := newRxOffloadWorker()
	for {
		cnt, err := r.ReadBatch(bufs, sizes, segs, headroom, from)
		if err != nil {
			if n.underlayReadFailed(err) {
				return
			}
			continue
		}
		n.udpHist.Observe(cnt)
		w.k = 0
		for i := range cnt {
			if sizes[i] == 0 || segs[i] <= 0 {
				continue // truncated: counted by the reader
			}
			data := bufs[i][headroom : headroom+sizes[i]]
			for len(data) > 0 {
				seg := min(segs[i], len(data))
				// The 3-index slice keeps a frame's owner from growing it
				// into the next datagram of the run.
				dgram := data[:seg:seg]
				data = data[seg:]
				if seg < smallDgram && len(data) > 0 {
					slot := w.small[w.k*smallSlot : (w.k+1)*smallSlot]
					dgram = slot[:copy(slot, dgram)]
				}
				inner, peer, reason := n.decap.Decap(dgram, from[i])
				if reason != overlay.DropNone {
					continue // counted by the Decapper
				}
				st := peer.Stats()
				st.RxFrames.Add(1)
				st.RxBytes.Add(uint64(len(inner)))
				w.frames[w.k] = inner
				w.dgrams[w.k] = dgram
				w.k++
				if w.k == len(w.frames) {
					n.processRx(w)
				}
			}
		}
		if w.k > 0 {
			n.processRx(w)
		}
		n.flushRun(w) // a run never waits for the next read
		for _, id := range w.written[:w.nWritten] {
			n.drainPort(id)
		}
		w.nWritten = 0
	}
}

// rxOffloadWorker is the underlay worker's batch in offload mode.
type rxOffloadWorker struct {
	frames   [][]byte
	dgrams   [][]byte // the datagram each frame came in
	small    []byte   // rxFrameBatch slots of smallSlot bytes
	k        int
	verdicts []vswitch.Verdict
	flood    []vswitch.PortID
	one      [1][]byte
	oneHdr   [1]netdev.VirtioHdr

	// One run is open at a time, TCP or UDP, for one port.
	run     packet.TCPRun
	udpRun  packet.UDPRun
	runPort vswitch.PortID
	runBuf  []byte

	// the ports written to since the last read, for drainPort (a few:
	// past that, their own workers read them)
	written  [4]vswitch.PortID
	nWritten int

	// frames the switch sends on to a peer (rare: transit through this
	// node), each re-encapsulated in place.
	udpBufs [][]byte
	udpTo   []netip.AddrPort
	udpN    int
}

func newRxOffloadWorker() *rxOffloadWorker {
	return &rxOffloadWorker{
		frames:   make([][]byte, rxFrameBatch),
		dgrams:   make([][]byte, rxFrameBatch),
		small:    make([]byte, rxFrameBatch*smallSlot),
		verdicts: make([]vswitch.Verdict, rxFrameBatch),
		flood:    make([]vswitch.PortID, 0, 64),
		runBuf:   make([]byte, packet.EthHdrLen+0xffff),
		udpBufs:  make([][]byte, rxFrameBatch),
		udpTo:    make([]netip.AddrPort, rxFrameBatch),
	}
}

// processRx runs the switch over the frames gathered so far and carries
// out the verdicts.
func (n *Node) processRx(w *rxOffloadWorker) {
	frames := w.frames[:w.k]
	w.k = 0
	n.sw.Process(frames, overlayPortID, w.verdicts, n.now())
	w.udpN = 0
	for i, f := range frames {
		v := &w.verdicts[i]
		switch v.Action {
		case vswitch.ActionDeliver:
			n.deliverRx(w, v.Port, f)
		case vswitch.ActionFlood:
			n.flushRun(w)
			w.flood = n.sw.FloodSet(overlayPortID, w.flood[:0])
			for _, id := range w.flood {
				n.writePlain(w, id, f)
			}
		case vswitch.ActionEncap:
			n.flushRun(w)
			n.requeueEncap(w, w.dgrams[i], f, v.Peer)
		}
	}
	if w.udpN > 0 {
		n.sendRx(w)
	}
	clear(frames) // no references into the read buffers past this batch
	clear(w.dgrams[:len(frames)])
}

// deliverRx adds f to the open run if it continues it, else writes the run
// out and starts a new one with f (or writes f as it is).
func (n *Node) deliverRx(w *rxOffloadWorker, id vswitch.PortID, f []byte) {
	if w.runPort == id && (w.run.Segments() > 0 && w.run.Add(f) || w.udpRun.Segments() > 0 && w.udpRun.Add(f)) {
		return
	}
	n.flushRun(w)
	if p := n.ports[id].Load(); p != nil {
		if t := vnetTap(p); t != nil {
			if w.run.Start(w.runBuf, f) || tapUSO(t) && w.udpRun.Start(w.runBuf, f) {
				w.runPort = id
				return
			}
		}
	}
	n.writePlain(w, id, f)
}

// flushRun writes the open run, if any: one segment as a plain frame,
// several as a TCP or UDP super-frame with its virtio header.
func (n *Node) flushRun(w *rxOffloadWorker) {
	var frame []byte
	var hdr netdev.VirtioHdr
	switch segs := max(w.run.Segments(), w.udpRun.Segments()); {
	case segs == 0:
		return
	case w.run.Segments() > 0:
		f, mss, hdrLen := w.run.Finish()
		frame = f
		if segs > 1 {
			hdr = netdev.VirtioHdr{
				Flags: netdev.VirtioFlagNeedsCsum, GSOType: netdev.GSOTCPv4,
				HdrLen: uint16(hdrLen), GSOSize: uint16(mss),
				CsumStart: packet.TCPRunL4Off, CsumOffset: packet.TCPOffChecksum,
			}
			n.off.coalesced.Add(uint64(segs))
			n.off.runs.Add(1)
		}
	default:
		f, mss := w.udpRun.Finish()
		frame = f
		if segs > 1 {
			hdr = netdev.VirtioHdr{
				Flags: netdev.VirtioFlagNeedsCsum, GSOType: netdev.GSOUDPL4,
				HdrLen: packet.UDPRunHdrLen, GSOSize: uint16(mss),
				CsumStart: packet.UDPRunHdrLen - packet.UDPHdrLen, CsumOffset: packet.UDPOffChecksum,
			}
			n.off.coalesced.Add(uint64(segs))
			n.off.runs.Add(1)
		}
	}
	p := n.ports[w.runPort].Load()
	if p == nil {
		n.outDrops.portGone.Add(1)
		return
	}
	t := vnetTap(p)
	if t == nil { // the port changed under us; Start checked it had headers
		n.outDrops.portGone.Add(1)
		return
	}
	w.one[0], w.oneHdr[0] = frame, hdr
	_, err := t.WriteVnet(w.one[:], w.oneHdr[:], 0)
	n.countPortWrite(p, len(frame), err)
	w.wrote(w.runPort)
}

// wrote notes that a frame went to port id.
func (w *rxOffloadWorker) wrote(id vswitch.PortID) {
	for _, seen := range w.written[:w.nWritten] {
		if seen == id {
			return
		}
	}
	if w.nWritten < len(w.written) {
		w.written[w.nWritten] = id
		w.nWritten++
	}
}

// writePlain writes one frame to a port as it is.
func (n *Node) writePlain(w *rxOffloadWorker, id vswitch.PortID, f []byte) {
	p := n.ports[id].Load()
	if p == nil {
		n.outDrops.portGone.Add(1)
		return
	}
	w.one[0] = f
	_, err := p.dev.Write(w.one[:], 0)
	n.countPortWrite(p, len(f), err)
	w.wrote(id)
}

// requeueEncap sends a received frame on to another peer: a VXLAN header
// is written in front of it in its datagram, where the old one was.
func (n *Node) requeueEncap(w *rxOffloadWorker, dgram, f []byte, peerAddr netip.Addr) {
	if w.udpN == len(w.udpBufs) {
		n.sendRx(w)
	}
	off := cap(dgram) - cap(f) // f's offset in its datagram: they share the array
	start, err := overlay.Encap(dgram, off, len(f), n.cfg.VNI)
	if err != nil {
		n.outDrops.noHeadrom.Add(1)
		return
	}
	n.countPeerTx(peerAddr, 1, len(f))
	w.udpBufs[w.udpN] = dgram[start : off+len(f)]
	w.udpTo[w.udpN] = netip.AddrPortFrom(peerAddr, n.cfg.Port)
	w.udpN++
}

func (n *Node) sendRx(w *rxOffloadWorker) {
	bufs, to := w.udpBufs[:w.udpN], w.udpTo[:w.udpN]
	w.udpN = 0
	n.connMu.Lock()
	defer n.connMu.Unlock()
	for len(bufs) > 0 {
		sent, err := n.conn.WriteBatch(bufs, 0, to)
		if err == nil || n.ctx.Err() != nil {
			break
		}
		n.outDrops.udpSend.Add(1)
		bufs, to = bufs[sent+1:], to[sent+1:]
	}
	clear(w.udpBufs)
}
