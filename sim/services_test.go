package sim

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
)

// The service behaviours of issue 13, in real namespaces: a 2-node sim with
// 2 pods per node (n1-p1, n1-p2, n2-p1, n2-p2, labels app=sim and
// sim-pod=NAME). Every pod runs "who am I" servers: TCP 8080 and 9090 and
// UDP 8080 answer with the pod's name, so a client sees which backend a
// flow landed on.

const (
	whoPort    = 8080
	whoPortAlt = 9090
)

type svcSim struct {
	t    *testing.T
	c    *Cluster
	pods map[string]*Pod
}

func newSvcSim(t *testing.T) *svcSim {
	t.Helper()
	c := newTestCluster(t, Options{Name: testenv.UniqueName("sv")})
	if err := c.Up(context.Background(), 2, 2); err != nil {
		t.Fatal(err)
	}
	s := &svcSim{t: t, c: c, pods: map[string]*Pod{}}
	for _, p := range c.Pods() {
		s.pods[p.Name] = p
		s.serveWho(p)
	}
	return s
}

// serveWho starts the pod's "who am I" servers; they close with the test.
func (s *svcSim) serveWho(p *Pod) {
	t := s.t
	for _, port := range []int{whoPort, whoPortAlt} {
		ln, err := ListenIn(p.Netns, "tcp4", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		reply := fmt.Sprintf("%s:%d\n", p.Name, port)
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					conn.Write([]byte(reply))
					// Echo what follows, for the long-lived stream checks.
					io.Copy(conn, conn)
				}()
			}
		}()
	}
	pc, err := ListenPacketIn(p.Netns, "udp4", fmt.Sprintf(":%d", whoPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(p.Name), from)
		}
	}()
}

// apply applies YAML and fails the test on error.
func (s *svcSim) apply(yaml string) {
	s.t.Helper()
	if _, err := s.c.Apply(context.Background(), yaml); err != nil {
		s.t.Fatalf("apply: %v\n%s", err, yaml)
	}
}

// waitReady waits until every node serves ns/name with n ready endpoints.
func (s *svcSim) waitReady(name string, n int) {
	s.t.Helper()
	if err := s.c.WaitService(context.Background(), "sim/"+name, n, 10*time.Second); err != nil {
		s.t.Fatal(err)
	}
}

// who connects from netns to vip:port over TCP and returns the backend's
// answer ("n1-p1:8080").
func who(netns string, vip netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := DialIn(ctx, netns, "tcp4", vip.String())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// whoUDP sends a datagram from conn (a connected UDP socket) and returns
// the backend's name.
func whoUDP(conn net.Conn) (string, error) {
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("who")); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	return string(buf[:n]), err
}

func vipOf(ip string, port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port))
}

// slice is an EndpointSlice of service name over the given pods, each
// endpoint on its pod's node.
func (s *svcSim) slice(name, svc string, pods ...string) string {
	var eps []string
	for _, p := range pods {
		eps = append(eps, fmt.Sprintf("- {addresses: [%s], nodeName: %s-%s}", s.pods[p].IP(), s.c.Name, s.pods[p].Node))
	}
	return fmt.Sprintf(`---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s, namespace: sim, labels: {kubernetes.io/service-name: %s}}
addressType: IPv4
ports:
- {name: tcp, port: %d, protocol: TCP}
- {name: udp, port: %d, protocol: UDP}
- {name: alt, port: %d, protocol: TCP}
endpoints:
%s
`, name, svc, whoPort, whoPort, whoPortAlt, strings.Join(eps, "\n"))
}

// service is a ClusterIP Service with TCP and UDP on port 80 (-> 8080) and
// TCP 81 (-> 9090); extra is added to its spec.
func service(name, ip, extra string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: sim}
spec:
  clusterIP: %s
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: %d}
  - {name: udp, port: 80, protocol: UDP, targetPort: %d}
  - {name: alt, port: 81, protocol: TCP, targetPort: %d}
