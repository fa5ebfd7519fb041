package sim

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/netdev"
)

func client(t *testing.T, n *Node) *api.Client {
	t.Helper()
	cl := api.NewClient(n.Socket)
	t.Cleanup(cl.Close)
	return cl
}

func qctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// reachable reports whether a TCP connection attempt from netns to dst
// reaches dst's host: an accept or a refusal (RST) both prove the path; a
// refusal is what a node address without a listener answers.
func reachable(ctx context.Context, netns string, dst netip.AddrPort, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := DialIn(ctx, netns, "tcp4", dst.String())
	if err == nil {
		conn.Close()
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// TestAddNodeReachable: a node added to a running cluster is reachable from
// every existing node and pod once the cluster has learnt its lease: each
// existing node routes to its subnet and it routes to theirs.
//
// The test waits for those conditions, not for a fixed time: on a loaded
// 2-core machine how long the registry watch takes is not a property of
// weft. How long it took is logged; every wait is bounded by a deadline
// far above it, so a node that is never routed still fails.
func TestAddNodeReachable(t *testing.T) {
	c := newTestCluster(t, Options{})
	ctx := context.Background()
	if err := c.Up(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	before := c.Endpoints()
	old := slices.Clone(c.Nodes)
	n, err := c.AddNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	const routeDeadline = 30 * time.Second // the lease TTL is 6 s
	for _, o := range old {
		for _, r := range []struct {
			from, to *Node
		}{{o, n}, {n, o}} {
			if !waitRoute(t, r.from, r.to.Subnet, true, added.Add(routeDeadline)) {
				t.Fatalf("node %s has no route to %s's subnet %s %s after AddNode", r.from.Name, r.to.Name, r.to.Subnet, routeDeadline)
			}
		}
	}
	t.Logf("routes between %s and the %d other nodes in place %s after AddNode returned", n.Name, len(old), time.Since(added).Round(time.Millisecond))
	dst := netip.AddrPortFrom(n.HostAddr, 9) // nothing listens: a RST proves the path
	const reachDeadline = 15 * time.Second   // ARP and a SYN retransmission or two
	took := make([]time.Duration, len(before))
	routed := time.Now()
	var wg sync.WaitGroup
	for i, e := range before {
		wg.Go(func() {
			took[i] = -1
			for time.Since(routed) < reachDeadline {
				if reachable(ctx, e.Netns, dst, 2*time.Second) {
					took[i] = time.Since(routed)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, e := range before {
		if took[i] < 0 {
			t.Errorf("%s did not reach new node %s at %s within %s of the routes being in place", e.Name, n.Name, dst.Addr(), reachDeadline)
			continue
		}
		t.Logf("%s -> %s reachable %s after the routes were in place", e.Name, n.Name, took[i].Round(time.Millisecond))
	}
}

// TestKilledNodeWithdrawn: a weftd killed with SIGKILL stops renewing its
// lease; once it runs out the other nodes drop its route, they keep
// talking among themselves all along, and a restart brings the route back.
//
// The withdrawal is watched by its own poller (every 100 ms), apart from
// the TCP exchanges between the survivors, which may each take seconds on
// a loaded machine. Withdrawal must not come before the lease can have run
// out (it was renewed at most TTL/3 before the kill, so not before
// 2/3 TTL) and must come within a deadline far above TTL; the time it took
// is logged.
func TestKilledNodeWithdrawn(t *testing.T) {
	c := newTestCluster(t, Options{})
	ctx := context.Background()
	if err := c.Up(ctx, 3, 1); err != nil {
		t.Fatal(err)
	}
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	p1, p2, p3 := n1.Pods[0], n2.Pods[0], n3.Pods[0]
	srv := echoServer(t, p2, 9000)
	for _, n := range []*Node{n1, n2} {
		if !hasRoute(t, n, n3.Subnet) {
			t.Fatalf("node %s has no route to %s's subnet %s before the kill", n.Name, n3.Name, n3.Subnet)
		}
	}
	if err := c.Kill(n3); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	ttl := time.Duration(c.LeaseTTL)
	deadline := killed.Add(ttl + 30*time.Second)

	// The survivors keep talking while n3's lease runs out.
	stopTalk := make(chan struct{})
	talkDone := make(chan struct{})
	var talks, talkFails int
	go func() {
		defer close(talkDone)
		for {
			select {
			case <-stopTalk:
				return
			default:
			}
			if _, errText := tcpCheck(ctx, p1.Netns, srv); errText != "" {
				talkFails++
				t.Errorf("%s -> %s during withdrawal: %s", p1.Name, p2.Name, errText)
			}
			talks++
			time.Sleep(100 * time.Millisecond)
		}
	}()
	withdrawn := map[string]time.Duration{}
	for time.Now().Before(deadline) && len(withdrawn) < 2 {
		for _, n := range []*Node{n1, n2} {
			if _, done := withdrawn[n.Name]; !done && !hasRoute(t, n, n3.Subnet) {
				withdrawn[n.Name] = time.Since(killed)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stopTalk)
	<-talkDone
	for _, n := range []*Node{n1, n2} {
		d, ok := withdrawn[n.Name]
		switch {
		case !ok:
			t.Errorf("node %s still routes to killed %s's subnet %s %s after the kill (TTL %s)", n.Name, n3.Name, n3.Subnet, time.Since(killed).Round(time.Millisecond), ttl)
		case d < ttl*2/3:
			t.Errorf("node %s withdrew %s's route %s after the kill, before its lease (TTL %s, renewed every TTL/3) can have run out", n.Name, n3.Name, d.Round(time.Millisecond), ttl)
		default:
			t.Logf("node %s withdrew %s's route %s after the kill (TTL %s)", n.Name, n3.Name, d.Round(time.Millisecond), ttl)
		}
	}
	t.Logf("%s -> %s: %d TCP exchanges during withdrawal, %d failed", p1.Name, p2.Name, talks, talkFails)
	if talks == 0 {
		t.Errorf("no TCP exchange between the survivors during withdrawal")
	}
	if err := Ping(ctx, p1.Netns, p3.IP()); err == nil {
		t.Errorf("%s still reaches %s on killed node %s", p1.Name, p3.Name, n3.Name)
	}

	if err := c.Restart(ctx, n3); err != nil {
		t.Fatal(err)
	}
	if !waitRoute(t, n1, n3.Subnet, true, time.Now().Add(30*time.Second)) {
		t.Fatalf("node %s has no route to restarted %s's subnet %s after 30 s", n1.Name, n3.Name, n3.Subnet)
	}
	if err := Ping(ctx, p1.Netns, p3.IP()); err != nil {
		t.Errorf("%s -> %s after %s restarted: %v", p1.Name, p3.Name, n3.Name, err)
	}
}

// waitRoute polls node n's routes until its route to p is present (want)
// or absent (!want), or until deadline; it reports whether it got there.
func waitRoute(t *testing.T, n *Node, p netip.Prefix, want bool, deadline time.Time) bool {
	t.Helper()
	for {
		if hasRoute(t, n, p) == want {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hasRoute(t *testing.T, n *Node, p netip.Prefix) bool {
	t.Helper()
	routes, err := client(t, n).Routes(qctx(t))
	if err != nil {
		t.Fatalf("node %s routes: %v", n.Name, err)
	}
	return slices.ContainsFunc(routes, func(r api.Route) bool { return r.Prefix == p })
}

// echoServer runs the helper's peer-report echo server in pod p (in this
// process) until the test ends and returns its address.
func echoServer(t *testing.T, p *Pod, port uint16) netip.AddrPort {
	t.Helper()
	ln, err := ListenIn(p.Netns, "tcp4", ":"+strconv.Itoa(int(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go ServeEcho(ln)
	return netip.AddrPortFrom(p.IP(), port)
}

// TestRestartKeepsTCPStream: a TCP stream between pods of two nodes
// survives a restart of either node's weftd (the TAPs are persistent and
// the restarted weftd re-opens them); the stream only pauses.
func TestRestartKeepsTCPStream(t *testing.T) {
	c := newTestCluster(t, Options{})
	ctx := context.Background()
	if err := c.Up(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	p1, p2 := c.Nodes[0].Pods[0], c.Nodes[1].Pods[0]
	ln, err := ListenIn(p2.Netns, "tcp4", ":9001")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, conn)
	}()
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conn, err := DialIn(dctx, p1.Netns, "tcp4", netip.AddrPortFrom(p2.IP(), 9001).String())
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	stream := startEchoStream(t, conn)
	if !stream.resumed(0, 50, 10*time.Second) {
		t.Fatalf("stream did not start: %d records back", stream.received())
	}
	for _, n := range c.Nodes {
		mark := stream.received()
		from := time.Now()
		if err := c.Restart(ctx, n); err != nil {
			t.Fatal(err)
		}
		restartTook := time.Since(from)
		if !stream.resumed(mark, 100, 30*time.Second) {
			t.Fatalf("stream did not resume within 30 s of restarting %s: %d records back", n.Name, stream.received()-mark)
		}
		gap := stream.maxGapSince(mark)
		t.Logf("weftd restart of %s (the %s side) took %s; the TCP stream paused for %s at most, then went on in order",
			n.Name, map[bool]string{true: "client", false: "server"}[n == c.Nodes[0]], restartTook.Round(time.Millisecond), gap.Round(time.Millisecond))
	}
	stream.stop()
}

func maxGap(ts []time.Time) time.Duration {
	var g time.Duration
	for i := 1; i < len(ts); i++ {
		g = max(g, ts[i].Sub(ts[i-1]))
	}
	return g
}

// TestFiftyPods: one node takes 50 pods, each with its own address, and
// every one of them reaches the gateway.
func TestFiftyPods(t *testing.T) {
	c := newTestCluster(t, Options{})
	ctx := context.Background()
	const pods = 50
	start := time.Now()
	if err := c.Up(ctx, 1, pods); err != nil {
		t.Fatal(err)
	}
	t.Logf("1 node with %d pods up in %s", pods, time.Since(start).Round(time.Millisecond))
	n := c.Nodes[0]
	seen := map[netip.Addr]string{}
	for _, p := range n.Pods {
		if other, dup := seen[p.IP()]; dup {
			t.Errorf("%s and %s both have %s", p.Name, other, p.IP())
		}
		seen[p.IP()] = p.Name
		if !n.Subnet.Contains(p.IP()) || p.IP() == p.Gateway || p.IP() == n.HostAddr {
			t.Errorf("%s has %s: not a pod address of %s", p.Name, p.IP(), n.Subnet)
		}
	}
	if st := nodeStatus(t, n); st.Ports != pods {
		t.Errorf("node reports %d ports, want %d", st.Ports, pods)
	}
	errs := make([]error, len(n.Pods))
	next := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range next {
				errs[i] = Ping(ctx, n.Pods[i].Netns, n.Pods[i].Gateway)
			}
		})
	}
	for i := range n.Pods {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s -> gateway %s: %v", n.Pods[i].Name, n.Pods[i].Gateway, err)
		}
	}
}

// TestAttachAndDown: an attach to a namespace that does not exist fails
// and holds no address or port; attaching a pod again returns the address
// it has; Down from the record works, and works again.
func TestAttachAndDown(t *testing.T) {
	c := newTestCluster(t, Options{})
	ctx := context.Background()
	if err := c.Up(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	n, p := c.Nodes[0], c.Nodes[0].Pods[0]
	cl := client(t, n)
	ipamBefore, err := cl.IPAM(qctx(t))
	if err != nil {
		t.Fatal(err)
	}
	linksBefore := linkNames(t, n.Netns)

	tests := []struct {
		name      string
		req       api.AttachRequest
		wantErr   bool
		wantAddr  netip.Prefix
		wantPorts int
	}{
		{"missing netns", api.AttachRequest{PodID: c.Name + "-ghost", Netns: netdev.NetnsPath(c.Name + "-no-such-ns")}, true, netip.Prefix{}, 1},
		{"again after the failure", api.AttachRequest{PodID: c.Name + "-ghost", Netns: netdev.NetnsPath(c.Name + "-no-such-ns")}, true, netip.Prefix{}, 1},
		{"double attach", api.AttachRequest{PodID: p.ID, Netns: netdev.NetnsPath(p.Netns)}, false, p.Address, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := cl.Attach(qctx(t), tc.req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("attach: %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (resp.Address != tc.wantAddr || resp.MAC.String() != p.MAC) {
				t.Errorf("attach again: %s %s, want %s %s", resp.Address, resp.MAC, tc.wantAddr, p.MAC)
			}
			ipam, err := cl.IPAM(qctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if ipam.Used != ipamBefore.Used || len(ipam.Allocations) != len(ipamBefore.Allocations) {
				t.Errorf("IPAM used %d (%d allocations), want %d (%d) as before", ipam.Used, len(ipam.Allocations), ipamBefore.Used, len(ipamBefore.Allocations))
			}
			for _, a := range ipam.Allocations {
				if a.PodID == tc.req.PodID && tc.wantErr {
					t.Errorf("failed attach of %s holds %s", a.PodID, a.IP)
				}
			}
			ports, err := cl.Ports(qctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(ports) != tc.wantPorts {
				t.Errorf("%d ports, want %d", len(ports), tc.wantPorts)
			}
			if got := linkNames(t, n.Netns); !slices.Equal(got, linksBefore) {
				t.Errorf("node namespace links %v, want %v as before", got, linksBefore)
			}
		})
	}

	// Down as a later `weft sim down` does it: from the record alone.
	rec, err := Load(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := rec.Down(); err != nil {
			t.Fatalf("down #%d: %v", i+1, err)
		}
	}
	for _, ns := range []string{c.underlayNS(), n.Netns, p.Netns} {
		if _, err := os.Stat(netdev.NetnsPath(ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still there after down: %v", ns, err)
		}
	}
	if pidAlive(n.PID) {
		t.Errorf("weftd pid %d still running after down", n.PID)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir %s still there after down: %v", c.Dir, err)
	}
	if Exists(c.Dir) {
		t.Errorf("record still there after down")
	}
}

func linkNames(t *testing.T, netns string) []string {
	t.Helper()
	h, err := netdev.OpenHandle(netdev.NetnsPath(netns))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

// TestDownUnrecordedWeftd: a sim that crashed after starting a weftd but
// before recording its PID is still taken down completely.
func TestDownUnrecordedWeftd(t *testing.T) {
	c := newTestCluster(t, Options{})
	if err := c.Up(context.Background(), 1, 1); err != nil {
		t.Fatal(err)
	}
	pid := c.Nodes[0].PID
	c.Nodes[0].PID = 0
	if err := c.save(); err != nil {
		t.Fatal(err)
	}
	rec, err := Load(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Down(); err != nil {
		t.Fatal(err)
	}
	if pidAlive(pid) {
		t.Errorf("weftd pid %d, missing from the record, survived down", pid)
	}
}
