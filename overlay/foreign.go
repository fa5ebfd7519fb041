package overlay

import (
	"encoding/binary"

	"github.com/weftnet/weft/packet"
)

// CheckForeignInner verifies the TCP or UDP checksum of an inner IPv4
// packet from peer when peer is Foreign, and counts a bad one in the
// peer's PeerStats.RxBadL4Checksum. It reports whether the packet may go
// on (true for anything it cannot or need not check: non-foreign peers,
// non-IPv4, other protocols, fragments, a UDP checksum of 0). The caller
// forwards the packet either way: the receiving pod drops a bad one, as
// the kernel would; the count makes visible why a foreign node's TCP
// fails while ping works.
//
// Why a foreign peer: a Linux sender with transmit checksum offload
// encapsulates TCP segments whose inner checksum holds only the
// pseudo-header sum (CHECKSUM_PARTIAL). A physical NIC completes it; a
// veth never does, and the kernel receiver on the other side trusts it
// (CHECKSUM_UNNECESSARY), but a userspace VTEP cannot know. weftd nodes
// always send complete checksums, so only foreign peers are checked.
//
// Where: on the receive path, after Decapper.Decap accepted the datagram,
// for each inner frame: `if peer.Foreign { overlay.CheckForeignInner(peer,
// inner) }` (datapath Receiver.Receive). It is a plain function over the frame: no
// allocation, one pass over the L4 bytes, foreign peers only.
func CheckForeignInner(peer *Peer, inner []byte) bool {
	if peer == nil || !peer.Foreign || len(inner) < packet.EthHdrLen+packet.IPv4MinHdrLen ||
		packet.EthType(inner) != packet.EtherTypeIPv4 {
		return true
	}
	ip := packet.IPv4(inner[packet.EthHdrLen:])
	if !ip.Valid() || ip.IsFragment() {
		return true
	}
	l4 := ip[ip.HeaderLen():ip.TotalLen()]
	switch ip.Proto() {
	case packet.IPProtoTCP:
		if len(l4) < packet.TCPMinHdrLen {
			return true
		}
	case packet.IPProtoUDP:
		if len(l4) < packet.UDPHdrLen || binary.BigEndian.Uint16(l4[packet.UDPOffChecksum:]) == 0 {
			return true // RFC 768: no checksum
		}
	default:
		return true
	}
	sum := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), ip.Proto(), uint16(len(l4)))
	if packet.Fold(packet.Checksum(l4, sum)) == 0xffff {
		return true
	}
	if st := peer.Stats(); st != nil {
		st.RxBadL4Checksum.Add(1)
	}
	return false
}
