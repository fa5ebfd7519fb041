// Package conntrack is weft's connection tracking table: a bounded,
// fixed-size table of flows, each known by its two tuples (the original
// direction and the reply direction, which NAT makes differ), with
// per-protocol state and timeouts. The switch looks every TCP and UDP
// frame up here once; the NAT decision of a flow's first packet (and
// later the policy verdict) rides in the entry.
//
// # Shape
//
// Memory is allocated once, at New: Size flow records of 64 bytes (one
// cache line) and an index of 4*Size 8-byte slots in buckets of 8 (one
// cache line per bucket). Each tuple sits in the emptier of two buckets
// its hash names (two-choice hashing keeps every bucket below 8 at half
// load), as a slot holding a 32-bit hash tag, the direction and the
// record index. A lookup reads at most two index lines and one record
// line: O(1), no allocation.
//
// # Concurrency
//
// Lookups take no lock. Every field of a record is an atomic word, and a
// per-record sequence counter (odd while a writer rewrites the record)
// lets a reader detect that the record changed under it; a reader then
// treats the tuple as not found for this one packet. The reader compares
// the record's own copy of the tuple, so a stale index slot pointing at a
// reused record is harmless. State changes on the hot path (TCP flags, the
// replied bit) are compare-and-swaps on one word that carries the
// record's generation, so they cannot land on a record reused for another
// flow. Inserts, deletes and aging serialise on one mutex: they happen on
// a flow's first packet and out of band, not per packet.
//
// The last-seen time is refreshed at most once per second per flow, so an
// established flow's packets only read its record and two workers serving
// the two directions do not bounce its cache line; timeouts are therefore
// exact to about a second.
//
// # Bounds
//
// When every record is in use (or, practically never, both buckets of a
// tuple are full) an insert fails with ErrFull and the caller drops the
// packet and counts it: the table never grows. Expired entries are
// reclaimed by Expire, which the node runs every few seconds; a lookup
// never returns an expired entry, and an insert replaces one in its way.
package conntrack

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults. The size is the kernel's nf_conntrack_max on hosts with 4 GiB
// or more (262144 flows). A flow costs 96 bytes (a 64-byte record plus four
// 8-byte index slots), so the default table is 24 MiB, allocated at start;
// on this 2-core 24 GiB machine 1M flows (96 MiB) fit as well: raise Size
// for nodes that need it. The TCP timeouts follow the kernel's
// nf_conntrack_tcp_timeout_* values except established, which uses
// Cilium's 6 h (the kernel's 5 days keeps a vanished client's flows for
// days in a bounded table). UDP follows the kernel: 30 s until the flow
// has seen a reply, 120 s after.
const (
	DefaultSize           = 1 << 18
	DefaultTCPSyn         = 120 * time.Second
	DefaultTCPEstablished = 6 * time.Hour
	DefaultTCPFin         = 120 * time.Second
	DefaultTCPTimeWait    = 120 * time.Second
	DefaultTCPClose       = 10 * time.Second
	DefaultUDPUnreplied   = 30 * time.Second
	DefaultUDPAssured     = 120 * time.Second

	MinSize = 16
	MaxSize = 1 << 24

	refreshNs = int64(time.Second)
)

// Config sizes the table and sets the timeouts; zero fields take the
// defaults above.
type Config struct {
	Size           int
	TCPSyn         time.Duration // SYN sent, SYN-ACK seen, not yet established
	TCPEstablished time.Duration
	TCPFin         time.Duration // one side sent FIN
	TCPTimeWait    time.Duration // both sides sent FIN
	TCPClose       time.Duration // after a RST
	UDPUnreplied   time.Duration
	UDPAssured     time.Duration // a reply was seen
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	def(&c.TCPSyn, DefaultTCPSyn)
	def(&c.TCPEstablished, DefaultTCPEstablished)
	def(&c.TCPFin, DefaultTCPFin)
	def(&c.TCPTimeWait, DefaultTCPTimeWait)
	def(&c.TCPClose, DefaultTCPClose)
	def(&c.UDPUnreplied, DefaultUDPUnreplied)
	def(&c.UDPAssured, DefaultUDPAssured)
}

