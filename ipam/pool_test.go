package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func TestNewSubnetPool(t *testing.T) {
	tests := []struct {
		name     string
		cluster  string
		nodeBits int
		wantBits int
		count    int
		first    string
		last     string
		wantErr  string // substring; "" means success
	}{
		{name: "default /16 into /24", cluster: "10.244.0.0/16", nodeBits: 0, wantBits: 24, count: 256, first: "10.244.0.0/24", last: "10.244.255.0/24"},
		{name: "/8 into /26", cluster: "10.0.0.0/8", nodeBits: 26, wantBits: 26, count: 1 << 18, first: "10.0.0.0/26", last: "10.255.255.192/26"},
		{name: "/23 into /24", cluster: "192.168.4.0/23", nodeBits: 24, wantBits: 24, count: 2, first: "192.168.4.0/24", last: "192.168.5.0/24"},
		{name: "/29 into /30", cluster: "172.16.0.8/29", nodeBits: 30, wantBits: 30, count: 2, first: "172.16.0.8/30", last: "172.16.0.12/30"},
		{name: "/8 into /16", cluster: "10.0.0.0/8", nodeBits: 16, wantBits: 16, count: 256, first: "10.0.0.0/16", last: "10.255.0.0/16"},
		{name: "host bits set", cluster: "10.244.1.0/16", wantErr: "cluster CIDR 10.244.1.0/16 is not a network address (did you mean 10.244.0.0/16?)"},
		{name: "node not longer than cluster", cluster: "10.244.0.0/24", nodeBits: 24, wantErr: "must be longer than the cluster CIDR 10.244.0.0/24"},
		{name: "node shorter than cluster", cluster: "10.244.0.0/24", nodeBits: 20, wantErr: "must be longer than the cluster CIDR"},
		{name: "node /31", cluster: "10.244.0.0/16", nodeBits: 31, wantErr: "out of range"},
		{name: "node /32", cluster: "10.244.0.0/16", nodeBits: 32, wantErr: "out of range"},
		{name: "node /8", cluster: "10.0.0.0/8", nodeBits: 8, wantErr: "out of range"},
		{name: "negative node bits", cluster: "10.0.0.0/8", nodeBits: -1, wantErr: "out of range"},
		{name: "absurd node bits", cluster: "10.0.0.0/8", nodeBits: 1000, wantErr: "out of range"},
		{name: "whole internet", cluster: "0.0.0.0/0", nodeBits: 24, wantErr: "too large"},
		{name: "/4 cluster", cluster: "16.0.0.0/4", nodeBits: 24, wantErr: "too large"},
		{name: "IPv6", cluster: "fd00::/48", nodeBits: 64, wantErr: "IPv6 is not supported yet"},
		{name: "IPv4-mapped IPv6", cluster: "::ffff:10.0.0.0/104", nodeBits: 24, wantErr: "IPv4-mapped"},
		{name: "zero prefix", cluster: "", wantErr: "not a valid prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cluster netip.Prefix
			if tt.cluster != "" {
				cluster = netip.MustParsePrefix(tt.cluster)
			}
			sp, err := NewSubnetPool(cluster, tt.nodeBits)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewSubnetPool(%s, %d) error = %v, want one containing %q", tt.cluster, tt.nodeBits, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewSubnetPool(%s, %d): %v", tt.cluster, tt.nodeBits, err)
			}
			if sp.NodeBits() != tt.wantBits || sp.Cluster() != cluster {
				t.Errorf("pool = %s, want %s into /%d", sp, cluster, tt.wantBits)
			}
			if sp.Count() != tt.count {
				t.Fatalf("Count() = %d, want %d", sp.Count(), tt.count)
			}
			checkNth(t, sp, 0, tt.first)
			checkNth(t, sp, sp.Count()-1, tt.last)
			checkEnumeration(t, sp)
		})
	}
}

func TestNewSubnetPoolExactMessage(t *testing.T) {
	_, err := NewSubnetPool(netip.MustParsePrefix("10.244.1.0/16"), 24)
	const want = "cluster CIDR 10.244.1.0/16 is not a network address (did you mean 10.244.0.0/16?)"
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %q", err, want)
	}
}

func checkNth(t *testing.T, sp *SubnetPool, i int, want string) {
	t.Helper()
	got, err := sp.Nth(i)
	if err != nil {
		t.Fatalf("Nth(%d): %v", i, err)
	}
	if got != netip.MustParsePrefix(want) {
		t.Errorf("Nth(%d) = %s, want %s", i, got, want)
	}
}

