package main

// Integration tests of weftd in real namespaces (issues #4 and #3): a sim
// cluster of two nodes with two pods each, checked with real traffic
// (ping through nsenter, TCP and raw frames from Go inside the pods'
// namespaces) and the node API. One cluster serves every subtest: the
// read-only checks first, then the ones that restart or kill a node.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/sim"
)

const testLeaseTTL = 4 * time.Second

func TestCluster(t *testing.T) {
	c := upCluster(t, sim.Options{LeaseTTL: testLeaseTTL}, 2, 2)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	cl1, cl2 := nodeClient(t, n1), nodeClient(t, n2)
	st1, st2 := status(t, cl1), status(t, cl2)
	p11, p12, p21 := n1.Pods[0], n1.Pods[1], n2.Pods[0]
	// Each node must have the other's route before traffic can cross.
	waitFor(t, 10*time.Second, "peer routes", func() (bool, string) {
		r1, r2 := routes(t, cl1), routes(t, cl2)
		return hasPeerRoute(r1, st2.Subnet) && hasPeerRoute(r2, st1.Subnet), fmt.Sprintf("n1 %v; n2 %v", r1, r2)
	})

	t.Run("connectivity", func(t *testing.T) { testConnectivity(t, c, st1, st2) })
	t.Run("trace", func(t *testing.T) { testTrace(t, c, cl1, cl2, st1, st2) })
	t.Run("spoofed_source", func(t *testing.T) { testSpoofed(t, c, cl1, st1) })
	t.Run("vxlan_untrusted", func(t *testing.T) { testVXLANUntrusted(t, c, cl2, st1, st2) })
	t.Run("drops_exported", func(t *testing.T) { testDropsExported(t, c, cl2, st1, st2) })
	t.Run("pod_guards", func(t *testing.T) { testPodGuards(t, cl1, p11, p12) })
	t.Run("attach_detach", func(t *testing.T) { testAttachDetach(t, n1, cl1, p12) })
	t.Run("restart_sigterm", func(t *testing.T) {
		testRestart(t, c, n1, cl1, st2, func() error { return c.Stop(n1) })
	})
	t.Run("restart_sigkill", func(t *testing.T) {
		testRestart(t, c, n1, cl1, st2, func() error { return c.Kill(n1) })
	})
	t.Run("lease_expiry", func(t *testing.T) { testLeaseExpiry(t, c, cl1, cl2, st2, p11, p21) })
}

// endpoint is one end of a connectivity check: a pod, or a node's own
// namespace through its host port (weft0, the subnet's .2).
type endpoint struct {
	name  string
	netns string
	addr  netip.Addr
}

func podEnd(p *sim.Pod) endpoint { return endpoint{p.Name, p.Netns, p.IP()} }

func testConnectivity(t *testing.T, c *sim.Cluster, st1, st2 api.Status) {
	n1, n2 := c.Nodes[0], c.Nodes[1]
	p11, p12, p21 := podEnd(n1.Pods[0]), podEnd(n1.Pods[1]), podEnd(n2.Pods[0])
	node1, node2 := endpoint{n1.Name, n1.Netns, st1.HostAddr}, endpoint{n2.Name, n2.Netns, st2.HostAddr}
	for _, tc := range []struct{ from, to endpoint }{
		{p11, p12}, {p12, p11}, // one node: the L2 switch
		{p11, p21}, {p21, p11}, // across nodes: router and VXLAN
		{node1, p11}, {p11, node1}, // a node and its own pod, through weft0
		{node1, p21}, {p21, node1}, // a node and another node's pod
		{node1, node2}, {node2, node1}, // host ports of two nodes
	} {
		t.Run(tc.from.name+"_to_"+tc.to.name, func(t *testing.T) {
			pingAll(t, tc.from.netns, tc.to.addr)
			conn := connectTCP(t, tc.from.netns, tc.to.netns, tc.to.addr)
			if conn.peerSeen != tc.from.addr {
				t.Errorf("server %s saw the client as %s, want %s (no NAT)", tc.to.addr, conn.peerSeen, tc.from.addr)
			}
			if err := conn.roundTrip("hello from "+tc.from.name, 5*time.Second); err != nil {
				t.Errorf("tcp %s -> %s: %v", tc.from.addr, tc.to.addr, err)
			}
		})
	}
}