func (c *Config) validate() error {
	var errs []error
	if c.Size < MinSize || c.Size > MaxSize {
		errs = append(errs, fmt.Errorf("conntrack size %d outside %d..%d", c.Size, MinSize, MaxSize))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"tcp syn", c.TCPSyn}, {"tcp established", c.TCPEstablished}, {"tcp fin", c.TCPFin},
		{"tcp time-wait", c.TCPTimeWait}, {"tcp close", c.TCPClose},
		{"udp unreplied", c.UDPUnreplied}, {"udp assured", c.UDPAssured},
	} {
		if d.v < time.Second {
			errs = append(errs, fmt.Errorf("conntrack %s timeout %s: below 1s", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// Protocol numbers the table knows states for; anything else is tracked
// with UDP's timeouts.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// TCP flags as they appear in byte 13 of the TCP header.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagACK = 0x10
)

// Tuple is one direction of a flow: IPv4 addresses as big-endian uint32s.
type Tuple struct {
	Src, Dst         uint32
	SrcPort, DstPort uint16
	Proto            uint8
}

func (t *Tuple) keys() (k0, k1 uint64) {
	return uint64(t.Src)<<32 | uint64(t.Dst), uint64(t.SrcPort)<<48 | uint64(t.DstPort)<<32 | uint64(t.Proto)<<24 | 1
}

func tupleOf(k0, k1 uint64) Tuple {
	return Tuple{Src: uint32(k0 >> 32), Dst: uint32(k0), SrcPort: uint16(k1 >> 48), DstPort: uint16(k1 >> 32), Proto: uint8(k1 >> 24)}
}

// Reverse returns the tuple of a packet going the other way.
func (t Tuple) Reverse() Tuple {
	return Tuple{Src: t.Dst, Dst: t.Src, SrcPort: t.DstPort, DstPort: t.SrcPort, Proto: t.Proto}
}

// SrcAddr and DstAddr return the addresses as netip.Addr.
func (t Tuple) SrcAddr() netip.Addr { return addr4(t.Src) }
func (t Tuple) DstAddr() netip.Addr { return addr4(t.Dst) }

func (t Tuple) String() string {
	return fmt.Sprintf("%s:%d > %s:%d proto %d", t.SrcAddr(), t.SrcPort, t.DstAddr(), t.DstPort, t.Proto)
}

func addr4(k uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)})
}

// State is a flow's protocol state.
type State uint8

const (
	StateNone        State = iota // UDP and other protocols
	StateSynSent                  // TCP: SYN from the originator
	StateSynRecv                  // TCP: SYN-ACK from the reply side
	StateEstablished              // TCP: handshake done (or picked up mid-stream)
	StateFinWait                  // TCP: one side sent FIN
	StateTimeWait                 // TCP: both sides sent FIN
	StateClose                    // TCP: RST seen
)

var stateNames = [...]string{"none", "syn_sent", "syn_recv", "established", "fin_wait", "time_wait", "close"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state?"
}

// The state word of a record: generation (16 bits) | flags (8) | State (8).
const (
	bitReplied  = 1 << 8
	bitFinOrig  = 1 << 9
	bitFinReply = 1 << 10
)

// Dir is the direction a packet travels in its flow.
type Dir uint8

const (
	DirOriginal Dir = iota // the direction of the flow's first packet
	DirReply
)

// Hit is what a lookup found: the direction the packet travels and the
// tuple of the other direction, from which NAT derives the rewrite (as
// the kernel's nf_nat does: an original-direction packet must look like
// the inverse of the reply tuple, a reply like the inverse of the
// original), plus the caller's data stored with the flow.
type Hit struct {
	Dir     Dir
	Other   Tuple  // the tuple of the other direction
	Service uint32 // the caller's service frontend id (0 = none)
	Verdict uint32 // room for the policy verdict (0 = none yet)
	State   State
	Index   uint32 // the record, for Peek-style descriptions
}

