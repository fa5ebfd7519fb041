package node

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// The offload data path (Config.Offload). Every TAP is opened with
// IFF_VNET_HDR and TSO/checksum offload, so the kernel hands a pod's TCP
// stream to weft as 64 KiB super-frames (one read instead of ~45) whose
// checksums are left to us. A port worker then:
//
//   - finishes the checksum of a plain frame marked NEEDS_CSUM;
//   - runs the switch once per super-frame (ProcessGSO checks the MTU
//     against the segment size, not the super-frame's);
//   - writes a super-frame bound for a local port whole, with its virtio
//     header (the receiving pod's stack takes it as a GRO'd packet);
//   - splits one bound for a peer into MSS-sized TCP segments
//     (packet.SegmentTCP) packed back to back with room for the VXLAN header
//     in front of each, and queues them as datagrams.
//
// With Offload off nothing here runs: TAPs are plain and runPort does the work.

const (
	// offloadReadBatch is how many frames one TAP read returns in offload
	// mode: each buffer holds a whole super-frame, so fewer than the plain
	// path's 64 (16 x 64 KiB per port worker).
	offloadReadBatch = 16
	// superBufSize fits the largest GSO frame a TAP hands out (IPv4 total
	// length <= 65535, plus Ethernet) after the headroom.
	superBufSize = headroom + packet.EthHdrLen + 0xffff
	// encapArenaSize holds the segments of the super-frames of one batch
	// bound for peers before they go out in one sendmmsg; a batch that
	// needs more is flushed on the way.
	encapArenaSize = 512 << 10
	// maxSegQueue bounds the datagrams queued before a flush (and the
	// segments one super-frame may split into: an MSS below 64 is refused).
	maxSegQueue = 1024
)

// offloadState is the node's offload machinery: the UDP GSO writer and GRO
// reader on the underlay socket (nil when off or refused), and counters.
type offloadState struct {
	gso *overlay.GSOWriter
	gro *overlay.GROReader

	// drops
	badGSO  atomic.Uint64 // super-frame SegmentTCP refused (malformed, MSS too small)
	gsoType atomic.Uint64 // GSO type we did not negotiate (UDP)
	badCsum atomic.Uint64 // NEEDS_CSUM offsets outside the frame

	// work done
	superFrames atomic.Uint64 // TSO super-frames read from TAPs
	segments    atomic.Uint64 // segments they were split into for peers
	runs        atomic.Uint64 // super-frames coalesced for TAPs
	coalesced   atomic.Uint64 // segments those runs merged
	drained     atomic.Uint64 // frames the underlay worker read from a TAP it had written to (drainPort)
}

// offloadTapConfig asks for a virtio-header TAP with checksum offload,
// TSO, and USO where the kernel has it (6.2+; the ladder steps down) when
// the node runs with Offload.
func (n *Node) offloadTapConfig(cfg *netdev.TapConfig) {
	if !n.cfg.Offload {
		return
	}
	cfg.VnetHdr = true
	cfg.MaxOffload = netdev.OffloadAll
	cfg.BatchSize = offloadReadBatch
	cfg.GSOMaxSegs = gsoMaxSegs(cfg.MTU)
	cfg.Queues = n.cfg.TapQueues
}

// gsoMaxSegs is how many segments a pod's TSO super-frame may hold so that
// they leave as one UDP GSO message: each becomes a datagram of MTU + 22
// bytes (VXLAN and inner Ethernet headers), and one message carries at most
// MaxGSOBytes in at most MaxGSOSegments datagrams. The kernel's default (a
// 64 KiB super-frame, 46 segments at MTU 1450) needs two messages, and the
// peer then gets two GRO reads and writes two runs to the pod.
func gsoMaxSegs(mtu int) int {
	if mtu <= 0 {
		mtu = 1500
	}
	return max(1, min(overlay.MaxGSOSegments, overlay.MaxGSOBytes/(mtu+overlay.HeaderLen+packet.EthHdrLen)))
}

// tapUSO reports whether t took USO: the kernel then also accepts the
// UDP super-frames the receive path coalesces.
func tapUSO(t *netdev.Tap) bool { return t.Offloads()&unix.TUN_F_USO4 != 0 }

// vnetTap is the TAP of p if it carries virtio headers.
func vnetTap(p *port) *netdev.Tap {
	if t, ok := p.dev.(*netdev.Tap); ok && t.VnetHdr() {
		return t
	}
	return nil
}

