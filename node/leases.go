package node

import (
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/registry"
	vswitch "github.com/weftnet/weft/switch"
)

// peerView is what the lease watch decided so far. Only the lease watch
// uses it, from one goroutine at a time (loadPeers at start, then
// watchRegistry).
//
// Registry events are applied incrementally (issue 16): an event only
// updates live and marks its node dirty; applyPending then re-checks the
// dirty leases alone against indexes of the accepted peers, and publishes
// new tables only when a peer came, went or changed. A burst of events
// (a snapshot of thousands of leases, one poll's diff) becomes one
// applyPending: the watch drains what arrives back to back (coalesceWatch).
type peerView struct {
	// live is the registry's view as the watch last told it; dirty names
	// the leases in it (or gone from it) not yet applied.
	live  map[string]registry.Lease
	dirty map[string]struct{}
	// accepted are the peers in the peer table and routes, by node name;
	// held ones among them included. byUnderlay and subnets index them
	// for the conflict checks.
	accepted   map[string]registry.Lease
	byUnderlay map[netip.Addr]string
	subnets    subnetIndex
	// order lists the accepted names sorted, the order of the peer table.
	order []string
	// rejected maps a live lease that was refused to why, so a refusal is
	// logged once, not on every update.
	rejected map[string]string
	// vanished maps a peer whose lease left the registry's view to when
	// that was seen. It keeps its routes (held) until a registry call that
	// started after that moment succeeds: etcd expires leases while it
	// shuts down, and a watch can deliver those deletions as the registry
	// goes away.
	vanished map[string]time.Time
	// stale: the last table update failed; publish again on the next
	// apply even if nothing changed. published counts table updates.
	stale     bool
	published uint64
	// health reports the registry's state (the keeper's); poke asks for a
	// registry call now. Both may be nil (tests): then every vanished lease
	// counts as confirmed.
	health  func() registry.Health
	poke    func()
	pokedAt time.Time
	// settle is how long the registry must have been healthy before a
	// vanished lease is believed: after an outage, peers that lost their
	// lease get one renewal period to acquire it again.
	settle time.Duration
}

func (v *peerView) init() {
	if v.accepted == nil {
		v.live, v.dirty = map[string]registry.Lease{}, map[string]struct{}{}
		v.accepted, v.byUnderlay = map[string]registry.Lease{}, map[netip.Addr]string{}
		v.rejected, v.vanished = map[string]string{}, map[string]time.Time{}
	}
}

// note records one watch event in live and marks what it touched dirty.
func (v *peerView) note(ev registry.Event) {
	v.init()
	switch ev.Type {
	case registry.Snapshot:
		v.replace(registry.LeaseMap(ev.Leases))
	case registry.Added, registry.Changed:
		v.live[ev.Lease.Node] = ev.Lease
		v.dirty[ev.Lease.Node] = struct{}{}
	case registry.Removed:
		delete(v.live, ev.Lease.Node)
		v.dirty[ev.Lease.Node] = struct{}{}
	}
}

// replace makes next (kept, not copied) the live view and marks dirty the
// leases that differ from the current one: a snapshot after a reconnect
// costs what changed meanwhile, not a new world.
func (v *peerView) replace(next map[string]registry.Lease) {
	v.init()
	for name := range v.live {
		if _, ok := next[name]; !ok {
			v.dirty[name] = struct{}{}
		}
	}
	for name, l := range next {
		if old, ok := v.live[name]; !ok || !old.SameAs(l) {
			v.dirty[name] = struct{}{}
		}
	}
	v.live = next
}

// accept puts l in the accepted peers and their indexes.
func (v *peerView) accept(l registry.Lease) {
	if i, found := slices.BinarySearch(v.order, l.Node); !found {
		v.order = slices.Insert(v.order, i, l.Node)
	}
	v.accepted[l.Node] = l
	v.byUnderlay[l.Underlay] = l.Node
	v.subnets.add(l.Subnet, l.Node)
}