// testTrace compares what `weft trace` (the API's Trace, which the CLI
// calls) says with what the same traffic really does: its outcome and the
// counters it moves.
func testTrace(t *testing.T, c *sim.Cluster, cl1, cl2 *api.Client, st1, st2 api.Status) {
	p11, p12, p21 := c.Nodes[0].Pods[0], c.Nodes[0].Pods[1], c.Nodes[1].Pods[0]
	noRoute := netip.MustParseAddr("10.244.250.9")
	if !st1.ClusterCIDR.Contains(noRoute) {
		t.Fatalf("cluster CIDR %s does not hold %s; the test assumes the default CIDR", st1.ClusterCIDR, noRoute)
	}
	const count = 3
	portTx := func(cl *api.Client, podID string) uint64 {
		for _, p := range ports(t, cl) {
			if p.PodID == podID {
				return p.TxFrames
			}
		}
		t.Fatalf("no port for pod %s", podID)
		return 0
	}
	peerTx := func() uint64 {
		p, ok := findPeer(peers(t, cl1), st2.Node)
		if !ok {
			t.Fatalf("n1 has no peer %s", st2.Node)
		}
		return p.TxFrames
	}

	for _, tc := range []struct {
		name    string
		req     api.TraceRequest
		setup   func(t *testing.T) // if set, runs before the trace
		verdict []string           // substrings the verdict must hold
		refute  []string           // substrings it must not hold
		// real sends the traffic and checks its outcome and counters.
		real func(t *testing.T)
	}{{
		name:    "remote_pod",
		req:     api.TraceRequest{In: p11.ID, Dst: p21.IP()},
		verdict: []string{"encap", st2.Node},
		real: func(t *testing.T) {
			tx0, rx0 := peerTx(), portTx(cl2, p21.ID)
			drained0 := counters(t, cl2)["offload.drained_frames"]
			if got, out := ping(t, p11.Netns, p21.IP(), count); got != count {
				t.Errorf("ping: %d of %d answered:\n%s", got, count, out)
			}
			// The pod answers inside the TAP write that brings the request,
			// so n2's underlay worker forwards the reply itself (drainPort).
			if st2.Offload != "off" {
				if d := counters(t, cl2)["offload.drained_frames"] - drained0; d < 1 {
					t.Errorf("n2's offload.drained_frames grew by %d; want the echo replies taken right after the requests were written", d)
				}
			}
			if d := peerTx() - tx0; d < count {
				t.Errorf("n1's VXLAN frames to %s grew by %d, want >= %d", st2.Node, d, count)
			}
			if d := portTx(cl2, p21.ID) - rx0; d < count {
				t.Errorf("frames n2 delivered to %s grew by %d, want >= %d", p21.Name, d, count)
			}
		},
	}, {
		name: "same_node_pod",
		// Once the switch has learned p12's MAC (unknown unicast floods,
		// in the trace as on the wire).
		setup:   func(t *testing.T) { ping(t, p11.Netns, p12.IP(), 1) },
		req:     api.TraceRequest{In: p11.ID, Dst: p12.IP()},
		verdict: []string{"deliver", p12.ID},
		real: func(t *testing.T) {
			tx0 := portTx(cl1, p12.ID)
			if got, out := ping(t, p11.Netns, p12.IP(), count); got != count {
				t.Errorf("ping: %d of %d answered:\n%s", got, count, out)
			}
			if d := portTx(cl1, p12.ID) - tx0; d < count {
				t.Errorf("frames delivered to %s grew by %d, want >= %d", p12.Name, d, count)
			}
		},
	}, {
		name:    "no_route",
		req:     api.TraceRequest{In: p11.ID, Dst: noRoute},
		verdict: []string{"no_route", p11.ID}, // the frame is consumed, an ICMP error goes back to the sender
		real: func(t *testing.T) {
			c0 := counters(t, cl1)
			got, out := ping(t, p11.Netns, noRoute, count)
			if got != 0 || !strings.Contains(out, "From "+st1.Gateway.String()) || !strings.Contains(out, "Destination Net Unreachable") {
				t.Errorf("ping %s: want no reply and 'Destination Net Unreachable' from the gateway %s:\n%s", noRoute, st1.Gateway, out)
			}
			c1 := counters(t, cl1)
			for _, name := range []string{"drop.no_route", "router.icmp_errors"} {
				if d := counter(t, c1, name) - counter(t, c0, name); d < count {
					t.Errorf("%s grew by %d, want >= %d", name, d, count)
				}
			}
		},
	}, {
		name:    "ttl_1_remote_pod",
		req:     api.TraceRequest{In: p11.ID, Dst: p21.IP(), TTL: 1},
		verdict: []string{"ttl_expired", p11.ID},
		real: func(t *testing.T) {
			c0 := counters(t, cl1)
			tx0 := peerTx()
			got, out := ping(t, p11.Netns, p21.IP(), count, "-t", "1")
			if got != 0 || !strings.Contains(out, "From "+st1.Gateway.String()) || !strings.Contains(out, "Time to live exceeded") {
				t.Errorf("ping -t 1 %s: want no reply and 'Time to live exceeded' from the gateway %s:\n%s", p21.IP(), st1.Gateway, out)
			}
			if d := counter(t, counters(t, cl1), "drop.ttl_expired") - counter(t, c0, "drop.ttl_expired"); d < count {
				t.Errorf("drop.ttl_expired grew by %d, want >= %d", d, count)
			}
			if d := peerTx() - tx0; d != 0 {
				t.Errorf("%d frames went to %s although the TTL ran out at n1", d, st2.Node)
			}
		},
	}, {
		name:    "node_to_remote_pod",
		req:     api.TraceRequest{In: "weft0", Dst: p21.IP()},
		verdict: []string{"encap", st2.Node},
		real: func(t *testing.T) {
			tx0 := peerTx()
			if got, out := ping(t, c.Nodes[0].Netns, p21.IP(), count); got != count {
				t.Errorf("ping from the node: %d of %d answered:\n%s", got, count, out)
			}
			if d := peerTx() - tx0; d < count {
				t.Errorf("n1's VXLAN frames to %s grew by %d, want >= %d", st2.Node, d, count)
			}
		},
	}, {
		name:    "gateway_echo",
		req:     api.TraceRequest{In: p11.ID, Dst: st1.Gateway},
		verdict: []string{p11.ID}, // answered back to the sender
		refute:  []string{"flood", "drop"},
		real: func(t *testing.T) {
			c0 := counters(t, cl1)
			if got, out := ping(t, p11.Netns, st1.Gateway, count); got != count {
				t.Errorf("ping the gateway: %d of %d answered:\n%s", got, count, out)
			}
			if d := counter(t, counters(t, cl1), "router.echo_replies") - counter(t, c0, "router.echo_replies"); d < count {
				t.Errorf("router.echo_replies grew by %d, want >= %d", d, count)
			}
		},
	}, {
		name:    "from_overlay",
		req:     api.TraceRequest{In: "overlay", Src: p21.IP(), Dst: p11.IP()},
		verdict: []string{"deliver", p11.ID},
		real: func(t *testing.T) {
			tx0 := portTx(cl1, p11.ID)
			if got, out := ping(t, p21.Netns, p11.IP(), count); got != count {
				t.Errorf("ping: %d of %d answered:\n%s", got, count, out)
			}
			if d := portTx(cl1, p11.ID) - tx0; d < count {
				t.Errorf("frames n1 delivered to %s grew by %d, want >= %d", p11.Name, d, count)
			}
		},
	}, {
		// A pod whose MTU is larger than the overlay's sends a full-size
		// DF packet: the router must answer "fragmentation needed" with the
		// overlay MTU, so path MTU discovery works.
		name:    "too_big_df",
		req:     api.TraceRequest{In: p11.ID, Dst: p21.IP(), Size: st1.MTU + 50},
		verdict: []string{"frag_needed", p11.ID},
		real: func(t *testing.T) {
			mustRun(t, p11.Netns, "ip", "link", "set", "eth0", "mtu", fmt.Sprint(st1.MTU+50))
			t.Cleanup(func() {
				runNS(context.Background(), p11.Netns, "ip", "link", "set", "eth0", "mtu", fmt.Sprint(st1.MTU))
				runNS(context.Background(), p11.Netns, "ip", "route", "flush", "cache")
			})
			c0 := counters(t, cl1)
			tx0 := peerTx()
			payload := fmt.Sprint(st1.MTU + 50 - 28) // IP total length MTU+50
			got, out := ping(t, p11.Netns, p21.IP(), 1, "-M", "do", "-s", payload)
			want := fmt.Sprintf("mtu = %d", st1.MTU)
			if got != 0 || !strings.Contains(out, "Frag needed") || !strings.Contains(out, want) {
				t.Errorf("ping -M do -s %s: want 'Frag needed and DF set (%s)' from the gateway:\n%s", payload, want, out)
			}
			if d := counter(t, counters(t, cl1), "drop.frag_needed") - counter(t, c0, "drop.frag_needed"); d < 1 {
				t.Errorf("drop.frag_needed grew by %d", d)
			}
			if d := peerTx() - tx0; d != 0 {
				t.Errorf("%d frames went to %s although they exceed the overlay MTU", d, st2.Node)
			}
			// Path MTU discovery: the pod now knows the path's MTU, and a
			// ping that fits it gets through.
			if got, out := ping(t, p11.Netns, p21.IP(), 1, "-M", "do", "-s", fmt.Sprint(st1.MTU-28)); got != 1 {
				t.Errorf("ping at the overlay MTU after the ICMP error:\n%s", out)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			ctx, cancel := apiCtx()
			defer cancel()
			resp, err := cl1.Trace(ctx, tc.req)
			if err != nil {
				t.Fatalf("trace: %v", err)
			}
			t.Logf("trace %+v: verdict %q", tc.req, resp.Verdict)
			for _, want := range tc.verdict {
				if !strings.Contains(resp.Verdict, want) {
					t.Errorf("verdict %q does not mention %q; steps: %+v", resp.Verdict, want, resp.Steps)
				}
			}
			for _, bad := range tc.refute {
				if strings.Contains(resp.Verdict, bad) {
					t.Errorf("verdict %q says %q; steps: %+v", resp.Verdict, bad, resp.Steps)
				}
			}
			tc.real(t)
		})
	}
	t.Run("overlay_needs_src", func(t *testing.T) {
		ctx, cancel := apiCtx()
		defer cancel()
		resp, err := cl1.Trace(ctx, api.TraceRequest{In: "overlay", Dst: p11.IP()})
		if !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("trace from the overlay without a source: %+v, %v; want a bad request naming src", resp, err)
		}
	})
}

