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

// TestKernelVXLANPeer puts a node made of plain Linux pieces, set up the
// way flannel's vxlan backend sets one up, next to a weftd node: a kernel
// vxlan device (VNI 1, port 4789, nolearning), a bridge holding the pod
// gateway, a veth pod, and static route, neighbour and FDB entries
// pointing at the weft node. The kernel node joins with weft node add and
// the commands it prints (issue 12 item 9). Pods on both sides must reach
// each other by ICMP and TCP: weft's wire format is plain VXLAN. The
// registration lasts, unrenewed, through three lease TTLs and a weftd
// restart, and weft node remove withdraws it.
func TestKernelVXLANPeer(t *testing.T) {
	c := upCluster(t, sim.Options{LeaseTTL: 3 * time.Second}, 1, 1)
	n1, wp := c.Nodes[0], c.Nodes[0].Pods[0]
	cl := nodeClient(t, n1)
	st := status(t, cl)

	base := testenv.UniqueName("wit")
	kns, kpns := base+"-k", base+"-kp"
	underlayNS := c.Name + "-u"
	kUnder := netip.MustParseAddr("192.168.100.200")
	if !c.UnderlayNet.Contains(kUnder) {
		t.Fatalf("underlay %s does not hold %s", c.UnderlayNet, kUnder)
	}
	kMAC := packet.MAC{0x02, 0x6b, 0x76, 0x78, 0x00, 0x01} // the kernel vxlan device's, and so the peer's router MAC
	const vxlanDev, bridgeDev, underlayPort = "vxlan0", "kbr0", "kvx0"

	for _, ns := range []string{kns, kpns} {
		if _, err := netdev.NewNetns(ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netdev.DeleteNetns(ns) })
	}
	// The kernel node's underlay port on the sim's bridge.
	err := netdev.NewVeth(
		netdev.VethEnd{Name: "u0", NetnsPath: netdev.NetnsPath(kns), Addr: netip.PrefixFrom(kUnder, c.UnderlayNet.Bits())},
		netdev.VethEnd{Name: underlayPort, NetnsPath: netdev.NetnsPath(underlayNS)},
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netdev.DeleteLink(netdev.NetnsPath(underlayNS), underlayPort) })
	mustRun(t, underlayNS, "ip", "link", "set", underlayPort, "master", "br0", "up")

	// Register the kernel node as an operator does, with weft node add
	// (issue 12 item 9), and set it up with exactly the commands it
	// prints: flannel style, <subnet>.0/32 on the vxlan device, and for
	// each other node a route via its <subnet>.0 on-link, a permanent
	// neighbour giving that address the node's router MAC, and an FDB
	// entry sending that MAC to its underlay address.
	kNode := base + "-k"
	ctx, cancel := apiCtx()
	defer cancel()
	f, err := cl.AddForeignNode(ctx, api.ForeignNodeRequest{Name: kNode, Underlay: kUnder, VTEPMAC: kMAC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := apiCtx()
		defer cancel()
		cl.RemoveForeignNode(ctx, kNode)
	})
	if len(f.Nodes) != 1 || f.Nodes[0].Subnet != st.Subnet || f.MTU != st.MTU {
		t.Fatalf("registration %+v: want the weft node %s in Nodes and MTU %d", f, st.Subnet, st.MTU)
	}
	kSub := f.Subnet
	kGW := kSub.Masked().Addr().Next()
	kPod := kGW.Next().Next()
	t.Logf("kernel node %s: underlay %s, subnet %s, vxlan MAC %s; weft node %s: underlay %s, subnet %s, router MAC %s",
		kNode, kUnder, kSub, kMAC, st.Node, st.Underlay, st.Subnet, st.RouterMAC)
	for _, argv := range f.Commands(vxlanDev, "u0") {
		mustRun(t, kns, argv...)
	}
	for _, argv := range [][]string{
		{"ip", "link", "add", bridgeDev, "type", "bridge"},
		{"ip", "addr", "add", netip.PrefixFrom(kGW, kSub.Bits()).String(), "dev", bridgeDev},
		{"ip", "link", "set", bridgeDev, "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		// A veth "NIC" never fills in checksums: with offload on, the
		// kernel pod's TCP segments would cross it, encapsulated, with only
		// the pseudo-header sum in the inner checksum (CHECKSUM_PARTIAL),
		// which a kernel receiver trusts and a userspace VTEP cannot know
		// about. A physical NIC puts complete checksums on the wire; tx
		// off on the kernel node's underlay port makes the veth do the same
		// (the kernel completes the inner checksum before encapsulation).
		// README says so; weft node add prints it.
		{"ethtool", "-K", "u0", "tx", "off"},
	} {
		mustRun(t, kns, argv...)
	}
	// The kernel node's pod: a veth into the bridge, MTU as weft's pods.
	err = netdev.NewVeth(
		netdev.VethEnd{Name: "eth0", NetnsPath: netdev.NetnsPath(kpns), Addr: netip.PrefixFrom(kPod, kSub.Bits()), MTU: st.MTU},
		netdev.VethEnd{Name: "kp0", NetnsPath: netdev.NetnsPath(kns), MTU: st.MTU},
	)
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, kns, "ip", "link", "set", "kp0", "master", bridgeDev, "up")
	mustRun(t, kpns, "ip", "route", "add", "default", "via", kGW.String())

	waitFor(t, 10*time.Second, "weft node learns the kernel peer", func() (bool, string) {
		rs, ps := routes(t, cl), peers(t, cl)
		return hasPeerRoute(rs, kSub) && hasPeer(ps, kNode), fmt.Sprintf("routes %v, peers %v", rs, ps)
	})

	kernelPod := endpoint{"kernel-pod", kpns, kPod}
	weftPod := podEnd(wp)
	weftNode := endpoint{n1.Name, n1.Netns, st.HostAddr}
	for _, tc := range []struct{ from, to endpoint }{
		{weftPod, kernelPod}, {kernelPod, weftPod}, {weftNode, kernelPod}, {kernelPod, weftNode},
	} {
		t.Run(tc.from.name+"_to_"+tc.to.name, func(t *testing.T) {
			pingAll(t, tc.from.netns, tc.to.addr)
			conn := connectTCP(t, tc.from.netns, tc.to.netns, tc.to.addr)
			if conn.peerSeen != tc.from.addr {
				t.Errorf("server saw the client as %s, want %s", conn.peerSeen, tc.from.addr)
			}
			// Larger than one segment, so full-size frames cross both ways.
			msg := string(make([]byte, 64<<10))
			if err := conn.roundTrip(msg, 10*time.Second); err != nil {
				t.Errorf("tcp %s -> %s: %v", tc.from.addr, tc.to.addr, err)
			}
		})
	}
	// The weft node runs with partial checksums (the default), but a kernel
	// VXLAN peer never gets them: it would drop the flag as a reserved bit.
	if n, ok := counters(t, cl)["offload.partial_csum_tx"]; !ok || n != 0 {
		t.Errorf("weft node sent %d frames with partial checksums (counter present: %v); the kernel peer must get none", n, ok)
	}

	p, ok := findPeer(peers(t, cl), kNode)
	if !ok || p.TxFrames == 0 || p.RxFrames == 0 {
		t.Errorf("weft's counters for the kernel peer: %+v (present %v); want frames both ways", p, ok)
	}
	if !p.Foreign || p.RxBadL4Checksum != 0 {
		t.Errorf("the kernel peer %+v: want foreign and no bad inner checksums", p)
	}
	c0 := counters(t, cl)
	for _, name := range []string{"drop.vxlan_unknown_peer", "drop.vxlan_wrong_vni", "drop.vxlan_bad_flags", "drop.vxlan_reserved_bits", "drop.vxlan_spoofed_inner_src"} {
		if v := counter(t, c0, name); v != 0 {
			t.Errorf("%s = %d: weft refused some of the kernel's VXLAN", name, v)
		}
	}

	// Nothing renews a foreign node's lease, and nothing has to: it
	// outlives three lease TTLs and a restart of the weftd that made it.
	routed := func() (bool, string) {
		rs, ps := routes(t, cl), peers(t, cl)
		return hasPeerRoute(rs, kSub) && hasPeer(ps, kNode), fmt.Sprintf("routes %v, peers %v", rs, ps)
	}
	time.Sleep(3 * 3 * time.Second)
	if err := c.Restart(context.Background(), n1); err != nil {
		t.Fatal(err)
	}
	cl = nodeClient(t, n1)
	waitFor(t, 10*time.Second, "the kernel node still routed after 3 TTLs and a weftd restart", routed)
	pingAll(t, weftPod.netns, kernelPod.addr)
	pingAll(t, kernelPod.netns, weftPod.addr)

	// weft node remove withdraws it.
	ctx, cancel = apiCtx()
	defer cancel()
	if err := cl.RemoveForeignNode(ctx, kNode); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the route withdrawn after weft node remove", func() (bool, string) {
		ok, s := routed()
		return !ok, s
	})
}
