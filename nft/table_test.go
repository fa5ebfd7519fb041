package nft_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/nft"
	"github.com/weftnet/weft/sim"
)

// topo is three namespaces standing for a pod, its node and a host outside
// the cluster:
//
//	pod  eth0 10.244.1.5/24, default via .2 ---- node weft0 10.244.1.2/24
//	node u0 198.51.100.1/24 ------------------- out  eth0 198.51.100.2/24
//
// The outside host has no route to 10.244.0.0/16: a pod reaches it only
// masqueraded. The veth named weft0 stands for weftd's host port (the
// rules only look at its name).
type topo struct {
	pod, node, out string
	podIP, nodeIP  netip.Addr
	outIP          netip.Addr
}

var cluster = netip.MustParsePrefix("10.244.0.0/16")

func newTopo(t *testing.T) *topo {
	t.Helper()
	testenv.RequireRoot(t)
	tp := &topo{
		pod: testenv.UniqueName("egp"), node: testenv.UniqueName("egn"), out: testenv.UniqueName("ego"),
		podIP: netip.MustParseAddr("10.244.1.5"), nodeIP: netip.MustParseAddr("198.51.100.1"),
		outIP: netip.MustParseAddr("198.51.100.2"),
	}
	for _, ns := range []string{tp.pod, tp.node, tp.out} {
		if _, err := netdev.NewNetns(ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { netdev.DeleteNetns(ns) })
	}
	p := netdev.NetnsPath
	if err := netdev.NewVeth(
		netdev.VethEnd{Name: "eth0", NetnsPath: p(tp.pod), Addr: netip.MustParsePrefix("10.244.1.5/24")},
		netdev.VethEnd{Name: "weft0", NetnsPath: p(tp.node), Addr: netip.MustParsePrefix("10.244.1.2/24")},
	); err != nil {
		t.Fatal(err)
	}
	if err := netdev.NewVeth(
		netdev.VethEnd{Name: "u0", NetnsPath: p(tp.node), Addr: netip.MustParsePrefix("198.51.100.1/24")},
		netdev.VethEnd{Name: "eth0", NetnsPath: p(tp.out), Addr: netip.MustParsePrefix("198.51.100.2/24")},
	); err != nil {
		t.Fatal(err)
	}
	if err := netdev.AddRoute(p(tp.pod), "eth0", netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.244.1.2")); err != nil {
		t.Fatal(err)
	}
	// Forwarding in the test's own node namespace, never the root one.
	sysctlOn(t, tp.node, "net/ipv4/ip_forward")
	return tp
}

