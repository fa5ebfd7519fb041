package node

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/registry"
	vswitch "github.com/weftnet/weft/switch"
)

var (
	_ api.Service       = (*Node)(nil)
	_ api.MetricsSource = (*Node)(nil)
)

func sortBy[T any, K cmp.Ordered](s []T, key func(T) K) {
	slices.SortFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}

// Status is the node's identity and health for `weft status`.
func (n *Node) Status(ctx context.Context) (api.Status, error) {
	h := n.keeper.Health()
	reg := api.RegistryStatus{Backend: n.cfg.RegistryBackend, State: api.RegistryOK, Since: h.Since}
	if h.State == registry.HealthDegraded {
		reg.State = api.RegistryDegraded
		reg.LastError = h.LastError
	}
	reg.NotPeers = n.notPeers()
	n.ctlMu.Lock()
	nports := len(n.byKey)
	n.ctlMu.Unlock()
	subnet := n.lease.Subnet
	return api.Status{
		Node: n.cfg.NodeName, Version: api.BuildVersion(),
		Underlay: n.underlay.Addr, UnderlayIface: n.underlay.IfName,
		Subnet: subnet, Gateway: ipam.Gateway(subnet), HostAddr: ipam.HostAddr(subnet),
		RouterMAC: n.routerMAC, VNI: n.cfg.VNI, Port: n.cfg.Port, MTU: n.mtu,
		ClusterCIDR: n.cfg.ClusterCIDR, StartedAt: n.start,
		Uptime:   api.Duration(time.Since(n.start).Truncate(time.Second)),
		Registry: reg, Ports: nports, Peers: n.peers.Len(), Offload: n.offloadStatus(), RxWorkers: len(n.rx),
		Egress: n.egressStatus(),
	}, nil
}

// Peers lists the remote nodes in the peer table with their traffic.
//
// The expiries are the registry's, read now, as Subnets reads them: the
// watch behind the peer table sends nothing for a renewal that only moves
// an expiry, so the one it saw last is stale. With the registry
// unreachable, Expires is zero (unknown) rather than that stale time.
func (n *Node) Peers(ctx context.Context) ([]api.Peer, error) {
	expires := map[string]time.Time{}
	if leases, err := n.cfg.Registry.List(ctx); err == nil {
		for _, l := range leases {
			expires[l.Node] = l.Expiry
		}
	}
	var out []api.Peer
	for _, p := range n.peers.List() {
		st := p.Stats()
		out = append(out, api.Peer{
			Node: p.Name, Underlay: p.Underlay, Subnet: p.Subnet, RouterMAC: p.RouterMAC, VNI: p.VNI,
			Expires:  expires[p.Name],
			TxFrames: st.TxFrames.Load(), RxFrames: st.RxFrames.Load(),
			TxBytes: st.TxBytes.Load(), RxBytes: st.RxBytes.Load(),
			Foreign: p.Foreign, RxBadL4Checksum: st.RxBadL4Checksum.Load(),
		})
	}
	sortBy(out, func(p api.Peer) string { return p.Node })
	return out, nil
}

func (n *Node) portName(id vswitch.PortID) string {
	switch id {
	case overlayPortID:
		return "overlay"
	}
	if p := n.ports[id].Load(); p != nil {
		if p.rec.PodID != "" {
			return p.rec.PodID + "/" + p.name
		}
		return p.name
	}
	return fmt.Sprintf("port%d", id)
}

// FDB lists the learned MACs.
func (n *Node) FDB(ctx context.Context) ([]api.FDBEntry, error) {
	now := n.now()
	var out []api.FDBEntry
	for _, e := range n.sw.FDB() {
		out = append(out, api.FDBEntry{MAC: e.MAC, Port: int(e.Port), PortName: n.portName(e.Port),
			Age: api.Duration(time.Duration(now - e.LastSeen).Truncate(time.Second))})
	}
	return out, nil
}

// Routes lists the router's table.
func (n *Node) Routes(ctx context.Context) ([]api.Route, error) {
	names := make(map[netip.Addr]string)
	for _, p := range n.peers.List() {
		names[p.Underlay] = p.Name
	}
	var out []api.Route
	for _, r := range n.sw.Routes() {
		ar := api.Route{Prefix: r.Prefix, Kind: api.RouteLocal}
		if r.Kind == vswitch.RoutePeer {
			ar.Kind, ar.Via, ar.Peer, ar.PeerMAC = api.RoutePeer, r.Peer, names[r.Peer], r.PeerMAC
		} else if r.Via.IsValid() {
			ar.Via = r.Via
		}
		out = append(out, ar)
	}
	return out, nil
}

// Neighbours lists the neighbour table.
func (n *Node) Neighbours(ctx context.Context) ([]api.Neighbour, error) {
	now := n.now()
	var out []api.Neighbour
	for _, e := range n.sw.Neighbours() {
		nb := api.Neighbour{IP: e.IP, MAC: e.MAC, Port: int(e.Port), PortName: n.portName(e.Port), Static: e.Static}
		if !e.Static {
			nb.Age = api.Duration(time.Duration(now - e.LastSeen).Truncate(time.Second))
		}
		out = append(out, nb)
	}
	return out, nil
}