// testSpoofed sends hand-made frames out of pod n1-p1's eth0 with another
// source than the port's own: the port check must drop each one, count it
// as drop.spoofed, and the target must see nothing. The honest frame is
// sent first, to show the target would have seen it.
func testSpoofed(t *testing.T, c *sim.Cluster, cl1 *api.Client, st1 api.Status) {
	p11, p12, p21 := c.Nodes[0].Pods[0], c.Nodes[0].Pods[1], c.Nodes[1].Pods[0]
	mac11, err := packet.ParseMAC(p11.MAC)
	if err != nil {
		t.Fatal(err)
	}
	mac12, err := packet.ParseMAC(p12.MAC)
	if err != nil {
		t.Fatal(err)
	}
	foreignIP := netip.MustParseAddr("10.244.200.77")
	foreignMAC := packet.MAC{0x02, 0, 0, 0, 0xbe, 0xef}
	const count = 3
	for i, tc := range []struct {
		name     string
		target   *sim.Pod
		dstMAC   packet.MAC // router (routed) or the pod (switched)
		srcMAC   packet.MAC
		src      netip.Addr
		honest   bool // the control: the port's own addresses
		traceSrc bool // also ask trace about it
	}{
		{name: "honest_routed_control", target: p21, dstMAC: st1.RouterMAC, srcMAC: mac11, src: p11.IP(), honest: true},
		{name: "honest_switched_control", target: p12, dstMAC: mac12, srcMAC: mac11, src: p11.IP(), honest: true},
		{name: "foreign_ip_routed", target: p21, dstMAC: st1.RouterMAC, srcMAC: mac11, src: foreignIP, traceSrc: true},
		{name: "other_pods_ip_switched", target: p12, dstMAC: mac12, srcMAC: mac11, src: p21.IP()},
		{name: "foreign_mac_routed", target: p21, dstMAC: st1.RouterMAC, srcMAC: foreignMAC, src: p11.IP()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := uint16(0x5100 + i)
			w := watchICMP(t, tc.target.Netns)
			before := counter(t, counters(t, cl1), "drop.spoofed")
			sendRaw(t, p11.Netns, "eth0", [][]byte{echoFrame(t, tc.dstMAC, tc.srcMAC, tc.src, tc.target.IP(), 64, id)}, count)
			seen, _ := w.echoRequests(time.Second, id, netip.Addr{})
			dropped := counter(t, counters(t, cl1), "drop.spoofed") - before
			if tc.honest {
				if seen != count || dropped != 0 {
					t.Errorf("honest frames: %s saw %d of %d, drop.spoofed grew by %d", tc.target.Name, seen, count, dropped)
				}
				return
			}
			if seen != 0 {
				t.Errorf("%s received %d spoofed echo requests", tc.target.Name, seen)
			}
			if dropped != count {
				t.Errorf("drop.spoofed grew by %d, want %d", dropped, count)
			}
			if tc.traceSrc {
				ctx, cancel := apiCtx()
				defer cancel()
				resp, err := cl1.Trace(ctx, api.TraceRequest{In: p11.ID, Src: tc.src, Dst: tc.target.IP()})
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(resp.Verdict, "drop spoofed") {
					t.Errorf("trace verdict %q, want drop spoofed", resp.Verdict)
				}
			}
		})
	}

	t.Run("arp_other_pods_ip", func(t *testing.T) {
		// An ARP request claiming p12's address from p11's port must not
		// move p12's neighbour entry (ARP poisoning).
		before := counter(t, counters(t, cl1), "drop.spoofed")
		sendRaw(t, p11.Netns, "eth0", [][]byte{arpFrame(t, mac11, p12.IP(), st1.Gateway)}, count)
		waitFor(t, 2*time.Second, "drop.spoofed", func() (bool, string) {
			d := counter(t, counters(t, cl1), "drop.spoofed") - before
			return d == count, fmt.Sprintf("grew by %d, want %d", d, count)
		})
		ctx, cancel := apiCtx()
		defer cancel()
		nbs, err := cl1.Neighbours(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, nb := range nbs {
			if nb.IP == p12.IP() && nb.MAC != mac12 {
				t.Errorf("neighbour %s now at %s (port %s), want %s", nb.IP, nb.MAC, nb.PortName, mac12)
			}
		}
	})
}

