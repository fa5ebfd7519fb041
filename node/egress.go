package node

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/nft"
	vswitch "github.com/weftnet/weft/switch"
)

// EgressConfig says how the node's pods reach the world outside the
// cluster, and the world reaches them through the node (hostPorts).
//
// Pod traffic to an address outside the cluster CIDR is routed by the weft
// router to the node's host address (.2, on weft0); the node's kernel
// routes it on and masquerades it, with the rules of weftd's own nftables
// table (package nft). hostPorts are DNAT rules in the same table.
type EgressConfig struct {
	// Enabled routes destinations outside the cluster to the node's own
	// stack and keeps weftd's nftables table. Off, pods reach only the
	// cluster (anything else is "net unreachable"), weftd writes no
	// netfilter rules, and hostPort mappings are refused.
	Enabled bool
	// Masquerade gives pod traffic leaving the node the node's address
	// (SNAT to the outgoing interface's address, random fully-random
	// ports). Off, pods leave with their own addresses (an underlay that
	// routes the cluster CIDR).
	Masquerade bool
	// NonMasqueradeCIDRs are destinations reached without masquerading, as
	// ip-masq-agent's nonMasqueradeCIDRs; nil means the cluster CIDR.
	NonMasqueradeCIDRs []netip.Prefix
	// MasqueradeLinkLocal masquerades traffic to 169.254.0.0/16 too
	// (ip-masq-agent's masqLinkLocal); by default it is not.
	MasqueradeLinkLocal bool
	// KeepIPForward leaves net.ipv4.ip_forward alone: if it is off, Start
	// fails. By default weftd turns it on in its own network namespace
	// (the node's), and logs that it did.
	KeepIPForward bool
	// Table names weftd's nftables table (family ip); "" = "weft".
	Table string
}

// egressState is the running node's side of EgressConfig.
type egressState struct {
	table *nft.Table  // nil when egress is off
	rs    nft.Ruleset // guarded by the node's ctlMu

	npMu      sync.Mutex
	nodePorts []nft.NodePort // as last written (nodeport.go)
}

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// egressRoutes are the switch routes that hand pod traffic for the world
// outside the cluster to the node: the address space less the cluster and
// service CIDRs, each prefix a local route via the host address on weft0. They go
// into the route table with the peers' routes (applyLeases). Destinations
// inside the cluster CIDR that no node holds stay "net unreachable".
func (n *Node) egressRoutes() []vswitch.Route {
	if !n.cfg.Egress.Enabled || !n.lease.Subnet.IsValid() {
		return nil
	}
	via := ipam.HostAddr(n.lease.Subnet)
	var out []vswitch.Route
	excl := []netip.Prefix{n.cfg.ClusterCIDR}
	if n.cfg.ServiceCIDR.IsValid() {
		// Cluster IPs are the service stage's; one it does not know must
		// not bounce between the switch and the node's route to weft0.
		excl = append(excl, n.cfg.ServiceCIDR)
	}
	for _, p := range complement(excl) {
		out = append(out, vswitch.Route{Prefix: p, Kind: vswitch.RouteLocal, Via: via})
	}
	return out
}

// complement returns the fewest IPv4 prefixes that cover every address
// outside excl: at most 32 per excluded prefix.
func complement(excl []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	var walk func(p netip.Prefix)
	walk = func(p netip.Prefix) {
		overlaps := false
		for _, e := range excl {
			if e.Bits() <= p.Bits() && e.Contains(p.Addr()) {
				return // p lies inside an excluded prefix
			}
			overlaps = overlaps || p.Overlaps(e)
		}
		if !overlaps {
			out = append(out, p)
			return
		}
		lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
		a := p.Addr().As4()
		binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])|1<<(31-p.Bits()))
		walk(lo)
		walk(netip.PrefixFrom(netip.AddrFrom4(a), p.Bits()+1))
	}
	walk(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
	return out
}

// nonMasquerade is the configured list, or the cluster CIDR, plus
// link-local unless that is masqueraded too.
func (c *Config) nonMasquerade() []netip.Prefix {
	out := slices.Clone(c.Egress.NonMasqueradeCIDRs)
	if out == nil {
		out = []netip.Prefix{c.ClusterCIDR}
	}
	if !c.Egress.MasqueradeLinkLocal && !slices.Contains(out, nft.LinkLocal) {
		out = append(out, nft.LinkLocal)
	}
	return out
}

