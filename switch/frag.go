package vswitch

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/weftnet/weft/packet"
)

// IP fragments of translated flows. A UDP datagram larger than the path
// (a 2,000-byte request from a pod with MTU 1450) leaves the sender in
// fragments; only the first carries the ports, so only it can be matched
// to a flow and translated by the service stage. The kernel reassembles
// before NAT (nf_defrag_ipv4); weft does not reassemble, and instead, as
// Cilium's fragment tracking does, remembers how it translated a first
// fragment's addresses, keyed by what every fragment of the datagram
// shares (source, destination, protocol, IP ID: RFC 791), and gives the
// later fragments the same addresses. Their payload is the datagram's
// continuation and holds no checksum of its own: the first fragment's L4
// checksum, patched for the whole datagram, covers them. A later fragment
// that arrives before its first, or after its entry was overwritten, is
// left as it is (it then meets the route of its untranslated address).
//
// A small direct-mapped table: fragments of one datagram come within
// milliseconds of each other, and a collision only loses the translation
// of the older datagram's remaining fragments (counted nowhere: the
// datagram is lost, as with any lost fragment). Entries expire as the
// kernel's reassembly queue does (net.ipv4.ipfrag_time, 30 s). Used only
// by fragments; a table never written costs one atomic load per later
// fragment.

const (
	fragSlots = 1024 // power of two
	fragLife  = 30e9 // ns
)

type fragKey struct {
	src, dst uint32
	id       uint16
	proto    uint8
}

type fragEntry struct {
	key            fragKey
	newSrc, newDst uint32
	expires        int64
}

type fragTable struct {
	used  atomic.Bool // a first fragment was translated once
	mu    sync.Mutex
	slots [fragSlots]fragEntry
}

func (k fragKey) slot() uint32 {
	h := k.src*0x9e3779b1 ^ k.dst*0x85ebca6b ^ (uint32(k.id)<<8|uint32(k.proto))*0xc2b2ae35
	return (h ^ h>>15) & (fragSlots - 1)
}

// put remembers that the fragments of datagram k take newSrc and newDst.
func (t *fragTable) put(k fragKey, newSrc, newDst uint32, now int64) {
	t.mu.Lock()
	t.slots[k.slot()] = fragEntry{key: k, newSrc: newSrc, newDst: newDst, expires: now + fragLife}
	t.mu.Unlock()
	if !t.used.Load() {
		t.used.Store(true)
	}
}

// get returns the addresses datagram k's fragments take, if its first
// fragment was translated.
func (t *fragTable) get(k fragKey, now int64) (newSrc, newDst uint32, ok bool) {
	if !t.used.Load() {
		return 0, 0, false
	}
	t.mu.Lock()
	e := t.slots[k.slot()]
	t.mu.Unlock()
	if e.key != k || e.expires <= now {
		return 0, 0, false
	}
	return e.newSrc, e.newDst, true
}

// fragKeyOf is the key of the datagram the IPv4 packet ip belongs to.
func fragKeyOf(ip packet.IPv4) fragKey {
	return fragKey{src: ip4Key(ip.Src4()), dst: ip4Key(ip.Dst4()), id: ip.ID(), proto: ip.Proto()}
}

// laterFragment translates a later fragment (no L4 header) as its
// datagram's first fragment was: its addresses only, and the IP header
// checksum (RFC 1624).
func (c *frameCtx) laterFragment(f []byte) {
	ip := packet.IPv4(f[packet.EthHdrLen:])
	k := fragKeyOf(ip)
	newSrc, newDst, ok := c.s.frags.get(k, c.now)
	if !ok {
		return
	}
	c.trace(StageService, step{kind: stepSvcFragment})
	// A trace (dry) rewrites its own copy too, so that it predicts the
	// verdict of the translated fragment.
	sum := ip.Checksum()
	var o, n [4]byte
	if newSrc != k.src {
		binary.BigEndian.PutUint32(o[:], k.src)
		binary.BigEndian.PutUint32(n[:], newSrc)
		sum = packet.UpdateChecksum32(sum, o, n)
		binary.BigEndian.PutUint32(ip[packet.IPv4OffSrc:], newSrc)
	}
	if newDst != k.dst {
		binary.BigEndian.PutUint32(o[:], k.dst)
		binary.BigEndian.PutUint32(n[:], newDst)
		sum = packet.UpdateChecksum32(sum, o, n)
		binary.BigEndian.PutUint32(ip[packet.IPv4OffDst:], newDst)
	}
	ip.SetChecksum(sum)
	if !c.dry {
		c.s.ctr.fragTranslated.Add(1)
	}
}
