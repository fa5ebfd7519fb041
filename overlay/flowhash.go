package overlay

import (
	"encoding/binary"
	"math/bits"

	"github.com/weftnet/weft/packet"
)

// flowSeed keys the flow hash. It is a constant rather than a random boot
// seed (the kernel's choice) so that pcaps, replay benchmarks and tests are
// reproducible; the outer source port only needs spread, not secrecy.
const flowSeed = 0x9e3779b9

// FlowHash returns a hash of the inner frame's flow, the input to the outer
// source port choice. Like the kernel's flow dissector (skb_get_hash) it
// covers the IP addresses, the protocol and — for TCP, UDP, UDP-Lite and
// SCTP in an unfragmented packet — the ports, and it is symmetric: both
// directions of a flow hash alike. One 802.1Q tag is looked through. Frames
// that are not IPv4/IPv6, or too short to parse, hash their MAC addresses and
// EtherType (the kernel's use_eth fallback); fewer than 14 bytes hash as
// whatever is there.
func FlowHash(inner []byte) uint32 {
	if len(inner) < packet.EthHdrLen {
		return hashTail(flowSeed, inner)
	}
	et := packet.EthType(inner)
	l3 := inner[packet.EthHdrLen:]
	if et == packet.EtherTypeVLAN && len(l3) >= 4 {
		et = binary.BigEndian.Uint16(l3[2:4])
		l3 = l3[4:]
	}
	switch et {
	case packet.EtherTypeIPv4:
		if h, ok := hashIPv4(l3); ok {
			return h
		}
	case packet.EtherTypeIPv6:
		if h, ok := hashIPv6(l3); ok {
			return h
		}
	}
	h := uint32(flowSeed)
	h = mixWord(h, binary.BigEndian.Uint32(inner[0:4]))
	h = mixWord(h, binary.BigEndian.Uint32(inner[4:8]))
	h = mixWord(h, binary.BigEndian.Uint32(inner[8:12]))
	h = mixWord(h, uint32(et))
	return fmix(h ^ 16)
}

// FlowSrcPort maps the inner frame's FlowHash into [min, max) the way the
// kernel's udp_flow_src_port does (fold the low half into the high half,
// then scale). min >= max selects [DefaultPortMin, DefaultPortMax).
func FlowSrcPort(inner []byte, min, max uint16) uint16 {
	if min >= max {
		min, max = DefaultPortMin, DefaultPortMax
	}
	h := FlowHash(inner)
	h ^= h << 16
	return uint16((uint64(h)*uint64(max-min))>>32) + min
}

func hashIPv4(ip []byte) (uint32, bool) {
	if len(ip) < packet.IPv4MinHdrLen || ip[0]>>4 != 4 {
		return 0, false
	}
	hl := int(ip[0]&0x0f) * 4
	if hl < packet.IPv4MinHdrLen || hl > len(ip) {
		return 0, false
	}
	src := binary.BigEndian.Uint32(ip[packet.IPv4OffSrc:])
	dst := binary.BigEndian.Uint32(ip[packet.IPv4OffDst:])
	proto := ip[packet.IPv4OffProto]
	var ports uint32
	frag := binary.BigEndian.Uint16(ip[packet.IPv4OffFlagsFrag:])&(packet.IPv4FlagMF|packet.IPv4FragMask) != 0
	if !frag {
		ports = l4Ports(proto, ip[hl:])
	}
	if dst < src || (dst == src && ports&0xffff < ports>>16) {
		src, dst = dst, src
		ports = bits.RotateLeft32(ports, 16)
	}
	h := uint32(flowSeed)
	h = mixWord(h, src)
	h = mixWord(h, dst)
	h = mixWord(h, ports)
	h = mixWord(h, uint32(proto))
	return fmix(h ^ 4), true
}

func hashIPv6(ip []byte) (uint32, bool) {
	if len(ip) < packet.IPv6HdrLen || ip[0]>>4 != 6 {
		return 0, false
	}
	src := ip[packet.IPv6OffSrc : packet.IPv6OffSrc+16]
	dst := ip[packet.IPv6OffDst : packet.IPv6OffDst+16]
	// Extension headers are not walked: a flow that uses them hashes on
	// addresses and next header alone, which is still per-flow stable.
	proto := ip[packet.IPv6OffNextHeader]
	ports := l4Ports(proto, ip[packet.IPv6HdrLen:])
	if c := compare16(src, dst); c > 0 || (c == 0 && ports&0xffff < ports>>16) {
		src, dst = dst, src
		ports = bits.RotateLeft32(ports, 16)
	}
	h := uint32(flowSeed)
	for i := 0; i < 16; i += 4 {
		h = mixWord(h, binary.BigEndian.Uint32(src[i:]))
	}
	for i := 0; i < 16; i += 4 {
		h = mixWord(h, binary.BigEndian.Uint32(dst[i:]))
	}
	h = mixWord(h, ports)
	h = mixWord(h, uint32(proto))
	return fmix(h ^ 6), true
}

// l4Ports returns srcport<<16 | dstport for the protocols whose first four
// bytes are the two ports, 0 otherwise.
func l4Ports(proto uint8, l4 []byte) uint32 {
	switch proto {
	case packet.IPProtoTCP, packet.IPProtoUDP, ipProtoSCTP, ipProtoUDPLite:
		if len(l4) >= 4 {
			return binary.BigEndian.Uint32(l4[0:4])
		}
	}
	return 0
}

const (
	ipProtoSCTP    = 132
	ipProtoUDPLite = 136
)

func compare16(a, b []byte) int {
	x, y := binary.BigEndian.Uint64(a[0:8]), binary.BigEndian.Uint64(b[0:8])
	if x == y {
		x, y = binary.BigEndian.Uint64(a[8:16]), binary.BigEndian.Uint64(b[8:16])
	}
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// mixWord and fmix are MurmurHash3's 32-bit block step and finaliser: cheap,
// and every input bit reaches every output bit.
func mixWord(h, k uint32) uint32 {
	k *= 0xcc9e2d51
	k = bits.RotateLeft32(k, 15)
	k *= 0x1b873593
	h ^= k
	h = bits.RotateLeft32(h, 13)
	return h*5 + 0xe6546b64
}

func fmix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

func hashTail(h uint32, b []byte) uint32 {
	n := uint32(len(b))
	for len(b) >= 4 {
		h = mixWord(h, binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	var k uint32
	for i, c := range b {
		k |= uint32(c) << (8 * i)
	}
	h = mixWord(h, k)
	return fmix(h ^ n)
}
