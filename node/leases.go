package node

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/registry"
	vswitch "github.com/weftnet/weft/switch"
)

// peerView is what the lease watch decided so far. Only applyLeases uses
// it, from one goroutine at a time (loadPeers at start, then the watch).
type peerView struct {
	// accepted are the peers in the peer table and routes, by node name;
	// held ones among them included.
	accepted map[string]registry.Lease
	// rejected maps a live lease that was refused to why, so a refusal is
	// logged once, not on every update.
	rejected map[string]string
	// vanished maps a peer whose lease left the registry's view to when
	// that was seen. It keeps its routes (held) until a registry call that
	// started after that moment succeeds: etcd expires leases while it
	// shuts down, and a watch can deliver those deletions as the registry
	// goes away.
	vanished map[string]time.Time
	// health reports the registry's state (the keeper's); poke asks for a
	// registry call now. Both may be nil (tests): then every vanished lease
	// counts as confirmed.
	health func() registry.Health
	poke   func()
	// settle is how long the registry must have been healthy before a
	// vanished lease is believed: after an outage, peers that lost their
	// lease get one renewal period to acquire it again.
	settle time.Duration
}

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
	// Held peers are looked at again on every tick, so that a removal the
	// registry confirms is applied without waiting for the next event.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
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
	events:
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					break events
				}
				switch ev.Type {
				case registry.Snapshot:
					live = registry.LeaseMap(ev.Leases)
				case registry.Added, registry.Changed:
					live[ev.Lease.Node] = ev.Lease
				case registry.Removed:
					delete(live, ev.Lease.Node)
				}
				n.applyLeases(live)
			case <-tick.C:
				if len(n.view.vanished) > 0 {
					n.applyLeases(live)
				}
			}
		}
	}
}

// applyLeases turns the live leases into routes and peers. Each lease is
// checked on its own, in a fixed order (the peers already accepted first,
// then by node name), and one that conflicts with an accepted peer or with
// this node is rejected alone: one bad lease never holds up the update of
// the others, and of two claimants the incumbent keeps its place.
func (n *Node) applyLeases(live map[string]registry.Lease) {
	v := &n.view
	if v.accepted == nil {
		v.accepted, v.rejected, v.vanished = map[string]registry.Lease{}, map[string]string{}, map[string]time.Time{}
	}
	now := time.Now()
	candidates := make(map[string]registry.Lease, len(live))
	for name, l := range live {
		if name != n.cfg.NodeName {
			candidates[name] = l
		}
	}
	n.holdVanished(live, candidates, now)

	accepted := make(map[string]registry.Lease, len(candidates))
	rejected := make(map[string]string)
	var routes []vswitch.Route
	var peers []overlay.Peer
	for _, name := range leaseOrder(candidates, v.accepted) {
		l := candidates[name]
		if why := n.checkPeerLease(l, accepted); why != "" {
			rejected[name] = why
			continue
		}
		accepted[name] = l
		routes = append(routes, vswitch.Route{Prefix: l.Subnet, Kind: vswitch.RoutePeer, Peer: l.Underlay, PeerMAC: l.RouterMAC})
		peers = append(peers, overlay.Peer{Name: l.Node, Underlay: l.Underlay, RouterMAC: l.RouterMAC, Subnet: l.Subnet, VNI: n.cfg.VNI, Foreign: l.Foreign})
	}
	routes = append(routes, n.egressRoutes()...)
	// Peers first: a route is only useful once the peer's VXLAN is accepted.
	// Every lease was checked above, so these fail only on a bug.
	if err := n.peers.Set(peers); err != nil {
		n.log.Error("peer table update", "err", err)
		return
	}
	if err := n.sw.SetRoutes(routes); err != nil {
		n.log.Error("route table update", "err", err)
		return
	}
	cp := make(map[string]registry.Lease, len(live))
	for k, l := range live {
		cp[k] = l
	}
	n.leases.Store(&cp)
	n.logPeerChanges(accepted, rejected)
	v.accepted, v.rejected = accepted, rejected
}