// Entry is a flow as List reports it.
type Entry struct {
	Orig, Reply Tuple
	State       State
	Replied     bool
	Service     uint32
	Verdict     uint32
	Created     int64 // monotonic ns, the caller's clock
	LastSeen    int64
	Expires     int64
}

// Errors from Insert.
var (
	ErrFull  = errors.New("conntrack: table full")
	ErrClash = errors.New("conntrack: reply tuple already tracked")
)

// record is one flow: exactly one cache line.
type record struct {
	seq     atomic.Uint32 // odd while a writer rewrites the record
	state   atomic.Uint32 // gen<<16 | flags | State
	o0, o1  atomic.Uint64 // original tuple keys
	r0, r1  atomic.Uint64 // reply tuple keys
	aux     atomic.Uint64 // service<<32 | verdict
	created atomic.Int64
	last    atomic.Int64
}

const (
	bucketSlots = 8
	slotIdxMask = 1<<31 - 1
)

// Stats are the table's counters.
type Stats struct {
	Entries  uint64 // flows now (a gauge)
	Inserts  uint64 // flows added
	Full     uint64 // inserts refused: table full
	Clashes  uint64 // inserts refused: the reply tuple belongs to another flow
	Expired  uint64 // flows aged out
	Flushed  uint64 // flows removed by Flush/FlushIf
	Replaced uint64 // expired flows an insert replaced before Expire reached them
}

// Table is the connection tracking table. All methods are safe for
// concurrent use; Lookup and Peek take no lock.
type Table struct {
	cfg      Config
	timeouts [8]int64 // by State for TCP; [0] unused
	udpUnrep int64
	udpAssur int64
	recs     []record
	slots    []atomic.Uint64
	bmask    uint64
	seed     uint64

	mu   sync.Mutex // inserts, deletes, aging
	free []uint32   // free record indices (a stack)
	used []bool     // by record index, guarded by mu
	gen  []uint16   // by record index, guarded by mu

	entries, inserts, full, clashes, expired, flushed, replaced atomic.Uint64
}

// New allocates a table of cfg.Size flows.
func New(cfg Config) (*Table, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	nb := 1
	for nb*bucketSlots < 4*cfg.Size {
		nb <<= 1
	}
	t := &Table{
		cfg:   cfg,
		recs:  make([]record, cfg.Size),
		slots: make([]atomic.Uint64, nb*bucketSlots),
		bmask: uint64(nb - 1),
		seed:  rand.Uint64() | 1,
		free:  make([]uint32, cfg.Size),
		used:  make([]bool, cfg.Size),
		gen:   make([]uint16, cfg.Size),
	}
	for i := range t.free {
		t.free[i] = uint32(cfg.Size - 1 - i)
	}
	t.timeouts[StateSynSent] = int64(cfg.TCPSyn)
	t.timeouts[StateSynRecv] = int64(cfg.TCPSyn)
	t.timeouts[StateEstablished] = int64(cfg.TCPEstablished)
	t.timeouts[StateFinWait] = int64(cfg.TCPFin)
	t.timeouts[StateTimeWait] = int64(cfg.TCPTimeWait)
	t.timeouts[StateClose] = int64(cfg.TCPClose)
	t.udpUnrep, t.udpAssur = int64(cfg.UDPUnreplied), int64(cfg.UDPAssured)
	return t, nil
}

// Config returns the configuration with defaults filled in.
func (t *Table) Config() Config { return t.cfg }

// Len returns the number of flows tracked.
func (t *Table) Len() int { return int(t.entries.Load()) }

// Stats returns the counters.
func (t *Table) Stats() Stats {
	return Stats{
		Entries: t.entries.Load(), Inserts: t.inserts.Load(), Full: t.full.Load(), Clashes: t.clashes.Load(),
		Expired: t.expired.Load(), Flushed: t.flushed.Load(), Replaced: t.replaced.Load(),
	}
}

