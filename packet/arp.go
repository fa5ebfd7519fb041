package packet

import (
	"encoding/binary"
	"net/netip"
)

// ARP for IPv4 over Ethernet (RFC 826), offsets from the start of the ARP
// header (after the Ethernet header).
const (
	ARPLen = 28 // htype, ptype, hlen, plen, op, sha, spa, tha, tpa

	ARPOffHType = 0
	ARPOffPType = 2
	ARPOffHLen  = 4
	ARPOffPLen  = 5
	ARPOffOp    = 6
	ARPOffSHA   = 8
	ARPOffSPA   = 14
	ARPOffTHA   = 18
	ARPOffTPA   = 24

	ARPHTypeEthernet = 1
	ARPOpRequest     = 1
	ARPOpReply       = 2
)

// ARP is a view of an ARP packet at the start of the slice. Methods assume
// len >= ARPLen; call Valid first on untrusted input.
type ARP []byte

// Valid reports whether a holds an Ethernet/IPv4 ARP request or reply.
func (a ARP) Valid() bool {
	return len(a) >= ARPLen &&
		binary.BigEndian.Uint16(a[ARPOffHType:]) == ARPHTypeEthernet &&
		binary.BigEndian.Uint16(a[ARPOffPType:]) == EtherTypeIPv4 &&
		a[ARPOffHLen] == 6 && a[ARPOffPLen] == 4 &&
		(a.Op() == ARPOpRequest || a.Op() == ARPOpReply)
}

func (a ARP) Op() uint16           { return binary.BigEndian.Uint16(a[ARPOffOp:]) }
func (a ARP) SenderMAC() MAC       { return MAC(a[ARPOffSHA : ARPOffSHA+6]) }
func (a ARP) SenderIP4() [4]byte   { return [4]byte(a[ARPOffSPA : ARPOffSPA+4]) }
func (a ARP) TargetMAC() MAC       { return MAC(a[ARPOffTHA : ARPOffTHA+6]) }
func (a ARP) TargetIP4() [4]byte   { return [4]byte(a[ARPOffTPA : ARPOffTPA+4]) }
func (a ARP) SenderIP() netip.Addr { return netip.AddrFrom4(a.SenderIP4()) }
func (a ARP) TargetIP() netip.Addr { return netip.AddrFrom4(a.TargetIP4()) }

// PutARP writes an Ethernet/IPv4 ARP packet at b[0:ARPLen].
func PutARP(b []byte, op uint16, sha MAC, spa [4]byte, tha MAC, tpa [4]byte) {
	binary.BigEndian.PutUint16(b[ARPOffHType:], ARPHTypeEthernet)
	binary.BigEndian.PutUint16(b[ARPOffPType:], EtherTypeIPv4)
	b[ARPOffHLen] = 6
	b[ARPOffPLen] = 4
	binary.BigEndian.PutUint16(b[ARPOffOp:], op)
	copy(b[ARPOffSHA:], sha[:])
	copy(b[ARPOffSPA:], spa[:])
	copy(b[ARPOffTHA:], tha[:])
	copy(b[ARPOffTPA:], tpa[:])
}
