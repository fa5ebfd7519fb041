package datapath

import (
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/packet"
)

// Partial checksums end to end (Config.PartialCsum).
//
// A pod's kernel leaves the TCP or UDP checksum of what it sends through
// its virtio-header TAP partial (CHECKSUM_PARTIAL, virtio NEEDS_CSUM: the
// field holds the pseudo-header sum), expecting "hardware" to complete it.
// Completing it in software costs a pass over every byte (SegmentTCP,
// FinishChecksum). Often nobody needs it completed:
//
//   - a local virtio-header TAP takes the frame partial (a NEEDS_CSUM
//     virtio header): the receiving pod's stack treats a partial checksum
//     as verified, as it does for traffic between two local veths;
//   - a weft peer that advertised registry.CapPartialCsum takes the frame
//     partial too: the datagram carries overlay.FlagPartialCsum, and the
//     peer writes the frame to its pod with a NEEDS_CSUM header. On the
//     wire the outer UDP checksum, which the sending kernel always fills
//     in (weft never sets SO_NO_CHECK) and the receiving kernel verifies
//     before weft reads the datagram, protects the whole inner frame
//     (overlay's TestOuterUDPChecksumSent and TestOuterUDPChecksumChecked).
//     Over IPv4 a field of 0 means "no checksum" (RFC 768) and is
//     accepted unchecked; weft's kernel never sends 0 (a computed 0 goes
//     out as 0xffff), so corruption would have to zero exactly that field.
//
// Everything else gets the checksum completed first: plain TAPs, foreign
// (kernel VXLAN) peers and weftds that did not advertise the capability.

// partialHdr checks that frame f can travel with a partial checksum: a
// TCP or UDP over IPv4 frame, not a fragment, whose L4 header lies inside
// the frame. It returns the virtio header that says the checksum is
// partial and the IP total length (for the switch, which then treats the
// L4 field as a partial sum when it patches NAT).
func partialHdr(f []byte) (netdev.VirtioHdr, uint16, bool) {
	if len(f) < packet.EthHdrLen+packet.IPv4MinHdrLen || packet.EthType(f) != packet.EtherTypeIPv4 {
		return netdev.VirtioHdr{}, 0, false
	}
	ip := packet.IPv4(f[packet.EthHdrLen:])
	if ip[0]>>4 != 4 || ip.IsFragment() {
		return netdev.VirtioHdr{}, 0, false
	}
	ihl, total := ip.HeaderLen(), int(ip.TotalLen())
	var csumOff, minL4 int
	switch ip.Proto() {
	case packet.IPProtoTCP:
		csumOff, minL4 = packet.TCPOffChecksum, packet.TCPMinHdrLen
	case packet.IPProtoUDP:
		csumOff, minL4 = packet.UDPOffChecksum, packet.UDPHdrLen
	default:
		return netdev.VirtioHdr{}, 0, false
	}
	if ihl < packet.IPv4MinHdrLen || total < ihl+minL4 || total > len(ip) {
		return netdev.VirtioHdr{}, 0, false
	}
	h := netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, CsumStart: uint16(packet.EthHdrLen + ihl), CsumOffset: uint16(csumOff)}
	return h, uint16(total), true
}

// needsCsum reports whether h says the frame's checksum is partial.
func needsCsum(h *netdev.VirtioHdr) bool { return h.Flags&netdev.VirtioFlagNeedsCsum != 0 }
