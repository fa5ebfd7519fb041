package netdev

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Fake is one end of an in-memory Device pair made by NewPipe: frames
// written to one end are read from the other, in order. It copies frames
// into slot buffers allocated once (a slot grows only for a frame larger
// than any before), so steady-state Read and Write do not allocate.
//
// SetVnet makes an end behave as a TAP opened with IFF_VNET_HDR and the
// given offloads: a virtio header travels with every frame (WriteVnet on
// one end, ReadVnet on the other), Read completes NEEDS_CSUM checksums and
// drops GSO super-frames as a Tap does, and the read turns of ReadVnetTurn
// and TryReadVnetTurn work as on a Tap. So code written against Device runs
// unchanged over a Tap or a Fake.
//
// Write blocks while the peer's queue is full (backpressure, no loss).
// Close on either end ends the pair: blocked calls on both ends return; the
// closed end fails at once with an error wrapping os.ErrClosed, the peer
// may still read what was queued and then fails the same way.
type Fake struct {
	name  string
	batch int
	rx    *frameQueue // frames the peer wrote, for our Read
	tx    *frameQueue // frames we write, for the peer's Read
	// closed: this end was closed; it fails at once, without draining.
	closed atomic.Bool
	drops  [NumDropReasons]atomic.Uint64

	vnet     bool
	offloads int
	turn     sync.Mutex // the read turn (ReadVnetTurn, TryReadVnetTurn)

	// WriteVnetGather's scratch: the joined frame, and it as a batch of one.
	gatherMu  sync.Mutex
	gatherBuf []byte
	gatherOne [1][]byte
	gatherHdr [1]VirtioHdr
}

var _ Device = (*Fake)(nil)

// frameQueue is a bounded ring of frame slots shared by a writer and a
// reader end.
type frameQueue struct {
	mu       sync.Mutex
	notEmpty sync.Cond
	notFull  sync.Cond
	slots    [][]byte // slots[i][:lens[i]] is a queued frame
	lens     []int
	hdrs     []VirtioHdr // hdrs[i] travels with slots[i]
	head     int         // oldest queued frame
	count    int
	closed   bool
}

func newFrameQueue(depth, frameSize int) *frameQueue {
	q := &frameQueue{slots: make([][]byte, depth), lens: make([]int, depth), hdrs: make([]VirtioHdr, depth)}
	for i := range q.slots {
		q.slots[i] = make([]byte, frameSize)
	}
	q.notEmpty.L = &q.mu
	q.notFull.L = &q.mu
	return q
}

// FakeDepth and FakeFrameSize size each direction of NewPipe's queue.
const (
	FakeDepth     = 256
	FakeFrameSize = 2048
)

// NewPipe returns a connected pair named "fake-a" and "fake-b", each
// direction queueing up to FakeDepth frames.
func NewPipe() (a, b *Fake) {
	return NewPipeSize("fake-a", "fake-b", FakeDepth, FakeFrameSize, DefaultBatchSize)
}

// NewPipeSize is NewPipe with names, queue depth (frames per direction),
// initial slot size in bytes and Read batch size.
func NewPipeSize(nameA, nameB string, depth, frameSize, batch int) (a, b *Fake) {
	depth, frameSize = max(depth, 1), max(frameSize, 0)
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	ab, ba := newFrameQueue(depth, frameSize), newFrameQueue(depth, frameSize)
	return &Fake{name: nameA, batch: batch, rx: ba, tx: ab},
		&Fake{name: nameB, batch: batch, rx: ab, tx: ba}
}

var errFakeClosed = fmt.Errorf("netdev fake: %w", os.ErrClosed)

// Name implements Device.
func (f *Fake) Name() string { return f.name }

// BatchSize implements Device.
func (f *Fake) BatchSize() int { return f.batch }

// SetVnet gives this end a virtio header and the TUN_F_* offloads mask (as
// a Tap opened with VnetHdr that negotiated them). Call it before use.
func (f *Fake) SetVnet(offloads int) { f.vnet, f.offloads = true, offloads }

// VnetHdr implements Device.
func (f *Fake) VnetHdr() bool { return f.vnet }

// Offloads implements Device.
func (f *Fake) Offloads() int { return f.offloads }

// Drops is the number of frames discarded for reason r (only DropTruncated
// happens here: a frame larger than the reader's buffer).
func (f *Fake) Drops(r DropReason) uint64 {
	if r >= NumDropReasons {
		return 0
	}
	return f.drops[r].Load()
}