// holdVanished adds to candidates the accepted peers whose lease vanished
// but whose removal the registry has not confirmed. Removals it confirms
// are forgotten.
func (n *Node) holdVanished(live, candidates map[string]registry.Lease, now time.Time) {
	v := &n.view
	for name := range v.vanished {
		if _, back := live[name]; back {
			delete(v.vanished, name)
		}
	}
	var h registry.Health
	if v.health != nil {
		h = v.health()
	}
	asked := false
	for name, l := range v.accepted {
		if _, ok := live[name]; ok {
			continue
		}
		seen, ok := v.vanished[name]
		if !ok {
			seen = now
			v.vanished[name] = now
			n.log.Info("peer lease gone; keeping its routes until the registry confirms it", "peer", name, "subnet", l.Subnet)
		}
		if v.removalConfirmed(h, seen, now) {
			delete(v.vanished, name)
			continue
		}
		if v.poke != nil && !asked {
			v.poke() // a renewal now tells sooner whether the registry is healthy
			asked = true
		}
		candidates[name] = l
	}
}

// removalConfirmed reports whether a lease that vanished at seen is gone
// for real: the registry answered a call that started after seen, and has
// been healthy for settle.
func (v *peerView) removalConfirmed(h registry.Health, seen, now time.Time) bool {
	if v.health == nil {
		return true
	}
	return h.State == registry.HealthOK && h.LastOKStart.After(seen) && now.Sub(h.Since) >= v.settle
}

// leaseOrder lists the candidates' names: those accepted before first,
// then the others, each group by name. Go's map order must not pick which
// of two conflicting leases wins.
func leaseOrder(candidates, before map[string]registry.Lease) []string {
	names := make([]string, 0, len(candidates))
	for name := range candidates {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		_, ai := before[a]
		_, bi := before[b]
		if ai != bi {
			if ai {
				return -1
			}
			return 1
		}
		return cmp.Compare(a, b)
	})
	return names
}

// checkPeerLease returns why l cannot be a peer next to this node and the
// peers accepted so far, or "".
func (n *Node) checkPeerLease(l registry.Lease, accepted map[string]registry.Lease) string {
	switch {
	case !l.Underlay.Is4() || !l.Subnet.IsValid() || !l.Subnet.Addr().Is4():
		return fmt.Sprintf("underlay %v or subnet %v is not IPv4", l.Underlay, l.Subnet)
	case l.Subnet.Overlaps(n.lease.Subnet):
		return fmt.Sprintf("subnet %s overlaps this node's %s", l.Subnet, n.lease.Subnet)
	case l.Underlay == n.underlay.Addr:
		return fmt.Sprintf("underlay address %s is this node's", l.Underlay)
	case l.VNI != 0 && l.VNI != n.cfg.VNI:
		return fmt.Sprintf("VNI %d, ours is %d", l.VNI, n.cfg.VNI)
	}
	for _, name := range slices.Sorted(maps.Keys(accepted)) {
		a := accepted[name]
		switch {
		case a.Underlay == l.Underlay:
			return fmt.Sprintf("underlay address %s already belongs to peer %s", l.Underlay, name)
		case a.Subnet.Overlaps(l.Subnet):
			return fmt.Sprintf("subnet %s overlaps peer %s's %s", l.Subnet, name, a.Subnet)
		}
	}
	return ""
}

// logPeerChanges logs what changed against the previous update: peers
// up, rejected (once per reason), and down.
func (n *Node) logPeerChanges(accepted map[string]registry.Lease, rejected map[string]string) {
	v := &n.view
	for _, name := range slices.Sorted(maps.Keys(accepted)) {
		if _, ok := v.accepted[name]; !ok {
			l := accepted[name]
			n.log.Info("peer up", "peer", name, "underlay", l.Underlay, "subnet", l.Subnet)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(rejected)) {
		if why := rejected[name]; v.rejected[name] != why {
			n.log.Error("peer lease rejected; no routes to it", "peer", name, "why", why)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(v.accepted)) {
		if _, ok := accepted[name]; ok {
			continue
		}
		l := v.accepted[name]
		if why, ok := rejected[name]; ok {
			n.log.Warn("peer down: lease rejected, routes withdrawn", "peer", name, "subnet", l.Subnet, "why", why)
		} else {
			n.log.Info("peer down: lease gone, routes withdrawn", "peer", name, "subnet", l.Subnet)
		}
	}
}
