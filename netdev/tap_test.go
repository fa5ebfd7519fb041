package netdev

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/packet"
)

const ioTimeout = 5 * time.Second

func TestCreateTapConfiguresLink(t *testing.T) {
	testenv.RequireRoot(t)
	nsA, nsB := newTestNetns(t), newTestNetns(t)
	tests := []struct {
		name       string
		cfg        TapConfig
		wantRoutes []netip.Prefix // main-table routes via cfg.Gateway out of the TAP
	}{
		{"pod default route", podTapConfig(nsA), []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
		{"host port cluster route", func() TapConfig {
			c := podTapConfig(nsB)
			c.Name = "weft0"
			c.Addr = netip.MustParsePrefix("10.244.1.2/24")
			c.Routes = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
			return c
		}(), []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
		{"vnet header", func() TapConfig {
			c := podTapConfig(nsB)
			c.Name = "eth1"
			c.Addr = netip.MustParsePrefix("10.244.3.5/24")
			c.Gateway = netip.MustParseAddr("10.244.3.1")
			c.VnetHdr = true
			return c
		}(), []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tap := createTestTap(t, tc.cfg)
			wantName := tc.cfg.Name
			if wantName == "" {
				wantName = "eth0"
			}
			if tap.Name() != wantName || tap.MAC() != tc.cfg.MAC || tap.MTU() != tc.cfg.MTU {
				t.Errorf("tap reports name %q mac %s mtu %d, want %q %s %d", tap.Name(), tap.MAC(), tap.MTU(), wantName, tc.cfg.MAC, tc.cfg.MTU)
			}
			h, err := OpenHandle(tc.cfg.NetnsPath)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			l, err := h.LinkByName(wantName)
			if err != nil {
				t.Fatalf("link not in its namespace: %v", err)
			}
			tt, ok := l.(*netlink.Tuntap)
			if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
				t.Fatalf("link is %T %+v, want a tap", l, l)
			}
			if tt.NonPersist {
				t.Error("tap is not persistent")
			}
			if got := tt.Flags&netlink.TUNTAP_VNET_HDR != 0; got != tc.cfg.VnetHdr {
				t.Errorf("vnet_hdr flag %v, want %v", got, tc.cfg.VnetHdr)
			}
			a := l.Attrs()
			if packet.MAC(a.HardwareAddr) != tc.cfg.MAC || a.MTU != tc.cfg.MTU || a.Flags&net.FlagUp == 0 {
				t.Errorf("link mac %s mtu %d flags %v, want %s %d up", a.HardwareAddr, a.MTU, a.Flags, tc.cfg.MAC, tc.cfg.MTU)
			}
			addrs, err := h.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				t.Fatal(err)
			}
			if len(addrs) != 1 || addrs[0].IPNet.String() != tc.cfg.Addr.String() {
				t.Errorf("addresses %v, want only %s", addrs, tc.cfg.Addr)
			}
			if v6, err := h.AddrList(l, netlink.FAMILY_V6); err != nil || len(v6) != 0 {
				t.Errorf("IPv6 addresses %v (err %v), want none: IPv6 is off by default", v6, err)
			}
			for _, dst := range tc.wantRoutes {
				rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixIPNet(dst), LinkIndex: a.Index}, netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF)
				if err != nil || len(rs) != 1 || !rs[0].Gw.Equal(tc.cfg.Gateway.AsSlice()) {
					t.Errorf("route to %s: %v (err %v), want one via %s", dst, rs, err, tc.cfg.Gateway)
				}
			}
			if len(tc.cfg.Routes) > 0 {
				if rs, _ := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixIPNet(netip.MustParsePrefix("0.0.0.0/0"))}, netlink.RT_FILTER_DST); len(rs) != 0 {
					t.Errorf("default route %v present, want only the given routes", rs)
				}
			}
			// The TAP must exist only in its own namespace.
			for _, other := range []string{"", nsA, nsB} {
				if other == tc.cfg.NetnsPath {
					continue
				}
				oh, err := OpenHandle(other)
				if err != nil {
					t.Fatal(err)
				}
				if l, err := oh.LinkByName(wantName); err == nil && isTap(l) && packet.MAC(l.Attrs().HardwareAddr) == tc.cfg.MAC {
					t.Errorf("tap also visible in namespace %q", other)
				}
				oh.Close()
			}
		})
	}
}

// TestTapKernelRoundTrip writes frames into the TAP as the gateway would and
// reads the pod kernel's answers: ARP reply for its address, ICMP echo reply.
func TestTapKernelRoundTrip(t *testing.T) {
	testenv.RequireRoot(t)
	for _, vnet := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "vnet"}[vnet], func(t *testing.T) {
			cfg := podTapConfig(newTestNetns(t))
			cfg.VnetHdr = vnet
			tap := createTestTap(t, cfg)
			const offset = 16
			bufs, sizes := newBatch(8, offset+2048)
			checkARP(t, tap, bufs, sizes, offset)
			checkPing(t, tap, bufs, sizes, offset, 1)
		})
	}
}