// Read implements Device. On a virtio-header end it completes NEEDS_CSUM
// checksums and drops GSO super-frames (DropGSO), as Tap.Read does.
func (f *Fake) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return f.read(bufs, sizes, nil, offset, true)
}

// ReadVnet implements Device.
func (f *Fake) ReadVnet(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (int, error) {
	if hdrs == nil {
		hdrs = []VirtioHdr{}
	}
	return f.read(bufs[:min(len(bufs), len(hdrs))], sizes, hdrs, offset, true)
}

// ReadVnetTurn implements Device: as Tap.ReadVnetTurn, frames come with
// the read turn, held until EndTurn.
func (f *Fake) ReadVnetTurn(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (int, error) {
	if hdrs == nil {
		hdrs = []VirtioHdr{}
	}
	bufs = bufs[:min(len(bufs), len(hdrs))]
	for {
		if err := f.waitReadable(); err != nil {
			return 0, err
		}
		f.turn.Lock()
		n, err := f.read(bufs, sizes, hdrs, offset, false)
		if n > 0 && err == nil {
			return n, nil
		}
		f.turn.Unlock()
		if err != nil || len(bufs) == 0 {
			return n, err
		}
	}
}

// TryReadVnetTurn implements Device.
func (f *Fake) TryReadVnetTurn(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) int {
	if f.closed.Load() || !f.turn.TryLock() {
		return 0
	}
	n, err := f.read(bufs[:min(len(bufs), len(hdrs))], sizes, hdrs, offset, false)
	if n == 0 || err != nil {
		f.turn.Unlock()
		return 0
	}
	return n
}

// EndTurn implements Device.
func (f *Fake) EndTurn() { f.turn.Unlock() }

// WaitRead implements Device: it returns when a frame is queued and the
// read turn is free, or fails once the pair is closed and drained.
func (f *Fake) WaitRead() error {
	if err := f.waitReadable(); err != nil {
		return err
	}
	f.turn.Lock()
	f.turn.Unlock()
	return nil
}

// ReadVnetTurnNow implements Device.
func (f *Fake) ReadVnetTurnNow(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (int, error) {
	if hdrs == nil {
		hdrs = []VirtioHdr{}
	}
	f.turn.Lock()
	n, err := f.read(bufs[:min(len(bufs), len(hdrs))], sizes, hdrs, offset, false)
	if n == 0 || err != nil {
		f.turn.Unlock()
		return n, err
	}
	return n, nil
}

// waitReadable blocks until a frame is queued or the pair is closed.
func (f *Fake) waitReadable() error {
	q := f.rx
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.count == 0 && !q.closed {
		q.notEmpty.Wait()
	}
	if f.closed.Load() || q.count == 0 {
		return errFakeClosed
	}
	return nil
}

// read takes up to a batch of queued frames; wait blocks for the first.
// hdrs nil: Read (headers stripped); else ReadVnet.
func (f *Fake) read(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int, wait bool) (int, error) {
	if f.closed.Load() {
		return 0, errFakeClosed
	}
	want := min(len(bufs), len(sizes), f.batch)
	if want == 0 {
		return 0, nil
	}
	q := f.rx
	q.mu.Lock()
	defer q.mu.Unlock()
	for wait && q.count == 0 && !q.closed {
		q.notEmpty.Wait()
	}
	if f.closed.Load() {
		return 0, errFakeClosed
	}
	n := 0
	var err error
	for n < want && q.count > 0 {
		if len(bufs[n]) <= offset {
			err = ErrShortBuffer // the frame stays queued
			break
		}
		frame := q.slots[q.head][:q.lens[q.head]]
		h := q.hdrs[q.head]
		q.head = (q.head + 1) % len(q.slots)
		q.count--
		dst := bufs[n][offset:]
		if len(frame) > len(dst) {
			f.drops[DropTruncated].Add(1)
			continue
		}
		sizes[n] = copy(dst, frame)
		if !f.acceptHdr(dst[:sizes[n]], &h, hdrs == nil) {
			continue
		}
		if hdrs != nil {
			hdrs[n] = h
		}
		n++
	}
	q.notFull.Broadcast()
	if n == 0 && err == nil && q.closed && wait {
		return 0, errFakeClosed
	}
	return n, err
}

// acceptHdr applies a read frame's virtio header as Tap.acceptVnet does:
// a header that fails Check is a DropBadVnetHdr; for Read (strip) a GSO
// super-frame is a DropGSO and a NEEDS_CSUM checksum is completed.
func (f *Fake) acceptHdr(frame []byte, h *VirtioHdr, strip bool) bool {
	if !f.vnet {
		*h = VirtioHdr{}
		return true
	}
	if h.Check(len(frame)) != nil {
		f.drops[DropBadVnetHdr].Add(1)
		return false
	}
	if !strip {
		return true
	}
	if h.GSO() != GSONone {
		f.drops[DropGSO].Add(1)
		return false
	}
	if FinishChecksum(frame, h) != nil {
		f.drops[DropBadVnetHdr].Add(1)
		return false
	}
	return true
}

// Write implements Device. Empty frames are dropped as DropWriteRejected,
// as a TAP would refuse them; on a virtio-header end each frame goes with
// a zero header.
func (f *Fake) Write(bufs [][]byte, offset int) (int, error) {
	return f.write(bufs, nil, offset)
}

// WriteVnet implements Device; it needs SetVnet, as Tap.WriteVnet needs
// VnetHdr. A header that fails VirtioHdr.Check, or asks for a GSO type
// the end did not take, is dropped as DropWriteRejected, as tun's write
// refuses it with EINVAL.
func (f *Fake) WriteVnet(bufs [][]byte, hdrs []VirtioHdr, offset int) (int, error) {
	if !f.vnet {
		return 0, fmt.Errorf("write fake %s: WriteVnet needs a virtio-header end", f.name)
	}
	if hdrs == nil {
		hdrs = []VirtioHdr{}
	}
	return f.write(bufs[:min(len(bufs), len(hdrs))], hdrs, offset)
}

// WriteVnetGather implements Device: the parts are joined in a scratch
// buffer of the Fake's (a test device may copy) and written as WriteVnet
// writes one frame.
func (f *Fake) WriteVnetGather(parts [][]byte, hdr VirtioHdr) (int, error) {
	if len(parts) > MaxGatherParts {
		return 0, fmt.Errorf("write fake %s: %d parts, at most %d", f.name, len(parts), MaxGatherParts)
	}
	f.gatherMu.Lock()
	defer f.gatherMu.Unlock()
	f.gatherBuf = f.gatherBuf[:0]
	for _, p := range parts {
		f.gatherBuf = append(f.gatherBuf, p...)
	}
	f.gatherOne[0], f.gatherHdr[0] = f.gatherBuf, hdr
	return f.WriteVnet(f.gatherOne[:], f.gatherHdr[:], 0)
}

func (f *Fake) write(bufs [][]byte, hdrs []VirtioHdr, offset int) (int, error) {
	if f.closed.Load() {
		return 0, errFakeClosed
	}
	q := f.tx
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for k, b := range bufs {
		var h VirtioHdr
		if hdrs != nil {
			h = hdrs[k]
		}
		if len(b) <= offset || !f.writable(&h, len(b)-offset) {
			f.drops[DropWriteRejected].Add(1)
			continue
		}
		for q.count == len(q.slots) && !q.closed {
			q.notEmpty.Broadcast() // let the reader take what is there
			q.notFull.Wait()
		}
		if q.closed {
			return n, errFakeClosed
		}
		i := (q.head + q.count) % len(q.slots)
		q.slots[i] = append(q.slots[i][:0], b[offset:]...)
		q.lens[i] = len(b) - offset
		q.hdrs[i] = h
		q.count++
		n++
	}
	q.notEmpty.Broadcast()
	return n, nil
}

// writable says whether tun would take a frame of frameLen bytes with h.
func (f *Fake) writable(h *VirtioHdr, frameLen int) bool {
	if h.Check(frameLen) != nil {
		return false
	}
	return TakesGSO(f.offloads, h.GSO())
}

// Close implements Device: it closes both directions of the pair. Closing
// an end twice returns an error wrapping os.ErrClosed.
func (f *Fake) Close() error {
	if !f.closed.CompareAndSwap(false, true) {
		return errFakeClosed
	}
	for _, q := range []*frameQueue{f.rx, f.tx} {
		q.mu.Lock()
		q.closed = true
		q.notEmpty.Broadcast()
		q.notFull.Broadcast()
		q.mu.Unlock()
	}
	return nil
}