// sysctlOn sets the sysctl at /proc/sys/key to 1 in the test's namespace
// ns (never the root one).
func sysctlOn(t *testing.T, ns, key string) {
	t.Helper()
	if err := netdev.Do(netdev.NetnsPath(ns), func() error {
		return os.WriteFile("/proc/sys/"+key, []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
}

func (tp *topo) open(t *testing.T) *nft.Table {
	t.Helper()
	tab, err := nft.Open(nft.Options{NetnsPath: netdev.NetnsPath(tp.node)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tab.Close)
	return tab
}

func (tp *topo) ruleset(hps ...nft.HostPort) nft.Ruleset {
	return nft.Ruleset{
		HostIface: "weft0", Cluster: cluster, Masquerade: true,
		NonMasquerade: []netip.Prefix{cluster, nft.LinkLocal}, HostPorts: hps,
	}
}

// serve runs an echo server reporting the peer it saw (sim's helper
// protocol) in netns on addr until the test ends.
func serve(t *testing.T, netns, addr string) {
	t.Helper()
	ln, err := sim.ListenIn(netns, "tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go sim.ServeEcho(ln)
}

// probe connects from netns to dst and returns the address the server saw.
func probe(t *testing.T, netns string, dst netip.AddrPort) (netip.Addr, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := sim.DialIn(ctx, netns, "tcp4", dst.String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	peer, err := sim.EchoProbe(conn, 4096, time.Now().Add(3*time.Second))
	return peer.Addr(), err
}

func TestEgressMasquerade(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.out, ":7000")
	dst := netip.AddrPortFrom(tp.outIP, 7000)
	// Without weft's table the outside host cannot answer the pod.
	if _, err := probe(t, tp.pod, dst); err == nil {
		t.Fatal("pod reached the outside host with no masquerade rule; the topology does not test anything")
	}
	tab := tp.open(t)
	if err := tab.Apply(tp.ruleset()); err != nil {
		t.Fatal(err)
	}
	seen, err := probe(t, tp.pod, dst)
	if err != nil {
		t.Fatalf("pod -> outside with egress masquerade: %v", err)
	}
	if seen != tp.nodeIP {
		t.Errorf("outside server saw %s, want the node's address %s", seen, tp.nodeIP)
	}
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Masqueraded.Packets < 1 || c.Out.Packets < 3 || c.In.Packets < 3 {
		t.Errorf("counters after one masqueraded connection: %+v; want masqueraded >= 1, out and in >= 3 packets", c)
	}

	// Pod-to-pod (the cluster CIDR) stays un-NATed: a second pod stands in
	// on the outside host's side with a cluster address.
	if err := netdev.AddAddr(netdev.NetnsPath(tp.out), "eth0", netip.MustParsePrefix("10.244.2.9/32")); err != nil {
		t.Fatal(err)
	}
	if err := netdev.AddRoute(netdev.NetnsPath(tp.out), "eth0", netip.MustParsePrefix("10.244.1.0/24"), tp.nodeIP); err != nil {
		t.Fatal(err)
	}
	if err := netdev.AddRoute(netdev.NetnsPath(tp.node), "u0", netip.MustParsePrefix("10.244.2.0/24"), tp.outIP); err != nil {
		t.Fatal(err)
	}
	seen, err = probe(t, tp.pod, netip.AddrPortFrom(netip.MustParseAddr("10.244.2.9"), 7000))
	if err != nil {
		t.Fatalf("pod -> cluster address: %v", err)
	}
	if seen != tp.podIP {
		t.Errorf("server at a cluster address saw %s, want the pod's own %s (no NAT inside the cluster)", seen, tp.podIP)
	}

	// Masquerade off: the pod leaves with its own address, which the
	// outside host now routes back (it has a route to 10.244.1.0/24).
	rs := tp.ruleset()
	rs.Masquerade = false
	if err := tab.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if seen, err = probe(t, tp.pod, dst); err != nil || seen != tp.podIP {
		t.Errorf("masquerade off: server saw %s (err %v), want the pod's %s", seen, err, tp.podIP)
	}
}

func TestHostPort(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.pod, ":80")
	tab := tp.open(t)
	hp := nft.HostPort{Proto: nft.TCP, Port: 8080, Pod: tp.podIP, PodPort: 80, Owner: "eg-pod"}
	if err := tab.Apply(tp.ruleset(hp)); err != nil {
		t.Fatal(err)
	}
	front := netip.AddrPortFrom(tp.nodeIP, 8080)
	// From outside: the pod sees the client's own address.
	if seen, err := probe(t, tp.out, front); err != nil || seen != tp.outIP {
		t.Errorf("outside -> node:8080: pod saw %s (err %v), want the client %s", seen, err, tp.outIP)
	}
	// From the node's own processes (the output hook).
	if seen, err := probe(t, tp.node, front); err != nil || seen != tp.nodeIP {
		t.Errorf("node -> node:8080: pod saw %s (err %v), want the node's %s", seen, err, tp.nodeIP)
	}
	// The pod to its own hostPort: hairpin, answered through the node.
	if seen, err := probe(t, tp.pod, front); err != nil || seen != netip.MustParseAddr("10.244.1.2") {
		t.Errorf("pod -> its own hostPort: pod saw %s (err %v), want the host port's 10.244.1.2 (hairpin masquerade)", seen, err)
	}
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.HostPorts[hp.String()]; got.Packets != 3 {
		t.Errorf("hostPort %s counted %d connections, want 3 (%+v)", hp, got.Packets, c.HostPorts)
	}
	if c.Hairpin.Packets != 1 {
		t.Errorf("hairpin counted %d connections, want 1", c.Hairpin.Packets)
	}
	// A specific host address: only that one answers.
	hp2 := nft.HostPort{Proto: nft.TCP, HostIP: netip.MustParseAddr("10.244.1.2"), Port: 9090, Pod: tp.podIP, PodPort: 80}
	if err := tab.SetHostPorts([]nft.HostPort{hp2}); err != nil {
		t.Fatal(err)
	}
	if _, err := probe(t, tp.out, front); err == nil {
		t.Error("node:8080 still answers after its mapping was removed")
	}
	if _, err := probe(t, tp.out, netip.AddrPortFrom(tp.nodeIP, 9090)); err == nil {
		t.Error("node's u0 address answers a mapping for host IP 10.244.1.2 only")
	}
	if seen, err := probe(t, tp.node, netip.AddrPortFrom(netip.MustParseAddr("10.244.1.2"), 9090)); err != nil || seen != netip.MustParseAddr("10.244.1.2") {
		t.Errorf("node -> 10.244.1.2:9090: pod saw %s (err %v)", seen, err)
	}
	// The egress counters survive a hostPort rewrite.
	c2, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c2.Hairpin.Packets < c.Hairpin.Packets {
		t.Errorf("hairpin counter went from %d to %d across SetHostPorts", c.Hairpin.Packets, c2.Hairpin.Packets)
	}
}

// TestApplyOwnsOnlyItsTable writes a foreign table first, then weft's twice
// (a restart), then removes weft's: the foreign table is never touched, and
// a rewrite leaves exactly the new rules.
func TestApplyOwnsOnlyItsTable(t *testing.T) {
	tp := newTopo(t)
	fd, err := os.Open(netdev.NetnsPath(tp.node))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	other := c.AddTable(&nftables.Table{Name: "eg-other", Family: nftables.TableFamilyIPv4})
	c.AddChain(&nftables.Chain{Name: "keep", Table: other})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	tab := tp.open(t)
	if ok, err := tab.Exists(); err != nil || ok {
		t.Fatalf("Exists before Apply = %v, %v; want false", ok, err)
	}
	hp := nft.HostPort{Proto: nft.UDP, Port: 53, Pod: tp.podIP, PodPort: 53}
	if err := tab.Apply(tp.ruleset(hp, hp)); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("Apply with a mapping given twice: err %v", err)
	}
	if ok, _ := tab.Exists(); ok {
		t.Error("a refused Apply wrote the table")
	}
	for range 2 {
		if err := tab.Apply(tp.ruleset(hp)); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := c.GetRules(&nftables.Table{Name: nft.DefaultName, Family: nftables.TableFamilyIPv4}, &nftables.Chain{Name: "ports"})
	if err != nil || len(rules) != 1 {
		t.Errorf("ports chain after two Applies: %d rules (err %v), want 1", len(rules), err)
	}
	if err := tab.Remove(); err != nil {
		t.Fatal(err)
	}
	if ok, err := tab.Exists(); err != nil || ok {
		t.Errorf("Exists after Remove = %v, %v; want false", ok, err)
	}
	if err := tab.Remove(); err != nil {
		t.Errorf("Remove of a removed table: %v", err)
	}
	if _, err := c.ListTableOfFamily("eg-other", nftables.TableFamilyIPv4); err != nil {
		t.Errorf("the foreign table is gone: %v", err)
	}
}

func TestOpenMissingNetns(t *testing.T) {
	_, err := nft.Open(nft.Options{NetnsPath: filepath.Join(t.TempDir(), "nope")})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Open of a missing netns: %v", err)
	}
}

// TestNodePort: a Cluster node port goes to the cluster IP through weft0,
// masqueraded to weft0's address (the pod holds the cluster IP here, as
// weft's service stage would translate it); a Local one goes straight to
// the local backend with the client's address kept; a Local one without
// local backends is refused by the node's own stack.
func TestNodePort(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.pod, ":80")
	clusterIP := netip.MustParseAddr("10.96.0.10")
	if err := netdev.AddAddr(netdev.NetnsPath(tp.pod), "lo", netip.PrefixFrom(clusterIP, 32)); err != nil {
		t.Fatal(err)
	}
	if err := netdev.AddRoute(netdev.NetnsPath(tp.node), "weft0", netip.MustParsePrefix("10.96.0.0/12"), tp.podIP); err != nil {
		t.Fatal(err)
	}
	tab := tp.open(t)
	rs := tp.ruleset()
	rs.NodePorts = []nft.NodePort{
		{Proto: nft.TCP, Port: 30080, ClusterIP: clusterIP, ServicePort: 80, Owner: "eg/web:http"},
		{Proto: nft.TCP, Port: 30081, Local: true, Backends: []netip.AddrPort{netip.AddrPortFrom(tp.podIP, 80)}, Owner: "eg/local:http"},
		{Proto: nft.TCP, Port: 30082, Local: true, Owner: "eg/elsewhere:http"},
	}
	if err := tab.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if seen, err := probe(t, tp.out, netip.AddrPortFrom(tp.nodeIP, 30080)); err != nil || seen != netip.MustParseAddr("10.244.1.2") {
		t.Errorf("Cluster node port: the backend saw %s (err %v), want weft0's 10.244.1.2 (masqueraded)", seen, err)
	}
	if seen, err := probe(t, tp.out, netip.AddrPortFrom(tp.nodeIP, 30081)); err != nil || seen != tp.outIP {
		t.Errorf("Local node port: the backend saw %s (err %v), want the client's %s", seen, err, tp.outIP)
	}
	if _, err := probe(t, tp.out, netip.AddrPortFrom(tp.nodeIP, 30082)); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Local node port without a local backend: err %v, want connection refused", err)
	}
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.NodePortMasq.Packets != 1 || c.NodePorts[rs.NodePorts[0].String()].Packets != 1 || c.NodePorts[rs.NodePorts[1].String()].Packets != 1 {
		t.Errorf("node port counters: %+v, masquerade %+v; want one connection each", c.NodePorts, c.NodePortMasq)
	}
	// Two Services on one node port cannot be written.
	dup := append(slices.Clone(rs.NodePorts), nft.NodePort{Proto: nft.TCP, Port: 30080, ClusterIP: clusterIP, ServicePort: 81, Owner: "eg/other:http"})
	if err := tab.SetNodePorts(dup); err == nil || !strings.Contains(err.Error(), "claimed by eg/web:http and eg/other:http") {
		t.Errorf("SetNodePorts with one port twice: %v", err)
	}
	// Removing them keeps the hostPorts and stops the answers.
	if err := tab.SetNodePorts(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := probe(t, tp.out, netip.AddrPortFrom(tp.nodeIP, 30080)); err == nil {
		t.Error("the node port still answers after it was removed")
	}
}

// TestNodePortSpread: a Local node port with several backends reaches each.
func TestNodePortSpread(t *testing.T) {
	tp := newTopo(t)
	for _, port := range []string{":80", ":81", ":82"} {
		serve(t, tp.pod, port)
	}
	tab := tp.open(t)
	rs := tp.ruleset()
	var backends []netip.AddrPort
	for _, p := range []uint16{80, 81, 82} {
		backends = append(backends, netip.AddrPortFrom(tp.podIP, p))
	}
	rs.NodePorts = []nft.NodePort{{Proto: nft.TCP, Port: 30090, Local: true, Backends: backends}}
	if err := tab.Apply(rs); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		if _, err := probe(t, tp.out, netip.AddrPortFrom(tp.nodeIP, 30090)); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := ruleCounters(tp, "ports")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rules {
		if r == 0 {
			t.Errorf("backend %d got none of 30 connections (counts %v)", i, rules)
		}
	}
}

// ruleCounters reads the packet counter of each rule of a chain of weft's
// table in tp's node namespace.
func ruleCounters(tp *topo, chain string) ([]uint64, error) {
	rules, err := chainRules(tp, chain)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, r := range rules {
		if n, ok := ruleCounter(r); ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// chainRules lists the rules of a chain of weft's table in tp's node
// namespace, as the kernel holds them.
func chainRules(tp *topo, chain string) ([]*nftables.Rule, error) {
	fd, err := os.Open(netdev.NetnsPath(tp.node))
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		return nil, err
	}
	return c.GetRules(&nftables.Table{Name: nft.DefaultName, Family: nftables.TableFamilyIPv4}, &nftables.Chain{Name: chain})
}

// ruleCounter is the packet count of r's counter, if it has one.
func ruleCounter(r *nftables.Rule) (uint64, bool) {
	for _, e := range r.Exprs {
		if ce, ok := e.(*expr.Counter); ok {
			return ce.Packets, true
		}
	}
	return 0, false
}

// TestHostPortLoopback: a hostPort on 127.0.0.1 (the e2e suite's HostPort
// spec asks for one beside one on the node's address, same port) answers
// the node's own processes, through the host port masqueraded to its
// address; the node-address mapping on the same port answers only there,
// and a mapping for every address does not take loopback traffic.
func TestHostPortLoopback(t *testing.T) {
	tp := newTopo(t)
	serve(t, tp.pod, ":80")
	tab := tp.open(t)
	// What weftd does for loopback hostPorts (node/egress.go).
	sysctlOn(t, tp.node, "net/ipv4/conf/weft0/route_localnet")
	lo := nft.HostPort{Proto: nft.TCP, HostIP: netip.MustParseAddr("127.0.0.1"), Port: 8081, Pod: tp.podIP, PodPort: 80, Owner: "eg-lo"}
	any := nft.HostPort{Proto: nft.TCP, Port: 8082, Pod: tp.podIP, PodPort: 80, Owner: "eg-any"}
	if err := tab.Apply(tp.ruleset(lo, any)); err != nil {
		t.Fatal(err)
	}
	if seen, err := probe(t, tp.node, netip.MustParseAddrPort("127.0.0.1:8081")); err != nil || seen != netip.MustParseAddr("10.244.1.2") {
		t.Errorf("node -> 127.0.0.1:8081: pod saw %s (err %v), want the host port's 10.244.1.2", seen, err)
	}
	if _, err := probe(t, tp.node, netip.AddrPortFrom(tp.nodeIP, 8081)); err == nil {
		t.Error("node's address answers a mapping for 127.0.0.1 only")
	}
	if _, err := probe(t, tp.node, netip.MustParseAddrPort("127.0.0.1:8082")); err == nil {
		t.Error("127.0.0.1:8082 answers a mapping for every (non-loopback) address")
	}
	if seen, err := probe(t, tp.node, netip.AddrPortFrom(tp.nodeIP, 8082)); err != nil || seen != tp.nodeIP {
		t.Errorf("node -> node:8082: pod saw %s (err %v), want the node's %s", seen, err, tp.nodeIP)
	}
	c, err := tab.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.HostPorts[lo.String()]; got.Packets != 1 {
		t.Errorf("hostPort %s counted %d connections, want 1 (%+v)", lo, got.Packets, c.HostPorts)
	}
}

// TestLoopbackGuard is CVE-2020-8558 (kube-proxy's route_localnet hole):
// weftd turns route_localnet on for the host port so that loopback
// hostPorts work, and that also lets a pod reach the node's services
// bound to 127.0.0.1 by sending to 127.0.0.1 through the host port. First
// the test shows the hole is open in its topology without weft's table
// (so the check below tests something); then, with the table, the pod's
// connection is dropped by the guard rule while the node's own loopback
// connections still work.
func TestLoopbackGuard(t *testing.T) {
	tp := newTopo(t)
	const svc = "127.0.0.1:7100"
	serve(t, tp.node, svc)
	p := netdev.NetnsPath
	// What weftd does for loopback hostPorts (node/egress.go).
	sysctlOn(t, tp.node, "net/ipv4/conf/weft0/route_localnet")
	// The attacking pod sends to 127.0.0.1 out of its eth0, towards the
	// node: its own loopback address goes (the local route to 127/8 with
	// it), and its eth0 may carry loopback addresses.
	h, err := netdev.OpenHandle(p(tp.pod))
	if err != nil {
		t.Fatal(err)
	}
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.AddrDel(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(127, 0, 0, 1), Mask: net.CIDRMask(8, 32)}})
	}
	h.Close()
	if err != nil {
		t.Fatalf("pod: remove 127.0.0.1/8 from lo: %v", err)
	}
	if err := netdev.AddRoute(p(tp.pod), "eth0", netip.MustParsePrefix("127.0.0.1/32"), netip.MustParseAddr("10.244.1.2")); err != nil {
		t.Fatal(err)
	}
	sysctlOn(t, tp.pod, "net/ipv4/conf/eth0/route_localnet")
	dst := netip.MustParseAddrPort(svc)
	if seen, err := probe(t, tp.pod, dst); err != nil || seen != tp.podIP {
		t.Fatalf("without weft's table the pod did not reach the node's %s (saw %s, err %v): the topology does not test the guard", svc, seen, err)
	}

	tab := tp.open(t)
	if err := tab.Apply(tp.ruleset()); err != nil {
		t.Fatal(err)
	}
	if seen, err := probe(t, tp.pod, dst); err == nil {
		t.Errorf("pod reached the node's %s through the host port (the server saw %s): the loopback guard let it in", svc, seen)
	}
	if _, err := probe(t, tp.node, dst); err != nil {
		t.Errorf("node -> its own %s with weft's table: %v", svc, err)
	}
	drops, err := guardDrops(tp)
	if err != nil {
		t.Fatal(err)
	}
	if drops == 0 {
		t.Error("the loopback guard rule counted no packets")
	}
}

// guardDrops reads the packet counter of the input chain's loopback
// guard rule (nft/table.go, commentLoGuard) in tp's node namespace.
func guardDrops(tp *topo) (uint64, error) {
	rules, err := chainRules(tp, "input")
	if err != nil {
		return 0, err
	}
	for _, r := range rules {
		if n, ok := ruleCounter(r); ok && strings.Contains(string(r.UserData), "loopback from host port") {
			return n, nil
		}
	}
	return 0, errors.New("no loopback guard rule with a counter in the input chain")
}
