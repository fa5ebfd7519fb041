package packet

import (
	"encoding/binary"
	"fmt"
	"net"
)

// Ethernet framing.
const (
	EthHdrLen = 14 // dst MAC, src MAC, EtherType; no VLAN tag
	EthMinLen = 14

	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100
	EtherTypeIPv6 = 0x86DD
)

// MAC is an Ethernet address as a comparable value, usable as a map key.
type MAC [6]byte

// BroadcastMAC is ff:ff:ff:ff:ff:ff.
var BroadcastMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// IsMulticast reports whether the group bit is set (broadcast included).
func (m MAC) IsMulticast() bool { return m[0]&0x01 != 0 }

// IsBroadcast reports whether m is ff:ff:ff:ff:ff:ff.
func (m MAC) IsBroadcast() bool { return m == BroadcastMAC }

// IsZero reports whether m is 00:00:00:00:00:00.
func (m MAC) IsZero() bool { return m == MAC{} }

func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// MarshalText makes MACs print as "02:..." in JSON and YAML.
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText parses the colon form.
func (m *MAC) UnmarshalText(b []byte) error {
	p, err := ParseMAC(string(b))
	if err != nil {
		return err
	}
	*m = p
	return nil
}

// ParseMAC parses a 6-byte Ethernet address in any form net.ParseMAC accepts.
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, err
	}
	if len(hw) != 6 {
		return MAC{}, fmt.Errorf("mac %q: want 6 bytes, got %d", s, len(hw))
	}
	return MAC(hw), nil
}

// EthDst returns the destination MAC of frame b (len(b) >= EthHdrLen).
func EthDst(b []byte) MAC { return MAC(b[0:6]) }

// EthSrc returns the source MAC of frame b (len(b) >= EthHdrLen).
func EthSrc(b []byte) MAC { return MAC(b[6:12]) }

// EthType returns the EtherType of frame b (len(b) >= EthHdrLen).
func EthType(b []byte) uint16 { return binary.BigEndian.Uint16(b[12:14]) }

// PutEth writes an Ethernet header at b[0:14].
func PutEth(b []byte, dst, src MAC, etherType uint16) {
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:14], etherType)
}
