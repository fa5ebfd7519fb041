package packet

import "encoding/binary"

// UDP, TCP, ICMP and IPv6 constants and the few accessors the pipeline needs.
const (
	UDPHdrLen    = 8
	TCPMinHdrLen = 20
	ICMPHdrLen   = 8
	IPv6HdrLen   = 40

	// ICMPv4 types and codes (RFC 792, RFC 1191).
	ICMPEchoReply       = 0
	ICMPDestUnreachable = 3
	ICMPEchoRequest     = 8
	ICMPTimeExceeded    = 11
	ICMPCodeNetUnreach  = 0
	ICMPCodeHostUnreach = 1
	ICMPCodeFragNeeded  = 4
	ICMPCodeTTLExceeded = 0
	TCPFlagFIN          = 0x01
	TCPFlagSYN          = 0x02
	TCPFlagRST          = 0x04
	TCPFlagPSH          = 0x08
	TCPFlagACK          = 0x10
	TCPFlagURG          = 0x20
	TCPFlagECE          = 0x40
	TCPFlagCWR          = 0x80
	IPv6OffPayloadLen   = 4
	IPv6OffNextHeader   = 6
	IPv6OffHopLimit     = 7
	IPv6OffSrc          = 8
	IPv6OffDst          = 24
	UDPOffSrcPort       = 0
	UDPOffDstPort       = 2
	UDPOffLen           = 4
	UDPOffChecksum      = 6
	TCPOffChecksum      = 16
	ICMPOffChecksum     = 2
)

// Ports returns the source and destination port of a TCP or UDP header
// (len(l4) >= 4).
func Ports(l4 []byte) (src, dst uint16) {
	return binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
}

// PutUDP writes a UDP header at b[0:8] with checksum 0 ("none", allowed on
// IPv4 and what VXLAN senders use: RFC 7348 §5).
func PutUDP(b []byte, src, dst, length uint16) {
	binary.BigEndian.PutUint16(b[0:], src)
	binary.BigEndian.PutUint16(b[2:], dst)
	binary.BigEndian.PutUint16(b[4:], length)
	b[6], b[7] = 0, 0
}
