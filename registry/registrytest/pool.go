// Package registrytest is the conformance suite every registry backend
// passes (Run), and the small test doubles it needs (Subnets).
package registrytest

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/registry"
)

// Subnets returns a pool of n subnets, 10.244.1.0/24 up to 10.244.n.0/24,
// in that order (n <= 254). It stands in for ipam.SubnetPool.
func Subnets(n int) registry.SubnetSource {
	if n < 0 || n > 254 {
		panic(fmt.Sprintf("registrytest.Subnets(%d): want 0..254", n))
	}
	return subnetList(n)
}

type subnetList int

func (s subnetList) Count() int { return int(s) }

func (s subnetList) Nth(i int) (netip.Prefix, error) {
	if i < 0 || i >= int(s) {
		return netip.Prefix{}, fmt.Errorf("subnet %d out of range [0,%d)", i, int(s))
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 24), nil
}