// unaccept takes name out of the accepted peers and their indexes.
func (v *peerView) unaccept(name string) {
	l := v.accepted[name]
	if i, found := slices.BinarySearch(v.order, name); found {
		v.order = slices.Delete(v.order, i, i+1)
	}
	delete(v.accepted, name)
	if v.byUnderlay[l.Underlay] == name {
		delete(v.byUnderlay, l.Underlay)
	}
	v.subnets.remove(l.Subnet)
}

// liveNodeNames lists the nodes with a live lease, sorted, as the lease
// watch last applied them (this node included). The slice is shared:
// do not modify it.
func (n *Node) liveNodeNames() []string {
	if p := n.liveNames.Load(); p != nil {
		return *p
	}
	return nil
}

// Coalescing of watch events: a backend delivers a burst (a snapshot, one
// poll's diff, one etcd watch response) back to back, so the watch keeps
// taking events while the next one comes within coalesceGap, for at most
// coalesceMax after the first; then it applies them all at once. So a
// burst costs one table update, and a real change (a node killed) waits at
// most coalesceMax behind any stream of others.
const (
	coalesceGap = 5 * time.Millisecond
	coalesceMax = 50 * time.Millisecond
)

// A held peer (its lease vanished, the removal not yet confirmed) is
// looked at again every heldRecheck, so that its routes go as soon as the
// keeper's renewal confirms the registry is healthy; the keeper is asked
// for that renewal when a lease vanishes, and again every pokeEvery while
// one is held. With none held the watch wakes only for events.
const (
	heldRecheck = 25 * time.Millisecond
	pokeEvery   = 200 * time.Millisecond
)

// watchRegistry follows the registry's watch and keeps the routes and the
// peer table equal to the live leases. When the watch breaks, forwarding
// goes on with the last known peers while it reconnects.
func (n *Node) watchRegistry() {
	defer n.wg.Done()
	backoff := 250 * time.Millisecond
	var recheck <-chan time.Time // armed while a peer is held
	gap := time.NewTimer(coalesceGap)
	defer gap.Stop()
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
	events:
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					break events
				}
				n.view.note(ev)
				open := n.coalesceWatch(ch, gap)
				n.applyPending()
				if !open {
					break events
				}
			case <-recheck:
				n.applyPending()
			}
			recheck = nil
			if len(n.view.vanished) > 0 {
				recheck = time.After(heldRecheck)
			}
		}
	}
}

// coalesceWatch notes the events that follow the one just noted (see
// coalesceGap). It reports false when the watch channel closed.
func (n *Node) coalesceWatch(ch <-chan registry.Event, gap *time.Timer) bool {
	deadline := time.Now().Add(coalesceMax)
	for {
		select { // what is queued already, without a timer
		case ev, ok := <-ch:
			if !ok {
				return false
			}
			n.view.note(ev)
			continue
		default:
		}
		wait := min(coalesceGap, time.Until(deadline))
		if wait <= 0 {
			return true
		}
		gap.Reset(wait)
		select {
		case ev, ok := <-ch:
			if !ok {
				return false
			}
			n.view.note(ev)
		case <-gap.C:
			return true
		case <-n.ctx.Done():
			return true
		}
	}
}

// applyLeases makes live (copied) the registry's view and applies what
// differs from the last one (loadPeers, tests).
func (n *Node) applyLeases(live map[string]registry.Lease) {
	n.view.replace(maps.Clone(live))
	n.applyPending()
}

