package overlay

import (
	"encoding/binary"
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
	// ParseHeader).
	DropReservedBits
	// DropWrongVNI: the VNI is not ours.
	DropWrongVNI
	// DropUnknownPeer: the underlay sender is not in the peer table.
	DropUnknownPeer
	// DropNotVXLAN (full outer frames only): not IPv4/UDP to our VXLAN port.
	DropNotVXLAN
	// DropBadOuter (full outer frames only): malformed outer IPv4 or UDP
	// header — bad version or header length, lengths that disagree with the
	// frame, or a fragment (which the kernel would reassemble first; we do
	// not).
	DropBadOuter
	// DropBadChecksum (full outer frames only): the outer IPv4 header
	// checksum does not verify, or — with Decapper.VerifyUDPChecksum — a
	// non-zero UDP checksum does not.
	DropBadChecksum
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
	DropNotVXLAN:     "not_vxlan",
	DropBadOuter:     "bad_outer",
	DropBadChecksum:  "bad_checksum",

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

// Decapper checks and strips VXLAN encapsulation for one node: our VNI, our
// UDP port (full outer frames only) and the peer table that says which
// underlay senders we trust. It is read-only during use and may be shared by
// all workers.
type Decapper struct {
	VNI   uint32
	Port  uint16     // UDP destination port DecapFrame accepts; 0 means DefaultPort
	Peers *PeerTable // nil trusts nobody: every datagram is DropUnknownPeer
	// Drops counts every datagram Decap or DecapFrame refused, by reason.
	// NewDecapper sets it; nil would leave drops uncounted.
	Drops *Counters
	// VerifyUDPChecksum makes DecapFrame verify a non-zero outer UDP
	// checksum (RFC 7348 §5: receivers MAY). Off by default because frames
	// captured on the sending host or on a veth usually carry only the
	// pseudo-header sum there (checksum offload, CHECKSUM_PARTIAL) — the
	// Linux vxlan device sends UDP checksums, and its frames captured on
	// the receiving veth fail verification. Datagrams read from Conn were
	// verified by the kernel already.
	VerifyUDPChecksum bool
}

// NewDecapper returns a Decapper for vni and UDP port (0 means DefaultPort)
// that trusts the senders in peers and counts drops in a fresh Counters.
func NewDecapper(vni uint32, port uint16, peers *PeerTable) *Decapper {
	return &Decapper{VNI: vni, Port: port, Peers: peers, Drops: new(Counters)}
}

// Decap checks a UDP payload received on the VXLAN socket (VXLAN header and
// inner frame) sent from from. It returns the inner frame as a sub-slice of
// payload (no copy) and the sending peer, or a drop reason, already counted
// in d.Drops. Checks run cheapest first: length, flags, reserved bits, VNI,
// then the peer lookup, then the inner source (innerSourceOK); the first
// failure is the reason.
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

// DecapFrame checks a full outer frame (Ethernet, IPv4, UDP, VXLAN), as read
// from a pcap or a raw socket, and returns the inner frame as a sub-slice of
// frame, the sending peer (looked up by the outer source address), or a drop
// reason, already counted in d.Drops. Ethernet padding beyond the IPv4 total
// length and bytes beyond the UDP length are ignored, as the kernel trims
// them.
func (d *Decapper) DecapFrame(frame []byte) (inner []byte, peer *Peer, reason DropReason) {
	payload, src, reason := d.outerPayload(frame)
	if reason == DropNone {
		vni, r := ParseHeader(payload)
		switch {
		case r != DropNone:
			reason = r
		case vni != d.VNI:
			reason = DropWrongVNI
		default:
			if peer, _ = d.Peers.Lookup(src); peer == nil {
				reason = DropUnknownPeer
			} else if !innerSourceOK(peer, payload[HeaderLen:]) {
				reason = DropSpoofedInnerSrc
			}
		}
	}
	if reason != DropNone {
		d.Drops.Add(reason)
		return nil, nil, reason
	}
	return payload[HeaderLen:], peer, DropNone
}

// outerPayload strips and checks the outer Ethernet, IPv4 and UDP headers.
func (d *Decapper) outerPayload(frame []byte) (payload []byte, src [4]byte, reason DropReason) {
	if len(frame) < packet.EthHdrLen+packet.IPv4MinHdrLen+packet.UDPHdrLen {
		return nil, src, DropTooShort
	}
	if packet.EthType(frame) != packet.EtherTypeIPv4 {
		return nil, src, DropNotVXLAN
	}
	ip := packet.IPv4(frame[packet.EthHdrLen:])
	if !ip.Valid() {
		return nil, src, DropBadOuter
	}
	if ip.Proto() != packet.IPProtoUDP {
		return nil, src, DropNotVXLAN
	}
	if ip.IsFragment() {
		return nil, src, DropBadOuter
	}
	if !ip.HeaderChecksumOK() {
		return nil, src, DropBadChecksum
	}
	l4 := ip[ip.HeaderLen():ip.TotalLen()]
	if len(l4) < packet.UDPHdrLen {
		return nil, src, DropBadOuter
	}
	port := d.Port
	if port == 0 {
		port = DefaultPort
	}
	if binary.BigEndian.Uint16(l4[packet.UDPOffDstPort:]) != port {
		return nil, src, DropNotVXLAN
	}
	ulen := int(binary.BigEndian.Uint16(l4[packet.UDPOffLen:]))
	if ulen < packet.UDPHdrLen || ulen > len(l4) {
		return nil, src, DropBadOuter
	}
	udp := l4[:ulen]
	if csum := binary.BigEndian.Uint16(udp[packet.UDPOffChecksum:]); csum != 0 && d.VerifyUDPChecksum {
		sum := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoUDP, uint16(ulen))
		if packet.Fold(packet.Checksum(udp, sum)) != 0xffff {
			return nil, src, DropBadChecksum
		}
	}
	return udp[packet.UDPHdrLen:], ip.Src4(), DropNone
}