// offloadStatus says what the node's offload path does, for `weft status`:
// e.g. "tap=csum|tso4|tso6 udp=gso,gro", or "off".
func (n *Node) offloadStatus() string {
	if !n.cfg.Offload {
		return "off"
	}
	s := "tap=none"
	if p := n.ports[hostPortID].Load(); p != nil {
		if t := vnetTap(p); t != nil {
			s = "tap=" + netdev.OffloadString(t.Offloads())
		}
	}
	switch {
	case n.off.gso != nil && !n.off.gso.Disabled() && n.off.gro != nil:
		s += " udp=gso,gro"
	case n.off.gro != nil:
		s += " udp=gro"
	case n.off.gso != nil && !n.off.gso.Disabled():
		s += " udp=gso"
	default:
		s += " udp=none"
	}
	return s
}

// offloadWorker is runPortOffload's batch: super-frame buffers, their
// virtio headers, and the arena the peer-bound segments are packed into.
type offloadWorker struct {
	bufs     [][]byte
	sizes    []int
	hdrs     []netdev.VirtioHdr
	ipLens   []uint16
	frames   [][]byte
	bufIdx   []int // frames[k] lies in bufs[bufIdx[k]]
	verdicts []vswitch.Verdict
	flood    []vswitch.PortID
	one      [1][]byte
	oneHdr   [1]netdev.VirtioHdr

	arena      []byte // [VXLAN gap][segment][VXLAN gap][segment]...
	arenaUsed  int
	offs, lens []int
	udpBufs    [][]byte
	udpTo      []netip.AddrPort
	udpN       int

	// split is scratch for a super-frame delivered to a port that cannot
	// take it whole.
	split []byte
}

func newOffloadWorker(batch int) *offloadWorker {
	w := &offloadWorker{
		bufs:     make([][]byte, batch),
		sizes:    make([]int, batch),
		hdrs:     make([]netdev.VirtioHdr, batch),
		ipLens:   make([]uint16, batch),
		frames:   make([][]byte, batch),
		bufIdx:   make([]int, batch),
		verdicts: make([]vswitch.Verdict, batch),
		flood:    make([]vswitch.PortID, 0, 64),
		arena:    make([]byte, encapArenaSize),
		offs:     make([]int, maxSegQueue),
		lens:     make([]int, maxSegQueue),
		udpBufs:  make([][]byte, maxSegQueue),
		udpTo:    make([]netip.AddrPort, maxSegQueue),
	}
	for i := range w.bufs {
		w.bufs[i] = make([]byte, superBufSize)
	}
	return w
}

// runPortOffload is runPort for one queue of a virtio-header TAP. It reads
// in turns with the underlay workers (drainPort), and both forward what
// they read with the queue's offloadWorker, which the read turn guards.
func (n *Node) runPortOffload(p *port, q portQueue) {
	defer n.wg.Done()
	tap, w := q.tap, q.ow
	for {
		cnt, err := tap.ReadVnetTurn(w.bufs, w.sizes, w.hdrs, headroom)
		if err != nil {
			n.portReadFailed(p, err)
			return
		}
		n.forwardPortBatch(p, w, cnt)
		tap.EndTurn()
	}
}

// drainPort forwards what p's TAP holds right after the underlay worker
// wrote to it, in the port worker's stead: the pod's stack handles a frame
// inside the write, so its answer (an ACK, an echo reply, the TCP burst an
// ACK let go) is often queued already. Taking it here saves waking the port
// worker for it, one context switch per frame round trip. It does nothing
// when the port worker holds the read turn (it is busy and will see it).
func (n *Node) drainPort(id vswitch.PortID) {
	p := n.ports[id].Load()
	if p == nil {
		return
	}
	for _, q := range p.queues {
		w := q.ow
		cnt := q.tap.TryReadVnetTurn(w.bufs, w.sizes, w.hdrs, headroom)
		if cnt == 0 {
			continue
		}
		n.off.drained.Add(uint64(cnt))
		n.forwardPortBatch(p, w, cnt)
		q.tap.EndTurn()
	}
}

