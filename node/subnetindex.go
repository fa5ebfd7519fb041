package node

import (
	"encoding/binary"
	"net/netip"
)

// subnetIndex holds the accepted peers' subnets so that a new lease's
// subnet is checked against them without looking at each one (issue 16:
// checking every lease against every accepted peer made a 5,000-node
// snapshot cost O(N^2)). Two IPv4 prefixes overlap only when one contains
// the other, so overlap probes the prefix's supernets at the lengths in use,
// and its subnets at the longer lengths in use; in a cluster whose nodes all
// have one subnet size that is one map lookup.
type subnetIndex struct {
	owner map[netip.Prefix]string // masked prefix -> node name
	count [33]int                 // prefixes held per length
}

// subnetProbeLimit bounds how many longer prefixes overlap enumerates
// before it scans every held prefix instead (a /16 lease among /24s: 256
// probes; a /8 among them: a scan).
const subnetProbeLimit = 1024

func (x *subnetIndex) add(p netip.Prefix, name string) {
	if x.owner == nil {
		x.owner = make(map[netip.Prefix]string)
	}
	p = p.Masked()
	if _, dup := x.owner[p]; !dup {
		x.count[p.Bits()]++
	}
	x.owner[p] = name
}

func (x *subnetIndex) remove(p netip.Prefix) {
	p = p.Masked()
	if _, ok := x.owner[p]; ok {
		delete(x.owner, p)
		x.count[p.Bits()]--
	}
}

// overlap returns a held prefix that overlaps p (IPv4) and its owner: the
// shortest such supernet of p, else the longer prefix inside p that is
// shortest, then lowest.
func (x *subnetIndex) overlap(p netip.Prefix) (netip.Prefix, string, bool) {
	p = p.Masked()
	for b := 0; b <= p.Bits(); b++ {
		if x.count[b] == 0 {
			continue
		}
		q := netip.PrefixFrom(p.Addr(), b).Masked()
		if name, ok := x.owner[q]; ok {
			return q, name, true
		}
	}
	a4 := p.Addr().As4()
	base := binary.BigEndian.Uint32(a4[:])
	for b := p.Bits() + 1; b <= 32; b++ {
		if x.count[b] == 0 {
			continue
		}
		if n := 1 << (b - p.Bits()); n > subnetProbeLimit || n > len(x.owner) {
			return x.scan(p)
		}
		for i := range uint32(1) << (b - p.Bits()) {
			var q4 [4]byte
			binary.BigEndian.PutUint32(q4[:], base|i<<(32-b))
			q := netip.PrefixFrom(netip.AddrFrom4(q4), b)
			if name, ok := x.owner[q]; ok {
				return q, name, true
			}
		}
	}
	return netip.Prefix{}, "", false
}

// scan finds, among all held prefixes longer than p, the one inside p that
// is shortest, then lowest (overlap has ruled out the supernets).
func (x *subnetIndex) scan(p netip.Prefix) (netip.Prefix, string, bool) {
	var best netip.Prefix
	for q := range x.owner {
		if q.Bits() <= p.Bits() || !p.Contains(q.Addr()) {
			continue
		}
		if !best.IsValid() || q.Bits() < best.Bits() || (q.Bits() == best.Bits() && q.Addr().Less(best.Addr())) {
			best = q
		}
	}
	if !best.IsValid() {
		return netip.Prefix{}, "", false
	}
	return best, x.owner[best], true
}
