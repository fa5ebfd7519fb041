package sim

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/nft"
)

// newOutsideCluster is a test cluster with the outside host.
func newOutsideCluster(t *testing.T, nodes, pods int) *Cluster {
	t.Helper()
	c := newTestCluster(t, Options{Outside: true, Helper: testHelper(t), Name: testenv.UniqueName("egs")})
	if err := c.Up(context.Background(), nodes, pods); err != nil {
		t.Fatal(err)
	}
	return c
}

// tableExists reports whether weftd's nftables table is in node n's
// namespace.
func tableExists(t *testing.T, n *Node) bool {
	t.Helper()
	tab, err := nft.Open(nft.Options{NetnsPath: netdev.NetnsPath(n.Netns)})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	ok, err := tab.Exists()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestEgressAndHostPortMatrix: `weft sim test`'s outside cells pass: every
// pod reaches the outside host masqueraded behind its node's address (TCP
// and UDP), directly and through sim/outside, a Service whose endpoint is
// that host (outside the cluster CIDR, as the kubernetes Service's are),
// and so does every node through sim/outside;
// the outside host reaches each node's hostPort pod with its own address
// kept; pod-to-pod stays un-NATed.
func TestEgressAndHostPortMatrix(t *testing.T) {
	c := newOutsideCluster(t, 2, 2)
	r := runMatrix(t, c)
	var egress, hostport, nodeport, outside int
	for _, ch := range r.Checks {
		switch ch.Name {
		case "egress":
			egress++
		case "hostport":
			hostport++
		case "nodeport":
			nodeport++
		case "service-outside":
			outside++
		}
	}
	if egress != 4 || hostport != 2 || nodeport != 4 || outside != 6 {
		t.Errorf("%d egress, %d hostport, %d nodeport and %d service-outside checks ran, want 4, 2, 4 and 6 (pods and nodes)", egress, hostport, nodeport, outside)
	}
	st := nodeStatus(t, c.Nodes[0])
	if e := st.Egress; e == nil || !e.Enabled || !e.Masquerade || e.Masqueraded < 8 || e.HostPorts != 1 || e.NodePorts != 2 || e.OutPackets == 0 || e.InPackets == 0 {
		t.Errorf("n1's egress status after the matrix: %+v; want on, masquerading, >= 8 connections (2 pods x tcp+udp, direct and through sim/outside), 1 hostPort, 2 node ports, packets both ways", e)
	}
}

// TestEgressStreamSurvivesRestart: a TCP stream from a pod to the outside
// host goes on across a graceful restart of the pod's weftd: the table
// stays while the node has pods, and the new weftd rewrites it in one
// transaction; the translation lives in the connection's conntrack entry.
func TestEgressStreamSurvivesRestart(t *testing.T) {
	c := newOutsideCluster(t, 1, 1)
	n, p := c.Nodes[0], c.Nodes[0].Pods[0]
	ctx := context.Background()
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conn, err := DialIn(dctx, p.Netns, "tcp4", c.Outside.AddrPort().String())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peer, err := EchoProbe(conn, 1024, time.Now().Add(5*time.Second))
	if err != nil || peer.Addr() != n.Underlay {
		t.Fatalf("before the restart: server saw %s (err %v), want %s", peer, err, n.Underlay)
	}
	stream := startEchoStream(t, conn)
	if !stream.resumed(0, 30, 30*time.Second) {
		t.Fatalf("stream did not start: %d records back", stream.received())
	}
	mark := stream.received()
	if err := c.Stop(n); err != nil {
		t.Fatal(err)
	}
	if !tableExists(t, n) {
		t.Error("weftd's nftables table is gone after a clean stop of a node with a pod")
	}
	if err := c.StartNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if !tableExists(t, n) {
		t.Error("weftd's nftables table is not back after the restart")
	}
	if !stream.resumed(mark, 100, 30*time.Second) {
		t.Fatalf("stream did not resume within 30 s of the restart: %d records back", stream.received()-mark)
	}
	t.Logf("egress stream paused for %s at most across the restart", stream.maxGapSince(mark).Round(time.Millisecond))
	stream.stop()
}

// TestHostPortConflictAndRemoval: a second pod asking for a hostPort that
// another pod holds on that address and protocol is refused with a
// conflict, and nothing of it is left (no port, no address, no device);
// the same port on another protocol or host address is fine; detaching the
// holder removes the mapping, and the outside host is then refused; a
// clean stop of the node, now without pods, removes weftd's table.
func TestHostPortConflictAndRemoval(t *testing.T) {
	c := newOutsideCluster(t, 1, 1)
	n, holder := c.Nodes[0], c.Nodes[0].Pods[0]
	cl := client(t, n)
	ctx := qctx(t)
	front := netip.AddrPortFrom(n.Underlay, simHostPort)

	ns := testenv.UniqueName("egc")
	if _, err := netdev.NewNetns(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netdev.DeleteNetns(ns) })
	before := nodePorts(t, n)
	ipamBefore, err := cl.IPAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Attach(ctx, api.AttachRequest{PodID: ns, Netns: netdev.NetnsPath(ns),
		PortMappings: []api.PortMapping{{HostPort: simHostPort, ContainerPort: 80, Protocol: "TCP", HostIP: n.Underlay}}})
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "taken by "+holder.ID) {
		t.Fatalf("attach with %s's hostPort: err %v, want a conflict naming %s", holder.Name, err, holder.ID)
	}
	ipamAfter, err := cl.IPAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := nodePorts(t, n); len(got) != len(before) || ipamAfter.Used != ipamBefore.Used {
		t.Errorf("after the refused attach: %d ports (was %d), %d addresses used (was %d)", len(got), len(before), ipamAfter.Used, ipamBefore.Used)
	}
	if names := linkNames(t, ns); len(names) != 1 {
		t.Errorf("the refused pod's namespace has links %v, want only lo", names)
	}

	// Another protocol on the same port is another mapping.
	_, err = cl.Attach(ctx, api.AttachRequest{PodID: ns, Netns: netdev.NetnsPath(ns),
		PortMappings: []api.PortMapping{{HostPort: simHostPort, ContainerPort: 80, Protocol: "udp"}}})
	if err != nil {
		t.Fatalf("attach with %d/udp: %v", simHostPort, err)
	}
	if st := nodeStatus(t, n); st.Egress == nil || st.Egress.HostPorts != 2 {
		t.Errorf("egress status after a udp mapping: %+v, want 2 hostPorts", st.Egress)
	}
	if err := cl.Detach(ctx, api.DetachRequest{PodID: ns}); err != nil {
		t.Fatal(err)
	}

	// The holder answers on the node's address until it is detached.
	srv, err := startServer(ctx, testHelper(t), holder.Netns, ":7790")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	if peer, errText := tcpCheck(ctx, c.Outside.Netns, front); errText != "" || peer != c.Outside.Gateway {
		t.Fatalf("outside -> %s: pod saw %s (%s)", front, peer, errText)
	}
	if err := cl.Detach(ctx, api.DetachRequest{PodID: holder.ID}); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if conn, err := DialIn(dctx, c.Outside.Netns, "tcp4", front.String()); err == nil {
		conn.Close()
		t.Errorf("outside -> %s still connects after the pod holding it was detached", front)
	}
	if st := nodeStatus(t, n); st.Egress == nil || st.Egress.HostPorts != 0 {
		t.Errorf("egress status after the detach: %+v, want 0 hostPorts", st.Egress)
	}
	// With no pod left, a clean stop removes weftd's table.
	if err := c.Stop(n); err != nil {
		t.Fatal(err)
	}
	if tableExists(t, n) {
		t.Error("weftd's nftables table is still there after a clean stop of a node without pods")
	}
}

