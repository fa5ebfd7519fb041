package overlay

import (
	"encoding/binary"
	"errors"

	"github.com/weftnet/weft/packet"
)

// VXLAN header (RFC 7348 §5):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|R|R|R|R|I|R|R|R|            Reserved                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                VXLAN Network Identifier (VNI) |   Reserved    |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const (
	// HeaderLen is the size of the VXLAN header.
	HeaderLen = 8
	// OuterIPv4Len is the full encapsulation overhead over IPv4: outer
	// Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. Pod MTU = underlay MTU - 50.
	OuterIPv4Len = packet.EthHdrLen + packet.IPv4MinHdrLen + packet.UDPHdrLen + HeaderLen
	// DefaultPort is the IANA-assigned VXLAN UDP port. (The Linux kernel's
	// own default is 8472; flannel sets 4789 explicitly, so do we.)
	DefaultPort = 4789
	// MaxVNI is the largest 24-bit VNI.
	MaxVNI = 1<<24 - 1
	// FlagVNI is the I flag: "the VNI is valid". Every other flag bit is
	// reserved.
	FlagVNI = 0x08
	// FlagPartialCsum is weft's own use of a reserved bit (bit 16 of the
	// first word, byte 1 = 0x01): the inner TCP or UDP checksum is partial
	// (its field holds the pseudo-header sum, as a virtio NEEDS_CSUM frame
	// carries it) and the receiver hands it to its pod's TAP as such, so
	// that neither end computes it. The outer UDP checksum covers the
	// datagram on the wire. No published extension uses the bit (GBP: bits
	// 31, 22, 19 and 0-15; RCO: 21; GPE: 29-28, 26, 24 and 0-7), but a
	// receiver that does not know it drops the datagram (the Linux kernel,
	// and weftds before it: ParseHeader), so it goes only to peers that
	// advertised the capability (registry.CapPartialCsum), never to a
	// kernel VXLAN node.
	FlagPartialCsum = 1 << 16
	// MinPayloadLen is the shortest acceptable UDP payload: a VXLAN header
	// and an inner Ethernet header.
	MinPayloadLen = HeaderLen + packet.EthHdrLen

	// DefaultPortMin and DefaultPortMax bound the flow-hashed outer source
	// port, [min, max): Linux's default ip_local_port_range is 32768-60999.
	DefaultPortMin = 32768
	DefaultPortMax = 61000
)

const (
	// maxInnerLen is the largest inner frame whose outer IPv4 total length
	// still fits in 16 bits.
	maxInnerLen = 0xffff - packet.IPv4MinHdrLen - packet.UDPHdrLen - HeaderLen
)

// Errors from the encapsulation functions. They are sentinels: returning one
// does not allocate.
var (
	ErrNoHeadroom  = errors.New("overlay: not enough headroom in front of the frame for the outer headers")
	ErrBadLength   = errors.New("overlay: frame offset/length outside the buffer or shorter than an Ethernet header")
	ErrFrameTooBig = errors.New("overlay: encapsulated frame would exceed the IPv4 maximum of 65535 bytes")
	ErrBadVNI      = errors.New("overlay: VNI does not fit in 24 bits")
)

// PutHeader writes a VXLAN header with the I flag and vni into b[0:8];
// reserved bits are zero. b must be at least HeaderLen bytes and vni at most
// MaxVNI (only its low 24 bits are written); use Encap where either comes
// from input.
func PutHeader(b []byte, vni uint32) {
	_ = b[HeaderLen-1]
	binary.BigEndian.PutUint32(b[0:4], FlagVNI<<24)
	binary.BigEndian.PutUint32(b[4:8], vni<<8)
}

// ParseHeader checks the VXLAN header at the start of payload and returns
// its VNI. payload must hold at least a VXLAN header and an inner Ethernet
// header (DropTooShort otherwise).
//
// Reserved bits: RFC 7348 says receivers ignore them, but the Linux kernel
// (vxlan_rcv) drops any frame with a flag or reserved bit it has not been
// told to expect ("more robust and provides a little more security in adding
// extensions"), and a kernel VXLAN device is the peer we interoperate with.
// We follow the kernel: a clear I flag is DropBadFlags, any other bit set in
// the flags word or the last reserved byte is DropReservedBits — except
// our own FlagPartialCsum (see PartialCsum; Decap refuses it from a
// foreign peer).
func ParseHeader(payload []byte) (vni uint32, reason DropReason) {
	if len(payload) < MinPayloadLen {
		return 0, DropTooShort
	}
	w0 := binary.BigEndian.Uint32(payload[0:4])
	w1 := binary.BigEndian.Uint32(payload[4:8])
	if w0&(FlagVNI<<24) == 0 {
		return 0, DropBadFlags
	}
	if w0&^FlagPartialCsum != FlagVNI<<24 || w1&0xff != 0 {
		return 0, DropReservedBits
	}
	return w1 >> 8, DropNone
}

// PartialCsum reports whether the VXLAN header at the start of payload (at
// least HeaderLen bytes, checked by ParseHeader) has FlagPartialCsum.
func PartialCsum(payload []byte) bool { return payload[1]&(FlagPartialCsum>>16) != 0 }

// MarkPartialCsum sets FlagPartialCsum in the VXLAN header at the start of
// hdr (written by PutHeader or Encap).
func MarkPartialCsum(hdr []byte) { hdr[1] |= FlagPartialCsum >> 16 }

// Encap prepends a VXLAN header for vni in front of the inner frame at
// buf[off:off+n] and returns the start of the UDP payload, off-HeaderLen.
// This is the form for Conn: the kernel adds the outer IPv4 and UDP headers.
func Encap(buf []byte, off, n int, vni uint32) (start int, err error) {
	if off < 0 || n < packet.EthHdrLen || off > len(buf) || n > len(buf)-off {
		return 0, ErrBadLength
	}
	if off < HeaderLen {
		return 0, ErrNoHeadroom
	}
	if n > maxInnerLen {
		return 0, ErrFrameTooBig
	}
	if vni > MaxVNI {
		return 0, ErrBadVNI
	}
	start = off - HeaderLen
	PutHeader(buf[start:off], vni)
	return start, nil
}