// checkEnumeration walks the whole pool: subnets are contiguous, inside the
// cluster, of the node length, and Index inverts Nth.
func checkEnumeration(t *testing.T, sp *SubnetPool) {
	t.Helper()
	step := uint32(1) << (32 - sp.NodeBits())
	prev := uint32(0)
	for i := range sp.Count() {
		p, err := sp.Nth(i)
		if err != nil {
			t.Fatalf("Nth(%d): %v", i, err)
		}
		if p.Bits() != sp.NodeBits() || p != p.Masked() || !sp.Cluster().Contains(p.Addr()) {
			t.Fatalf("Nth(%d) = %s: not a node subnet of %s", i, p, sp)
		}
		if v := addrToU32(p.Addr()); i > 0 && v != prev+step {
			t.Fatalf("Nth(%d) = %s does not follow Nth(%d) = %s", i, p, i-1, u32ToAddr(prev))
		}
		prev = addrToU32(p.Addr())
		if j, ok := sp.Index(p); !ok || j != i {
			t.Fatalf("Index(%s) = %d, %v; want %d, true", p, j, ok, i)
		}
		if !sp.Contains(p) {
			t.Fatalf("Contains(%s) = false", p)
		}
	}
	for _, i := range []int{-1, sp.Count(), sp.Count() + 1} {
		if p, err := sp.Nth(i); err == nil {
			t.Errorf("Nth(%d) = %s, want an error", i, p)
		}
	}
}

func TestSubnetPoolIndexRejects(t *testing.T) {
	sp, err := NewSubnetPool(netip.MustParsePrefix("10.244.0.0/16"), 24)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		p    netip.Prefix
	}{
		{"zero", netip.Prefix{}},
		{"shorter", netip.MustParsePrefix("10.244.0.0/23")},
		{"longer", netip.MustParsePrefix("10.244.1.0/25")},
		{"host bits", netip.MustParsePrefix("10.244.1.7/24")},
		{"outside below", netip.MustParsePrefix("10.243.255.0/24")},
		{"outside above", netip.MustParsePrefix("10.245.0.0/24")},
		{"cluster itself", netip.MustParsePrefix("10.244.0.0/16")},
		{"IPv6", netip.MustParsePrefix("fd00::/120")},
		{"IPv4-mapped", netip.MustParsePrefix("::ffff:10.244.1.0/120")},
	}
	for _, tt := range tests {
		if i, ok := sp.Index(tt.p); ok {
			t.Errorf("%s: Index(%s) = %d, true; want false", tt.name, tt.p, i)
		}
		if sp.Contains(tt.p) {
			t.Errorf("%s: Contains(%s) = true", tt.name, tt.p)
		}
	}
	var zero SubnetPool
	if zero.Count() != 0 || zero.Contains(netip.MustParsePrefix("10.244.1.0/24")) {
		t.Errorf("zero SubnetPool: Count() = %d, want 0 and contains nothing", zero.Count())
	}
	if _, err := zero.Nth(0); err == nil {
		t.Error("zero SubnetPool: Nth(0) succeeded")
	}
}

func TestParseCIDR(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "10.244.0.0/16", want: "10.244.0.0/16"},
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.244.1.0/30", want: "10.244.1.0/30"},
		{in: "10.244.1.0/16", wantErr: "CIDR 10.244.1.0/16 is not a network address (did you mean 10.244.0.0/16?)"},
		{in: "10.244.0.0", wantErr: `parse CIDR "10.244.0.0"`},
		{in: "", wantErr: `parse CIDR ""`},
		{in: "10.244.0.0/33", wantErr: "parse CIDR"},
		{in: "fd00::/64", wantErr: "IPv6 is not supported yet"},
		{in: "::ffff:10.0.0.0/104", wantErr: "IPv4-mapped"},
		{in: "10.244.1.0/31", wantErr: "too small"},
		{in: "10.244.1.1/32", wantErr: "too small"},
		{in: "0.0.0.0/0", wantErr: "too large"},
	}
	for _, tt := range tests {
		got, err := ParseCIDR(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseCIDR(%q) = %s, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != netip.MustParsePrefix(tt.want) {
			t.Errorf("ParseCIDR(%q) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestGatewayHostAddr(t *testing.T) {
	tests := []struct {
		subnet, gw, host string // "" means the zero Addr
	}{
		{"10.244.1.0/24", "10.244.1.1", "10.244.1.2"},
		{"10.244.1.7/24", "10.244.1.1", "10.244.1.2"}, // masked first
		{"10.244.0.0/16", "10.244.0.1", "10.244.0.2"},
		{"10.244.1.4/30", "10.244.1.5", "10.244.1.6"},
		{"10.244.1.4/31", "", ""},
		{"10.244.1.4/32", "", ""},
		{"fd00::/64", "", ""},
	}
	parse := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.subnet)
		if got := Gateway(p); got != parse(tt.gw) {
			t.Errorf("Gateway(%s) = %v, want %q", p, got, tt.gw)
		}
		if got := HostAddr(p); got != parse(tt.host) {
			t.Errorf("HostAddr(%s) = %v, want %q", p, got, tt.host)
		}
	}
	if Gateway(netip.Prefix{}).IsValid() || HostAddr(netip.Prefix{}).IsValid() {
		t.Error("zero prefix has a gateway or host address")
	}
}
