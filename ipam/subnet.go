package ipam

import (
	"fmt"
	"net/netip"
)

// Offsets of the reserved addresses from a node subnet's network address.
const (
	gatewayOffset = 1
	hostOffset    = 2
	firstPodOff   = 3
)

// Gateway returns the subnet's .1, the weft router every pod routes through.
// It returns the zero Addr for a subnet too small to have one (/31, /32).
func Gateway(subnet netip.Prefix) netip.Addr { return reservedAddr(subnet, gatewayOffset) }

// HostAddr returns the subnet's .2, the node's own host port (weft0).
// It returns the zero Addr for a subnet too small to have one (/31, /32).
func HostAddr(subnet netip.Prefix) netip.Addr { return reservedAddr(subnet, hostOffset) }

func reservedAddr(subnet netip.Prefix, off uint32) netip.Addr {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() > maxNodeBits {
		return netip.Addr{}
	}
	return u32ToAddr(addrToU32(subnet.Masked().Addr()) + off)
}

// checkNodeSubnet applies the rules for a subnet pods get addresses from. A
// /30 passes: it has no pod addresses but still serves a node whose only
// port is its host port.
func checkNodeSubnet(subnet netip.Prefix) error {
	if err := checkPrefix("node subnet", subnet); err != nil {
		return err
	}
	if subnet.Bits() < minNodeBits {
		return fmt.Errorf("node subnet %s is too large: at most a /%d", subnet, minNodeBits)
	}
	return nil
}

// podRange is the span of pod addresses of a valid node subnet, as integers
// so the round-robin walk is plain arithmetic.
type podRange struct {
	first, last uint32 // inclusive; last < first when the subnet has none
}

func podRangeOf(subnet netip.Prefix) podRange {
	base := addrToU32(subnet.Addr())
	size := uint32(1) << (32 - subnet.Bits())
	return podRange{first: base + firstPodOff, last: base + size - 2}
}

// capacity is the number of pod addresses.
func (r podRange) capacity() int {
	if r.last < r.first {
		return 0
	}
	return int(r.last-r.first) + 1
}

func (r podRange) contains(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	v := addrToU32(a)
	return v >= r.first && v <= r.last
}

// next returns the pod address after v, wrapping from the last to the first.
// v need not be in the range: anything outside restarts at the first.
func (r podRange) next(v uint32) uint32 {
	if v < r.first || v >= r.last {
		return r.first
	}
	return v + 1
}