// testVXLANUntrusted sends VXLAN datagrams to n2 carrying an inner echo
// request for n2-p1: from n1's underlay address with the right VNI (the
// control: delivered), from an address no node leases, and with the wrong
// VNI, and (issue 12 item 7) from n1's address with inner sources n1 does
// not own: a public address, and n2's own host address. All but the first
// must be dropped, counted, and never reach the pod.
func testVXLANUntrusted(t *testing.T, c *sim.Cluster, cl2 *api.Client, st1, st2 api.Status) {
	n1 := c.Nodes[0]
	p11, p21 := n1.Pods[0], c.Nodes[1].Pods[0]
	underlayNS := c.Name + "-u"
	stranger := netip.MustParseAddr("192.168.100.250")
	if !c.UnderlayNet.Contains(stranger) {
		t.Fatalf("underlay %s does not hold %s", c.UnderlayNet, stranger)
	}
	// The stranger sits on the underlay bridge itself: a host on the
	// nodes' network that is not a node.
	mustRun(t, underlayNS, "ip", "addr", "add", netip.PrefixFrom(stranger, c.UnderlayNet.Bits()).String(), "dev", "br0")
	t.Cleanup(func() {
		runNS(context.Background(), underlayNS, "ip", "addr", "del", netip.PrefixFrom(stranger, c.UnderlayNet.Bits()).String(), "dev", "br0")
	})
	to := netip.AddrPortFrom(st2.Underlay, st2.Port)
	const count = 3
	for i, tc := range []struct {
		name    string
		netns   string
		from    netip.Addr
		vni     uint32
		counter string     // "" = delivered
		src     netip.Addr // inner source; zero = n1-p1's
	}{
		{"known_peer_control", n1.Netns, st1.Underlay, st2.VNI, "", netip.Addr{}},
		{"unknown_peer", underlayNS, stranger, st2.VNI, "drop.vxlan_unknown_peer", netip.Addr{}},
		{"wrong_vni", n1.Netns, st1.Underlay, st2.VNI + 1, "drop.vxlan_wrong_vni", netip.Addr{}},
		{"inner_source_public", n1.Netns, st1.Underlay, st2.VNI, "drop.vxlan_spoofed_inner_src", netip.MustParseAddr("8.8.8.8")},
		{"inner_source_receivers_host", n1.Netns, st1.Underlay, st2.VNI, "drop.vxlan_spoofed_inner_src", st2.HostAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := uint16(0x7800 + i)
			src := tc.src
			if !src.IsValid() {
				src = p11.IP()
			}
			inner := echoFrame(t, st2.RouterMAC, st1.RouterMAC, src, p21.IP(), 64, id)
			payloads := make([][]byte, count)
			for k := range payloads {
				payloads[k] = vxlanPayload(tc.vni, inner)
			}
			w := watchICMP(t, p21.Netns)
			c0 := counters(t, cl2)
			sendUDP(t, tc.netns, tc.from, to, payloads...)
			seen, _ := w.echoRequests(time.Second, id, netip.Addr{})
			c1 := counters(t, cl2)
			if tc.counter == "" {
				if seen != count {
					t.Errorf("%s saw %d of %d echo requests sent over VXLAN from %s", p21.Name, seen, count, tc.from)
				}
				for _, name := range []string{"drop.vxlan_unknown_peer", "drop.vxlan_wrong_vni", "drop.vxlan_spoofed_inner_src"} {
					if d := counter(t, c1, name) - counter(t, c0, name); d != 0 {
						t.Errorf("%s grew by %d", name, d)
					}
				}
				return
			}
			if seen != 0 {
				t.Errorf("%s received %d echo requests that came in untrusted VXLAN", p21.Name, seen)
			}
			if d := counter(t, c1, tc.counter) - counter(t, c0, tc.counter); d != count {
				t.Errorf("%s grew by %d, want %d", tc.counter, d, count)
			}
		})
	}
}

