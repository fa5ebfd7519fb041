package main

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/sim"
)

// TestForeignNode is issue 12 item 9 end to end: a node of plain Linux
// pieces (kernel vxlan device, bridge, veth pod) joins through the API that
// `weft node add` uses, set up with exactly the commands it prints. Pods
// on both sides reach each other; the registration outlives several lease
// TTLs and a restart of the weftd that made it, with nothing renewing it;
// `weft node remove` withdraws the route.
func TestForeignNode(t *testing.T) {
	c := upCluster(t, sim.Options{LeaseTTL: 3 * time.Second}, 1, 1)
	n1, wp := c.Nodes[0], c.Nodes[0].Pods[0]
	cl := nodeClient(t, n1)
	st := status(t, cl)

	base := testenv.UniqueName("r2f")
	kns, kpns := base+"-k", base+"-kp"
	underlayNS := c.Name + "-u"
	kUnder := netip.MustParseAddr("192.168.100.201")
	kMAC := packet.MAC{0x02, 0x6b, 0x76, 0x78, 0x00, 0x02}
	const vxlanDev, bridgeDev, underlayPort = "weft.1", "kbr0", "kvy0"
	for _, ns := range []string{kns, kpns} {
		if _, err := netdev.NewNetns(ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netdev.DeleteNetns(ns) })
	}
	err := netdev.NewVeth(
		netdev.VethEnd{Name: "u0", NetnsPath: netdev.NetnsPath(kns), Addr: netip.PrefixFrom(kUnder, c.UnderlayNet.Bits())},
		netdev.VethEnd{Name: underlayPort, NetnsPath: netdev.NetnsPath(underlayNS)},
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netdev.DeleteLink(netdev.NetnsPath(underlayNS), underlayPort) })
	mustRun(t, underlayNS, "ip", "link", "set", underlayPort, "master", "br0", "up")

	ctx, cancel := apiCtx()
	defer cancel()
	f, err := cl.AddForeignNode(ctx, api.ForeignNodeRequest{Name: base, Underlay: kUnder, VTEPMAC: kMAC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := apiCtx()
		defer cancel()
		cl.RemoveForeignNode(ctx, base)
	})
	if len(f.Nodes) != 1 || f.Nodes[0].Subnet != st.Subnet || f.MTU != st.MTU {
		t.Fatalf("registration %+v: want the weft node %s in Nodes and MTU %d", f, st.Subnet, st.MTU)
	}
	for _, argv := range f.Commands(vxlanDev, "u0") {
		mustRun(t, kns, argv...)
	}
	kGW := f.Subnet.Masked().Addr().Next()
	kPod := kGW.Next().Next()
	for _, argv := range [][]string{
		{"ip", "link", "add", bridgeDev, "type", "bridge"},
		{"ip", "addr", "add", netip.PrefixFrom(kGW, f.Subnet.Bits()).String(), "dev", bridgeDev},
		{"ip", "link", "set", bridgeDev, "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ethtool", "-K", "u0", "tx", "off"}, // README: a veth underlay leaves inner checksums partial
	} {
		mustRun(t, kns, argv...)
	}
	err = netdev.NewVeth(
		netdev.VethEnd{Name: "eth0", NetnsPath: netdev.NetnsPath(kpns), Addr: netip.PrefixFrom(kPod, f.Subnet.Bits()), MTU: f.MTU},
		netdev.VethEnd{Name: "kp0", NetnsPath: netdev.NetnsPath(kns), MTU: f.MTU},
	)
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, kns, "ip", "link", "set", "kp0", "master", bridgeDev, "up")
	mustRun(t, kpns, "ip", "route", "add", "default", "via", kGW.String())

	routed := func() (bool, string) {
		rs, ps := routes(t, cl), peers(t, cl)
		return hasPeerRoute(rs, f.Subnet) && hasPeer(ps, base), fmt.Sprintf("routes %v, peers %v", rs, ps)
	}
	waitFor(t, 10*time.Second, "weft node routes to the foreign node", routed)
	kernelPod, weftPod := endpoint{"foreign-pod", kpns, kPod}, podEnd(wp)
	check := func(when string) {
		t.Helper()
		for _, tc := range []struct{ from, to endpoint }{{weftPod, kernelPod}, {kernelPod, weftPod}} {
			pingAll(t, tc.from.netns, tc.to.addr)
			conn := connectTCP(t, tc.from.netns, tc.to.netns, tc.to.addr)
			if err := conn.roundTrip(string(make([]byte, 64<<10)), 10*time.Second); err != nil {
				t.Errorf("%s: tcp %s -> %s: %v", when, tc.from.addr, tc.to.addr, err)
			}
		}
	}
	check("after add")

	// Three TTLs and a restart of the weftd that registered it: a lease
	// someone had to renew would be gone.
	time.Sleep(3 * 3 * time.Second)
	if err := c.Restart(context.Background(), n1); err != nil {
		t.Fatal(err)
	}
	cl = nodeClient(t, n1)
	waitFor(t, 10*time.Second, "the foreign node still routed after 3 TTLs and a weftd restart", routed)
	check("after 3 TTLs and a restart")

	ctx, cancel = apiCtx()
	defer cancel()
	if err := cl.RemoveForeignNode(ctx, base); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the route withdrawn after remove", func() (bool, string) {
		ok, s := routed()
		return !ok, s
	})
}
