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
	head     int // oldest queued frame
	count    int
	closed   bool
}

func newFrameQueue(depth, frameSize int) *frameQueue {
	q := &frameQueue{slots: make([][]byte, depth), lens: make([]int, depth)}
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

// Drops is the number of frames discarded for reason r (only DropTruncated
// happens here: a frame larger than the reader's buffer).
func (f *Fake) Drops(r DropReason) uint64 {
	if r >= NumDropReasons {
		return 0
	}
	return f.drops[r].Load()
}

// Read implements Device.
func (f *Fake) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
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
	for q.count == 0 && !q.closed {
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
		q.head = (q.head + 1) % len(q.slots)
		q.count--
		dst := bufs[n][offset:]
		if len(frame) > len(dst) {
			f.drops[DropTruncated].Add(1)
			continue
		}
		sizes[n] = copy(dst, frame)
		n++
	}
	q.notFull.Broadcast()
	if n == 0 && err == nil && q.closed {
		return 0, errFakeClosed
	}
	return n, err
}

// Write implements Device. Empty frames are dropped as DropWriteRejected,
// as a TAP would refuse them.
func (f *Fake) Write(bufs [][]byte, offset int) (int, error) {
	if f.closed.Load() {
		return 0, errFakeClosed
	}
	q := f.tx
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, b := range bufs {
		if len(b) <= offset {
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
		q.count++
		n++
	}
	q.notEmpty.Broadcast()
	return n, nil
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
