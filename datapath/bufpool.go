package datapath

import (
	"sync"
	"sync/atomic"
)

// Buffers are the data path's memory: a transmitter's read batch of a
// virtio-header TAP is 16 buffers of 64 KiB, the arena it segments
// super-frames into 512 KiB. Owned by each transmitter, that is ~1.6 MiB
// per pod whether the pod sends or not (190 MiB for 110 pods). Instead the
// workers take them from pools shared by the whole data path when they
// have something to read and give them back when the batch is sent: the
// pools hold as many as were ever in use at once, which is bounded by the
// workers running at the same time, not by the pods attached. A worker
// holds a set only between its read and its flush, never while it waits.
//
// Taking and giving back cost one uncontended lock each per batch (not
// per frame) and allocate nothing once the pool has what the load needs.
// Trim, called on the node's housekeeping tick, frees what stayed unused
// for a whole tick, so a burst's buffers do not stay resident.

// bufSet is a batch of equal-size buffers that one worker holds at a
// time.
type bufSet struct {
	bufs [][]byte
}

// bufPool is a free list of bufSets of one shape (count x size bytes).
// Last in, first out: the set given back last, warm in the cache, is the
// next one taken.
type bufPool struct {
	count, size int

	mu   sync.Mutex
	free []*bufSet
	// low is the fewest sets free since the last trim: that many were
	// not needed during the whole interval.
	low int

	made, freed atomic.Uint64 // sets allocated, and dropped by trim
}

func newBufPool(count, size int) *bufPool {
	return &bufPool{count: count, size: size}
}

// get takes a set, allocating one when none is free.
func (p *bufPool) get() *bufSet {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		s := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.low = min(p.low, n-1)
		p.mu.Unlock()
		return s
	}
	p.low = 0
	p.mu.Unlock()
	p.made.Add(1)
	s := &bufSet{bufs: make([][]byte, p.count)}
	for i := range s.bufs {
		s.bufs[i] = make([]byte, p.size)
	}
	return s
}

// put gives s back; the caller keeps no reference into its buffers.
func (p *bufPool) put(s *bufSet) {
	p.mu.Lock()
	p.free = append(p.free, s) // grows only while the pool grows: made sets
	p.mu.Unlock()
}

// trim frees the sets that stayed free since the last trim (the oldest
// ones: the bottom of the stack) and returns how many bytes that was.
func (p *bufPool) trim() int {
	p.mu.Lock()
	drop := p.low
	n := copy(p.free, p.free[drop:])
	clear(p.free[n:])
	p.free = p.free[:n]
	p.low = n
	p.mu.Unlock()
	p.freed.Add(uint64(drop))
	return drop * p.count * p.size
}

// pools are the data path's buffer pools, one per shape, made on first
// need (NewTransmitter, the emitters' arena and split buffers).
type pools struct {
	mu     sync.Mutex
	byKind map[[2]int]*bufPool
}

// pool returns the pool of sets of count buffers of size bytes.
func (ps *pools) pool(count, size int) *bufPool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	k := [2]int{count, size}
	p := ps.byKind[k]
	if p == nil {
		if ps.byKind == nil {
			ps.byKind = make(map[[2]int]*bufPool)
		}
		p = newBufPool(count, size)
		ps.byKind[k] = p
	}
	return p
}

// BufferStats is what the buffer pools hold: Bytes allocated in all
// (in use and free), of which FreeBytes are free; Made and Freed count
// sets allocated and dropped by Trim since the start.
type BufferStats struct {
	Bytes, FreeBytes int
	Made, Freed      uint64
}

// BufferStats sums the pools.
func (dp *Datapath) BufferStats() BufferStats {
	dp.pools.mu.Lock()
	defer dp.pools.mu.Unlock()
	var st BufferStats
	for _, p := range dp.pools.byKind {
		made, freed := p.made.Load(), p.freed.Load()
		p.mu.Lock()
		free := len(p.free)
		p.mu.Unlock()
		set := p.count * p.size
		st.Bytes += int(made-freed) * set
		st.FreeBytes += free * set
		st.Made += made
		st.Freed += freed
	}
	return st
}

// TrimBuffers frees the pooled buffers that no worker took since the
// previous call and returns how many bytes that was. The node calls it on
// its housekeeping tick: buffers a burst needed go after one idle tick.
func (dp *Datapath) TrimBuffers() int {
	dp.pools.mu.Lock()
	defer dp.pools.mu.Unlock()
	freed := 0
	for _, p := range dp.pools.byKind {
		freed += p.trim()
	}
	return freed
}
