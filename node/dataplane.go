package node

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// port is one local switch port backed by a TAP: a pod's eth0 or the
// node's weft0.
type port struct {
	id    vswitch.PortID
	name  string
	dev   netdev.Device
	mac   packet.MAC
	addr  netip.Prefix
	rec   PortRecord // zero for the host port
	since time.Time

	rxFrames, rxBytes atomic.Uint64 // from the pod (TAP reads)
	txFrames, txBytes atomic.Uint64 // to the pod (TAP writes)
	txErrors          atomic.Uint64
	hist              api.BatchHistogram
	closing           atomic.Bool

	// queues are the TAP's queues in offload mode, each with the batch its
	// port worker and drainPort share in the queue's read turns.
	queues []portQueue
}

// portQueue is one queue of a port's TAP and its worker's batch.
type portQueue struct {
	tap *netdev.Tap
	ow  *offloadWorker
}

// batchHist is the underlay's read-batch histogram.
type batchHist = api.BatchHistogram

// worker holds one goroutine's batch: buffers, verdicts and the scratch the
// output stage needs, all allocated once. A worker owns its buffers from
// read to write; nothing crosses goroutines per packet.
type worker struct {
	bufs     [][]byte // full buffers, headroom included
	sizes    []int
	frames   [][]byte // frames[k] is a sub-slice of bufs[bufIdx[k]]
	bufIdx   []int
	verdicts []vswitch.Verdict
	flood    []vswitch.PortID
	one      [1][]byte

	udpBufs [][]byte
	udpTo   []netip.AddrPort
	udpN    int

	// counted drops of the output stage
	drops *outputDrops
}

// outputDrops are frames the switch forwarded that the devices refused.
type outputDrops struct {
	portGone  atomic.Uint64 // deliver to a port detached meanwhile
	tapWrite  atomic.Uint64 // TAP write failed (pod link down, ns gone)
	udpSend   atomic.Uint64 // sendmmsg refused a datagram
	noHeadrom atomic.Uint64 // no room in front of a frame for the VXLAN header
}

func newWorker(batch int, drops *outputDrops) *worker {
	w := &worker{
		bufs:     make([][]byte, batch),
		sizes:    make([]int, batch),
		frames:   make([][]byte, batch),
		bufIdx:   make([]int, batch),
		verdicts: make([]vswitch.Verdict, batch),
		flood:    make([]vswitch.PortID, 0, 64),
		udpBufs:  make([][]byte, batch),
		udpTo:    make([]netip.AddrPort, batch),
		drops:    drops,
	}
	for i := range w.bufs {
		w.bufs[i] = make([]byte, frameBufSize)
	}
	return w
}

func (n *Node) startPort(p *port) {
	t := vnetTap(p)
	if t != nil && n.cfg.Offload {
		// One worker per queue of a multi-queue TAP (Config.TapQueues);
		// the list is complete before the port is published.
		for _, q := range t.Queues() {
			p.queues = append(p.queues, portQueue{tap: q, ow: newOffloadWorker(q.BatchSize())})
		}
	}
	n.ports[p.id].Store(p)
	if p.queues != nil {
		for _, q := range p.queues {
			n.wg.Add(1)
			go n.runPortOffload(p, q) // offload.go
		}
		return
	}
	n.wg.Add(1)
	go n.runPort(p)
}

// runPort is the worker of one TAP: read a batch, decide, write it out.
func (n *Node) runPort(p *port) {
	defer n.wg.Done()
	w := newWorker(p.dev.BatchSize(), &n.outDrops)
	for {
		cnt, err := p.dev.Read(w.bufs, w.sizes, headroom)
		if err != nil {
			n.portReadFailed(p, err)
			return
		}
		p.hist.Observe(cnt)
		var bytes uint64
		for i := range cnt {
			w.frames[i] = w.bufs[i][headroom : headroom+w.sizes[i]]
			w.bufIdx[i] = i
			bytes += uint64(w.sizes[i])
		}
		p.rxFrames.Add(uint64(cnt))
		p.rxBytes.Add(bytes)
		n.sw.Process(w.frames[:cnt], p.id, w.verdicts, n.now())
		n.output(w, cnt, p.id)
	}
}

// portReadFailed reports a TAP read error that ends a port worker: quietly
// when the port was closed on purpose (detach, shutdown), once as a warning
// when the device went away under us (its namespace was deleted) — nothing
// will ever be read from it again.
func (n *Node) portReadFailed(p *port, err error) {
	if p.closing.Load() || n.ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
		return
	}
	n.log.Warn("port read failed; port stops forwarding until detached", "port", p.name, "pod", p.rec.PodID, "err", err)
}

