package vswitch

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
)

var (
	vipWeb = netip.MustParseAddr("10.96.0.10")
	vipDNS = netip.MustParseAddr("10.96.0.53")
)

func backend(ip string, port uint16, ready bool) ServiceBackend {
	return ServiceBackend{Addr: netip.MustParseAddr(ip), Port: port, Ready: ready, Serving: ready}
}

func webService(bs ...ServiceBackend) ServiceSpec {
	return ServiceSpec{Name: "default/web:http", ClusterIP: vipWeb, Port: 80, Proto: packet.IPProtoTCP, Backends: bs}
}

func TestSetServicesValidates(t *testing.T) {
	good := webService(backend("10.244.1.3", 8080, true))
	tests := []struct {
		name    string
		svcs    func() []ServiceSpec
		wantErr string
	}{
		{"good", func() []ServiceSpec { return []ServiceSpec{good} }, ""},
		{"empty set", func() []ServiceSpec { return nil }, ""},
		{"no backends is fine", func() []ServiceSpec { return []ServiceSpec{webService()} }, ""},
		{"no name", func() []ServiceSpec { s := good; s.Name = ""; return []ServiceSpec{s} }, "no name"},
		{"ipv6 cluster IP", func() []ServiceSpec { s := good; s.ClusterIP = netip.MustParseAddr("fd00::1"); return []ServiceSpec{s} }, "not IPv4"},
		{"cluster IP in node subnet", func() []ServiceSpec { s := good; s.ClusterIP = podAIP; return []ServiceSpec{s} }, "node subnet"},
		{"cluster IP multicast", func() []ServiceSpec {
			s := good
			s.ClusterIP = netip.MustParseAddr("224.0.0.1")
			return []ServiceSpec{s}
		}, "unicast"},
		{"cluster IP outside service CIDR", func() []ServiceSpec {
			s := good
			s.ClusterIP = netip.MustParseAddr("10.200.0.1")
			return []ServiceSpec{s}
		}, "outside the service CIDR"},
		{"port 0", func() []ServiceSpec { s := good; s.Port = 0; return []ServiceSpec{s} }, "port 0"},
		{"sctp", func() []ServiceSpec { s := good; s.Proto = 132; return []ServiceSpec{s} }, "protocol 132"},
		{"negative affinity", func() []ServiceSpec { s := good; s.AffinityTimeout = -time.Second; return []ServiceSpec{s} }, "negative"},
		{"backend port 0", func() []ServiceSpec { return []ServiceSpec{webService(backend("10.244.1.3", 0, true))} }, "port 0"},
		{"backend broadcast", func() []ServiceSpec { return []ServiceSpec{webService(backend("255.255.255.255", 80, true))} }, "unicast"},
		{"backend twice", func() []ServiceSpec {
			return []ServiceSpec{webService(backend("10.244.1.3", 80, true), backend("10.244.1.3", 80, false))}
		}, "given twice"},
		{"same frontend twice", func() []ServiceSpec { s := good; s.Name = "other/web:http"; return []ServiceSpec{good, s} }, "already served"},
		{"same name twice", func() []ServiceSpec { s := good; s.Port = 81; return []ServiceSpec{good, s} }, "name given twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, func(c *Config) { c.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/12") })
			if err := s.SetServices([]ServiceSpec{webService(backend("10.244.1.4", 1, true))}); err != nil {
				t.Fatal(err)
			}
			before := s.Services()
			err := s.SetServices(tc.svcs())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			// A refused set changes nothing.
			after := s.Services()
			if len(after) != 1 || after[0].Backends[0] != before[0].Backends[0] {
				t.Fatalf("services changed by a refused set: %+v", after)
			}
		})
	}
}

func TestNewValidatesServiceConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"maglev not prime", func(c *Config) { c.MaglevSize = 16383 }, "prime"},
		{"maglev too big", func(c *Config) { c.MaglevSize = 262139 }, "prime"},
		{"service CIDR over the subnet", func(c *Config) { c.ServiceCIDR = netip.MustParsePrefix("10.0.0.0/8") }, "service CIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{RouterMAC: routerMAC, Subnet: subnet}
			tc.mod(&c)
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
	s, err := New(Config{RouterMAC: routerMAC, Subnet: subnet, MaglevSize: 65521})
	if err != nil {
		t.Fatalf("maglev 65521: %v", err)
	}
	if got := s.Config().MaglevSize; got != 65521 {
		t.Fatalf("MaglevSize %d", got)
	}
}

