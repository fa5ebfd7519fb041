package vswitch

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/weftnet/weft/packet"
)

// fdb maps MAC -> port: a fixed-size linear-probing table that the hot path
// reads without a lock (see the package doc for the reasoning).
//
// A slot's kv word packs the 48-bit MAC above the 16-bit port, so one atomic
// load gives a consistent (MAC, port) pair. kv == 0 is an empty slot: the
// zero MAC is never learned (ingress drops it as a bad source). The table
// holds at most max entries in 2*max..4*max slots, so probes stay short and
// an empty slot always ends a probe.
//
// Writers hold mu. Besides the slots they keep an LRU list (by last write)
// threaded through links, so eviction of the oldest entry and aging are
// O(1) per entry removed. Deletion is by backward shift (no tombstones),
// which may briefly hide a moving entry from a concurrent reader: that
// frame is flooded, as for any unknown MAC.
type fdb struct {
	slots   []fdbSlot
	mask    uint64
	shift   uint8
	seed    uint64
	maxAge  int64 // ns
	refresh int64 // ns; a last-seen older than this is rewritten

	mu    sync.Mutex
	links []fdbLink // LRU order, oldest at head
	head  int32
	tail  int32
	count int
	max   int

	learned, moved, evicted, expired atomic.Uint64
	entries                          atomic.Int64
}

type fdbSlot struct {
	kv   atomic.Uint64 // mac<<16 | port; 0 = empty
	seen atomic.Int64  // last write, monotonic ns
}

type fdbLink struct{ prev, next int32 }

func macKey(m packet.MAC) uint64 {
	return uint64(binary.BigEndian.Uint16(m[0:2]))<<32 | uint64(binary.BigEndian.Uint32(m[2:6]))
}

// dstKey and srcKey are macKey of a frame's destination and source MAC,
// read straight from the frame with one 8-byte load each (len(f) >= 14).
// Going through a packet.MAC copy costs a store-forwarding stall: the
// 6-byte copy is stored as 4+2 bytes and reloaded across both halves.
func dstKey(f []byte) uint64 { return binary.BigEndian.Uint64(f[0:8]) >> 16 }
func srcKey(f []byte) uint64 { return binary.BigEndian.Uint64(f[6:14]) >> 16 }

// macKeyAt is macKey of the MAC at b[0:6]; b must have 8 bytes.
func macKeyAt(b []byte) uint64 { return binary.BigEndian.Uint64(b[0:8]) >> 16 }

func keyMAC(k uint64) packet.MAC {
	var m packet.MAC
	binary.BigEndian.PutUint16(m[0:2], uint16(k>>32))
	binary.BigEndian.PutUint32(m[2:6], uint32(k))
	return m
}

func newFDB(max int, maxAge int64, seed uint64) *fdb {
	n, shift := 4, uint8(62)
	for n < 2*max {
		n <<= 1
		shift--
	}
	t := &fdb{
		slots:   make([]fdbSlot, n),
		mask:    uint64(n - 1),
		shift:   shift,
		seed:    seed,
		maxAge:  maxAge,
		refresh: maxAge / 10,
		links:   make([]fdbLink, n),
		head:    -1,
		tail:    -1,
		max:     max,
	}
	return t
}

// home is the slot a key hashes to: Fibonacci hashing of the seeded key,
// taking the top bits. The random seed keeps a host that picks its source
// MACs from building long probe chains in advance.
func (t *fdb) home(key uint64) uint64 {
	return ((key ^ t.seed) * 0x9e3779b97f4a7c15) >> t.shift
}

// find returns the slot index holding key, or -1. Lock-free.
func (t *fdb) find(key uint64) int {
	i := t.home(key)
	for range len(t.slots) {
		kv := t.slots[i].kv.Load()
		if kv == 0 {
			return -1
		}
		if kv>>16 == key {
			return int(i)
		}
		i = (i + 1) & t.mask
	}
	return -1
}

// lookup returns the port for MAC key. Lock-free; no writes.
func (t *fdb) lookup(key uint64) (PortID, bool) {
	i := t.home(key)
	for range len(t.slots) {
		kv := t.slots[i].kv.Load()
		if kv == 0 {
			return 0, false
		}
		if kv>>16 == key {
			return PortID(kv), true
		}
		i = (i + 1) & t.mask
	}
	return 0, false
}

// needsLearn reports whether learning key on port at now would write: a new
// MAC, a move, or a last-seen older than refresh. Lock-free; the answer may
// be stale, and learnSlow rechecks under the lock.
func (t *fdb) needsLearn(key uint64, port PortID, now int64) bool {
	i := t.home(key)
	for range len(t.slots) {
		s := &t.slots[i]
		kv := s.kv.Load()
		if kv == 0 {
			return true
		}
		if kv>>16 == key {
			return PortID(kv) != port || now-s.seen.Load() >= t.refresh
		}
		i = (i + 1) & t.mask
	}
	return true
}

