package vswitch

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/weftnet/weft/packet"
)

// Neighbour is an IPv4 next hop on a local port, for listings.
type Neighbour struct {
	IP     netip.Addr `json:"ip"`
	MAC    packet.MAC `json:"mac"`
	Port   PortID     `json:"port"`
	Static bool       `json:"static"`
	// LastSeen (learned entries) is the monotonic time, ns, of the last
	// write; refreshed at most every NeighMaxAge/10.
	LastSeen int64 `json:"last_seen,omitempty"`
}

type neighVal struct {
	mac  packet.MAC
	port PortID
}

func ip4Key(a [4]byte) uint32 { return binary.BigEndian.Uint32(a[:]) }

func keyIP4(k uint32) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], k)
	return netip.AddrFrom4(a)
}

func hash32(k uint32, shift uint8) uint32 { return (k * 0x9e3779b1) >> shift }

// neighSnap is the static neighbours: pod and host addresses given when a
// port is attached or by AddStaticNeighbour. Immutable once published; a
// small open-addressed table (key 0 = empty: 0.0.0.0 is never a neighbour).
type neighSnap struct {
	keys  []uint32
	vals  []neighVal
	mask  uint32
	shift uint8
	list  []Neighbour // sorted by IP, the source of truth for rebuilds
}

func buildNeighSnap(list []Neighbour) *neighSnap {
	n, shift := 8, uint8(29)
	for n < 2*len(list) {
		n <<= 1
		shift--
	}
	s := &neighSnap{keys: make([]uint32, n), vals: make([]neighVal, n), mask: uint32(n - 1), shift: shift, list: list}
	for _, e := range list {
		k := ip4Key(e.IP.As4())
		i := hash32(k, shift)
		for s.keys[i] != 0 {
			i = (i + 1) & s.mask
		}
		s.keys[i] = k
		s.vals[i] = neighVal{mac: e.MAC, port: e.Port}
	}
	return s
}

func (s *neighSnap) lookup(k uint32) (neighVal, bool) {
	i := hash32(k, s.shift)
	for range len(s.keys) {
		switch s.keys[i] {
		case k:
			return s.vals[i], true
		case 0:
			return neighVal{}, false
		}
		i = (i + 1) & s.mask
	}
	return neighVal{}, false
}

// without returns the list minus the entries drop selects (a copy).
func (s *neighSnap) without(drop func(Neighbour) bool) []Neighbour {
	out := make([]Neighbour, 0, len(s.list))
	for _, e := range s.list {
		if !drop(e) {
			out = append(out, e)
		}
	}
	return out
}

func (s *neighSnap) with(e Neighbour) []Neighbour {
	out := append(slices.Clip(s.list), e)
	slices.SortFunc(out, func(a, b Neighbour) int { return a.IP.Compare(b.IP) })
	return out
}

// learnedNeigh holds neighbours learned from ARP on local ports: a
// fixed-size linear-probing table read without locks. A slot is 96 bits of
// key and value, more than one atomic word, so each slot carries a
// sequence counter (odd while a writer holds it): a reader that sees the
// counter change under it treats the lookup as a miss. Writers hold mu.
type learnedNeigh struct {
	slots   []neighSlot
	mask    uint32
	shift   uint8
	seed    uint32
	maxAge  int64
	refresh int64

	mu      sync.Mutex
	count   int
	max     int
	scratch []uint32
}

type neighSlot struct {
	seq  atomic.Uint32
	ip   atomic.Uint32 // 0 = empty
	val  atomic.Uint64 // mac<<16 | port
	seen atomic.Int64
}

func newLearnedNeigh(max int, maxAge int64, seed uint32) *learnedNeigh {
	n, shift := 4, uint8(30)
	for n < 2*max {
		n <<= 1
		shift--
	}
	return &learnedNeigh{slots: make([]neighSlot, n), mask: uint32(n - 1), shift: shift, seed: seed,
		maxAge: maxAge, refresh: maxAge / 10, max: max}
}

func (t *learnedNeigh) home(k uint32) uint32 { return hash32(k^t.seed, t.shift) }

func packNeigh(v neighVal) uint64 { return macKey(v.mac)<<16 | uint64(v.port) }
func unpackNeigh(x uint64) neighVal {
	return neighVal{mac: keyMAC(x >> 16), port: PortID(x)}
}