// Services lists what was set, sorted; the compiled frontend picks among
// the eligible backends only: ready ones, else serving+terminating ones.
func TestSetServicesEligible(t *testing.T) {
	term := ServiceBackend{Addr: netip.MustParseAddr("10.244.2.9"), Port: 53, Serving: true, Terminating: true}
	gone := ServiceBackend{Addr: netip.MustParseAddr("10.244.2.8"), Port: 53, Terminating: true}
	tests := []struct {
		name      string
		backends  []ServiceBackend
		local     bool
		wantAddrs []string
	}{
		{"ready only", []ServiceBackend{backend("10.244.1.4", 53, true), backend("10.244.1.3", 53, false), term}, false, []string{"10.244.1.4"}},
		{"serving fallback", []ServiceBackend{backend("10.244.1.3", 53, false), term, gone}, false, []string{"10.244.2.9"}},
		{"nothing eligible", []ServiceBackend{backend("10.244.1.3", 53, false), gone}, false, nil},
		{"internal local", []ServiceBackend{
			{Addr: podAIP, Port: 53, Ready: true, Local: true}, backend("10.244.2.7", 53, true),
		}, true, []string{"10.244.1.3"}},
		{"internal local none", []ServiceBackend{backend("10.244.2.7", 53, true)}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			sp := ServiceSpec{Name: "kube-system/dns:dns", ClusterIP: vipDNS, Port: 53, Proto: packet.IPProtoUDP, Backends: tc.backends, InternalLocal: tc.local}
			if err := s.SetServices([]ServiceSpec{sp}); err != nil {
				t.Fatal(err)
			}
			f := s.services.Load().lookup(ip4Key(vipDNS.As4()), 53, packet.IPProtoUDP)
			if f == nil {
				t.Fatal("frontend not found")
			}
			set := f.set()
			var got []string
			for _, b := range set.list {
				got = append(got, keyIP4(b.ip).String())
			}
			if strings.Join(got, ",") != strings.Join(tc.wantAddrs, ",") {
				t.Fatalf("eligible %v, want %v", got, tc.wantAddrs)
			}
			if len(tc.wantAddrs) == 0 && set.table != nil {
				t.Fatal("a Maglev table without backends")
			}
			if s.services.Load().lookup(ip4Key(vipDNS.As4()), 53, packet.IPProtoTCP) != nil {
				t.Fatal("TCP/53 found on a UDP-only frontend")
			}
			if l := s.Services(); len(l) != 1 || len(l[0].Backends) != len(tc.backends) {
				t.Fatalf("Services() = %+v", l)
			}
		})
	}
}

// Flows hashed onto a frontend spread evenly over its backends (Maglev,
// 16381 slots): 10,000 flow hashes over 4 backends, each within ±10 %.
func TestServicePickSpreads(t *testing.T) {
	s := newTestSwitch(t, nil)
	var bs []ServiceBackend
	for _, ip := range []string{"10.244.1.3", "10.244.1.4", "10.244.2.7", "10.244.2.8"} {
		bs = append(bs, backend(ip, 8080, true))
	}
	if err := s.SetServices([]ServiceSpec{webService(bs...)}); err != nil {
		t.Fatal(err)
	}
	f := s.services.Load().lookup(ip4Key(vipWeb.As4()), 80, packet.IPProtoTCP)
	count := map[uint32]int{}
	for i := range 10000 {
		b, ok := f.set().pick(flowHash(0x0af40103, ip4Key(vipWeb.As4()), uint16(20000+i), 80, packet.IPProtoTCP))
		if !ok {
			t.Fatal("no pick")
		}
		count[b.ip]++
	}
	for ip, n := range count {
		if n < 2250 || n > 2750 {
			t.Errorf("backend %s: %d of 10000 flows", keyIP4(ip), n)
		}
	}
	if len(count) != 4 {
		t.Fatalf("picked %d backends, want 4", len(count))
	}
}
