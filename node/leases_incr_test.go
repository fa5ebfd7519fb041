package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
)

// checkViewInvariants checks what the incremental apply must keep true
// whatever the order of events: the accepted peers conflict with nothing;
// every live lease other than self's is accepted or refused, and a refused
// one really conflicts with this node or an accepted peer (a lease
// refused while a peer held its place is taken once the place is free);
// the route and peer tables hold exactly the accepted peers.
func checkViewInvariants(t *testing.T, n *Node, step int) {
	t.Helper()
	v := &n.view
	fresh := &Node{cfg: n.cfg, lease: n.lease, underlay: n.underlay}
	fresh.view.init()
	for name, l := range v.accepted {
		if _, live := v.live[name]; !live {
			t.Fatalf("step %d: %s accepted but not live (nothing is held here)", step, name)
		}
		if why := fresh.checkPeerLease(l); why != "" {
			t.Fatalf("step %d: accepted %s conflicts: %s", step, name, why)
		}
		fresh.view.accept(l)
	}
	for name, l := range v.live {
		if name == n.cfg.NodeName {
			continue
		}
		_, acc := v.accepted[name]
		why, rej := v.rejected[name]
		if acc == rej {
			t.Fatalf("step %d: %s accepted %v, rejected %v (%q)", step, name, acc, rej, why)
		}
		if rej && n.checkPeerLease(l) == "" {
			t.Fatalf("step %d: %s refused (%s) but fits next to the accepted peers", step, name, why)
		}
	}
	routes := peerRoutes(n)
	if len(routes) != len(v.accepted) || n.peers.Len() != len(v.accepted) {
		t.Fatalf("step %d: %d routes, %d peers, %d accepted", step, len(routes), n.peers.Len(), len(v.accepted))
	}
	for name, l := range v.accepted {
		if routes[l.Subnet.String()] != l.Underlay.String() {
			t.Fatalf("step %d: route of %s is %q, want via %s", step, name, routes[l.Subnet.String()], l.Underlay)
		}
	}
}

// TestIncrementalApplyInvariants drives random events (leases that come,
// change and go, many of them conflicting: underlay addresses and subnets
// come from small pools) through note/applyPending in random batches.
func TestIncrementalApplyInvariants(t *testing.T) {
	refused, accepted := 0, 0
	for seed := range uint64(10) {
		r := rand.New(rand.NewPCG(seed, 7))
		n, _ := leaseNode(t)
		randLease := func() registry.Lease {
			name := fmt.Sprintf("n%d", r.IntN(24))
			sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(r.IntN(12)), 0}), 23+r.IntN(2)).Masked()
			if r.IntN(10) == 0 {
				sub = netip.MustParsePrefix("10.244.0.0/22") // contains others
			}
			return registry.Lease{Node: name, Underlay: netip.AddrFrom4([4]byte{192, 0, 2, byte(2 + r.IntN(16))}),
				Subnet: sub, RouterMAC: packet.MAC{2, 0, 0, 0, 0, 1}, VNI: 1}
		}
		for step := range 200 {
			for range 1 + r.IntN(6) {
				l := randLease()
				switch r.IntN(4) {
				case 0:
					n.view.note(registry.Event{Type: registry.Removed, Lease: l})
				case 1:
					live := map[string]registry.Lease{}
					for range r.IntN(8) {
						l := randLease()
						live[l.Node] = l
					}
					n.view.note(registry.SnapshotEvent(live))
				default:
					n.view.note(registry.Event{Type: registry.Changed, Lease: l})
				}
			}
			n.applyPending()
			checkViewInvariants(t, n, step)
			refused += len(n.view.rejected)
			accepted += len(n.view.accepted)
		}
	}
	if refused == 0 || accepted == 0 {
		t.Fatalf("the events made %d refusals and %d acceptances in all: the test exercises nothing", refused, accepted)
	}
}

