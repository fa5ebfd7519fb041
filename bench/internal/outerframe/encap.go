package outerframe

import (
	"encoding/binary"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// DefaultTTL is the outer IPv4 TTL when OuterIPv4.TTL is 0 (the kernel
// vxlan device uses the route's hop limit, 64 by default).
const DefaultTTL = 64

// Offsets of the outer headers from the start of a full outer frame.
const (
	outerIPOff    = packet.EthHdrLen
	outerUDPOff   = outerIPOff + packet.IPv4MinHdrLen
	outerVXLANOff = outerUDPOff + packet.UDPHdrLen

	// maxInnerLen is the largest inner frame whose outer IPv4 total length
	// still fits in 16 bits.
	maxInnerLen = 0xffff - packet.IPv4MinHdrLen - packet.UDPHdrLen - overlay.HeaderLen
)

// OuterIPv4 describes the outer headers EncapIPv4 writes. Zero values of the
// optional fields select the defaults noted on each. A worker keeps one per
// peer and passes it by pointer; EncapIPv4 only reads it.
type OuterIPv4 struct {
	SrcMAC, DstMAC packet.MAC // outer Ethernet: our underlay NIC, the next hop
	Src, Dst       [4]byte    // outer IPv4: our underlay address, the peer's

	// SrcPort is the outer UDP source port. 0 derives it per frame from the
	// inner flow: overlay.FlowSrcPort(inner, PortMin, PortMax).
	SrcPort uint16
	// PortMin and PortMax bound the flow-hashed source port, [PortMin,
	// PortMax). PortMin >= PortMax (e.g. both 0) selects
	// [overlay.DefaultPortMin, overlay.DefaultPortMax).
	PortMin, PortMax uint16
	// DstPort is the outer UDP destination port; 0 means overlay.DefaultPort.
	DstPort uint16

	VNI uint32 // at most overlay.MaxVNI
	TTL uint8  // 0 means DefaultTTL
	// ID is the IPv4 identification. With DF set it only has to be unique
	// enough for duplicate detection (RFC 6864 §4.1); leave it 0 or bump it
	// per frame.
	ID uint16
}

// EncapIPv4 writes a full outer frame — Ethernet, IPv4 (DF, no options,
// header checksum), UDP (checksum 0, allowed over IPv4 and what RFC 7348 §5
// senders use), VXLAN — into the overlay.OuterIPv4Len bytes of headroom in front of
// the inner frame at buf[off:off+n], and returns the start of the outer
// frame, off-overlay.OuterIPv4Len. The inner frame is not copied or modified.
//
// On error buf is untouched.
func EncapIPv4(buf []byte, off, n int, h *OuterIPv4) (start int, err error) {
	if off < 0 || n < packet.EthHdrLen || off > len(buf) || n > len(buf)-off {
		return 0, overlay.ErrBadLength
	}
	if off < overlay.OuterIPv4Len {
		return 0, overlay.ErrNoHeadroom
	}
	if n > maxInnerLen {
		return 0, overlay.ErrFrameTooBig
	}
	if h.VNI > overlay.MaxVNI {
		return 0, overlay.ErrBadVNI
	}
	sport := h.SrcPort
	if sport == 0 {
		sport = overlay.FlowSrcPort(buf[off:off+n], h.PortMin, h.PortMax)
	}
	dport := h.DstPort
	if dport == 0 {
		dport = overlay.DefaultPort
	}
	ttl := h.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	start = off - overlay.OuterIPv4Len
	b := buf[start:off:off]
	packet.PutEth(b, h.DstMAC, h.SrcMAC, packet.EtherTypeIPv4)
	putOuterIPv4(b[outerIPOff:outerUDPOff], uint16(overlay.OuterIPv4Len-packet.EthHdrLen+n), h.ID, ttl, h.Src, h.Dst)
	packet.PutUDP(b[outerUDPOff:], sport, dport, uint16(packet.UDPHdrLen+overlay.HeaderLen+n))
	overlay.PutHeader(b[outerVXLANOff:], h.VNI)
	return start, nil
}

// putOuterIPv4 writes the 20-byte outer IPv4 header (no options, TOS 0, DF,
// protocol UDP). It sums the header's ten 16-bit words directly instead of
// running the general checksum loop over the written bytes: the same value
// as packet.PutIPv4 (the gopacket comparison test pins the bytes), at about
// half the cost of the whole encapsulation.
func putOuterIPv4(b []byte, totalLen, id uint16, ttl uint8, src, dst [4]byte) {
	_ = b[19]
	const verIHLTOS = 0x4500
	ttlProto := uint16(ttl)<<8 | packet.IPProtoUDP
	s0, s1 := binary.BigEndian.Uint16(src[0:2]), binary.BigEndian.Uint16(src[2:4])
	d0, d1 := binary.BigEndian.Uint16(dst[0:2]), binary.BigEndian.Uint16(dst[2:4])
	sum := uint32(verIHLTOS) + uint32(totalLen) + uint32(id) + packet.IPv4FlagDF +
		uint32(ttlProto) + uint32(s0) + uint32(s1) + uint32(d0) + uint32(d1)
	binary.BigEndian.PutUint16(b[0:], verIHLTOS)
	binary.BigEndian.PutUint16(b[2:], totalLen)
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], packet.IPv4FlagDF)
	binary.BigEndian.PutUint16(b[8:], ttlProto)
	binary.BigEndian.PutUint16(b[10:], ^packet.Fold(sum))
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
}