// learn records that key was seen on port. The common case (known MAC, same
// port, fresh) reads only.
func (t *fdb) learn(key uint64, port PortID, now int64) {
	if t.needsLearn(key, port, now) {
		t.learnSlow(key, port, now)
	}
}

func (t *fdb) learnSlow(key uint64, port PortID, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kv := key<<16 | uint64(port)
	if i := t.find(key); i >= 0 {
		s := &t.slots[i]
		if PortID(s.kv.Load()) != port {
			t.moved.Add(1)
			s.seen.Store(now)
			s.kv.Store(kv)
		} else if now-s.seen.Load() >= t.refresh {
			s.seen.Store(now)
		} else {
			return // another worker got here first
		}
		t.unlink(int32(i))
		t.pushTail(int32(i))
		return
	}
	if t.count >= t.max {
		t.deleteAt(uint64(t.head))
		t.evicted.Add(1)
	}
	i := t.home(key)
	for t.slots[i].kv.Load() != 0 {
		i = (i + 1) & t.mask
	}
	t.slots[i].seen.Store(now)
	t.slots[i].kv.Store(kv)
	t.pushTail(int32(i))
	t.count++
	t.entries.Store(int64(t.count))
	t.learned.Add(1)
}

func (t *fdb) pushTail(i int32) {
	t.links[i] = fdbLink{prev: t.tail, next: -1}
	if t.tail >= 0 {
		t.links[t.tail].next = i
	} else {
		t.head = i
	}
	t.tail = i
}

func (t *fdb) unlink(i int32) {
	l := t.links[i]
	if l.prev >= 0 {
		t.links[l.prev].next = l.next
	} else {
		t.head = l.next
	}
	if l.next >= 0 {
		t.links[l.next].prev = l.prev
	} else {
		t.tail = l.prev
	}
}

// relink moves the list node of slot from to slot to.
func (t *fdb) relink(from, to int32) {
	l := t.links[from]
	t.links[to] = l
	if l.prev >= 0 {
		t.links[l.prev].next = to
	} else {
		t.head = to
	}
	if l.next >= 0 {
		t.links[l.next].prev = to
	} else {
		t.tail = to
	}
}

// deleteAt empties slot i and shifts later members of its probe run back
// so that every remaining key stays reachable from its home. Holds mu.
func (t *fdb) deleteAt(i uint64) {
	t.unlink(int32(i))
	j := i
	for {
		j = (j + 1) & t.mask
		kv := t.slots[j].kv.Load()
		if kv == 0 {
			break
		}
		h := t.home(kv >> 16)
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j]: then it would become unreachable.
		if (j-h)&t.mask >= (j-i)&t.mask {
			t.slots[i].seen.Store(t.slots[j].seen.Load())
			t.slots[i].kv.Store(kv)
			t.relink(int32(j), int32(i))
			i = j
		}
	}
	t.slots[i].kv.Store(0)
	t.count--
	t.entries.Store(int64(t.count))
}

// remove deletes key if present.
func (t *fdb) remove(key uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.find(key)
	if i < 0 {
		return false
	}
	t.deleteAt(uint64(i))
	return true
}

// expire removes entries not written for maxAge. The LRU list is ordered by
// write time, so it stops at the first live entry: O(expired). Workers pass
// slightly different clocks, so the order is approximate by as much as
// their skew, which only delays an expiry by that much.
func (t *fdb) expire(now int64) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for t.head >= 0 && now-t.slots[t.head].seen.Load() > t.maxAge {
		t.deleteAt(uint64(t.head))
		n++
	}
	t.expired.Add(uint64(n))
	return n
}

// flushPort removes every entry pointing at port.
func (t *fdb) flushPort(port PortID) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keys []uint64
	for i := range t.slots {
		kv := t.slots[i].kv.Load()
		if kv != 0 && PortID(kv) == port {
			keys = append(keys, kv>>16)
		}
	}
	for _, k := range keys {
		if i := t.find(k); i >= 0 {
			t.deleteAt(uint64(i))
		}
	}
	return len(keys)
}

// FDBEntry is one learned MAC, for listings.
type FDBEntry struct {
	MAC  packet.MAC `json:"mac"`
	Port PortID     `json:"port"`
	// LastSeen is the monotonic time (ns, the clock passed to Process) of
	// the last write: refreshed at most every FDBMaxAge/10.
	LastSeen int64 `json:"last_seen"`
}

// list returns the entries oldest first.
func (t *fdb) list() []FDBEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]FDBEntry, 0, t.count)
	for i := t.head; i >= 0; i = t.links[i].next {
		kv := t.slots[i].kv.Load()
		out = append(out, FDBEntry{MAC: keyMAC(kv >> 16), Port: PortID(kv), LastSeen: t.slots[i].seen.Load()})
	}
	return out
}
