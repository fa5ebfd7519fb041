package packet

import "encoding/binary"

// ICMPv4 (RFC 792) offsets from the start of the ICMP header, and the types
// beyond those in l4.go that the router needs to classify.
const (
	ICMPOffType = 0
	ICMPOffCode = 1
	// ICMPOffRest is the second 32-bit word: identifier/sequence for echo,
	// unused (0) for errors, and for fragmentation-needed the next-hop MTU
	// in its low 16 bits (RFC 1191 §4).
	ICMPOffRest = 4
	ICMPOffMTU  = 6

	ICMPSourceQuench  = 4
	ICMPRedirect      = 5
	ICMPParamProblem  = 12
	ICMPTimestamp     = 13
	ICMPTimestampRepl = 14
	ICMPInfoRequest   = 15
	ICMPInfoReply     = 16
	ICMPAddrMask      = 17
	ICMPAddrMaskReply = 18

	// ICMPErrorQuoteLen is how much of the offending datagram beyond its IP
	// header an ICMP error quotes (RFC 792: "the first 64 bits").
	ICMPErrorQuoteLen = 8
)

// ICMPIsInformational reports whether an ICMP type is a query or reply
// (echo, timestamp, information, address mask). Every other type, known or
// not, is treated as an error message: RFC 1812 §4.3.2.7 forbids answering
// an error with an error, and erring towards silence is the safe side.
func ICMPIsInformational(typ uint8) bool {
	switch typ {
	case ICMPEchoReply, ICMPEchoRequest, ICMPTimestamp, ICMPTimestampRepl,
		ICMPInfoRequest, ICMPInfoReply, ICMPAddrMask, ICMPAddrMaskReply:
		return true
	}
	return false
}

// PutICMPHeader writes an 8-byte ICMP header at b[0:8] with a zero
// checksum: type, code and the 32-bit "rest of header" word.
func PutICMPHeader(b []byte, typ, code uint8, rest uint32) {
	b[ICMPOffType] = typ
	b[ICMPOffCode] = code
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint32(b[ICMPOffRest:], rest)
}

// SetICMPChecksum computes the checksum over the whole ICMP message b
// (header and data) and stores it.
func SetICMPChecksum(b []byte) {
	b[ICMPOffChecksum], b[ICMPOffChecksum+1] = 0, 0
	binary.BigEndian.PutUint16(b[ICMPOffChecksum:], ^Fold(Checksum(b, 0)))
}