// forwardPortBatch switches and sends on the cnt frames just read from p's
// TAP into w. The caller holds the TAP's read turn.
func (n *Node) forwardPortBatch(p *port, w *offloadWorker, cnt int) {
	p.hist.Observe(cnt)
	var bytes uint64
	k := 0
	for i := range cnt {
		f := w.bufs[i][headroom : headroom+w.sizes[i]]
		bytes += uint64(len(f))
		h := &w.hdrs[i]
		w.ipLens[k] = 0
		switch h.GSO() {
		case netdev.GSONone:
			if netdev.FinishChecksum(f, h) != nil {
				n.off.badCsum.Add(1)
				continue
			}
			*h = netdev.VirtioHdr{} // a plain, whole frame from here on
		case netdev.GSOTCPv4, netdev.GSOTCPv6, netdev.GSOUDPL4:
			l, ok := gsoSegmentIPLen(f, h)
			if !ok {
				n.off.badGSO.Add(1)
				continue
			}
			w.ipLens[k] = l
			n.off.superFrames.Add(1)
		default:
			n.off.gsoType.Add(1)
			continue
		}
		w.frames[k] = f
		w.bufIdx[k] = i
		w.hdrs[k] = *h
		k++
	}
	p.rxFrames.Add(uint64(cnt))
	p.rxBytes.Add(bytes)
	if k == 0 {
		return
	}
	n.sw.ProcessGSO(w.frames[:k], w.ipLens[:k], p.id, w.verdicts, n.now())
	n.outputOffload(w, k, p.id)
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

// outputOffload carries out the verdicts of one offload batch.
func (n *Node) outputOffload(w *offloadWorker, cnt int, in vswitch.PortID) {
	w.udpN, w.arenaUsed = 0, 0
	for i := range cnt {
		v := &w.verdicts[i]
		h := &w.hdrs[i]
		if v.Reply {
			// The switch answered in the frame's place (ARP, ICMP): a
			// plain frame now, whatever the header said.
			*h = netdev.VirtioHdr{}
		}
		switch v.Action {
		case vswitch.ActionDeliver:
			n.writePortVnet(w, v.Port, w.frames[i], h)
		case vswitch.ActionFlood:
			w.flood = n.sw.FloodSet(in, w.flood[:0])
			for _, id := range w.flood {
				n.writePortVnet(w, id, w.frames[i], h)
			}
		case vswitch.ActionEncap:
			if h.GSO() == netdev.GSONone {
				n.queueEncapOffload(w, w.bufs[w.bufIdx[i]], w.frames[i], v.Peer)
			} else {
				n.queueEncapSuper(w, w.frames[i], h, v.Peer)
			}
		}
	}
	if w.udpN > 0 {
		n.flushUDPOffload(w)
	}
}

// writePortVnet writes a frame, with its virtio header, to a local port: a
// super-frame goes whole to a virtio-header TAP, split to any other.
func (n *Node) writePortVnet(w *offloadWorker, id vswitch.PortID, f []byte, h *netdev.VirtioHdr) {
	p := n.ports[id].Load()
	if p == nil {
		n.outDrops.portGone.Add(1)
		return
	}
	t := vnetTap(p)
	if h.GSO() == netdev.GSONone || t == nil {
		if h.GSO() != netdev.GSONone {
			n.writePortSplit(w, p, f, h)
			return
		}
		w.one[0] = f
		_, err := p.dev.Write(w.one[:], 0)
		n.countPortWrite(p, len(f), err)
		return
	}
	w.one[0], w.oneHdr[0] = f, *h
	_, err := t.WriteVnet(w.one[:], w.oneHdr[:], 0)
	n.countPortWrite(p, len(f), err)
}

// countPortWrite does the bookkeeping of one frame of size bytes written to p.
func (n *Node) countPortWrite(p *port, size int, err error) {
	if err != nil {
		p.txErrors.Add(1)
		n.outDrops.tapWrite.Add(1)
		return
	}
	p.txFrames.Add(1)
	p.txBytes.Add(uint64(size))
}

// writePortSplit segments a super-frame for a port without virtio headers.
func (n *Node) writePortSplit(w *offloadWorker, p *port, f []byte, h *netdev.VirtioHdr) {
	if w.split == nil {
		w.split = make([]byte, superBufSize+maxSegQueue/8*128) // once per worker, on first need
	}
	cnt, err := segmentSuper(w.split, 0, f, h, w.offs, w.lens)
	if err != nil {
		n.off.badGSO.Add(1)
		return
	}
	for i := range cnt {
		seg := w.split[w.offs[i] : w.offs[i]+w.lens[i]]
		w.one[0] = seg
		_, err := p.dev.Write(w.one[:], 0)
		n.countPortWrite(p, len(seg), err)
	}
}

// queueEncapOffload queues a plain frame for a peer: the VXLAN header goes
// into the headroom in front of it in its buffer buf, as on the plain path.
func (n *Node) queueEncapOffload(w *offloadWorker, buf, f []byte, peerAddr netip.Addr) {
	if w.udpN == len(w.udpBufs) {
		n.flushUDPOffload(w)
	}
	off := cap(buf) - cap(f) // the frame's offset in its buffer: they share the array
	start, err := overlay.Encap(buf, off, len(f), n.cfg.VNI)
	if err != nil {
		n.outDrops.noHeadrom.Add(1)
		return
	}
	n.countPeerTx(peerAddr, 1, len(f))
	w.udpBufs[w.udpN] = buf[start : off+len(f)]
	w.udpTo[w.udpN] = netip.AddrPortFrom(peerAddr, n.cfg.Port)
	w.udpN++
}

// queueEncapSuper splits a super-frame into segments in the arena, each
// behind its VXLAN header, and queues them for the peer.
func (n *Node) queueEncapSuper(w *offloadWorker, f []byte, h *netdev.VirtioHdr, peerAddr netip.Addr) {
	for attempt := 0; ; attempt++ {
		room := len(w.udpBufs) - w.udpN
		cnt, err := segmentSuper(w.arena[w.arenaUsed:], overlay.HeaderLen, f, h, w.offs[:room], w.lens[:room])
		if err == nil {
			base := w.arenaUsed
			bytes := 0
			to := netip.AddrPortFrom(peerAddr, n.cfg.Port)
			for i := range cnt {
				off := base + w.offs[i]
				start, eerr := overlay.Encap(w.arena, off, w.lens[i], n.cfg.VNI)
				if eerr != nil { // cannot happen: SegmentTCP left the gap
					n.outDrops.noHeadrom.Add(1)
					continue
				}
				w.udpBufs[w.udpN] = w.arena[start : off+w.lens[i]]
				w.udpTo[w.udpN] = to
				w.udpN++
				bytes += w.lens[i]
			}
			w.arenaUsed = base + w.offs[cnt-1] + w.lens[cnt-1]
			n.off.segments.Add(uint64(cnt))
			n.countPeerTx(peerAddr, cnt, bytes)
			return
		}
		if attempt == 0 && w.udpN > 0 && (errors.Is(err, packet.ErrGSOShortDst) || errors.Is(err, packet.ErrGSOSegments)) {
			n.flushUDPOffload(w) // make room and try once more
			continue
		}
		n.off.badGSO.Add(1)
		return
	}
}

// segmentSuper splits a TCP (TSO) or UDP (USO) super-frame.
func segmentSuper(dst []byte, gap int, f []byte, h *netdev.VirtioHdr, offs, lens []int) (int, error) {
	if h.GSO() == netdev.GSOUDPL4 {
		return packet.SegmentUDP(dst, gap, f, packet.EthHdrLen, int(h.CsumStart), int(h.GSOSize), offs, lens)
	}
	return packet.SegmentTCP(dst, gap, f, packet.EthHdrLen, int(h.CsumStart), int(h.GSOSize), offs, lens)
}

func (n *Node) countPeerTx(peerAddr netip.Addr, frames, bytes int) {
	if peer, ok := n.peers.Lookup(peerAddr.As4()); ok {
		st := peer.Stats()
		st.TxFrames.Add(uint64(frames))
		st.TxBytes.Add(uint64(bytes))
	}
}

// flushUDPOffload sends the queued datagrams and empties the arena. With
// UDP GSO, runs of equal-size datagrams to one peer (a super-frame's
// segments, or a burst of small frames) go out as single messages.
func (n *Node) flushUDPOffload(w *offloadWorker) {
	queued := w.udpN
	bufs, to := w.udpBufs[:queued], w.udpTo[:queued]
	w.udpN, w.arenaUsed = 0, 0
	n.connMu.Lock()
	g := n.off.gso
	for len(bufs) > 0 {
		var sent int
		var err error
		if g != nil {
			sent, err = g.WriteGather(bufs, to)
		} else {
			sent, err = n.conn.WriteBatch(bufs, 0, to)
		}
		if err == nil || n.ctx.Err() != nil {
			break
		}
		// bufs[sent] was refused (EMSGSIZE, unreachable peer): count it
		// and send the rest.
		n.outDrops.udpSend.Add(1)
		bufs, to = bufs[sent+1:], to[sent+1:]
	}
	n.connMu.Unlock()
	clear(w.udpBufs[:queued]) // no stale references into the buffers
}
