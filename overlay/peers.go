package overlay

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/weftnet/weft/packet"
)

// Peer is another weft node (or a kernel VXLAN device) we exchange VXLAN
// with.
type Peer struct {
	Name      string
	Underlay  netip.Addr   // the peer's underlay IPv4 address: where we send, whom we accept from
	RouterMAC packet.MAC   // inner destination MAC of frames we route to the peer
	Subnet    netip.Prefix // the peer's pod subnet
	VNI       uint32       // the VNI we put on frames to this peer
	// Foreign marks a peer that runs no weftd (a kernel VXLAN node, see
	// registry.ForeignTTL): its inner checksums may be left partial by an
	// offloading sender (CheckForeignInner).
	Foreign bool
	// PartialCsum: send the peer inner TCP/UDP checksums left partial
	// (FlagPartialCsum) instead of computing them. The node sets it for a
	// weft peer that advertised registry.CapPartialCsum, when its own
	// --partial-csum is on; never for a Foreign peer.
	PartialCsum bool

	stats *PeerStats
	// The inner IPv4 sources the peer may send from (ownsSource), set by
	// PeerTable.Set: its pod subnet as network and mask, and its host
	// (underlay) address.
	net4, mask4 uint32
	host4       [4]byte
}

// ownsSource reports whether src may be the inner IPv4 source of a frame
// this peer sent: an address of its pod subnet (its pods, its gateway, its
// host port) or its own underlay address (a kernel VXLAN node's host, or a
// host-network process bound to it). Anything else is a forgery that only
// the outer source vouches for, and plain VXLAN does not authenticate that.
func (p *Peer) ownsSource(src [4]byte) bool {
	k := binary.BigEndian.Uint32(src[:])
	return (k&p.mask4 == p.net4 && p.mask4 != 0) || src == p.host4
}

// Stats returns the peer's traffic counters. For a Peer obtained from a
// PeerTable (Lookup, List, Snapshot) it is never nil and is the same pointer
// for as long as the table keeps listing the same underlay address, across
// any number of Set calls; a Peer built by hand has none (nil).
func (p *Peer) Stats() *PeerStats { return p.stats }

// PeerStats counts the frames exchanged with one peer. The node increments
// it from its workers — ideally once per batch rather than once per frame —
// and exports it as per-peer metrics. Padded to a cache line so that two
// peers' counters never share one.
type PeerStats struct {
	TxFrames, TxBytes atomic.Uint64
	RxFrames, RxBytes atomic.Uint64
	// RxBadL4Checksum counts inner TCP/UDP packets from a foreign peer
	// whose checksum does not verify (CheckForeignInner).
	RxBadL4Checksum atomic.Uint64
	_               [24]byte
}

// PeerTable is the set of peers, as an immutable snapshot that the control
// plane replaces whole with Set while workers read it without locks. The
// zero value is an empty table.
type PeerTable struct {
	mu  sync.Mutex // serialises Set
	cur atomic.Pointer[PeerSnapshot]
}

// PeerSnapshot is one immutable version of the peer table. A worker may load
// it once per batch (PeerTable.Snapshot) and look up many frames in it.
type PeerSnapshot struct {
	peers  []Peer
	byAddr map[[4]byte]*Peer
}

// Set replaces the table with peers (copied). Every underlay address must be
// IPv4 and unique, every subnet a valid IPv4 prefix overlapping no other, and
// every VNI at most MaxVNI; otherwise Set returns an error and keeps the old
// table. A peer whose underlay address was already present keeps its
// PeerStats.
func (t *PeerTable) Set(peers []Peer) error {
	s := &PeerSnapshot{
		peers:  make([]Peer, len(peers)),
		byAddr: make(map[[4]byte]*Peer, len(peers)),
	}
	for i, p := range peers {
		if !p.Underlay.Is4() && !p.Underlay.Is4In6() {
			return fmt.Errorf("set peers: peer %q: underlay address %v is not IPv4", p.Name, p.Underlay)
		}
		p.Underlay = p.Underlay.Unmap()
		if !p.Subnet.IsValid() || !p.Subnet.Addr().Is4() {
			return fmt.Errorf("set peers: peer %q: subnet %v is not a valid IPv4 prefix", p.Name, p.Subnet)
		}
		p.Subnet = p.Subnet.Masked()
		if p.VNI > MaxVNI {
			return fmt.Errorf("set peers: peer %q: VNI %d does not fit in 24 bits", p.Name, p.VNI)
		}
		key := p.Underlay.As4()
		if q, dup := s.byAddr[key]; dup {
			return fmt.Errorf("set peers: peers %q and %q share underlay address %v", q.Name, p.Name, p.Underlay)
		}
		p.stats = nil
		net4 := p.Subnet.Addr().As4()
		p.net4 = binary.BigEndian.Uint32(net4[:])
		p.mask4 = ^uint32(0) << (32 - p.Subnet.Bits()) // 0 for a /0, which ownsSource refuses
		p.host4 = key
		s.peers[i] = p
		s.byAddr[key] = &s.peers[i]
	}
	if err := checkSubnetOverlap(s.peers); err != nil {
		return err
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	for i := range s.peers {
		p := &s.peers[i]
		if old != nil {
			if q := old.byAddr[p.Underlay.As4()]; q != nil {
				p.stats = q.stats
			}
		}
		if p.stats == nil {
			p.stats = new(PeerStats)
		}
	}
	t.cur.Store(s)
	return nil
}

func checkSubnetOverlap(peers []Peer) error {
	idx := make([]int, len(peers))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		pa, pb := peers[a].Subnet, peers[b].Subnet
		if c := pa.Addr().Compare(pb.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(pa.Bits(), pb.Bits())
	})
	// Sorted by start address, a prefix that contains any later one also
	// contains the next one, so checking neighbours finds every overlap.
	for i := 1; i < len(idx); i++ {
		a, b := peers[idx[i-1]], peers[idx[i]]
		if a.Subnet.Contains(b.Subnet.Addr()) {
			return fmt.Errorf("set peers: subnets of %q (%v) and %q (%v) overlap", a.Name, a.Subnet, b.Name, b.Subnet)
		}
	}
	return nil
}

// Lookup returns the peer with underlay address addr. It does not allocate
// or lock. The returned Peer is shared and must not be modified; it stays
// valid (and its Stats usable) after later Set calls, describing the table
// as it was.
func (t *PeerTable) Lookup(addr [4]byte) (*Peer, bool) {
	if t == nil {
		return nil, false
	}
	return t.cur.Load().Lookup(addr)
}

// Snapshot returns the current version of the table; nil when Set was never
// called (a nil *PeerSnapshot is an empty table).
func (t *PeerTable) Snapshot() *PeerSnapshot {
	if t == nil {
		return nil
	}
	return t.cur.Load()
}

// List returns a copy of the current peers, in the order given to Set.
func (t *PeerTable) List() []Peer { return t.Snapshot().List() }

// Len returns the number of peers.
func (t *PeerTable) Len() int { return t.Snapshot().Len() }

// Lookup returns the peer with underlay address addr, as PeerTable.Lookup.
func (s *PeerSnapshot) Lookup(addr [4]byte) (*Peer, bool) {
	if s == nil {
		return nil, false
	}
	p, ok := s.byAddr[addr]
	return p, ok
}

// List returns a copy of the snapshot's peers, in the order given to Set.
func (s *PeerSnapshot) List() []Peer {
	if s == nil {
		return nil
	}
	return slices.Clone(s.peers)
}

// Len returns the number of peers in the snapshot.
func (s *PeerSnapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.peers)
}
