package outerframe

import (
	"encoding/binary"
	"net/netip"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// DropReason extends overlay.DropReason with the reasons only a full outer
// frame can have: overlay's reasons keep their values, the outer ones follow.
type DropReason uint8

const (
	// DropNone: accepted (overlay.DropNone).
	DropNone = DropReason(overlay.DropNone)
)

const (
	// DropNotVXLAN: not IPv4/UDP to our VXLAN port (a socket bound to the
	// port would never see it).
	DropNotVXLAN = DropReason(overlay.NumDropReasons) + iota
	// DropBadOuter: malformed outer IPv4 or UDP header — bad version or
	// header length, lengths that disagree with the frame, or a fragment
	// (which the kernel would reassemble first; we do not).
	DropBadOuter
	// DropBadChecksum: the outer IPv4 header checksum does not verify, or —
	// with Decapper.VerifyUDPChecksum — a non-zero UDP checksum does not.
	DropBadChecksum

	// NumDropReasons is the number of DropReason values, overlay's included.
	NumDropReasons int = overlay.NumDropReasons + iota
)

var outerNames = [...]string{
	DropNotVXLAN - DropNotVXLAN:    "not_vxlan",
	DropBadOuter - DropNotVXLAN:    "bad_outer",
	DropBadChecksum - DropNotVXLAN: "bad_checksum",
}

// Decap places one of overlay's reasons in the space.
func Decap(r overlay.DropReason) DropReason { return DropReason(r) }

// String returns the reason's snake_case name: overlay's, or an outer one.
func (r DropReason) String() string {
	if int(r) < overlay.NumDropReasons {
		return overlay.DropReason(r).String()
	}
	if int(r) < NumDropReasons {
		return outerNames[r-DropNotVXLAN]
	}
	return "unknown"
}

// Decapper checks a full outer frame and hands its UDP payload to the
// daemon's decapsulator, which checks (and counts, in its Drops) the VXLAN
// header, VNI, peer and inner source exactly as it does for weftd.
// Outer-header drops are returned, not counted: the caller classifies them.
type Decapper struct {
	*overlay.Decapper
	Port uint16 // UDP destination port DecapFrame accepts; 0 means overlay.DefaultPort
	// VerifyUDPChecksum makes DecapFrame verify a non-zero outer UDP
	// checksum (RFC 7348 §5: receivers MAY). Off by default because frames
	// captured on the sending host or on a veth usually carry only the
	// pseudo-header sum there (checksum offload, CHECKSUM_PARTIAL) — the
	// Linux vxlan device sends UDP checksums, and its frames captured on
	// the receiving veth fail verification. Datagrams read from a socket
	// were verified by the kernel already.
	VerifyUDPChecksum bool
}

// NewDecapper returns a Decapper for vni and UDP port (0 means
// overlay.DefaultPort) that trusts the senders in peers.
func NewDecapper(vni uint32, port uint16, peers *overlay.PeerTable) *Decapper {
	return &Decapper{Decapper: overlay.NewDecapper(vni, peers), Port: port}
}

// DecapFrame checks a full outer frame (Ethernet, IPv4, UDP, VXLAN), as read
// from a pcap or a raw socket, and returns the inner frame as a sub-slice of
// frame, the sending peer (looked up by the outer source address), or a drop
// reason. Ethernet padding beyond the IPv4 total length and bytes beyond the
// UDP length are ignored, as the kernel trims them.
func (d *Decapper) DecapFrame(frame []byte) (inner []byte, peer *overlay.Peer, reason DropReason) {
	payload, from, reason := d.outerPayload(frame)
	if reason != DropNone {
		return nil, nil, reason
	}
	inner, peer, r := d.Decap(payload, from)
	return inner, peer, Decap(r)
}

// outerPayload strips and checks the outer Ethernet, IPv4 and UDP headers.
func (d *Decapper) outerPayload(frame []byte) (payload []byte, from netip.AddrPort, reason DropReason) {
	if len(frame) < packet.EthHdrLen+packet.IPv4MinHdrLen+packet.UDPHdrLen {
		return nil, from, Decap(overlay.DropTooShort)
	}
	if packet.EthType(frame) != packet.EtherTypeIPv4 {
		return nil, from, DropNotVXLAN
	}
	ip := packet.IPv4(frame[packet.EthHdrLen:])
	if !ip.Valid() {
		return nil, from, DropBadOuter
	}
	if ip.Proto() != packet.IPProtoUDP {
		return nil, from, DropNotVXLAN
	}
	if ip.IsFragment() {
		return nil, from, DropBadOuter
	}
	if !ip.HeaderChecksumOK() {
		return nil, from, DropBadChecksum
	}
	l4 := ip[ip.HeaderLen():ip.TotalLen()]
	if len(l4) < packet.UDPHdrLen {
		return nil, from, DropBadOuter
	}
	port := d.Port
	if port == 0 {
		port = overlay.DefaultPort
	}
	if binary.BigEndian.Uint16(l4[packet.UDPOffDstPort:]) != port {
		return nil, from, DropNotVXLAN
	}
	ulen := int(binary.BigEndian.Uint16(l4[packet.UDPOffLen:]))
	if ulen < packet.UDPHdrLen || ulen > len(l4) {
		return nil, from, DropBadOuter
	}
	udp := l4[:ulen]
	if csum := binary.BigEndian.Uint16(udp[packet.UDPOffChecksum:]); csum != 0 && d.VerifyUDPChecksum {
		sum := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoUDP, uint16(ulen))
		if packet.Fold(packet.Checksum(udp, sum)) != 0xffff {
			return nil, from, DropBadChecksum
		}
	}
	from = netip.AddrPortFrom(netip.AddrFrom4(ip.Src4()), binary.BigEndian.Uint16(udp[packet.UDPOffSrcPort:]))
	return udp[packet.UDPHdrLen:], from, DropNone
}