// IPAM lists this node's address allocations.
func (n *Node) IPAM(ctx context.Context) (api.IPAM, error) {
	allocs, err := n.ipam.List()
	if err != nil {
		return api.IPAM{}, err
	}
	used, free := n.ipam.Stats()
	out := api.IPAM{Subnet: n.ipam.Subnet(), Used: used, Free: free}
	for _, a := range allocs {
		out.Allocations = append(out.Allocations, api.IPAMAllocation{PodID: a.PodID, IfName: a.IfName, IP: a.Addr, Since: a.Since})
	}
	return out, nil
}

// Subnets lists every node subnet the registry has, this node's included.
func (n *Node) Subnets(ctx context.Context) ([]api.Subnet, error) {
	leases, err := n.cfg.Registry.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: registry: %v", api.ErrNotReady, err)
	}
	used, free := n.ipam.Stats()
	var out []api.Subnet
	for _, l := range leases {
		s := api.Subnet{Node: l.Node, Underlay: l.Underlay, Subnet: l.Subnet, RouterMAC: l.RouterMAC,
			Expires: l.Expiry, Used: api.Unknown, Free: api.Unknown}
		if l.Node == n.cfg.NodeName {
			s.Self, s.Used, s.Free = true, used, free
		}
		out = append(out, s)
	}
	return out, nil
}

// Counters gives every counter by name: drops by reason of each stage,
// answers the router gave, traffic totals.
func (n *Node) Counters(ctx context.Context) (api.Counters, error) {
	c := api.Counters{}
	for k, v := range n.dropCounts() {
		c["drop."+k] = v
	}
	sc := n.sw.Counters()
	c["router.arp_replies"] = sc.ARPReplies
	c["router.arp_requests"] = sc.ARPRequests
	c["router.icmp_errors"] = sc.ICMPErrors
	c["router.echo_replies"] = sc.EchoReplies
	c["fdb.learned"] = sc.FDBLearned
	c["fdb.moved"] = sc.FDBMoved
	c["fdb.evicted"] = sc.FDBEvicted
	c["fdb.expired"] = sc.FDBExpired
	c["fdb.entries"] = sc.FDBEntries
	bs := n.dp.BufferStats() // the workers' pooled buffers (datapath/bufpool.go)
	c["buffers.bytes"] = uint64(bs.Bytes)
	c["buffers.free_bytes"] = uint64(bs.FreeBytes)
	for _, p := range n.allPorts() {
		c["tap.rx_frames"] += p.RxFrames.Load()
		c["tap.rx_bytes"] += p.RxBytes.Load()
		c["tap.tx_frames"] += p.TxFrames.Load()
		c["tap.tx_bytes"] += p.TxBytes.Load()
	}
	for _, p := range n.peers.List() {
		st := p.Stats()
		c["vxlan.tx_frames"] += st.TxFrames.Load()
		c["vxlan.rx_frames"] += st.RxFrames.Load()
		c["vxlan.tx_bytes"] += st.TxBytes.Load()
		c["vxlan.rx_bytes"] += st.RxBytes.Load()
	}
	for k, v := range n.offloadCounts() {
		c["offload."+k] = v
	}
	n.conntrackCounters(c)
	n.policyCounters(c)
	return c, nil
}

// dropCounts is every drop reason of every stage in one name space
// (datapath.Reason): the switch's reasons as they are, the overlay's
// prefixed "vxlan_", the devices' "tap_", the data path's own ("out_",
// "offload_", "underlay_").
func (n *Node) dropCounts() map[string]uint64 { return n.dp.DropCounts() }

func (n *Node) allPorts() []*port {
	var out []*port
	for i := range n.ports {
		if p := n.ports[i].Load(); p != nil {
			out = append(out, p)
		}
	}
	return out
}

// MetricsSnapshot feeds the Prometheus collector on each scrape; the hot
// path only bumps atomics.
func (n *Node) MetricsSnapshot() api.Snapshot {
	s := api.Snapshot{Drops: n.dropCounts(), BatchSizes: map[string]api.HistogramSnapshot{}}
	tapHist := api.HistogramSnapshot{}
	for _, p := range n.allPorts() {
		pod := p.name
		if p.rec.PodID != "" {
			pod = p.rec.PodID
			if p.rec.PodName != "" {
				pod = p.rec.PodNamespace + "/" + p.rec.PodName
			}
		}
		s.Ports = append(s.Ports, api.PortCounters{Pod: pod, Port: fmt.Sprintf("%s#%d", p.name, p.ID),
			RxFrames: p.RxFrames.Load(), TxFrames: p.TxFrames.Load(), RxBytes: p.RxBytes.Load(), TxBytes: p.TxBytes.Load()})
		tapHist.Add(p.hist.Snapshot())
	}
	for _, p := range n.peers.List() {
		st := p.Stats()
		s.Peers = append(s.Peers, api.PeerCounters{Peer: p.Name, TxFrames: st.TxFrames.Load(), RxFrames: st.RxFrames.Load(),
			TxBytes: st.TxBytes.Load(), RxBytes: st.RxBytes.Load()})
	}
	s.BatchSizes["tap"] = tapHist
	s.BatchSizes["udp"] = n.udpHist.Snapshot()
	s.FDBEntries = int(n.sw.Counters().FDBEntries)
	s.IPAMUsed, s.IPAMFree = n.ipam.Stats()
	s.RegistryHealthy = n.keeper.Health().State == registry.HealthOK
	s.Offload = n.offloadCounts()
	n.conntrackMetrics(&s)
	n.policyMetrics(&s)
	return s
}