// applyPending turns the dirty leases into peers and routes. Each lease is
// checked on its own and one that conflicts with an accepted peer or with
// this node is rejected alone: one bad lease never holds up the update of
// the others. Of two claimants the incumbent keeps its place: accepted
// peers whose lease did not change are not checked again; changed ones are
// checked before newcomers; each group goes by node name, so Go's map
// order never picks a winner. Refused leases are checked again whenever a
// peer left or changed, since what it held may be free now.
func (n *Node) applyPending() {
	v := &n.view
	v.init()
	now := time.Now()
	// was holds the accepted peers this update takes out (changed or gone),
	// for the log and to know whether anything was freed.
	was := map[string]registry.Lease{}
	for name := range v.vanished {
		if _, back := v.live[name]; back {
			delete(v.vanished, name)
			v.dirty[name] = struct{}{}
		}
	}
	var gone, up, refused logCap
	joinedOrLeft := false
	var changed []string
	fresh := map[string]struct{}{}
	for name := range v.dirty {
		l, ok := v.live[name]
		a, acc := v.accepted[name]
		if _, listed := slices.BinarySearch(n.liveNodeNames(), name); listed != ok {
			joinedOrLeft = true
		}
		switch {
		case name == n.cfg.NodeName:
		case !ok:
			delete(v.rejected, name)
			if acc {
				if _, held := v.vanished[name]; !held {
					v.vanished[name] = now
					if gone.ok() {
						n.log.Info("peer lease gone; keeping its routes until the registry confirms it", "peer", name, "subnet", a.Subnet)
					}
				}
			}
		case acc && a.SameAs(l):
		case acc:
			was[name] = a
			v.unaccept(name)
			changed = append(changed, name)
		default:
			fresh[name] = struct{}{}
		}
	}
	clear(v.dirty)
	n.confirmVanished(was, now)
	if len(was) > 0 {
		for name := range v.rejected {
			if _, queued := was[name]; !queued {
				fresh[name] = struct{}{}
			}
		}
	}
	slices.Sort(changed)
	added := 0
	for _, name := range append(changed, slices.Sorted(maps.Keys(fresh))...) {
		l := v.live[name]
		if why := n.checkPeerLease(l); why != "" {
			if v.rejected[name] != why && refused.ok() {
				n.log.Error("peer lease rejected; no routes to it", "peer", name, "why", why)
			}
			v.rejected[name] = why
			continue
		}
		delete(v.rejected, name)
		v.accept(l)
		added++
		if _, before := was[name]; !before && up.ok() {
			n.log.Info("peer up", "peer", name, "underlay", l.Underlay, "subnet", l.Subnet)
		}
	}
	gone.summary(n.log, "peer lease gone: more leases vanished; their routes are kept until the registry confirms")
	refused.summary(n.log, "peer lease rejected: more leases refused")
	up.summary(n.log, "peer up: more peers", "peers", len(v.accepted))
	n.logPeersDown(was)
	if joinedOrLeft {
		names := slices.Sorted(maps.Keys(v.live))
		n.liveNames.Store(&names)
	}
	// The first apply always publishes: with no peers at all the route
	// table still needs the node's own routes (egress).
	if len(was) > 0 || added > 0 || v.stale || v.published == 0 {
		n.publishPeers()
	}
}

// publishPeers installs the accepted peers as the peer table and their
// subnets as routes. Both tables are immutable snapshots rebuilt whole,
// once per applied batch (BenchmarkApplyLeases/change: 1.8 ms of CPU at
// 5,000 peers, 9.5 ms at 20,000, loaded machine).
func (n *Node) publishPeers() {
	v := &n.view
	routes := make([]vswitch.Route, 0, len(v.order)+64)
	peers := make([]overlay.Peer, 0, len(v.order))
	for _, name := range v.order {
		l := v.accepted[name]
		routes = append(routes, vswitch.Route{Prefix: l.Subnet, Kind: vswitch.RoutePeer, Peer: l.Underlay, PeerMAC: l.RouterMAC})
		peers = append(peers, overlay.Peer{Name: l.Node, Underlay: l.Underlay, RouterMAC: l.RouterMAC, Subnet: l.Subnet, VNI: n.cfg.VNI, Foreign: l.Foreign,
			PartialCsum: n.partialCsum() && !l.Foreign && l.Caps.Has(registry.CapPartialCsum)})
	}
	routes = append(routes, n.egressRoutes()...)
	// Peers first: a route is only useful once the peer's VXLAN is accepted.
	// Every lease was checked, so these fail only on a bug; the next
	// update tries again.
	v.stale = true
	if err := n.peers.Set(peers); err != nil {
		n.log.Error("peer table update", "err", err)
		return
	}
	if err := n.sw.SetRoutes(routes); err != nil {
		n.log.Error("route table update", "err", err)
		return
	}
	v.stale = false
	v.published++
}

