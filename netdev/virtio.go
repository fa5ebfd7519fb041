package netdev

import (
	"encoding/binary"
	"errors"

	"github.com/weftnet/weft/packet"
)

// VirtioHdrLen is the size of struct virtio_net_hdr, the prefix of every
// read and write on a TAP opened with IFF_VNET_HDR (we never change it with
// TUNSETVNETHDRSZ).
const VirtioHdrLen = 10

// virtio_net_hdr flag bits and GSO types (linux/virtio_net.h).
const (
	VirtioFlagNeedsCsum = 0x01 // csum_start/csum_offset valid; checksum still to be completed
	VirtioFlagDataValid = 0x02 // (kernel to us) checksum already verified
	VirtioFlagRSCInfo   = 0x04 // never produced by tun; rejected

	GSONone  = 0x00
	GSOTCPv4 = 0x01
	GSOUDP   = 0x03 // legacy UFO; never negotiated, rejected
	GSOTCPv6 = 0x04
	GSOUDPL4 = 0x05 // USO (kernel 6.2+)
	GSOECN   = 0x80 // ORed into the GSO type: TCP segments carry ECN
)

// Errors from VirtioHdr.Decode, Check and FinishChecksum.
var (
	ErrVirtioShort = errors.New("virtio_net_hdr: shorter than 10 bytes")
	ErrVirtioFlags = errors.New("virtio_net_hdr: unsupported flags")
	ErrVirtioGSO   = errors.New("virtio_net_hdr: bad gso type or size")
	ErrVirtioCsum  = errors.New("virtio_net_hdr: checksum offsets outside the frame")
)

// VirtioHdr is a decoded struct virtio_net_hdr. On a TAP, offsets count
// from the start of the Ethernet header.
//
// The kernel writes the header in host byte order because we never call
// TUNSETVNETLE/BE, so the codec uses binary.NativeEndian.
type VirtioHdr struct {
	Flags      uint8
	GSOType    uint8  // GSO* value, possibly ORed with GSOECN; use GSO()
	HdrLen     uint16 // length of the headers before the payload; not trusted on read
	GSOSize    uint16 // payload bytes per segment (TCP MSS, USO datagram size)
	CsumStart  uint16 // where checksumming starts: the L4 header offset
	CsumOffset uint16 // checksum field offset from CsumStart (TCP 16, UDP 6)
}

// Decode fills h from the first VirtioHdrLen bytes of b.
func (h *VirtioHdr) Decode(b []byte) error {
	if len(b) < VirtioHdrLen {
		return ErrVirtioShort
	}
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:])
	return nil
}

// Encode writes h into the first VirtioHdrLen bytes of b.
func (h *VirtioHdr) Encode(b []byte) error {
	if len(b) < VirtioHdrLen {
		return ErrVirtioShort
	}
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
	return nil
}

// GSO is the GSO type without the ECN bit.
func (h *VirtioHdr) GSO() uint8 { return h.GSOType &^ GSOECN }

// Check validates h for a frame of frameLen bytes: only the flags and GSO
// types tun produces for the offloads we negotiate, GSO frames marked
// NEEDS_CSUM with a nonzero segment size, and a checksum field inside the
// frame at an even offset from CsumStart. HdrLen is not checked: the kernel may set it to the whole first
// packet on forwarded traffic, so segmentation must recompute it.
func (h *VirtioHdr) Check(frameLen int) error {
	if h.Flags&^(VirtioFlagNeedsCsum|VirtioFlagDataValid) != 0 {
		return ErrVirtioFlags
	}
	switch h.GSO() {
	case GSONone:
		if h.GSOType&GSOECN != 0 {
			return ErrVirtioGSO
		}
	case GSOTCPv4, GSOTCPv6, GSOUDPL4:
		if h.GSOSize == 0 || h.Flags&VirtioFlagNeedsCsum == 0 {
			return ErrVirtioGSO
		}
	default:
		return ErrVirtioGSO
	}
	if h.Flags&VirtioFlagNeedsCsum != 0 && !csumInFrame(h, frameLen) {
		return ErrVirtioCsum
	}
	return nil
}

// csumInFrame: the checksum field lies inside the frame, 16-bit aligned
// relative to CsumStart (an odd offset would byte-swap it inside the sum;
// tun only emits 16 for TCP and 6 for UDP).
func csumInFrame(h *VirtioHdr, frameLen int) bool {
	return h.CsumOffset&1 == 0 && int(h.CsumStart)+int(h.CsumOffset)+2 <= frameLen
}

// FinishChecksum completes a CHECKSUM_PARTIAL frame in software: when h
// says NEEDS_CSUM, the field at CsumStart+CsumOffset holds the folded
// pseudo-header sum, so the one's-complement sum from CsumStart to the end of
// the frame, complemented, is the checksum. It then clears NEEDS_CSUM in h.
// Like the kernel's skb_checksum_help, a result of 0 is stored as 0xffff
// (0 means "no checksum" to UDP). A frame without NEEDS_CSUM is left alone.
func FinishChecksum(frame []byte, h *VirtioHdr) error {
	if h.Flags&VirtioFlagNeedsCsum == 0 {
		return nil
	}
	if !csumInFrame(h, len(frame)) {
		return ErrVirtioCsum
	}
	field := int(h.CsumStart) + int(h.CsumOffset)
	c := ^packet.Fold(packet.Checksum(frame[h.CsumStart:], 0))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[field:], c)
	h.Flags &^= VirtioFlagNeedsCsum
	return nil
}
