package overlay

import (
	"net/netip"
	"sync/atomic"

	"github.com/weftnet/weft/packet"
)

// DropReason says why decapsulation refused a datagram. DropNone means it
// was accepted.
type DropReason uint8

const (
	DropNone DropReason = iota
	// DropTooShort: shorter than a VXLAN header plus an inner Ethernet
	// header.
	DropTooShort
	// DropBadFlags: the I (VNI valid) flag is clear.
	DropBadFlags
	// DropReservedBits: a reserved flag bit or reserved field is set. RFC
	// 7348 says to ignore them; the Linux kernel drops, and so do we (see
	// ParseHeader), except weft's FlagPartialCsum from a weft peer.
	DropReservedBits
	// DropWrongVNI: the VNI is not ours.
	DropWrongVNI
	// DropUnknownPeer: the underlay sender is not in the peer table.
	DropUnknownPeer
	// DropSpoofedInnerSrc: the inner frame is IPv4 from a source that is
	// neither in the sending peer's pod subnet nor the peer's own underlay
	// address (DESIGN.md, Trust). The outer source alone is no proof of
	// origin: plain VXLAN is unauthenticated, so anyone on the underlay can
	// forge it, but a forger can then speak only for that peer's addresses.
	DropSpoofedInnerSrc

	// NumDropReasons is the number of DropReason values, DropNone included.
	NumDropReasons int = iota
)

var dropReasonNames = [NumDropReasons]string{
	DropNone:         "none",
	DropTooShort:     "too_short",
	DropBadFlags:     "bad_flags",
	DropReservedBits: "reserved_bits",
	DropWrongVNI:     "wrong_vni",
	DropUnknownPeer:  "unknown_peer",

	DropSpoofedInnerSrc: "spoofed_inner_src",
}

// String returns the reason's snake_case name, fit for a metric label.
func (r DropReason) String() string {
	if int(r) < NumDropReasons {
		return dropReasonNames[r]
	}
	return "unknown"
}

// Counters counts decapsulation drops by reason. The zero value is ready.
// Increments are atomic, so workers may share one; drops are rare, so the
// shared cache line costs nothing on the accepted path, which never touches
// it.
type Counters struct {
	drops [NumDropReasons]atomic.Uint64
}

// Add counts one drop for r. DropNone, out-of-range reasons and a nil
// receiver are ignored.
func (c *Counters) Add(r DropReason) {
	if c != nil && r != DropNone && int(r) < NumDropReasons {
		c.drops[r].Add(1)
	}
}

// Get returns the current count for r.
func (c *Counters) Get(r DropReason) uint64 {
	if int(r) < NumDropReasons {
		return c.drops[r].Load()
	}
	return 0
}

// Snapshot returns the current count of every drop reason except DropNone,
// keyed by DropReason.String. It allocates; call it from the metrics path.
func (c *Counters) Snapshot() map[string]uint64 {
	m := make(map[string]uint64, NumDropReasons-1)
	for r := 1; r < NumDropReasons; r++ {
		m[DropReason(r).String()] = c.drops[r].Load()
	}
	return m
}

// Decapper checks and strips VXLAN encapsulation for one node: our VNI and
// the peer table that says which underlay senders we trust. It is read-only
// during use and may be shared by all workers.
type Decapper struct {
	VNI   uint32
	Peers *PeerTable // nil trusts nobody: every datagram is DropUnknownPeer
	// Drops counts every datagram Decap refused, by reason.
	// NewDecapper sets it; nil would leave drops uncounted.
	Drops *Counters
}

// NewDecapper returns a Decapper for vni that trusts the senders in peers
// and counts drops in a fresh Counters. The UDP port is the socket's
// business (Conn): datagrams reach Decap already addressed to it.
func NewDecapper(vni uint32, peers *PeerTable) *Decapper {
	return &Decapper{VNI: vni, Peers: peers, Drops: new(Counters)}
}

// Decap checks a UDP payload received on the VXLAN socket (VXLAN header and
// inner frame) sent from from. It returns the inner frame as a sub-slice of
// payload (no copy) and the sending peer, or a drop reason, already counted
// in d.Drops. Checks run cheapest first: length, flags, reserved bits, VNI,
// then the peer lookup, then the inner source (innerSourceOK); the first
// failure is the reason. PartialCsum(payload) then says whether the inner
// checksum is partial (only a weft peer's can be).
func (d *Decapper) Decap(payload []byte, from netip.AddrPort) (inner []byte, peer *Peer, reason DropReason) {
	vni, reason := ParseHeader(payload)
	if reason == DropNone && vni != d.VNI {
		reason = DropWrongVNI
	}
	if reason == DropNone {
		a := from.Addr()
		if a.Is4() || a.Is4In6() {
			peer, _ = d.Peers.Lookup(a.As4())
		}
		if peer == nil {
			reason = DropUnknownPeer
		} else if peer.Foreign && PartialCsum(payload) {
			reason = DropReservedBits // a kernel VXLAN never sets it
		} else if !innerSourceOK(peer, payload[HeaderLen:]) {
			reason = DropSpoofedInnerSrc
		}
	}
	if reason != DropNone {
		d.Drops.Add(reason)
		return nil, nil, reason
	}
	return payload[HeaderLen:], peer, DropNone
}

// innerSourceOK reports whether an inner frame may have come from peer: an
// IPv4 frame only from an address the peer owns (Peer.ownsSource). Other
// frames pass here, as do IPv4 frames too short to hold a source address:
// the switch's overlay port accepts nothing but well-formed IPv4 to the
// router MAC, and drops (and counts) the rest under its own reasons.
func innerSourceOK(peer *Peer, inner []byte) bool {
	if len(inner) < packet.EthHdrLen+packet.IPv4OffSrc+4 || packet.EthType(inner) != packet.EtherTypeIPv4 {
		return true
	}
	return peer.ownsSource(packet.IPv4(inner[packet.EthHdrLen:]).Src4())
}