// confirmVanished takes out of the accepted peers the held ones whose
// removal the registry confirmed (into was), and asks for a registry call
// if some are still held.
func (n *Node) confirmVanished(was map[string]registry.Lease, now time.Time) {
	v := &n.view
	if len(v.vanished) == 0 {
		return
	}
	var h registry.Health
	if v.health != nil {
		h = v.health()
	}
	newest := time.Time{}
	for name, seen := range v.vanished {
		if !v.removalConfirmed(h, seen, now) {
			if seen.After(newest) {
				newest = seen
			}
			continue
		}
		delete(v.vanished, name)
		if l, ok := v.accepted[name]; ok {
			was[name] = l
			v.unaccept(name)
		}
	}
	// A renewal now tells sooner whether the registry is healthy; one that
	// started before the newest vanish cannot confirm it.
	if len(v.vanished) > 0 && v.poke != nil && (v.pokedAt.Before(newest) || now.Sub(v.pokedAt) >= pokeEvery) {
		v.poke()
		v.pokedAt = now
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

// checkPeerLease returns why l cannot be a peer next to this node and the
// peers accepted so far, or "".
func (n *Node) checkPeerLease(l registry.Lease) string {
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
	if name, ok := n.view.byUnderlay[l.Underlay]; ok {
		return fmt.Sprintf("underlay address %s already belongs to peer %s", l.Underlay, name)
	}
	if p, name, ok := n.view.subnets.overlap(l.Subnet); ok {
		return fmt.Sprintf("subnet %s overlaps peer %s's %s", l.Subnet, name, p)
	}
	return ""
}

// logPeersDown logs what became of the peers an update took out (was):
// changed, refused, or gone.
func (n *Node) logPeersDown(was map[string]registry.Lease) {
	v := &n.view
	var lines logCap
	defer lines.summary(n.log, "peer down or changed: more peers", "peers", len(v.accepted))
	for _, name := range slices.Sorted(maps.Keys(was)) {
		old := was[name]
		if !lines.ok() {
			continue
		}
		if l, ok := v.accepted[name]; ok {
			n.log.Info("peer changed", "peer", name, "underlay", l.Underlay, "subnet", l.Subnet, "was_underlay", old.Underlay, "was_subnet", old.Subnet)
		} else if why, ok := v.rejected[name]; ok {
			n.log.Warn("peer down: lease rejected, routes withdrawn", "peer", name, "subnet", old.Subnet, "why", why)
		} else {
			n.log.Info("peer down: lease gone, routes withdrawn", "peer", name, "subnet", old.Subnet)
		}
	}
}

// logEachMax bounds the lines one kind of per-peer message gets in one
// update; the rest are counted in one line. A snapshot of 20,000 leases
// logs 16 "peer up" lines and a count, not 20,000 lines.
const logEachMax = 16

// logCap counts one kind of per-peer message in one update.
type logCap struct{ n int }

// ok counts a message and reports whether it may still be logged.
func (c *logCap) ok() bool {
	c.n++
	return c.n <= logEachMax
}

// summary logs how many messages ok refused, if any.
func (c *logCap) summary(log *slog.Logger, msg string, args ...any) {
	if c.n > logEachMax {
		log.Info(msg, append([]any{"more", c.n - logEachMax}, args...)...)
	}
}
