package node

import (
	"net/netip"
	"time"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/registry"
	vswitch "github.com/weftnet/weft/switch"
)

func (n *Node) liveLeases() map[string]registry.Lease {
	if m := n.leases.Load(); m != nil {
		return *m
	}
	return nil
}

// watchRegistry follows the registry's watch and keeps the routes and the
// peer table equal to the live leases. When the watch breaks, forwarding
// goes on with the last known peers while it reconnects.
func (n *Node) watchRegistry() {
	defer n.wg.Done()
	backoff := 250 * time.Millisecond
	for n.ctx.Err() == nil {
		ch, err := n.cfg.Registry.Watch(n.ctx)
		if err != nil {
			n.log.Warn("registry watch failed; forwarding with the last known peers", "err", err, "retry_in", backoff)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 250 * time.Millisecond
		live := make(map[string]registry.Lease)
		for ev := range ch {
			switch ev.Type {
			case registry.Snapshot:
				live = registry.LeaseMap(ev.Leases)
			case registry.Added, registry.Changed:
				live[ev.Lease.Node] = ev.Lease
			case registry.Removed:
				delete(live, ev.Lease.Node)
			}
			n.applyLeases(live)
		}
	}
}

// applyLeases turns the live leases into routes and peers.
func (n *Node) applyLeases(live map[string]registry.Lease) {
	prev := n.liveLeases()
	var routes []vswitch.Route
	var peers []overlay.Peer
	seen := map[netip.Prefix]string{}
	for _, l := range live {
		if l.Node == n.cfg.NodeName {
			continue
		}
		switch {
		case !l.Underlay.Is4() || !l.Subnet.IsValid():
			n.log.Warn("ignoring peer lease with no IPv4 underlay or subnet", "peer", l.Node)
			continue
		case l.Subnet.Overlaps(n.lease.Subnet):
			n.log.Error("ignoring peer lease overlapping this node's subnet", "peer", l.Node, "subnet", l.Subnet)
			continue
		case l.VNI != 0 && l.VNI != n.cfg.VNI:
			n.log.Warn("ignoring peer on another VNI", "peer", l.Node, "vni", l.VNI, "ours", n.cfg.VNI)
			continue
		case seen[l.Subnet] != "":
			n.log.Error("two peers claim one subnet; keeping the first", "subnet", l.Subnet, "peers", []string{seen[l.Subnet], l.Node})
			continue
		}
		seen[l.Subnet] = l.Node
		routes = append(routes, vswitch.Route{Prefix: l.Subnet, Kind: vswitch.RoutePeer, Peer: l.Underlay, PeerMAC: l.RouterMAC})
		peers = append(peers, overlay.Peer{Name: l.Node, Underlay: l.Underlay, RouterMAC: l.RouterMAC, Subnet: l.Subnet, VNI: n.cfg.VNI, Foreign: l.Foreign})
	}
	// Peers first: a route is only useful once the peer's VXLAN is accepted.
	if err := n.peers.Set(peers); err != nil {
		n.log.Error("peer table update", "err", err)
		return
	}
	if err := n.sw.SetRoutes(routes); err != nil {
		n.log.Error("route table update", "err", err)
		return
	}
	cp := make(map[string]registry.Lease, len(live))
	for k, v := range live {
		cp[k] = v
	}
	n.leases.Store(&cp)
	for name, l := range live {
		if name == n.cfg.NodeName {
			continue
		}
		if _, ok := prev[name]; !ok {
			n.log.Info("peer up", "peer", name, "underlay", l.Underlay, "subnet", l.Subnet)
		}
	}
	for name, l := range prev {
		if _, ok := live[name]; !ok && name != n.cfg.NodeName {
			n.log.Info("peer down: lease gone, routes withdrawn", "peer", name, "subnet", l.Subnet)
		}
	}
}
