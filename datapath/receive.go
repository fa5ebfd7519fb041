package datapath

import (
	"net/netip"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	vswitch "github.com/weftnet/weft/switch"
)

const (
	// GROReadBatch is how many GRO buffers one read fills.
	GROReadBatch = 8
	// GROBufSize holds the largest coalesced read after the headroom.
	GROBufSize = Headroom + overlay.MaxGROBytes
	// rxFrameBatch is how many inner frames go through the switch at once.
	rxFrameBatch = 256
	// smallSlot is the room a short datagram of a coalesced read is copied
	// into, so that the switch can build an ARP request or ICMP error in
	// place (up to 110 bytes after the VXLAN header) without running into
	// the next datagram of the read.
	smallSlot  = 192
	smallDgram = smallSlot - 64
)

// Receiver forwards what one underlay socket receives. It owns the read
// buffers, the inner-frame batch and its dispatcher, which sends (transit
// traffic, the router's answers to the overlay) on the same socket.
type Receiver struct {
	dp   *Datapath
	in   Reader
	hist interface{ Observe(n int) }

	bufs  [][]byte
	sizes []int
	segs  []int
	from  []netip.AddrPort

	frames   [][]byte
	dgrams   [][]byte           // the datagram each frame came in: its headroom for re-encap
	hdrs     []netdev.VirtioHdr // NEEDS_CSUM for a frame whose checksum came partial, else zero
	ipLens   []uint16           // its IP length then (the switch's partial mark), else 0
	small    []byte             // rxFrameBatch slots of smallSlot bytes
	k        int
	verdicts []vswitch.Verdict
	e        emitter
}

// NewReceiver makes a receiver reading in (batch buffers of bufSize bytes,
// headroom included: GROReadBatch and GROBufSize for a GRO reader, the
// socket's batch and FrameBufSize for a plain one) and sending on out.
// hist, if not nil, observes the size of every read.
func (dp *Datapath) NewReceiver(in Reader, out Writer, batch, bufSize int, hist interface{ Observe(n int) }) *Receiver {
	r := &Receiver{
		dp: dp, in: in, hist: hist,
		bufs:     make([][]byte, batch),
		sizes:    make([]int, batch),
		segs:     make([]int, batch),
		from:     make([]netip.AddrPort, batch),
		frames:   make([][]byte, rxFrameBatch),
		dgrams:   make([][]byte, rxFrameBatch),
		hdrs:     make([]netdev.VirtioHdr, rxFrameBatch),
		ipLens:   make([]uint16, rxFrameBatch),
		small:    make([]byte, rxFrameBatch*smallSlot),
		verdicts: make([]vswitch.Verdict, rxFrameBatch),
		e:        newEmitter(dp, out, rxFrameBatch),
	}
	r.e.coalesce, r.e.drains = dp.cfg.Coalesce, true
	for i := range r.bufs {
		r.bufs[i] = make([]byte, bufSize)
	}
	return r
}

// Run receives batch after batch until a read fails, and returns that
// error (the caller decides whether it is the end: a closed socket).
func (r *Receiver) Run() error {
	for {
		if err := r.Receive(); err != nil {
			return err
		}
	}
}

// Receive forwards one read of the underlay socket:
//
//  1. read: datagrams, runs of them from one peer coalesced by UDP GRO
//     into one buffer; a plain read is a run of one;
//  2. split each run into its datagrams (a short one not at the end is
//     copied into a slot of its own, so the switch may build an answer in
//     place), and decap each: known peer, our VNI, sane header (and, from
//     a foreign peer, count an inner checksum that does not verify); a
//     frame flagged overlay.FlagPartialCsum keeps its checksum partial
//     (partial.go) and is written to a virtio-header TAP as such;
//  3. decide: Switch.Process over the inner frames, entering on the
//     overlay port;
//  4. emit: deliver (coalescing segments for virtio-header TAPs),
//     flood, or re-encapsulate for another peer, and flush once;
//  5. drain: run the transmitters of the TAPs written to in this read
//     (Transmitter.Transmit without wait).
func (r *Receiver) Receive() error {
	trunc0 := r.in.Truncated()
	cnt, err := r.in.ReadBatch(r.bufs, r.sizes, r.segs, Headroom, r.from)
	if err != nil {
		return err
	}
	if r.hist != nil {
		r.hist.Observe(cnt)
	}
	empty, partial := uint64(0), uint64(0)
	for i := range cnt {
		if r.sizes[i] == 0 || r.segs[i] <= 0 {
			empty++ // truncated (counted by the reader) or a zero-length datagram
			continue
		}
		data := r.bufs[i][Headroom : Headroom+r.sizes[i]]
		for len(data) > 0 {
			seg := min(r.segs[i], len(data))
			// The 3-index slice keeps a frame's owner from growing it
			// into the next datagram of the run.
			dgram := data[:seg:seg]
			data = data[seg:]
			if seg < smallDgram && len(data) > 0 {
				slot := r.small[r.k*smallSlot : (r.k+1)*smallSlot]
				dgram = slot[:copy(slot, dgram)]
			}
			inner, peer, reason := r.dp.decap.Decap(dgram, r.from[i])
			if reason != overlay.DropNone {
				continue // counted by the Decapper
			}
			if peer.Foreign {
				overlay.CheckForeignInner(peer, inner) // counted; forwarded either way
			}
			r.hdrs[r.k], r.ipLens[r.k] = netdev.VirtioHdr{}, 0
			if overlay.PartialCsum(dgram) {
				h, ipLen, ok := partialHdr(inner)
				if !ok {
					r.dp.drops.Add(DropBadPartial, 1)
					continue
				}
				r.hdrs[r.k], r.ipLens[r.k] = h, ipLen
				partial++
			}
			st := peer.Stats()
			st.RxFrames.Add(1)
			st.RxBytes.Add(uint64(len(inner)))
			r.frames[r.k] = inner
			r.dgrams[r.k] = dgram
			r.k++
			if r.k == len(r.frames) {
				r.process()
			}
		}
	}
	if trunc := r.in.Truncated() - trunc0; trunc > 0 || empty > 0 {
		r.dp.drops.Add(DropUnderlayTruncated, trunc)
		r.dp.drops.Add(DropUnderlayEmpty, empty-min(empty, trunc))
	}
	if partial > 0 {
		r.dp.work.PartialRx.Add(partial)
	}
	if r.k > 0 {
		r.process()
	}
	r.e.flush() // a run never waits for the next read
	for _, id := range r.e.written[:r.e.nWritten] {
		if p := r.dp.port(id); p != nil {
			p.drain()
		}
	}
	r.e.nWritten = 0
	return nil
}

// process runs the switch over the frames gathered so far and carries out
// the verdicts; datagrams for peers are sent before the frames' slots are
// reused.
func (r *Receiver) process() {
	frames := r.frames[:r.k]
	r.k = 0
	in := r.dp.cfg.OverlayPort
	r.dp.sw.ProcessGSO(frames, r.ipLens, in, r.verdicts, r.dp.Now())
	if o := r.dp.cfg.Observer; o != nil {
		o.ObserveVerdicts(in, r.verdicts[:len(frames)])
	}
	r.e.emit(frames, r.hdrs, r.dgrams, r.verdicts[:len(frames)], in)
	// The open TCP run lists payloads in the frames' buffers, and the
	// small slots are reused from here: it goes now, not at the next
	// read's end.
	r.e.flushRun()
	r.e.send()
	clear(frames) // no references into the read buffers past this batch
	clear(r.dgrams[:len(frames)])
}