func checkARP(t testing.TB, tap *Tap, bufs [][]byte, sizes []int, offset int) {
	t.Helper()
	req := arpRequest(make([]byte, 64), gwMAC, gwIP, podIP)
	if n, err := tap.Write([][]byte{req}, 0); n != 1 || err != nil {
		t.Fatalf("Write ARP request: n=%d err=%v", n, err)
	}
	readUntil(t, tap, bufs, sizes, offset, ioTimeout, func(f []byte) bool {
		mac, ok := arpReplyFor(f, podIP)
		if ok && (mac != tap.MAC() || packet.EthDst(f) != gwMAC) {
			t.Fatalf("ARP reply says %s is at %s to %s, want %s to %s", podIP, mac, packet.EthDst(f), tap.MAC(), gwMAC)
		}
		return ok
	})
}

// checkPing sends an echo request and waits for its reply, answering the
// kernel's ARP request for the gateway if it makes one.
func checkPing(t testing.TB, tap *Tap, bufs [][]byte, sizes []int, offset int, seq uint16) {
	t.Helper()
	const id = 0x7744
	req := echoRequest(make([]byte, 256), tap.MAC(), gwIP, podIP, id, seq, 56)
	if n, err := tap.Write([][]byte{req}, 0); n != 1 || err != nil {
		t.Fatalf("Write echo request: n=%d err=%v", n, err)
	}
	reply := make([]byte, 64)
	readUntil(t, tap, bufs, sizes, offset, ioTimeout, func(f []byte) bool {
		if r, ok := arpReplyTo(reply, f, gwIP, gwMAC); ok {
			if _, err := tap.Write([][]byte{r}, 0); err != nil {
				t.Fatalf("Write ARP reply: %v", err)
			}
			return false
		}
		got, ok := echoReply(f, podIP, id)
		return ok && got == seq
	})
}

func TestTapPersistsAndReopens(t *testing.T) {
	testenv.RequireRoot(t)
	for _, vnet := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "vnet"}[vnet], func(t *testing.T) {
			cfg := podTapConfig(newTestNetns(t))
			cfg.VnetHdr = vnet
			tap := createTestTap(t, cfg)
			if err := tap.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			h, err := OpenHandle(cfg.NetnsPath)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			before, err := h.LinkByName("eth0")
			if err != nil {
				t.Fatalf("persistent tap gone after Close: %v", err)
			}
			addrsBefore, _ := h.AddrList(before, netlink.FAMILY_V4)

			re, err := OpenTap(cfg)
			if err != nil {
				t.Fatalf("OpenTap: %v", err)
			}
			t.Cleanup(func() { re.Close() })
			after, err := h.LinkByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			if after.Attrs().Index != before.Attrs().Index {
				t.Errorf("OpenTap made a new link (index %d, was %d)", after.Attrs().Index, before.Attrs().Index)
			}
			addrsAfter, _ := h.AddrList(after, netlink.FAMILY_V4)
			if len(addrsAfter) != 1 || len(addrsBefore) != 1 || !addrsAfter[0].Equal(addrsBefore[0]) {
				t.Errorf("addresses changed across OpenTap: %v -> %v", addrsBefore, addrsAfter)
			}
			bufs, sizes := newBatch(8, 2048)
			checkARP(t, re, bufs, sizes, 0)
			checkPing(t, re, bufs, sizes, 0, 2)

			// A second opener of a single-queue TAP is refused, leaving the
			// first working.
			if again, err := OpenTap(cfg); err == nil {
				again.Close()
				t.Error("OpenTap on an attached tap succeeded")
			}
			checkARP(t, re, bufs, sizes, 0)
		})
	}
}

func TestOpenTapFixesDrift(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	tap := createTestTap(t, cfg)
	tap.Close()
	h, err := OpenHandle(cfg.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, _ := h.LinkByName("eth0")
	if err := h.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(l, 1300); err != nil {
		t.Fatal(err)
	}
	re, err := OpenTap(cfg)
	if err != nil {
		t.Fatalf("OpenTap: %v", err)
	}
	defer re.Close()
	l, _ = h.LinkByName("eth0")
	if l.Attrs().MTU != cfg.MTU || l.Attrs().Flags&net.FlagUp == 0 || re.MTU() != cfg.MTU {
		t.Errorf("after OpenTap: mtu %d flags %v, want %d up", l.Attrs().MTU, l.Attrs().Flags, cfg.MTU)
	}
	// Link down removed the default route; OpenTap restores it.
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: prefixIPNet(netip.MustParsePrefix("0.0.0.0/0"))}, netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 1 {
		t.Errorf("default route after OpenTap: %v %v", rs, err)
	}
}