// TestChangedPeerYieldsToIncumbent: a peer whose lease changes onto
// another accepted peer's subnet is refused, and the peer that was there
// keeps it, whatever the names.
func TestChangedPeerYieldsToIncumbent(t *testing.T) {
	n, logs := leaseNode(t)
	live := map[string]registry.Lease{"a": lease("a", 2, "10.244.1.0/24"), "z": lease("z", 3, "10.244.2.0/24")}
	n.applyLeases(live)
	live["a"] = lease("a", 2, "10.244.2.0/24")
	n.applyLeases(live)
	if got := peerRoutes(n); len(got) != 1 || got["10.244.2.0/24"] != "192.0.2.3" {
		t.Fatalf("peer routes %v, want z's only", got)
	}
	if logs.count("peer down: lease rejected", "peer=a") != 1 {
		t.Errorf("logs: %q", logs.lines)
	}
	// a moves back: accepted again, logged up.
	live["a"] = lease("a", 2, "10.244.1.0/24")
	n.applyLeases(live)
	if got := peerRoutes(n); len(got) != 2 || logs.count("peer up", "peer=a") != 2 {
		t.Fatalf("routes %v; logs %q", got, logs.lines)
	}
}

// TestBurstIsOneUpdate: events that arrive back to back are applied as
// one table update, and a removal among a stream of other events is
// applied with them.
func TestBurstIsOneUpdate(t *testing.T) {
	n, _ := leaseNode(t)
	n.ctx = context.Background()
	ch := make(chan registry.Event, 1)
	const burst = 2000
	go func() {
		ch <- registry.Event{Type: registry.Snapshot}
		for i := range burst {
			ch <- registry.Event{Type: registry.Added, Lease: benchLease(i)}
		}
		ch <- registry.Event{Type: registry.Removed, Lease: benchLease(7)}
	}()
	gap := time.NewTimer(time.Hour)
	ev := <-ch
	n.view.note(ev)
	if !n.coalesceWatch(ch, gap) {
		t.Fatal("channel reported closed")
	}
	n.applyPending()
	// On a loaded machine the sender can pause for longer than the gap:
	// then the rest is a second (or third) update, never one per event.
	for len(peerRoutes(n)) != burst-1 {
		select {
		case ev := <-ch:
			n.view.note(ev)
			n.coalesceWatch(ch, gap)
			n.applyPending()
		case <-time.After(10 * time.Second):
			t.Fatalf("%d routes after the burst, want %d", len(peerRoutes(n)), burst-1)
		}
	}
	if n.view.published > 5 {
		t.Errorf("%d table updates for a burst of %d events", n.view.published, burst+2)
	}
	t.Logf("%d events, %d table updates", burst+2, n.view.published)
}

// benchLease is node i of a big cluster: subnet 10.x.y.0/24 (skipping
// this node's 10.244.0.0/24), underlay 172.16.x.y.
func benchLease(i int) registry.Lease {
	i++ // 10.0.0.0/24 is the first
	if i >= 244<<8 {
		i++
	}
	return registry.Lease{Node: fmt.Sprintf("node-%05d", i), Underlay: netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)}),
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), RouterMAC: packet.MAC{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}, VNI: 1}
}