// startEgress turns on forwarding in the node's namespace and writes
// weftd's nftables table, with the hostPorts of the port records a previous
// weftd left. A failure is an error at start: egress without its rules
// would leave pods' traffic unmasqueraded or black-holed.
func (n *Node) startEgress() error {
	ec := n.cfg.Egress
	if !ec.Enabled {
		n.log.Info("egress off: pods reach only the cluster; no netfilter rules written")
		return nil
	}
	if err := n.ensureIPForward(); err != nil {
		return err
	}
	t, err := nft.Open(nft.Options{Name: ec.Table})
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	recs, _ := n.records.list() // restorePorts logs the unreadable ones
	var hps []nft.HostPort
	for _, r := range recs {
		hps = append(hps, hostPortsOf(r)...)
	}
	if err := nft.CheckHostPorts(nil, hps); err != nil {
		// Records that disagree (edited by hand?): keep egress, say why
		// the hostPorts are not there.
		n.log.Error("hostPort mappings of the port records conflict; none programmed until the next attach or detach", "err", err)
		hps = nil
	}
	rs := nft.Ruleset{
		HostIface: n.cfg.HostPortName, Cluster: n.cfg.ClusterCIDR,
		Masquerade: ec.Masquerade, NonMasquerade: n.cfg.nonMasquerade(), HostPorts: hps,
	}
	if err := t.Apply(rs); err != nil {
		t.Close()
		return fmt.Errorf("egress: %w", err)
	}
	n.egress = egressState{table: t, rs: rs}
	n.routeLocalnet()
	n.log.Info("egress: nftables table written", "table", "ip "+t.Name(), "masquerade", rs.Masquerade,
		"non_masquerade", rs.NonMasquerade, "host_ports", len(hps))
	return nil
}

// ensureIPForward turns net.ipv4.ip_forward on in weftd's own network
// namespace (the node's: weftd runs there), or fails if asked to keep it.
func (n *Node) ensureIPForward() error {
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return fmt.Errorf("egress: read %s: %w", ipForwardPath, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if n.cfg.Egress.KeepIPForward {
		return fmt.Errorf("egress: net.ipv4.ip_forward is off in weftd's network namespace, and weftd was told to leave it: " +
			"turn it on (sysctl -w net.ipv4.ip_forward=1), or let weftd do it, or turn egress off")
	}
	if err := os.WriteFile(ipForwardPath, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("egress: turn on net.ipv4.ip_forward: %w", err)
	}
	n.log.Info("egress: turned on net.ipv4.ip_forward in weftd's network namespace (was 0): pod traffic leaves through the node's stack")
	return nil
}

// routeLocalnet turns on route_localnet on the host port: a hostPort on
// a loopback address (127.0.0.1, as the e2e suite's HostPort spec asks)
// is DNATed in the output hook and leaves through the host port with its
// 127/8 source, which the kernel drops as martian without it. The table's
// input guard drops the new connections to 127/8 from the host port that
// it would otherwise let in (CVE-2020-8558). A failure only costs those
// hostPorts: it is logged.
func (n *Node) routeLocalnet() {
	p := "/proc/sys/net/ipv4/conf/" + n.cfg.HostPortName + "/route_localnet"
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		n.log.Warn("egress: route_localnet on the host port not set: hostPorts on 127.0.0.1 will not answer", "path", p, "err", err)
	}
}

// stopEgress deletes weftd's table on a clean stop, unless pods remain
// that the next weftd will serve (the node keeps its subnet): the table
// lives as long as the pods it serves, as their TAPs do. A masqueraded
// connection keeps its translation in its conntrack entry, but the kernel
// applies it only while some nat chain is registered in the namespace;
// without weft's, a segment the outside host retransmits while weftd
// restarts (one weftd could not deliver on its way down) would find the
// node's port closed and reset the connection.
func (n *Node) stopEgress() {
	t := n.egress.table
	if t == nil {
		return
	}
	n.ctlMu.Lock()
	pods := len(n.byKey) + len(n.dormant)
	n.ctlMu.Unlock()
	if pods > 0 && !n.cfg.ReleaseOnShutdown {
		n.log.Info("egress: nftables table stays for the next start, so that the pods' connections survive the restart",
			"table", "ip "+t.Name(), "pods", pods)
		t.Close()
		return
	}
	if err := t.Remove(); err != nil {
		n.log.Error("egress: could not delete the nftables table", "table", "ip "+t.Name(), "err", err)
	} else {
		n.log.Info("egress: nftables table deleted", "table", "ip "+t.Name())
	}
	t.Close()
}