// TestNodePortConflictAndDelete: a second Service asking for a node port
// another holds is refused at apply with a clear error, and nothing of it
// is stored; deleting the holder stops its node port answering on every
// node.
func TestNodePortConflictAndDelete(t *testing.T) {
	c := newOutsideCluster(t, 2, 1)
	cl := client(t, c.Nodes[0])
	ctx := qctx(t)
	_, err := cl.Apply(ctx, api.ApplyRequest{Documents: `{apiVersion: v1, kind: Service, metadata: {name: other, namespace: sim}, spec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}}`})
	if err == nil || !strings.Contains(err.Error(), "spec.ports[0].nodePort 30080: already allocated to Service sim/web") {
		t.Fatalf("apply of a second Service on node port %d: err %v", simNodePort, err)
	}
	svcs, err := cl.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if s.Name == "other" {
			t.Errorf("the refused Service was stored: %+v", s)
		}
	}
	srv, err := startServer(ctx, testHelper(t), c.Nodes[1].Pods[0].Netns, ":7790")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	srv0, err := startServer(ctx, testHelper(t), c.Nodes[0].Pods[0].Netns, ":7790")
	if err != nil {
		t.Fatal(err)
	}
	defer srv0.stop()
	for _, n := range c.Nodes {
		if _, errText := tcpCheck(ctx, c.Outside.Netns, netip.AddrPortFrom(n.Underlay, simNodePort)); errText != "" {
			t.Fatalf("outside -> %s:%d before the delete: %s", n.Underlay, simNodePort, errText)
		}
	}
	if _, err := cl.DeleteObjects(ctx, api.ApplyRequest{Documents: `{apiVersion: v1, kind: Service, metadata: {name: web, namespace: sim}}`}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		front := netip.AddrPortFrom(n.Underlay, simNodePort)
		deadline := time.Now().Add(5 * time.Second)
		for {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			conn, err := DialIn(dctx, c.Outside.Netns, "tcp4", front.String())
			cancel()
			if err != nil {
				break
			}
			conn.Close()
			if time.Now().After(deadline) {
				t.Errorf("outside -> %s still answers 5 s after sim/web was deleted", front)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if st := nodeStatus(t, c.Nodes[1]); st.Egress == nil || st.Egress.NodePorts != 1 {
		t.Errorf("n2's egress status after the delete: %+v, want 1 node port (sim/web-local)", st.Egress)
	}
}