func (t *Table) hash(k0, k1 uint64) uint64 {
	h := bits.RotateLeft64(k0*0x9e3779b97f4a7c15, 31) ^ k1*0xc2b2ae3d27d4eb4f ^ t.seed
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// buckets returns the two candidate buckets and the tag of a hash.
func (t *Table) buckets(h uint64) (b1, b2 uint64, tag uint64) {
	tag = h >> 32
	b1 = h & t.bmask
	b2 = (b1 ^ (tag*0x9e3779b1 | 1)) & t.bmask
	return b1, b2, tag
}

// timeout returns how long a flow in state word st lives without packets.
func (t *Table) timeout(proto uint8, st uint32) int64 {
	if proto == ProtoTCP {
		return t.timeouts[State(st&0xff)&7]
	}
	if st&bitReplied != 0 {
		return t.udpAssur
	}
	return t.udpUnrep
}

// Lookup finds the flow k belongs to, fills *h and returns true; an
// expired flow is not found. It advances the flow's state with the TCP
// flags of the packet (0 for UDP), marks it replied on a reply-direction
// packet and refreshes its last-seen time. No lock, no allocation.
func (t *Table) Lookup(k *Tuple, tcpFlags uint8, now int64, h *Hit) bool {
	return t.find(k, tcpFlags, now, h, true)
}

// Peek is Lookup without side effects (for traces).
func (t *Table) Peek(k *Tuple, now int64, h *Hit) bool { return t.find(k, 0, now, h, false) }

func (t *Table) find(k *Tuple, tcpFlags uint8, now int64, h *Hit, update bool) bool {
	k0, k1 := k.keys()
	b1, b2, tag := t.buckets(t.hash(k0, k1))
	if t.probe(b1, tag, k0, k1, tcpFlags, now, h, update) {
		return true
	}
	return b2 != b1 && t.probe(b2, tag, k0, k1, tcpFlags, now, h, update)
}

func (t *Table) probe(b, tag, k0, k1 uint64, tcpFlags uint8, now int64, h *Hit, update bool) bool {
	slots := t.slots[b*bucketSlots : b*bucketSlots+bucketSlots]
	for i := range slots {
		v := slots[i].Load()
		if v>>32 != tag || v == 0 {
			continue
		}
		idx := uint32(v&slotIdxMask) - 1
		if int(idx) >= len(t.recs) {
			continue
		}
		dir := Dir(v >> 31 & 1)
		r := &t.recs[idx]
		seq := r.seq.Load()
		if seq&1 != 0 {
			continue
		}
		mine, other := &r.o0, &r.r0
		if dir == DirReply {
			mine, other = &r.r0, &r.o0
		}
		if mine.Load() != k0 || mineHi(r, dir).Load() != k1 {
			continue
		}
		p0, p1 := other.Load(), mineHi(r, 1-dir).Load()
		st := r.state.Load()
		aux := r.aux.Load()
		last := r.last.Load()
		if r.seq.Load() != seq {
			continue
		}
		proto := uint8(k1 >> 24)
		if now-last > t.timeout(proto, st) {
			return false
		}
		if update {
			if !settled(st, proto, dir, tcpFlags) {
				st = t.advance(r, st, proto, dir, tcpFlags)
			}
			if now-last >= refreshNs {
				r.last.Store(now)
			}
		}
		*h = Hit{Dir: dir, Other: tupleOf(p0, p1), Service: uint32(aux >> 32), Verdict: uint32(aux), State: State(st & 0xff), Index: idx}
		return true
	}
	return false
}

// mineHi returns the second key word of the tuple of direction dir.
func mineHi(r *record, dir Dir) *atomic.Uint64 {
	if dir == DirOriginal {
		return &r.o1
	}
	return &r.r1
}

// settled reports that a packet cannot change its flow's state word: the
// common case of an established flow (and of a UDP flow that has seen a
// reply), checked without the state machine.
func settled(st uint32, proto uint8, dir Dir, tcpFlags uint8) bool {
	if dir == DirReply && st&bitReplied == 0 {
		return false
	}
	if proto != ProtoTCP {
		return true
	}
	return State(st&0xff) == StateEstablished && tcpFlags&(FlagSYN|FlagFIN|FlagRST) == 0
}

// advance applies a packet's TCP flags (or, for any protocol, its
// direction) to the state word and returns the new word. A lost race with
// another worker's update is retried once from the newer word; a
// generation change (the record reused) makes the CAS fail for good.
func (t *Table) advance(r *record, st uint32, proto uint8, dir Dir, tcpFlags uint8) uint32 {
	for range 2 {
		n := nextState(st, proto, dir, tcpFlags)
		if n == st || r.state.CompareAndSwap(st, n) {
			return n
		}
		cur := r.state.Load()
		if cur>>16 != st>>16 {
			return st
		}
		st = cur
	}
	return st
}

// nextState is the TCP state machine, reduced to what timeouts need (no
// window tracking, unlike the kernel's nf_conntrack_proto_tcp):
// SYN -> SYN-ACK -> ACK establishes; a FIN from one side is fin_wait, from
// both time_wait; RST closes; a new SYN on a closed or time-wait flow
// reopens it.
func nextState(st uint32, proto uint8, dir Dir, f uint8) uint32 {
	n := st
	if dir == DirReply {
		n |= bitReplied
	}
	if proto != ProtoTCP {
		return n
	}
	s := State(n & 0xff)
	switch {
	case f&FlagRST != 0:
		s = StateClose
	case f&FlagSYN != 0 && f&FlagACK == 0 && dir == DirOriginal:
		if s == StateClose || s == StateTimeWait {
			s = StateSynSent
			n &^= bitFinOrig | bitFinReply | bitReplied
		}
	case f&FlagSYN != 0 && dir == DirReply:
		if s == StateSynSent {
			s = StateSynRecv
		}
	case f&FlagFIN != 0:
		if dir == DirOriginal {
			n |= bitFinOrig
		} else {
			n |= bitFinReply
		}
		if s == StateSynRecv || s == StateEstablished || s == StateFinWait {
			s = StateFinWait
			if n&(bitFinOrig|bitFinReply) == bitFinOrig|bitFinReply {
				s = StateTimeWait
			}
		}
	case f&FlagACK != 0 && s == StateSynRecv && dir == DirOriginal:
		s = StateEstablished
	}
	return n&^0xff | uint32(s)
}

// initialState is the state word of a new flow whose first packet has
// tcpFlags: SYN starts a handshake; anything else is picked up as
// established, as the kernel does with nf_conntrack_tcp_loose=1 (the
// default) so that flows survive a weftd restart.
func initialState(proto uint8, tcpFlags uint8) uint32 {
	if proto != ProtoTCP {
		return uint32(StateNone)
	}
	if tcpFlags&FlagSYN != 0 && tcpFlags&FlagACK == 0 {
		return uint32(StateSynSent)
	}
	return uint32(StateEstablished)
}

// Insert adds a flow seen first as orig whose replies will carry reply,
// with the caller's service id and verdict, and fills *h as Lookup would
// for its first packet. If orig is already tracked (another worker
// inserted the same new flow a moment ago) the existing flow wins and
// *h describes it. ErrFull: no room (the caller drops and counts);
// ErrClash: reply is another live flow's tuple.
func (t *Table) Insert(orig, reply *Tuple, service, verdict uint32, tcpFlags uint8, now int64, h *Hit) error {
	o0, o1 := orig.keys()
	r0, r1 := reply.keys()
	t.mu.Lock()
	defer t.mu.Unlock()
	if idx, dir, ok := t.findLocked(o0, o1); ok {
		r := &t.recs[idx]
		if dir == DirOriginal && now-r.last.Load() <= t.timeout(orig.Proto, r.state.Load()) {
			t.fillHit(idx, DirOriginal, h)
			return nil
		}
		t.deleteLocked(idx)
		t.replaced.Add(1)
	}
	if idx, _, ok := t.findLocked(r0, r1); ok {
		r := &t.recs[idx]
		if now-r.last.Load() <= t.timeout(reply.Proto, r.state.Load()) {
			t.clashes.Add(1)
			return ErrClash
		}
		t.deleteLocked(idx)
		t.replaced.Add(1)
	}
	if len(t.free) == 0 {
		t.full.Add(1)
		return ErrFull
	}
	so, okO := t.freeSlot(o0, o1, ^uint64(0))
	sr, okR := t.freeSlot(r0, r1, so)
	if !okO || !okR {
		t.full.Add(1)
		return ErrFull
	}
	idx := t.free[len(t.free)-1]
	t.free = t.free[:len(t.free)-1]
	t.used[idx] = true
	t.gen[idx]++
	r := &t.recs[idx]
	r.seq.Add(1)
	r.o0.Store(o0)
	r.o1.Store(o1)
	r.r0.Store(r0)
	r.r1.Store(r1)
	r.aux.Store(uint64(service)<<32 | uint64(verdict))
	r.state.Store(uint32(t.gen[idx])<<16 | initialState(orig.Proto, tcpFlags))
	r.created.Store(now)
	r.last.Store(now)
	r.seq.Add(1)
	_, _, tagO := t.buckets(t.hash(o0, o1))
	_, _, tagR := t.buckets(t.hash(r0, r1))
	t.slots[so].Store(tagO<<32 | uint64(DirOriginal)<<31 | uint64(idx+1))
	t.slots[sr].Store(tagR<<32 | uint64(DirReply)<<31 | uint64(idx+1))
	t.entries.Add(1)
	t.inserts.Add(1)
	t.fillHit(idx, DirOriginal, h)
	return nil
}

func (t *Table) fillHit(idx uint32, dir Dir, h *Hit) {
	r := &t.recs[idx]
	aux := r.aux.Load()
	other := tupleOf(r.r0.Load(), r.r1.Load())
	if dir == DirReply {
		other = tupleOf(r.o0.Load(), r.o1.Load())
	}
	*h = Hit{Dir: dir, Other: other, Service: uint32(aux >> 32), Verdict: uint32(aux), State: State(r.state.Load() & 0xff), Index: idx}
}

// findLocked finds a tuple's record regardless of expiry; mu held.
func (t *Table) findLocked(k0, k1 uint64) (uint32, Dir, bool) {
	b1, b2, tag := t.buckets(t.hash(k0, k1))
	for _, b := range [2]uint64{b1, b2} {
		for s := b * bucketSlots; s < (b+1)*bucketSlots; s++ {
			v := t.slots[s].Load()
			if v == 0 || v>>32 != tag {
				continue
			}
			idx := uint32(v&slotIdxMask) - 1
			dir := Dir(v >> 31 & 1)
			r := &t.recs[idx]
			q0, q1 := r.o0.Load(), r.o1.Load()
			if dir == DirReply {
				q0, q1 = r.r0.Load(), r.r1.Load()
			}
			if q0 == k0 && q1 == k1 {
				return idx, dir, true
			}
		}
	}
	return 0, 0, false
}

// freeSlot returns a free index slot in the emptier of k's two buckets,
// other than skip; mu held.
func (t *Table) freeSlot(k0, k1 uint64, skip uint64) (uint64, bool) {
	b1, b2, _ := t.buckets(t.hash(k0, k1))
	best, bestFree := uint64(0), -1
	for _, b := range [2]uint64{b1, b2} {
		n, first := 0, uint64(0)
		for s := b * bucketSlots; s < (b+1)*bucketSlots; s++ {
			if s != skip && t.slots[s].Load() == 0 {
				if n == 0 {
					first = s
				}
				n++
			}
		}
		if n > bestFree {
			best, bestFree = first, n
		}
	}
	return best, bestFree > 0
}

// SetVerdict replaces the verdict kept with the flow whose original tuple
// is orig and whose record h names (from Lookup or Insert): the policy
// stage decides on a flow's first packet after service NAT inserted it,
// and again after a policy change. It takes the insert lock, so a record
// reused for another flow meanwhile is never touched (false then); it runs
// once per flow per policy change, not per packet.
func (t *Table) SetVerdict(orig *Tuple, h *Hit, verdict uint32) bool {
	o0, o1 := orig.keys()
	t.mu.Lock()
	defer t.mu.Unlock()
	if int(h.Index) >= len(t.recs) || !t.used[h.Index] {
		return false
	}
	r := &t.recs[h.Index]
	if r.o0.Load() != o0 || r.o1.Load() != o1 {
		return false
	}
	aux := r.aux.Load()
	r.aux.Store(aux&^0xffffffff | uint64(verdict))
	h.Verdict = verdict
	return true
}

// deleteLocked removes record idx and its index slots; mu held.
func (t *Table) deleteLocked(idx uint32) {
	r := &t.recs[idx]
	for _, k := range [2][2]uint64{{r.o0.Load(), r.o1.Load()}, {r.r0.Load(), r.r1.Load()}} {
		b1, b2, _ := t.buckets(t.hash(k[0], k[1]))
		for _, b := range [2]uint64{b1, b2} {
			for s := b * bucketSlots; s < (b+1)*bucketSlots; s++ {
				if v := t.slots[s].Load(); v != 0 && uint32(v&slotIdxMask) == idx+1 {
					t.slots[s].Store(0)
				}
			}
		}
	}
	r.seq.Add(1)
	r.o0.Store(0)
	r.o1.Store(0)
	r.r0.Store(0)
	r.r1.Store(0)
	r.aux.Store(0)
	r.state.Store(0)
	r.seq.Add(1)
	t.used[idx] = false
	t.free = append(t.free, idx)
	t.entries.Add(^uint64(0))
}

// chunk bounds how many records one hold of mu walks, so inserts wait at
// most that long behind aging, listing or flushing.
const chunk = 4096

// walk calls fn for every flow, with mu held a chunk at a time; fn
// returns true to delete the flow.
func (t *Table) walk(fn func(idx uint32, r *record) bool) int {
	n := 0
	for lo := 0; lo < len(t.recs); lo += chunk {
		t.mu.Lock()
		for i := lo; i < min(lo+chunk, len(t.recs)); i++ {
			if t.used[i] && fn(uint32(i), &t.recs[i]) {
				t.deleteLocked(uint32(i))
				n++
			}
		}
		t.mu.Unlock()
	}
	return n
}

// Expire removes the flows idle longer than their state's timeout and
// returns how many. The node calls it every few seconds.
func (t *Table) Expire(now int64) int {
	n := t.walk(func(_ uint32, r *record) bool {
		return now-r.last.Load() > t.timeout(uint8(r.o1.Load()>>24), r.state.Load())
	})
	t.expired.Add(uint64(n))
	return n
}

// FlushIf removes the flows for which match returns true and returns how
// many.
func (t *Table) FlushIf(match func(e *Entry) bool) int {
	var e Entry
	n := t.walk(func(_ uint32, r *record) bool {
		t.entryOf(r, &e)
		return match(&e)
	})
	t.flushed.Add(uint64(n))
	return n
}

// Flush removes every flow.
func (t *Table) Flush() int { return t.FlushIf(func(*Entry) bool { return true }) }

// List returns the flows for which match returns true (all if match is
// nil), at most limit of them (0: no limit).
func (t *Table) List(match func(e *Entry) bool, limit int) []Entry {
	var out []Entry
	var e Entry
	t.walk(func(_ uint32, r *record) bool {
		if limit > 0 && len(out) >= limit {
			return false
		}
		t.entryOf(r, &e)
		if match == nil || match(&e) {
			out = append(out, e)
		}
		return false
	})
	return out
}

func (t *Table) entryOf(r *record, e *Entry) {
	st := r.state.Load()
	aux := r.aux.Load()
	*e = Entry{
		Orig: tupleOf(r.o0.Load(), r.o1.Load()), Reply: tupleOf(r.r0.Load(), r.r1.Load()),
		State: State(st & 0xff), Replied: st&bitReplied != 0,
		Service: uint32(aux >> 32), Verdict: uint32(aux),
		Created: r.created.Load(), LastSeen: r.last.Load(),
	}
	e.Expires = e.LastSeen + t.timeout(e.Orig.Proto, st)
}