%s`, name, ip, whoPort, whoPort, whoPortAlt, extra)
}

// clients are every pod and node namespace, by name.
func (s *svcSim) clients() map[string]string {
	m := map[string]string{}
	for _, n := range s.c.Nodes {
		m[n.Name] = n.Netns
	}
	for name, p := range s.pods {
		m[name] = p.Netns
	}
	return m
}

// TestServiceBasic: behaviour 1. A ClusterIP Service reaches its endpoints
// from every pod on both nodes and from both nodes themselves (host
// network, through weft0's route for the service CIDR); a second port
// reaches the second target port; TCP and UDP share port 80.
func TestServiceBasic(t *testing.T) {
	s := newSvcSim(t)
	s.apply(service("sv-basic", "10.96.0.20", "") + s.slice("sv-basic-1", "sv-basic", "n1-p1", "n2-p1"))
	s.waitReady("sv-basic", 2)
	backends := map[string]bool{"n1-p1": true, "n2-p1": true}
	for name, ns := range s.clients() {
		got, err := who(ns, vipOf("10.96.0.20", 80))
		if err != nil || !backends[strings.TrimSuffix(got, ":8080")] || !strings.HasSuffix(got, ":8080") {
			t.Errorf("%s -> 10.96.0.20:80/TCP: %q, %v; want n1-p1 or n2-p1 on 8080", name, got, err)
		}
		got, err = who(ns, vipOf("10.96.0.20", 81))
		if err != nil || !backends[strings.TrimSuffix(got, ":9090")] || !strings.HasSuffix(got, ":9090") {
			t.Errorf("%s -> 10.96.0.20:81/TCP: %q, %v; want n1-p1 or n2-p1 on 9090", name, got, err)
		}
		conn, err := DialIn(context.Background(), ns, "udp4", "10.96.0.20:80")
		if err != nil {
			t.Fatal(err)
		}
		got, err = whoUDP(conn)
		conn.Close()
		if err != nil || !backends[got] {
			t.Errorf("%s -> 10.96.0.20:80/UDP: %q, %v; want n1-p1 or n2-p1", name, got, err)
		}
	}
	if !t.Failed() {
		t.Logf("TCP 80, TCP 81 and UDP 80 of 10.96.0.20 answered from all %d pods and nodes", len(s.clients()))
	}
}

// TestServiceNoEndpoints: behaviour 4. A Service without endpoints refuses
// at once: TCP connect fails with "connection refused" (an RST or ICMP
// port unreachable from the cluster IP), UDP reads ICMP port unreachable;
// neither waits for a timeout.
func TestServiceNoEndpoints(t *testing.T) {
	s := newSvcSim(t)
	s.apply(service("sv-empty", "10.96.0.21", "  selector: {app: nothing-has-this}\n"))
	s.waitReady("sv-empty", 0)
	p := s.pods["n1-p1"]
	start := time.Now()
	_, err := who(p.Netns, vipOf("10.96.0.21", 80))
	took := time.Since(start)
	if !errors.Is(err, syscall.ECONNREFUSED) || took > time.Second {
		t.Errorf("TCP to a Service without endpoints: %v after %v; want connection refused at once", err, took)
	}
	conn, err := DialIn(context.Background(), p.Netns, "udp4", "10.96.0.21:80")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start = time.Now()
	_, err = whoUDP(conn)
	if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		// The first read may miss the ICMP error; a second datagram meets it.
		_, err = whoUDP(conn)
	}
	if took := time.Since(start); !errors.Is(err, syscall.ECONNREFUSED) || took > time.Second {
		t.Errorf("UDP to a Service without endpoints: %v after %v; want port unreachable at once", err, took)
	}
}

// TestServiceSpreading: behaviour 2. 1,000 new connections from the four
// pods land on every ready backend within ±25% of an even share.
func TestServiceSpreading(t *testing.T) {
	s := newSvcSim(t)
	s.apply(service("sv-spread", "10.96.0.22", "  selector: {app: sim}\n"))
	s.waitReady("sv-spread", 4)
	const total = 1000
	var mu sync.Mutex
	count := map[string]int{}
	var failed []string
	var wg sync.WaitGroup
	names := []string{"n1-p1", "n1-p2", "n2-p1", "n2-p2"}
	for _, name := range names {
		ns := s.pods[name].Netns
		wg.Go(func() {
			for range total / len(names) {
				got, err := who(ns, vipOf("10.96.0.22", 80))
				mu.Lock()
				if err != nil {
					failed = append(failed, err.Error())
				} else {
					count[got]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Errorf("%d of %d connections failed, first: %s", len(failed), total, failed[0])
	}
	even := float64(total) / 4
	for _, name := range names {
		n := count[name+":8080"]
		if float64(n) < 0.75*even || float64(n) > 1.25*even {
			t.Errorf("backend %s got %d of %d connections, want %.0f ±25%%", name, n, total, even)
		}
	}
	t.Logf("1000 connections over 4 backends: %v", count)
}

// TestServiceEndpointsFollow: behaviour 3. A backend removed from the
// Service stops getting new flows once the nodes recompiled (one registry
// poll), a UDP flow to it is flushed: the next datagram on the same socket
// goes to a live backend (kube-proxy's stale-conntrack DNS bug), and an
// established TCP flow to it is reset.
func TestServiceEndpointsFollow(t *testing.T) {
	s := newSvcSim(t)
	s.apply(service("sv-follow", "10.96.0.23", "") + s.slice("sv-follow-1", "sv-follow", "n2-p1"))
	s.waitReady("sv-follow", 1)
	client := s.pods["n1-p2"]
	conn, err := DialIn(context.Background(), client.Netns, "udp4", "10.96.0.23:80")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got, err := whoUDP(conn); err != nil || got != "n2-p1" {
		t.Fatalf("first datagram answered by %q, %v; want n2-p1", got, err)
	}
	// An established TCP flow to the backend about to leave.
	dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	tcp, err := DialIn(dctx, client.Netns, "tcp4", "10.96.0.23:80")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tcpRd := bufio.NewReader(tcp)
	tcp.SetReadDeadline(time.Now().Add(3 * time.Second))
	if got, err := tcpRd.ReadString('\n'); err != nil || got != "n2-p1:8080\n" {
		t.Fatalf("TCP flow before the swap answered by %q, %v; want n2-p1", got, err)
	}
	// Swap the backend: n2-p1 out, n1-p1 in.
	from := time.Now()
	s.apply(s.slice("sv-follow-1", "sv-follow", "n1-p1"))
	s.waitReady("sv-follow", 1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := who(client.Netns, vipOf("10.96.0.23", 80))
		if err == nil && got == "n1-p1:8080" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new TCP flows still reach %q (%v) 5 s after the swap", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("new flows reached the new backend %s after the apply", time.Since(from).Round(time.Millisecond))
	for i := range 20 {
		got, err := who(client.Netns, vipOf("10.96.0.23", 80))
		if err != nil || got != "n1-p1:8080" {
			t.Errorf("connection %d after the swap: %q, %v; want n1-p1 only", i, got, err)
		}
	}
	if got, err := whoUDP(conn); err != nil || got != "n1-p1" {
		t.Errorf("next datagram on the old UDP socket answered by %q, %v; want n1-p1 (the flow to the removed backend flushed)", got, err)
	}
	// The TCP flow to the removed backend was flushed too: its next segment
	// reaches the new backend, which knows no such connection and resets it
	// (the switch's documented choice: reset, not left to time out).
	tcp.SetDeadline(time.Now().Add(3 * time.Second))
	_, werr := tcp.Write([]byte("x"))
	_, rerr := tcpRd.ReadString('\n')
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(rerr, syscall.ECONNRESET) {
		t.Errorf("established TCP flow to the removed backend: write %v, read %v; want it reset", werr, rerr)
	}
}

// TestServiceAffinity: behaviour 5. sessionAffinity ClientIP keeps a
// client on one backend; switching it off spreads new flows again.
func TestServiceAffinity(t *testing.T) {
	s := newSvcSim(t)
	const sticky = "  selector: {app: sim}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n"
	s.apply(service("sv-aff", "10.96.0.24", sticky))
	s.waitReady("sv-aff", 4)
	client := s.pods["n1-p2"].Netns
	seen := map[string]int{}
	for range 30 {
		got, err := who(client, vipOf("10.96.0.24", 80))
		if err != nil {
			t.Fatal(err)
		}
		seen[got]++
	}
	if len(seen) != 1 {
		t.Errorf("with ClientIP affinity, 30 connections of one client went to %v; want one backend", seen)
	}
	s.apply(service("sv-aff", "10.96.0.24", "  selector: {app: sim}\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		seen = map[string]int{}
		for range 40 {
			if got, err := who(client, vipOf("10.96.0.24", 80)); err == nil {
				seen[got]++
			}
		}
		if len(seen) > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("affinity off: 40 connections still all went to %v", seen)
		}
	}
	t.Logf("affinity off: 40 connections spread over %v", seen)
}

// TestServiceHairpin: behaviour 6. A pod reaches itself through its own
// Service.
func TestServiceHairpin(t *testing.T) {
	s := newSvcSim(t)
	s.apply(service("sv-hair", "10.96.0.25", "  selector: {sim-pod: n1-p1}\n"))
	s.waitReady("sv-hair", 1)
	for i := range 3 {
		got, err := who(s.pods["n1-p1"].Netns, vipOf("10.96.0.25", 80))
		if err != nil || got != "n1-p1:8080" {
			t.Errorf("hairpin %d: %q, %v; want n1-p1:8080", i, got, err)
		}
	}
}

// TestServiceInternalLocal: behaviour 7. internalTrafficPolicy Local sends
// a pod's flows only to backends on its own node; with none there, the
// flow is dropped.
func TestServiceInternalLocal(t *testing.T) {
	s := newSvcSim(t)
	s.apply(service("sv-local", "10.96.0.26", "  selector: {app: sim}\n  internalTrafficPolicy: Local\n") +
		service("sv-local-far", "10.96.0.27", "  selector: {sim-pod: n2-p1}\n  internalTrafficPolicy: Local\n"))
	s.waitReady("sv-local", 4)
	s.waitReady("sv-local-far", 1)
	for _, client := range []string{"n1-p2", "n2-p2"} {
		node := s.pods[client].Node
		for range 20 {
			got, err := who(s.pods[client].Netns, vipOf("10.96.0.26", 80))
			if err != nil || !strings.HasPrefix(got, node+"-") {
				t.Errorf("%s -> Local service: %q, %v; want a backend on %s", client, got, err, node)
			}
		}
	}
	if got, err := who(s.pods["n1-p2"].Netns, vipOf("10.96.0.27", 80)); err == nil {
		t.Errorf("n1-p2 -> Local service whose only backend is on n2: answered by %q, want it dropped", got)
	}
	if got, err := who(s.pods["n2-p2"].Netns, vipOf("10.96.0.27", 80)); err != nil || got != "n2-p1:8080" {
		t.Errorf("n2-p2 -> the same service: %q, %v; want n2-p1", got, err)
	}
}

// TestServiceSurvivesRestart: behaviour 9. An established TCP connection
// through a cluster IP keeps working after the client's node's weftd (the
// one that did the DNAT) restarts. Conntrack is not persisted: weftd
// compiles the Services before it forwards again, the flow's next packet
// from the client is a new lookup picked up as established (conntrack's
// loose mode), and Maglev over the unchanged backends (seedless hash)
// picks the same backend, so the entry is rebuilt. The stream is busy
// across the restart: an echo request is written just before it and its
// answer read after, so the backend's echo (or its retransmission, the
// client's ACK having been lost in the restart) usually reaches the
// restarted node before anything from the client. That packet finds no
// entry and is recovered as the flow's reply (switch recoverReply: the
// only frontend whose Maglev choice for this client is that backend);
// before that recovery it went out untranslated and the client's stack
// reset the connection, about one run in three. The time from the
// restart's start to the answer is logged.
func TestServiceSurvivesRestart(t *testing.T) {
	s := newSvcSim(t)
	s.apply(service("sv-restart", "10.96.0.28", "  selector: {app: sim}\n"))
	s.waitReady("sv-restart", 4)
	client := s.pods["n1-p2"]
	node, _ := s.c.Node(client.Node)
	for round := range 2 {
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		conn, err := DialIn(dctx, client.Netns, "tcp4", "10.96.0.28:80")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rd := bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		backend, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		echo := func(i uint64, timeout time.Duration) error {
			var buf [8]byte
			binary.BigEndian.PutUint64(buf[:], i)
			conn.SetDeadline(time.Now().Add(timeout))
			if _, err := conn.Write(buf[:]); err != nil {
				return err
			}
			if _, err := io.ReadFull(rd, buf[:]); err != nil {
				return err
			}
			if got := binary.BigEndian.Uint64(buf[:]); got != i {
				return fmt.Errorf("echo %d, want %d", got, i)
			}
			return nil
		}
		for i := range uint64(20) {
			if err := echo(i, 3*time.Second); err != nil {
				t.Fatalf("before the restart: %v", err)
			}
		}
		// No pause: echo 20 is asked for right before the restart and its
		// answer (and the ACKs around it) cross the restart.
		var req [8]byte
		binary.BigEndian.PutUint64(req[:], 20)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(req[:]); err != nil {
			t.Fatal(err)
		}
		from := time.Now()
		if err := s.c.Restart(context.Background(), node); err != nil {
			t.Fatal(err)
		}
		restarted := time.Since(from)
		var ans [8]byte
		if _, err := io.ReadFull(rd, ans[:]); err != nil || binary.BigEndian.Uint64(ans[:]) != 20 {
			t.Fatalf("round %d: the connection through 10.96.0.28:80 to %s broke across the restart of %s: %v (echo %d)",
				round, strings.TrimSpace(backend), node.Name, err, binary.BigEndian.Uint64(ans[:]))
		}
		gap := time.Since(from)
		for i := range uint64(20) {
			if err := echo(21+i, 3*time.Second); err != nil {
				t.Fatalf("after the restart: %v", err)
			}
		}
		// Which side's packet rebuilt the flow depends on timing: logged.
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ctr, err := api.NewClient(node.Socket).Counters(cctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %s -> 10.96.0.28:80 -> %s; weftd restart of %s took %s, echo 20 (asked before it) answered %s after the restart began, then 20 more in order; on the restarted node conntrack.reply_recovered=%d reply_unrecovered=%d",
			round, client.Name, strings.TrimSpace(backend), node.Name, restarted.Round(time.Millisecond), gap.Round(time.Millisecond),
			ctr["conntrack.reply_recovered"], ctr["conntrack.reply_unrecovered"])
	}
}

// TestServiceMatrix: `weft sim up --services` then `weft sim test`: the
// example Service answers from every node and pod, as the matrix's
// service checks.
func TestServiceMatrix(t *testing.T) {
	c := newTestCluster(t, Options{Name: testenv.UniqueName("sv")})
	if err := c.Up(context.Background(), 2, 2); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyExample(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := runMatrix(t, c)
	var svc int
	for _, ch := range r.Checks {
		if ch.Name != "service" {
			continue
		}
		svc++
		if ch.Error != "" {
			t.Errorf("service check %s: %s", ch.Detail, ch.Error)
		}
	}
	if want := len(c.Nodes) + len(c.Pods()); svc != want {
		t.Errorf("%d service checks, want one per node and pod (%d)", svc, want)
	}
	if r.Failed() > 0 {
		t.Errorf("%s", r.Summary())
	}
}