// lookup returns the neighbour for key and its last write. Lock-free.
func (t *learnedNeigh) lookup(k uint32) (neighVal, int64, bool) {
	i := t.home(k)
	for range len(t.slots) {
		s := &t.slots[i]
		seq := s.seq.Load()
		ip := s.ip.Load()
		if ip == k {
			v, seen := s.val.Load(), s.seen.Load()
			if seq&1 != 0 || s.seq.Load() != seq {
				return neighVal{}, 0, false // a writer is moving it; miss this once
			}
			return unpackNeigh(v), seen, true
		}
		if ip == 0 && seq&1 == 0 {
			return neighVal{}, 0, false
		}
		i = (i + 1) & t.mask
	}
	return neighVal{}, 0, false
}

// find returns the slot of k or -1. Holds mu.
func (t *learnedNeigh) find(k uint32) int {
	i := t.home(k)
	for range len(t.slots) {
		switch t.slots[i].ip.Load() {
		case k:
			return int(i)
		case 0:
			return -1
		}
		i = (i + 1) & t.mask
	}
	return -1
}

func (t *learnedNeigh) write(i uint32, ip uint32, val uint64, seen int64) {
	s := &t.slots[i]
	s.seq.Add(1)
	s.ip.Store(ip)
	s.val.Store(val)
	s.seen.Store(seen)
	s.seq.Add(1)
}

// learn records ip -> v. It returns true when it wrote (new or changed).
// The hot path calls it only after a lock-free lookup found it needed.
func (t *learnedNeigh) learn(k uint32, v neighVal, now int64) (changed, evicted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pv := packNeigh(v)
	if i := t.find(k); i >= 0 {
		s := &t.slots[i]
		if s.val.Load() != pv {
			t.write(uint32(i), k, pv, now)
			return true, false
		}
		s.seen.Store(now)
		return false, false
	}
	if t.count >= t.max {
		// Evict the oldest: a linear scan, acceptable because learned
		// neighbours are few (pods are static entries) and a full table
		// means something is churning addresses anyway.
		oldest, at := int64(0), -1
		for i := range t.slots {
			if t.slots[i].ip.Load() != 0 && (at < 0 || t.slots[i].seen.Load() < oldest) {
				oldest, at = t.slots[i].seen.Load(), i
			}
		}
		t.deleteAt(uint32(at))
		evicted = true
	}
	i := t.home(k)
	for t.slots[i].ip.Load() != 0 {
		i = (i + 1) & t.mask
	}
	t.write(i, k, pv, now)
	t.count++
	return true, evicted
}

// deleteAt empties slot i by backward shift. Holds mu.
func (t *learnedNeigh) deleteAt(i uint32) {
	j := i
	for {
		j = (j + 1) & t.mask
		ip := t.slots[j].ip.Load()
		if ip == 0 {
			break
		}
		h := t.home(ip)
		if (j-h)&t.mask >= (j-i)&t.mask {
			t.write(i, ip, t.slots[j].val.Load(), t.slots[j].seen.Load())
			i = j
		}
	}
	t.write(i, 0, 0, 0)
	t.count--
}

func (t *learnedNeigh) remove(k uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := t.find(k); i >= 0 {
		t.deleteAt(uint32(i))
		return true
	}
	return false
}

// removeIf deletes every entry pred selects and returns how many.
func (t *learnedNeigh) removeIf(pred func(k uint32, v neighVal, seen int64) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := t.scratch[:0]
	for i := range t.slots {
		s := &t.slots[i]
		if k := s.ip.Load(); k != 0 && pred(k, unpackNeigh(s.val.Load()), s.seen.Load()) {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if i := t.find(k); i >= 0 {
			t.deleteAt(uint32(i))
		}
	}
	t.scratch = keys[:0]
	return len(keys)
}

func (t *learnedNeigh) expire(now int64) int {
	return t.removeIf(func(_ uint32, _ neighVal, seen int64) bool { return now-seen > t.maxAge })
}

func (t *learnedNeigh) list() []Neighbour {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Neighbour
	for i := range t.slots {
		s := &t.slots[i]
		if k := s.ip.Load(); k != 0 {
			v := unpackNeigh(s.val.Load())
			out = append(out, Neighbour{IP: keyIP4(k), MAC: v.mac, Port: v.port, LastSeen: s.seen.Load()})
		}
	}
	return out
}
