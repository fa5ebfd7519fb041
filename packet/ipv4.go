package packet

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 header layout (RFC 791), offsets from the start of the IP header.
const (
	IPv4MinHdrLen = 20

	IPv4OffVerIHL    = 0
	IPv4OffTOS       = 1
	IPv4OffTotalLen  = 2
	IPv4OffID        = 4
	IPv4OffFlagsFrag = 6
	IPv4OffTTL       = 8
	IPv4OffProto     = 9
	IPv4OffChecksum  = 10
	IPv4OffSrc       = 12
	IPv4OffDst       = 16

	IPv4FlagDF   = 0x4000 // don't fragment, in the flags/fragment-offset word
	IPv4FlagMF   = 0x2000
	IPv4FragMask = 0x1fff

	IPProtoICMP   = 1
	IPProtoTCP    = 6
	IPProtoUDP    = 17
	IPProtoICMPv6 = 58
)

// IPv4 is a view of an IPv4 header at the start of the slice. Methods assume
// len >= IPv4MinHdrLen; call Valid first on untrusted input.
type IPv4 []byte

// Valid reports whether ip holds a well-formed IPv4 header whose total
// length fits in ip: version 4, IHL >= 5, total length >= IHL.
func (ip IPv4) Valid() bool {
	if len(ip) < IPv4MinHdrLen || ip[0]>>4 != 4 {
		return false
	}
	hl := ip.HeaderLen()
	tl := int(ip.TotalLen())
	return hl >= IPv4MinHdrLen && tl >= hl && tl <= len(ip)
}

func (ip IPv4) HeaderLen() int   { return int(ip[0]&0x0f) * 4 }
func (ip IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(ip[IPv4OffTotalLen:]) }
func (ip IPv4) ID() uint16       { return binary.BigEndian.Uint16(ip[IPv4OffID:]) }
func (ip IPv4) FlagsFrag() uint16 {
	return binary.BigEndian.Uint16(ip[IPv4OffFlagsFrag:])
}
func (ip IPv4) DF() bool { return ip.FlagsFrag()&IPv4FlagDF != 0 }

// IsFragment reports a non-first fragment or one with more to come.
func (ip IPv4) IsFragment() bool { return ip.FlagsFrag()&(IPv4FlagMF|IPv4FragMask) != 0 }

// IsLaterFragment reports a fragment with a nonzero offset (no L4 header).
func (ip IPv4) IsLaterFragment() bool  { return ip.FlagsFrag()&IPv4FragMask != 0 }
func (ip IPv4) TTL() uint8             { return ip[IPv4OffTTL] }
func (ip IPv4) Proto() uint8           { return ip[IPv4OffProto] }
func (ip IPv4) Checksum() uint16       { return binary.BigEndian.Uint16(ip[IPv4OffChecksum:]) }
func (ip IPv4) Src4() [4]byte          { return [4]byte(ip[IPv4OffSrc : IPv4OffSrc+4]) }
func (ip IPv4) Dst4() [4]byte          { return [4]byte(ip[IPv4OffDst : IPv4OffDst+4]) }
func (ip IPv4) Src() netip.Addr        { return netip.AddrFrom4(ip.Src4()) }
func (ip IPv4) Dst() netip.Addr        { return netip.AddrFrom4(ip.Dst4()) }
func (ip IPv4) Payload() []byte        { return ip[ip.HeaderLen():ip.TotalLen()] }
func (ip IPv4) SetTotalLen(n uint16)   { binary.BigEndian.PutUint16(ip[IPv4OffTotalLen:], n) }
func (ip IPv4) SetChecksum(c uint16)   { binary.BigEndian.PutUint16(ip[IPv4OffChecksum:], c) }
func (ip IPv4) SetSrc4(a [4]byte)      { copy(ip[IPv4OffSrc:], a[:]) }
func (ip IPv4) SetDst4(a [4]byte)      { copy(ip[IPv4OffDst:], a[:]) }
func (ip IPv4) HeaderChecksumOK() bool { return Fold(Checksum(ip[:ip.HeaderLen()], 0)) == 0xffff }

// ComputeChecksum recomputes the header checksum from scratch.
func (ip IPv4) ComputeChecksum() {
	ip.SetChecksum(0)
	ip.SetChecksum(^Fold(Checksum(ip[:ip.HeaderLen()], 0)))
}

// DecTTL decrements the TTL and patches the header checksum incrementally
// (RFC 1624). It returns false, changing nothing, when the TTL is 0 or 1:
// the packet must not be forwarded and the caller answers time-exceeded.
func (ip IPv4) DecTTL() bool {
	if ip[IPv4OffTTL] <= 1 {
		return false
	}
	old := binary.BigEndian.Uint16(ip[IPv4OffTTL:])
	ip[IPv4OffTTL]--
	ip.SetChecksum(UpdateChecksum16(ip.Checksum(), old, binary.BigEndian.Uint16(ip[IPv4OffTTL:])))
	return true
}

// PutIPv4 writes a 20-byte IPv4 header (no options) at b[0:20] with its checksum.
func PutIPv4(b []byte, totalLen, id uint16, df bool, ttl, proto uint8, src, dst [4]byte) {
	b[0] = 0x45
	b[1] = 0
	binary.BigEndian.PutUint16(b[2:], totalLen)
	binary.BigEndian.PutUint16(b[4:], id)
	var ff uint16
	if df {
		ff = IPv4FlagDF
	}
	binary.BigEndian.PutUint16(b[6:], ff)
	b[8] = ttl
	b[9] = proto
	b[10], b[11] = 0, 0
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	binary.BigEndian.PutUint16(b[10:], ^Fold(Checksum(b[:20], 0)))
}
