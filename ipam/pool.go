package ipam

import (
	"fmt"
	"net/netip"
)

// Size limits for CIDRs. A cluster shorter than /8 would swallow the underlay
// and the whole private range; a node subnet longer than /30 has no room for
// the four reserved addresses; one shorter than /16 (65532 pods) is a typo,
// not a node.
const (
	// DefaultNodeBits is the node subnet prefix length used when none is given.
	DefaultNodeBits = 24
	minClusterBits  = 8
	minNodeBits     = 16
	maxNodeBits     = 30
)

// SubnetPool enumerates the node subnets of a cluster CIDR: cluster split
// into equal prefixes of NodeBits length, numbered from 0 in address order.
// It holds no allocation state; the registry decides which are taken.
type SubnetPool struct {
	cluster  netip.Prefix
	nodeBits int
}

// NewSubnetPool returns the pool of /nodeBits subnets inside cluster.
// nodeBits 0 means DefaultNodeBits. The cluster must be an IPv4 network
// address (host bits zero) of at least /8, and nodeBits must be longer than
// the cluster's prefix and within /16../30.
func NewSubnetPool(cluster netip.Prefix, nodeBits int) (*SubnetPool, error) {
	if nodeBits == 0 {
		nodeBits = DefaultNodeBits
	}
	if err := checkPrefix("cluster CIDR", cluster); err != nil {
		return nil, err
	}
	if nodeBits < minNodeBits || nodeBits > maxNodeBits {
		return nil, fmt.Errorf("node subnet length /%d out of range: must be /%d../%d", nodeBits, minNodeBits, maxNodeBits)
	}
	if nodeBits <= cluster.Bits() {
		return nil, fmt.Errorf("node subnet length /%d must be longer than the cluster CIDR %s", nodeBits, cluster)
	}
	return &SubnetPool{cluster: cluster, nodeBits: nodeBits}, nil
}

// ParseCIDR parses an IPv4 CIDR given in a flag or config file and applies
// the checks NewSubnetPool and Open make: IPv4 only, a network address (no
// host bits set), and a prefix length between /8 and /30.
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("parse CIDR %q: %w", s, err)
	}
	if err := checkPrefix("CIDR", p); err != nil {
		return netip.Prefix{}, err
	}
	return p, nil
}

// checkPrefix holds the checks every CIDR weft accepts shares; what names the
// CIDR in its errors, so a user sees which flag was wrong.
func checkPrefix(what string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%s %s is not a valid prefix", what, p)
	case p.Addr().Is4In6():
		return fmt.Errorf("%s %s: IPv4-mapped IPv6 is not supported: write it as IPv4", what, p)
	case p.Addr().Is6():
		return fmt.Errorf("%s %s: IPv6 is not supported yet", what, p)
	case p != p.Masked():
		return fmt.Errorf("%s %s is not a network address (did you mean %s?)", what, p, p.Masked())
	case p.Bits() < minClusterBits:
		return fmt.Errorf("%s %s is too large: at most a /%d", what, p, minClusterBits)
	case p.Bits() > maxNodeBits:
		return fmt.Errorf("%s %s is too small: a /%d is the smallest subnet with room for its reserved addresses", what, p, maxNodeBits)
	}
	return nil
}

// Cluster returns the cluster CIDR the pool splits.
func (sp *SubnetPool) Cluster() netip.Prefix { return sp.cluster }

// NodeBits returns the prefix length of every node subnet.
func (sp *SubnetPool) NodeBits() int { return sp.nodeBits }

// Count returns the number of node subnets in the pool.
func (sp *SubnetPool) Count() int {
	if !sp.cluster.IsValid() {
		return 0
	}
	return 1 << (sp.nodeBits - sp.cluster.Bits())
}

// Nth returns node subnet i, 0 <= i < Count(), counted in address order.
func (sp *SubnetPool) Nth(i int) (netip.Prefix, error) {
	if i < 0 || i >= sp.Count() {
		return netip.Prefix{}, fmt.Errorf("node subnet index %d out of range [0, %d) of %s", i, sp.Count(), sp.cluster)
	}
	base := addrToU32(sp.cluster.Addr())
	a := u32ToAddr(base + uint32(i)<<(32-sp.nodeBits))
	return netip.PrefixFrom(a, sp.nodeBits), nil
}

// Index returns the position of p in the pool; ok is false when p is not
// exactly one of its node subnets (wrong length, host bits set, outside).
func (sp *SubnetPool) Index(p netip.Prefix) (i int, ok bool) {
	if !sp.cluster.IsValid() || !p.IsValid() || !p.Addr().Is4() ||
		p.Bits() != sp.nodeBits || p != p.Masked() || !sp.cluster.Contains(p.Addr()) {
		return 0, false
	}
	off := addrToU32(p.Addr()) - addrToU32(sp.cluster.Addr())
	return int(off >> (32 - sp.nodeBits)), true
}

// Contains reports whether p is one of the pool's node subnets.
func (sp *SubnetPool) Contains(p netip.Prefix) bool {
	_, ok := sp.Index(p)
	return ok
}

// String returns the pool as "10.244.0.0/16 into /24s".
func (sp *SubnetPool) String() string {
	return fmt.Sprintf("%s into /%ds", sp.cluster, sp.nodeBits)
}

func addrToU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