// testAttachDetach drives the attach and detach API through its edges on
// node n: a missing namespace, a path that is no namespace, double attach,
// a conflicting attach, detach, detach again, and detach of a pod whose
// namespace is gone. Nothing may leak: IPAM use and the port list return
// to where they started.
func testAttachDetach(t *testing.T, n *sim.Node, cl *api.Client, other *sim.Pod) {
	used0 := ipamOf(t, cl).Used
	ports0 := len(ports(t, cl))
	links0 := linkNames(t, n.Netns)
	noLeak := func(t *testing.T, what string) {
		t.Helper()
		if links := linkNames(t, n.Netns); !slices.Equal(links, links0) {
			t.Errorf("after %s: links in the node's namespace %v, before %v", what, links, links0)
		}
		if used := ipamOf(t, cl).Used; used != used0 {
			t.Errorf("after %s: %d addresses in use, want %d", what, used, used0)
		}
		if np := len(ports(t, cl)); np != ports0 {
			t.Errorf("after %s: %d ports, want %d", what, np, ports0)
		}
	}
	attach := func(req api.AttachRequest) (api.AttachResponse, error) {
		ctx, cancel := apiCtx()
		defer cancel()
		return cl.Attach(ctx, req)
	}
	detach := func(podID string) error {
		ctx, cancel := apiCtx()
		defer cancel()
		return cl.Detach(ctx, api.DetachRequest{PodID: podID})
	}

	t.Run("missing_netns", func(t *testing.T) {
		path := netdev.NetnsPath(testenv.UniqueName("wit"))
		_, err := attach(api.AttachRequest{PodID: "wit-missing", Netns: path})
		var re *api.RemoteError
		if !errors.As(err, &re) || re.Status != http.StatusBadRequest || re.Field != "netns" || !errors.Is(err, api.ErrBadRequest) {
			t.Fatalf("attach in missing %s: got %#v (%v), want a 400 bad request on field netns", path, re, err)
		}
		if !strings.Contains(re.Msg, path) {
			t.Errorf("error %q does not name the namespace %s", re.Msg, path)
		}
		noLeak(t, "failed attach")
	})

	t.Run("not_a_netns", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "not-a-netns")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := attach(api.AttachRequest{PodID: "wit-notns", Netns: path})
		if err == nil {
			t.Fatalf("attach with netns %s (a plain file) succeeded", path)
		}
		// Known gap (reported): node.Attach only stats the path, so a file
		// that is no namespace fails later, in setns, and comes back as a
		// 500 rather than a 400 naming netns. What matters here is that it
		// fails and leaks nothing.
		t.Logf("attach with a plain file as netns: %v", err)
		noLeak(t, "failed attach")
	})

	t.Run("lifecycle", func(t *testing.T) {
		ns := testenv.UniqueName("wit")
		path, err := netdev.NewNetns(ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netdev.DeleteNetns(ns) })
		req := api.AttachRequest{PodID: ns, Netns: path, PodNamespace: "wit", PodName: ns}
		r1, err := attach(req)
		if err != nil {
			t.Fatalf("attach: %v", err)
		}
		t.Cleanup(func() { detach(ns) })
		r2, err := attach(req)
		if err != nil {
			t.Fatalf("second attach: %v", err)
		}
		if r1 != r2 {
			t.Errorf("second attach answered %+v, first %+v", r2, r1)
		}
		if used := ipamOf(t, cl).Used; used != used0+1 {
			t.Errorf("after two attaches of one pod: %d addresses in use, want %d", used, used0+1)
		}
		if !linkExists(t, ns, "eth0") {
			t.Fatalf("no eth0 in %s after attach", ns)
		}
		pingAll(t, ns, r1.Gateway)

		_, err = attach(api.AttachRequest{PodID: ns, Netns: netdev.NetnsPath(other.Netns)})
		if !errors.Is(err, api.ErrConflict) {
			t.Errorf("attach of %s in another namespace: %v, want a conflict", ns, err)
		}

		if err := detach(ns); err != nil {
			t.Fatalf("detach: %v", err)
		}
		if linkExists(t, ns, "eth0") {
			t.Errorf("eth0 still in %s after detach", ns)
		}
		for _, a := range ipamOf(t, cl).Allocations {
			if a.PodID == ns || a.IP == r1.IP {
				t.Errorf("allocation %+v still held after detach", a)
			}
		}
		noLeak(t, "detach")
		if err := detach(ns); !errors.Is(err, api.ErrNotFound) || !isRemote(err, http.StatusNotFound) {
			t.Errorf("second detach: %v, want 404 not found", err)
		}

		// Attach again, then lose the namespace before detaching, as when
		// a pod's sandbox is torn down first.
		r3, err := attach(req)
		if err != nil {
			t.Fatalf("re-attach: %v", err)
		}
		if r3.IP == r1.IP {
			t.Errorf("re-attach got %s again at once; a freed address should wait until the others were used", r3.IP)
		}
		if err := netdev.DeleteNetns(ns); err != nil {
			t.Fatal(err)
		}
		if err := detach(ns); err != nil {
			t.Errorf("detach after the namespace is gone: %v", err)
		}
		noLeak(t, "detach of a pod whose namespace is gone")
	})
}