// underlayReadFailed handles an underlay read error: true when the socket
// was closed (shutdown) and the worker must stop; otherwise it logs, pauses
// so that a persistent error cannot spin a core, and the worker goes on.
func (n *Node) underlayReadFailed(err error) bool {
	if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return true
	}
	n.log.Error("underlay read", "err", err)
	time.Sleep(10 * time.Millisecond)
	return false
}

// runUnderlay is the worker of a receiving UDP socket: read datagrams,
// decap, decide, write to the TAPs.
func (n *Node) runUnderlay(c *overlay.Conn) {
	defer n.wg.Done()
	w := newWorker(c.BatchSize(), &n.outDrops)
	from := make([]netip.AddrPort, len(w.bufs))
	for {
		cnt, err := c.ReadBatch(w.bufs, w.sizes, headroom, from)
		if err != nil {
			if n.underlayReadFailed(err) {
				return
			}
			continue
		}
		n.udpHist.Observe(cnt)
		k := 0
		for i := range cnt {
			if w.sizes[i] == 0 {
				continue // truncated: counted by the Conn
			}
			inner, peer, reason := n.decap.Decap(w.bufs[i][headroom:headroom+w.sizes[i]], from[i])
			if reason != overlay.DropNone {
				continue // counted by the Decapper
			}
			st := peer.Stats()
			st.RxFrames.Add(1)
			st.RxBytes.Add(uint64(len(inner)))
			w.frames[k] = inner
			w.bufIdx[k] = i
			k++
		}
		if k == 0 {
			continue
		}
		n.sw.Process(w.frames[:k], overlayPortID, w.verdicts, n.now())
		n.output(w, k, overlayPortID)
	}
}

// output carries out the verdicts of one batch: TAP writes now, VXLAN
// datagrams gathered and sent in one sendmmsg at the end.
func (n *Node) output(w *worker, cnt int, in vswitch.PortID) {
	w.udpN = 0
	for i := range cnt {
		v := &w.verdicts[i]
		switch v.Action {
		case vswitch.ActionDeliver:
			n.writePort(w, v.Port, w.frames[i])
		case vswitch.ActionFlood:
			w.flood = n.sw.FloodSet(in, w.flood[:0])
			for _, id := range w.flood {
				n.writePort(w, id, w.frames[i])
			}
		case vswitch.ActionEncap:
			n.queueEncap(w, i, v.Peer)
		}
	}
	if w.udpN > 0 {
		n.flushUDP(w)
	}
}

func (n *Node) writePort(w *worker, id vswitch.PortID, f []byte) {
	p := n.ports[id].Load()
	if p == nil {
		w.drops.portGone.Add(1)
		return
	}
	w.one[0] = f
	if _, err := p.dev.Write(w.one[:], 0); err != nil {
		p.txErrors.Add(1)
		w.drops.tapWrite.Add(1)
		return
	}
	p.txFrames.Add(1)
	p.txBytes.Add(uint64(len(f)))
}

// queueEncap prepends the VXLAN header in the headroom in front of frame i
// and queues the datagram for the peer.
func (n *Node) queueEncap(w *worker, i int, peerAddr netip.Addr) {
	buf := w.bufs[w.bufIdx[i]]
	f := w.frames[i]
	off := cap(buf) - cap(f) // the frame's offset in its buffer: they share the array
	start, err := overlay.Encap(buf, off, len(f), n.cfg.VNI)
	if err != nil {
		w.drops.noHeadrom.Add(1)
		return
	}
	if peer, ok := n.peers.Lookup(peerAddr.As4()); ok {
		st := peer.Stats()
		st.TxFrames.Add(1)
		st.TxBytes.Add(uint64(len(f)))
	}
	w.udpBufs[w.udpN] = buf[start : off+len(f)]
	w.udpTo[w.udpN] = netip.AddrPortFrom(peerAddr, n.cfg.Port)
	w.udpN++
}

// flushUDP sends the queued datagrams. The Conn is shared by the TAP
// workers, so this takes a lock, once per batch.
func (n *Node) flushUDP(w *worker) {
	bufs, to := w.udpBufs[:w.udpN], w.udpTo[:w.udpN]
	n.connMu.Lock()
	defer n.connMu.Unlock()
	for len(bufs) > 0 {
		sent, err := n.conn.WriteBatch(bufs, 0, to)
		if err == nil {
			return
		}
		if n.ctx.Err() != nil {
			return
		}
		// bufs[sent] was refused (EMSGSIZE, unreachable peer): count it and
		// send the rest.
		w.drops.udpSend.Add(1)
		bufs, to = bufs[sent+1:], to[sent+1:]
	}
}