// hostPortsOf turns a port record's mappings into the table's.
func hostPortsOf(r PortRecord) []nft.HostPort {
	out := make([]nft.HostPort, 0, len(r.PortMappings))
	for _, m := range r.PortMappings {
		out = append(out, nft.HostPort{
			Proto: m.Protocol, HostIP: m.HostIP, Port: uint16(m.HostPort),
			Pod: r.Addr.Addr(), PodPort: uint16(m.ContainerPort), Owner: r.PodID,
		})
	}
	return out
}

// hostPortsLocked lists the mappings of every attached port and of every
// dormant one (its pod may come back: its hostPorts stay reserved), plus
// extra's, which replaces a dormant record of the same pod interface.
// Caller holds ctlMu.
func (n *Node) hostPortsLocked(extra ...PortRecord) []nft.HostPort {
	var out []nft.HostPort
	for _, p := range n.byKey {
		out = append(out, hostPortsOf(p.rec)...)
	}
	for k, r := range n.dormant {
		if !slices.ContainsFunc(extra, func(e PortRecord) bool { return e.PodID == k.PodID && e.IfName == k.IfName }) {
			out = append(out, hostPortsOf(r)...)
		}
	}
	for _, r := range extra {
		out = append(out, hostPortsOf(r)...)
	}
	return out
}

// checkPortMappings refuses a new pod's mappings before anything is
// allocated: egress off, or a hostPort another pod holds on that host
// address and protocol. Caller holds ctlMu.
func (n *Node) checkPortMappings(req api.AttachRequest) error {
	if len(req.PortMappings) == 0 {
		return nil
	}
	if n.egress.table == nil {
		return fmt.Errorf("%w: port mappings need egress, which is off on node %s", api.ErrConflict, n.cfg.NodeName)
	}
	// The pod's address is not known yet; a placeholder passes Check.
	probe := PortRecord{PodID: req.PodID, IfName: req.IfName, Addr: netip.MustParsePrefix("192.0.2.1/32"), PortMappings: req.PortMappings}
	have := n.hostPortsLocked(probe)
	have = have[:len(have)-len(probe.PortMappings)] // without the probe's own
	if err := nft.CheckHostPorts(have, hostPortsOf(probe)); err != nil {
		return fmt.Errorf("%w: %v", api.ErrConflict, err)
	}
	return nil
}

// syncHostPorts rewrites the table's hostPort rules to the attached ports'
// mappings plus extra's. Caller holds ctlMu.
func (n *Node) syncHostPorts(extra ...PortRecord) error {
	if n.egress.table == nil {
		return nil
	}
	hps := n.hostPortsLocked(extra...)
	if err := n.egress.table.SetHostPorts(hps); err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	n.egress.rs.HostPorts = hps
	return nil
}

// egressStatus is Status.Egress, counters read from the kernel.
func (n *Node) egressStatus() *api.Egress {
	e := &api.Egress{Enabled: n.cfg.Egress.Enabled}
	t := n.egress.table
	if t == nil {
		return e
	}
	n.ctlMu.Lock()
	rs := n.egress.rs
	n.ctlMu.Unlock()
	e.Table = "ip " + t.Name()
	e.Masquerade, e.NonMasquerade, e.HostPorts = rs.Masquerade, rs.NonMasquerade, len(rs.HostPorts)
	n.egress.npMu.Lock()
	e.NodePorts = len(n.egress.nodePorts)
	n.egress.npMu.Unlock()
	c, err := t.Counters()
	if err != nil {
		e.Error = err.Error()
		return e
	}
	e.Masqueraded = c.Masqueraded.Packets
	e.OutPackets, e.OutBytes = c.Out.Packets, c.Out.Bytes
	e.InPackets, e.InBytes = c.In.Packets, c.In.Bytes
	return e
}

// resyncHostPorts is syncHostPorts where a failure can only be logged (a
// detach, a rollback): the stale rule points at an address no port holds.
// Caller holds ctlMu.
func (n *Node) resyncHostPorts(why string) {
	if err := n.syncHostPorts(); err != nil {
		n.log.Error("hostPort rules not updated; the next attach or detach retries", "after", why, "err", err)
	}
}

// syncRestoredHostPorts drops from the table the mappings of port records
// restorePorts found dead.
func (n *Node) syncRestoredHostPorts() {
	n.ctlMu.Lock()
	defer n.ctlMu.Unlock()
	if n.egress.table != nil && len(n.hostPortsLocked()) != len(n.egress.rs.HostPorts) {
		n.resyncHostPorts("restoring ports")
	}
}