// portIdentity is what must survive a restart of weftd: the pod's
// interface and address, not the counters or the switch's port number.
type portIdentity struct {
	Netns, IfName string
	Address       netip.Prefix
	MAC           packet.MAC
	MTU           int
}

func identities(ps []api.Port) map[string]portIdentity {
	m := make(map[string]portIdentity, len(ps))
	for _, p := range ps {
		m[p.PodID] = portIdentity{p.Netns, p.IfName, p.Address, p.MAC, p.MTU}
	}
	return m
}

func sameIdentities(t *testing.T, what string, before, after map[string]portIdentity) {
	t.Helper()
	if len(before) != len(after) {
		t.Errorf("%s: %d ports, before %d: %v vs %v", what, len(after), len(before), after, before)
	}
	for id, b := range before {
		if a, ok := after[id]; !ok || a != b {
			t.Errorf("%s: pod %s was %+v, now %+v (present %v)", what, id, b, a, ok)
		}
	}
}

// testRestart stops node n's weftd with stop, starts it again, and checks
// that its pods keep their addresses, that TCP connections through it
// (to a pod on the same node and to one across nodes) survive, including
// data written while weftd was down, and that pings get through.
func testRestart(t *testing.T, c *sim.Cluster, n *sim.Node, cl *api.Client, peerSt api.Status, stop func() error) {
	p1, p2, remote := n.Pods[0], n.Pods[1], c.Nodes[1].Pods[0]
	if n == c.Nodes[1] {
		t.Fatal("testRestart restarts a node whose remote pod is on node 2")
	}
	local := connectTCP(t, p1.Netns, p2.Netns, p2.IP())
	cross := connectTCP(t, p1.Netns, remote.Netns, remote.IP())
	for _, conn := range []*tcpPair{local, cross} {
		if err := conn.roundTrip("before", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	st0 := status(t, cl)
	before := identities(ports(t, cl))
	ifindex0 := []int{linkIndex(t, p1.Netns, "eth0"), linkIndex(t, p2.Netns, "eth0")}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Written while weftd is down: the pods' TCP retransmits it until the
	// restarted weftd forwards again.
	for _, conn := range []*tcpPair{local, cross} {
		conn.client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.client.Write([]byte("during")); err != nil {
			t.Fatalf("write while weftd is down: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.StartNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if rs := routes(t, cl); !hasPeerRoute(rs, peerSt.Subnet) {
		t.Logf("note: right after start, the restarted node has no route to %s yet: %v", peerSt.Subnet, rs)
	}
	waitFor(t, 10*time.Second, "route to the peer after restart", func() (bool, string) {
		rs := routes(t, cl)
		return hasPeerRoute(rs, peerSt.Subnet), fmt.Sprint(rs)
	})
	st1 := status(t, cl)
	if st1.Subnet != st0.Subnet || st1.RouterMAC != st0.RouterMAC {
		t.Errorf("after restart: subnet %s router MAC %s, before %s %s", st1.Subnet, st1.RouterMAC, st0.Subnet, st0.RouterMAC)
	}
	sameIdentities(t, "after restart", before, identities(ports(t, cl)))
	// The pods' interfaces are the same devices, re-opened, not new ones.
	if ifindex1 := []int{linkIndex(t, p1.Netns, "eth0"), linkIndex(t, p2.Netns, "eth0")}; !slices.Equal(ifindex0, ifindex1) {
		t.Errorf("pods' eth0 ifindex %v after restart, %v before: the TAPs were recreated", ifindex1, ifindex0)
	}
	for name, conn := range map[string]*tcpPair{"same-node": local, "cross-node": cross} {
		dl := time.Now().Add(20 * time.Second)
		conn.client.SetDeadline(dl)
		conn.server.SetDeadline(dl)
		if err := conn.finishRoundTrip("during"); err != nil {
			t.Errorf("%s connection, data written while weftd was down: %v", name, err)
			continue
		}
		if err := conn.roundTrip("after", 5*time.Second); err != nil {
			t.Errorf("%s connection after restart: %v", name, err)
		}
	}
	pingAll(t, p1.Netns, p2.IP())
	pingAll(t, p1.Netns, remote.IP())
	pingAll(t, remote.Netns, p1.IP())
}

// testLeaseExpiry kills node 2's weftd and waits for its lease to expire:
// node 1 must withdraw the route and the peer within the TTL (plus the
// registry's polling), and traffic to node 2's pods must get "net
// unreachable". Restarted, node 2 gets its subnet and pods back, node 1
// its route, and a TCP connection opened before the outage still works.
func testLeaseExpiry(t *testing.T, c *sim.Cluster, cl1, cl2 *api.Client, st2 api.Status, p11, p21 *sim.Pod) {
	n2 := c.Nodes[1]
	conn := connectTCP(t, p11.Netns, p21.Netns, p21.IP())
	if err := conn.roundTrip("before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	before := identities(ports(t, cl2))

	killed := time.Now()
	if err := c.Kill(n2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, testLeaseTTL+2*time.Second, "n1 forgets the killed n2", func() (bool, string) {
		rs, ps := routes(t, cl1), peers(t, cl1)
		return !hasPeerRoute(rs, st2.Subnet) && !hasPeer(ps, st2.Node), fmt.Sprintf("routes %v, peers %v", rs, ps)
	})
	t.Logf("n1 withdrew n2's route %s after the kill (lease TTL %s)", time.Since(killed).Round(100*time.Millisecond), testLeaseTTL)
	if got, out := ping(t, p11.Netns, p21.IP(), 1); got != 0 || !strings.Contains(out, "Destination Net Unreachable") {
		t.Errorf("ping %s with n2's lease gone: want 'Destination Net Unreachable':\n%s", p21.IP(), out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.StartNode(ctx, n2); err != nil {
		t.Fatal(err)
	}
	if st := status(t, cl2); st.Subnet != st2.Subnet {
		t.Errorf("restarted n2 has subnet %s, before %s", st.Subnet, st2.Subnet)
	}
	sameIdentities(t, "n2 after restart", before, identities(ports(t, cl2)))
	waitFor(t, 10*time.Second, "n1 relearns n2", func() (bool, string) {
		rs, ps := routes(t, cl1), peers(t, cl1)
		return hasPeerRoute(rs, st2.Subnet) && hasPeer(ps, st2.Node), fmt.Sprintf("routes %v, peers %v", rs, ps)
	})
	if err := conn.roundTrip("after", 20*time.Second); err != nil {
		t.Errorf("TCP connection across n2's outage: %v", err)
	}
	pingAll(t, p11.Netns, p21.IP())
	pingAll(t, p21.Netns, p11.IP())
}
