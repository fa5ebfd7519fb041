package vswitch

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
)

func TestNewValidates(t *testing.T) {
	good := Config{RouterMAC: routerMAC, Subnet: subnet}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"explicit gateway", func(c *Config) { c.Gateway = mustAddr("10.244.1.254") }, ""},
		{"zero router MAC", func(c *Config) { c.RouterMAC = packet.MAC{} }, "router MAC"},
		{"multicast router MAC", func(c *Config) { c.RouterMAC = packet.MAC{1, 0, 0x5e, 0, 0, 1} }, "router MAC"},
		{"no subnet", func(c *Config) { c.Subnet = netip.Prefix{} }, "subnet"},
		{"ipv6 subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") }, "subnet"},
		{"host bits", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.244.1.5/24") }, "host bits"},
		{"/31", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.244.1.0/31") }, "length"},
		{"gateway outside", func(c *Config) { c.Gateway = mustAddr("10.9.9.9") }, "gateway"},
		{"gateway is network address", func(c *Config) { c.Gateway = mustAddr("10.244.1.0") }, "gateway"},
		{"gateway is broadcast", func(c *Config) { c.Gateway = mustAddr("10.244.1.255") }, "gateway"},
		{"mtu too small", func(c *Config) { c.MTU = 500 }, "mtu"},
		{"negative fdb", func(c *Config) { c.FDBSize = -1 }, "fdb size"},
		{"fdb over max", func(c *Config) { c.FDBSize = MaxFDBSize + 1 }, "fdb size"},
		{"tiny age", func(c *Config) { c.FDBMaxAge = time.Millisecond }, "fdb max age"},
		{"negative icmp rate", func(c *Config) { c.ICMPRate = -5 }, "icmp rate"},
		{"two errors", func(c *Config) { c.MTU = 1; c.ICMPBurst = -1 }, "icmp burst"},
		{"negative flood rate", func(c *Config) { c.FloodRate = -1 }, "flood rate"},
		{"huge flood burst", func(c *Config) { c.FloodBurst = 1e8 }, "flood burst"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			s, err := New(c)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				got := s.Config()
				if got.MTU != DefaultMTU || got.FDBSize != DefaultFDBSize || got.ICMPRate != DefaultICMPRate || got.FloodRate != DefaultFloodRate || got.FloodBurst != DefaultFloodBurst || !got.Gateway.IsValid() {
					t.Errorf("defaults not filled: %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
	s, err := New(good)
	if err != nil {
		t.Fatal(err)
	}
	if s.Config().Gateway != gwIP {
		t.Errorf("default gateway %s want %s", s.Config().Gateway, gwIP)
	}
	if rs := s.Routes(); len(rs) != 1 || rs[0].Prefix != subnet || rs[0].Kind != RouteLocal {
		t.Errorf("initial routes %v", rs)
	}
}

func TestAddPortValidates(t *testing.T) {
	tests := []struct {
		name string
		pc   PortConfig
		ok   bool
	}{
		{"pod", PortConfig{ID: 10, Kind: PortPod, MAC: macN(10), IPv4: mustAddr("10.244.1.10")}, true},
		{"pod with MTU", PortConfig{ID: 10, Kind: PortPod, MAC: macN(10), IPv4: mustAddr("10.244.1.10"), MTU: 9000}, true},
		{"host without address", PortConfig{ID: 10, Kind: PortHost}, true},
		{"id in use", PortConfig{ID: portA, Kind: PortHost}, false},
		{"id too big", PortConfig{ID: MaxPorts, Kind: PortHost}, false},
		{"no kind", PortConfig{ID: 10}, false},
		{"pod without IP", PortConfig{ID: 10, Kind: PortPod, MAC: macN(10)}, false},
		{"pod without MAC", PortConfig{ID: 10, Kind: PortPod, IPv4: mustAddr("10.244.1.10")}, false},
		{"pod with router MAC", PortConfig{ID: 10, Kind: PortPod, MAC: routerMAC, IPv4: mustAddr("10.244.1.10")}, false},
		{"pod with multicast MAC", PortConfig{ID: 10, Kind: PortPod, MAC: bcast, IPv4: mustAddr("10.244.1.10")}, false},
		{"pod outside subnet", PortConfig{ID: 10, Kind: PortPod, MAC: macN(10), IPv4: mustAddr("10.244.2.10")}, false},
		{"pod on the gateway", PortConfig{ID: 10, Kind: PortPod, MAC: macN(10), IPv4: gwIP}, false},
		{"pod on the broadcast", PortConfig{ID: 10, Kind: PortPod, MAC: macN(10), IPv4: mustAddr("10.244.1.255")}, false},
		{"pod on a taken address", PortConfig{ID: 10, Kind: PortPod, MAC: macN(10), IPv4: podAIP}, false},
		{"second overlay", PortConfig{ID: 10, Kind: PortOverlay}, false},
		{"tiny MTU", PortConfig{ID: 10, Kind: PortHost, MTU: 100}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSwitch(t, nil)
			err := s.AddPort(tc.pc)
			if (err == nil) != tc.ok {
				t.Fatalf("AddPort: %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				if len(s.Ports()) != 4 || len(s.Neighbours()) != 3 {
					t.Errorf("a failed AddPort changed state: %v %v", s.Ports(), s.Neighbours())
				}
				return
			}
			ps := s.Ports()
			if ps[len(ps)-2].ID != tc.pc.ID || ps[len(ps)-2].MTU == 0 {
				t.Errorf("ports %+v", ps)
			}
		})
	}
}

func TestRemovePortFlushes(t *testing.T) {
	s := newTestSwitch(t, nil)
	process(s, udpFrame(bcast, podBMAC, podBIP, podAIP, 64, 1), portB, sec)
	// A neighbour learned behind pod B's port (as if B were a router).
	if err := s.AddStaticNeighbour(mustAddr("10.244.1.40"), otherMAC, portB); err != nil {
		t.Fatal(err)
	}
	if err := s.RemovePort(portB); err != nil {
		t.Fatal(err)
	}
	if err := s.RemovePort(portB); err == nil {
		t.Error("second RemovePort succeeded")
	}
	for _, n := range s.Neighbours() {
		if n.Port == portB {
			t.Errorf("neighbour left: %+v", n)
		}
	}
	if len(s.FDB()) != 0 {
		t.Errorf("FDB left: %v", s.FDB())
	}
	if v, _ := process(s, udpFrame(podBMAC, podBMAC, podBIP, podAIP, 64, 1), portB, sec); v.Reason != DropUnknownPort {
		t.Errorf("frame from a removed port: %+v", v)
	}
	// Routing to B's address now misses the neighbour.
	if v, _ := process(s, udpFrame(routerMAC, podAMAC, podAIP, podBIP, 64, 1), portA, sec); v.Reason != DropNeighMiss {
		t.Errorf("route to removed pod: %+v", v)
	}
	// The address and ID can be reused.
	if err := s.AddPort(PortConfig{ID: portB, Kind: PortPod, MAC: macN(77), IPv4: podBIP}); err != nil {
		t.Fatal(err)
	}
}

func TestStaticNeighbours(t *testing.T) {
	s := newTestSwitch(t, nil)
	ip := mustAddr("10.244.1.30")
	bad := []struct {
		name string
		ip   netip.Addr
		mac  packet.MAC
		port PortID
	}{
		{"outside subnet", mustAddr("10.0.0.1"), otherMAC, portHost},
		{"gateway", gwIP, otherMAC, portHost},
		{"zero MAC", ip, packet.MAC{}, portHost},
		{"unknown port", ip, otherMAC, 42},
		{"overlay port", ip, otherMAC, portOverlay},
		{"already static", podAIP, otherMAC, portHost},
	}
	for _, tc := range bad {
		if err := s.AddStaticNeighbour(tc.ip, tc.mac, tc.port); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if err := s.AddStaticNeighbour(ip, otherMAC, portHost); err != nil {
		t.Fatal(err)
	}
	v, out := process(s, udpFrame(routerMAC, podAMAC, podAIP, ip, 64, 1), portA, sec)
	if v.Action != ActionDeliver || v.Port != portHost || packet.EthDst(out) != otherMAC {
		t.Errorf("to static neighbour: %+v", v)
	}
	if err := s.RemoveNeighbour(ip); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveNeighbour(ip); err == nil {
		t.Error("second RemoveNeighbour succeeded")
	}
	if v, _ := process(s, udpFrame(routerMAC, podAMAC, podAIP, ip, 64, 1), portA, sec); v.Reason != DropNeighMiss {
		t.Errorf("after removal: %+v", v)
	}
	// Static entries win over ARP: a host-port ARP claiming pod A's address
	// does not redirect traffic.
	process(s, arpFrame(bcast, packet.ARPOpRequest, otherMAC, podAIP, packet.MAC{}, gwIP), portHost, sec)
	if v, _ := process(s, udpFrame(routerMAC, podBMAC, podBIP, podAIP, 64, 1), portB, sec); v.Port != portA {
		t.Errorf("static overridden by ARP: %+v", v)
	}
}

// TestConcurrentProcessAndControl runs Process on several goroutines while
// the control plane adds and removes ports, swaps routes and ages tables.
// Its value is under -race; it also checks that every verdict names a port
// that existed at some point.
func TestConcurrentProcessAndControl(t *testing.T) {
	s := newTestSwitch(t, func(c *Config) { c.FDBSize = 64; c.NeighSize = 8 })
	frames := [][]byte{
		udpFrame(podBMAC, podAMAC, podAIP, podBIP, 64, 10),
		udpFrame(routerMAC, podAMAC, podAIP, peerPodIP, 64, 10),
		udpFrame(routerMAC, podAMAC, podAIP, mustAddr("10.244.1.20"), 64, 10),
		udpFrame(bcast, podAMAC, podAIP, podBIP, 64, 10),
		arpFrame(bcast, packet.ARPOpRequest, podAMAC, podAIP, packet.MAC{}, gwIP),
	}
	hostFrames := [][]byte{
		arpFrame(bcast, packet.ARPOpReply, macN(5), mustAddr("10.244.1.20"), packet.MAC{}, gwIP),
		udpFrame(podAMAC, macN(6), hostIP, podAIP, 64, 10),
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src, in := frames, portA
			if w == 2 {
				src, in = hostFrames, portHost
			}
			batch := make([][]byte, len(src))
			out := make([]Verdict, len(src))
			now := int64(sec)
			for n := 0; n < 100000 && time.Now().Before(deadline); n++ {
				for i := range batch {
					batch[i] = withCap(src[i])
				}
				s.Process(batch, in, out, now)
				now += 1e6
				for _, v := range out {
					if v.Action == ActionDeliver && v.Port != portA && v.Port != portB && v.Port != portHost && v.Port != 20 {
						t.Errorf("deliver to port %d", v.Port)
						return
					}
				}
				if n%50 == 0 {
					s.Trace(src[0], in, now)
				}
			}
		}()
	}
	now := int64(sec)
	for n := 0; n < 10000 && time.Now().Before(deadline); n++ {
		now += 1e7
		if err := s.AddPort(PortConfig{ID: 20, Kind: PortPod, MAC: macN(20), IPv4: mustAddr("10.244.1.20")}); err != nil {
			t.Fatal(err)
		}
		_ = s.SetRoutes([]Route{{Prefix: peerSubnet, Kind: RoutePeer, Peer: peerAddr, PeerMAC: peerMAC}})
		s.Expire(now)
		_ = s.FDB()
		_ = s.Neighbours()
		_ = s.Counters()
		if err := s.RemovePort(20); err != nil {
			t.Fatal(err)
		}
		_ = s.SetRoutes(nil)
	}
	wg.Wait()
}

func TestDropReasonNames(t *testing.T) {
	seen := map[string]DropReason{}
	for r := range NumDropReasons {
		name := r.String()
		if name == "" || name == "unknown" {
			t.Errorf("reason %d has no name", r)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("reasons %d and %d share the name %q", other, r, name)
		}
		seen[name] = r
	}
	if NumDropReasons.String() != "unknown" {
		t.Errorf("out-of-range reason named %q", NumDropReasons.String())
	}
}