func TestCreateTapFailures(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newTestNetns(t)
	// An existing veth named like the TAP we want, and an existing TAP.
	vethName, peer := "eth9", testenv.UniqueName("wnd")
	if err := NewVeth(VethEnd{Name: vethName, NetnsPath: ns}, VethEnd{Name: peer, NetnsPath: ns}); err != nil {
		t.Fatalf("NewVeth: %v", err)
	}
	t.Cleanup(func() { DeleteLink(ns, vethName) })
	existing := podTapConfig(ns)
	existing.Name = "eth5"
	createTestTap(t, existing)

	missing := NetnsPath(testenv.UniqueName("wnd"))
	tests := []struct {
		name    string
		cfg     TapConfig
		wantErr error // errors.Is target
	}{
		{"missing namespace", TapConfig{Name: "eth0", NetnsPath: missing}, os.ErrNotExist},
		{"missing namespace vnet", TapConfig{Name: "eth0", NetnsPath: missing, VnetHdr: true}, os.ErrNotExist},
		{"name is a veth", TapConfig{Name: vethName, NetnsPath: ns, Persist: true}, os.ErrExist},
		{"name is a veth vnet", TapConfig{Name: vethName, NetnsPath: ns, Persist: true, VnetHdr: true}, os.ErrExist},
		{"name is a tap", TapConfig{Name: "eth5", NetnsPath: ns, Persist: true}, os.ErrExist},
		{"name is a tap vnet", TapConfig{Name: "eth5", NetnsPath: ns, Persist: true, VnetHdr: true}, os.ErrExist},
		{"name too long", TapConfig{Name: "abcdefghijklmnop", NetnsPath: ns}, nil},
		{"gateway without address", TapConfig{Name: "eth3", NetnsPath: ns, Gateway: gwIP}, nil},
		// The kernel refuses the MTU after the device exists: the
		// half-made device must be removed.
		{"mtu rejected by kernel", TapConfig{Name: "eth3", NetnsPath: ns, Persist: true, MTU: 20}, unix.EINVAL},
		{"mtu rejected by kernel vnet", TapConfig{Name: "eth3", NetnsPath: ns, Persist: true, MTU: 20, VnetHdr: true}, unix.EINVAL},
		{"gateway off-link", TapConfig{Name: "eth3", NetnsPath: ns, Persist: true, Addr: netip.MustParsePrefix("10.9.0.2/24"), Gateway: gwIP}, unix.ENETUNREACH},
	}
	h, err := OpenHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	linksBefore, _ := h.LinkList()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tap, err := CreateTap(tc.cfg)
			if err == nil {
				tap.Close()
				DeleteTap(tap.Name(), tc.cfg.NetnsPath)
				t.Fatal("CreateTap succeeded")
			}
			t.Logf("error: %v", err)
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want one wrapping %v", err, tc.wantErr)
			}
			linksAfter, _ := h.LinkList()
			if len(linksAfter) != len(linksBefore) {
				t.Errorf("links %d -> %d after a failed CreateTap", len(linksBefore), len(linksAfter))
			}
			if _, err := os.Stat(tc.cfg.NetnsPath); tc.cfg.NetnsPath == missing && err == nil {
				t.Error("missing namespace was created")
			}
		})
	}
	// The clashing devices are untouched.
	if l, err := h.LinkByName(vethName); err != nil || l.Type() != "veth" {
		t.Errorf("veth after clash: %v %v", l, err)
	}
	if l, err := h.LinkByName("eth5"); err != nil || !isTap(l) || packet.MAC(l.Attrs().HardwareAddr) != podMAC {
		t.Errorf("tap after clash: %v %v", l, err)
	}
}

func TestDeleteTapIdempotent(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newTestNetns(t)
	tap, err := CreateTap(podTapConfig(ns))
	if err != nil {
		t.Fatal(err)
	}
	tap.Close()
	for i := range 2 {
		if err := DeleteTap("eth0", ns); err != nil {
			t.Fatalf("DeleteTap #%d: %v", i+1, err)
		}
	}
	h, _ := OpenHandle(ns)
	defer h.Close()
	if _, err := h.LinkByName("eth0"); !isLinkNotFound(err) {
		t.Errorf("tap still there after DeleteTap: %v", err)
	}
	if err := DeleteTap("eth0", NetnsPath(testenv.UniqueName("wnd"))); err != nil {
		t.Errorf("DeleteTap in a missing namespace: %v", err)
	}
	if err := NewVeth(VethEnd{Name: "eth7", NetnsPath: ns}, VethEnd{Name: "eth8", NetnsPath: ns}); err != nil {
		t.Fatal(err)
	}
	if err := DeleteTap("eth7", ns); err == nil {
		t.Error("DeleteTap removed a veth")
	}
	if _, err := OpenTap(TapConfig{Name: "eth7", NetnsPath: ns}); err == nil {
		t.Error("OpenTap attached to a veth")
	}
	if _, err := OpenTap(TapConfig{Name: "eth0", NetnsPath: ns}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenTap on a deleted tap: %v, want os.ErrNotExist", err)
	}
}