// TestRemovalNotStarvedByStream: a removal (a node killed) followed by an
// endless stream of other changes is applied while the stream goes on:
// coalescing stops taking events after coalesceMax, it does not wait for
// a pause.
func TestRemovalNotStarvedByStream(t *testing.T) {
	n, _ := leaseNode(t)
	n.ctx = context.Background()
	n.applyLeases(map[string]registry.Lease{"killed": lease("killed", 2, "10.244.1.0/24"), "busy": lease("busy", 3, "10.244.2.0/24")})
	ch := make(chan registry.Event)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		ch <- registry.Event{Type: registry.Removed, Lease: lease("killed", 2, "10.244.1.0/24")}
		for i := 0; ; i++ {
			l := lease("busy", 3, "10.244.2.0/24")
			l.Port = uint16(i) // a change every time
			select {
			case ch <- registry.Event{Type: registry.Changed, Lease: l}:
			case <-stop:
				return
			}
		}
	}()
	n.view.note(<-ch)
	done := make(chan bool)
	go func() { done <- n.coalesceWatch(ch, time.NewTimer(time.Hour)) }()
	select {
	case open := <-done:
		if !open {
			t.Fatal("channel reported closed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("coalesceWatch still taking events after 30 s of a stream that never pauses")
	}
	n.applyPending()
	if got := peerRoutes(n); len(got) != 1 || got["10.244.2.0/24"] == "" {
		t.Fatalf("routes %v while the stream goes on, want busy's only", got)
	}
}

// TestPeerLogsBounded: a snapshot of many leases logs a few of them and a
// count, as does their going.
func TestPeerLogsBounded(t *testing.T) {
	n, logs := leaseNode(t)
	live := map[string]registry.Lease{}
	for i := range 100 {
		l := benchLease(i)
		live[l.Node] = l
	}
	n.applyLeases(live)
	if got := logs.count("peer up", "peer="); got != logEachMax {
		t.Errorf("%d peer up lines, want %d", got, logEachMax)
	}
	if logs.count("peer up: more peers", "more=84") != 1 {
		t.Errorf("no count of the other 84: %q", logs.lines)
	}
	n.applyLeases(map[string]registry.Lease{})
	if got := logs.count("peer down: lease gone", "peer="); got != logEachMax {
		t.Errorf("%d peer down lines, want %d", got, logEachMax)
	}
	if logs.count("peer down or changed: more peers", "more=84") != 1 || len(peerRoutes(n)) != 0 {
		t.Errorf("routes %v; logs %q", peerRoutes(n), logs.lines[len(logs.lines)-3:])
	}
}

// TestHeldPeerPokesOnce: while a vanished lease is held, re-checking it
// (every heldRecheck) asks the keeper for a renewal when it vanished and
// then at most every pokeEvery, not on every re-check.
func TestHeldPeerPokesOnce(t *testing.T) {
	n, _ := leaseNode(t)
	pokes := 0
	n.view.health = func() registry.Health { return registry.Health{State: registry.HealthDegraded} }
	n.view.poke = func() { pokes++ }
	n.applyLeases(map[string]registry.Lease{"a": lease("a", 2, "10.244.1.0/24")})
	n.applyLeases(map[string]registry.Lease{})
	for range 5 {
		n.applyPending()
	}
	if pokes != 1 {
		t.Fatalf("%d pokes for one vanished lease re-checked 5 times at once, want 1", pokes)
	}
	n.view.pokedAt = n.view.pokedAt.Add(-pokeEvery) // as if pokeEvery passed
	n.applyPending()
	if pokes != 2 || len(peerRoutes(n)) != 1 {
		t.Fatalf("%d pokes after pokeEvery, want 2; routes %v (held)", pokes, peerRoutes(n))
	}
}

// TestFirstApplyPublishesWithoutPeers: a node alone in the cluster (the
// registry holds only its own lease) still gets its egress routes from the
// first apply. The incremental apply published only when a peer came, went
// or changed, so a lone node had no route to the world (sim egress and
// hostPort tests: "network is unreachable").
func TestFirstApplyPublishesWithoutPeers(t *testing.T) {
	n, _ := leaseNode(t)
	n.cfg.Egress.Enabled = true
	n.applyLeases(map[string]registry.Lease{"self": lease("self", 1, "10.244.0.0/24")})
	if len(n.sw.Routes()) == 0 {
		t.Fatal("no routes after the first apply of a registry holding only this node: egress routes missing")
	}
	if n.view.published != 1 {
		t.Fatalf("published %d table updates, want 1", n.view.published)
	}
}
