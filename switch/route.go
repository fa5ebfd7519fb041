package vswitch

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/packet"
)

// RouteKind says how the router reaches a prefix.
type RouteKind uint8

const (
	// RouteLocal: a destination on this node. The next hop (the
	// destination itself, or Route.Via) is resolved in the neighbour table
	// to a MAC and a local port.
	RouteLocal RouteKind = iota + 1
	// RoutePeer: another node's pod subnet (or host route). The frame is
	// sent to Route.Peer over the overlay, inner destination MAC
	// Route.PeerMAC.
	RoutePeer
)

func (k RouteKind) String() string {
	switch k {
	case RouteLocal:
		return "local"
	case RoutePeer:
		return "peer"
	}
	return "kind?"
}

// Route is one IPv4 route.
type Route struct {
	Prefix netip.Prefix `json:"prefix"`
	Kind   RouteKind    `json:"kind"`
	// Via (RouteLocal only, optional) is a next hop in the node subnet to
	// resolve instead of the destination, e.g. 0.0.0.0/0 via the host
	// port's .2 so that pods reach the world through the node.
	Via netip.Addr `json:"via,omitzero"`
	// Peer and PeerMAC (RoutePeer only): the peer node's underlay address
	// and router MAC.
	Peer    netip.Addr `json:"peer,omitzero"`
	PeerMAC packet.MAC `json:"peer_mac,omitzero"`
}

func (r Route) String() string {
	switch r.Kind {
	case RoutePeer:
		return fmt.Sprintf("%s peer %s mac %s", r.Prefix, r.Peer, r.PeerMAC)
	case RouteLocal:
		if r.Via.IsValid() {
			return fmt.Sprintf("%s local via %s", r.Prefix, r.Via)
		}
		return fmt.Sprintf("%s local", r.Prefix)
	}
	return r.Prefix.String() + " " + r.Kind.String()
}

// routeEntry is a Route as the hot path needs it.
type routeEntry struct {
	kind    RouteKind
	hasVia  bool
	via     uint32
	peer    netip.Addr
	peerMAC packet.MAC
}

// routeTable is an immutable compiled route snapshot.
type routeTable struct {
	trie    *lpm
	entries []routeEntry // the trie's values index entries and routes alike
	routes  []Route
	listed  []uint32 // indexes of routes sorted by address then length, for listings
}

func (t *routeTable) lookup(dst uint32) *routeEntry {
	v, ok := t.trie.lookup(dst)
	if !ok {
		return nil
	}
	return &t.entries[v]
}

// compileRoutes validates routes and builds a snapshot. The node subnet's
// Local route is always present: added when missing, an error when routes
// give that prefix another kind.
func (s *Switch) compileRoutes(routes []Route) (*routeTable, error) {
	rs := make([]Route, 0, len(routes)+1)
	haveSubnet := false
	var errs []error
	for _, r := range routes {
		if err := s.checkRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r.Prefix, err))
			continue
		}
		r.Prefix = r.Prefix.Masked()
		if r.Prefix == s.subnet {
			if r.Kind != RouteLocal || r.Via.IsValid() {
				errs = append(errs, fmt.Errorf("route %s: the node subnet must be a plain local route", r.Prefix))
				continue
			}
			haveSubnet = true
		}
		rs = append(rs, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !haveSubnet {
		rs = append(rs, Route{Prefix: s.subnet, Kind: RouteLocal})
	}
	// Both orders sort integer keys over IPv4 prefixes rather than Routes
	// (netip values, compared through methods, copied with write
	// barriers): issue 16 rebuilds this table for every applied batch of
	// lease changes, 50,000 routes in a big cluster.
	byLen := make([]routeKey, len(rs))
	for i, r := range rs {
		byLen[i] = routeKey{k: uint64(r.Prefix.Bits())<<32 | uint64(ip4Key(r.Prefix.Addr().As4())), i: uint32(i)}
	}
	slices.SortFunc(byLen, routeKey.compare)
	for i := 1; i < len(byLen); i++ {
		if byLen[i].k == byLen[i-1].k {
			return nil, fmt.Errorf("route %s: given twice", rs[byLen[i].i].Prefix)
		}
	}
	t := &routeTable{entries: make([]routeEntry, len(rs)), routes: rs, listed: make([]uint32, len(rs))}
	ps := make([]lpmPrefix, len(rs))
	for j, key := range byLen {
		r := rs[key.i]
		t.entries[key.i] = routeEntry{kind: r.Kind, peer: r.Peer, peerMAC: r.PeerMAC}
		if r.Via.IsValid() {
			t.entries[key.i].hasVia = true
			t.entries[key.i].via = ip4Key(r.Via.As4())
		}
		ps[j] = lpmPrefix{addr: uint32(key.k), bits: uint8(key.k >> 32), val: key.i}
	}
	t.trie = buildLPM(ps)
	for i := range byLen { // now by address, then length
		byLen[i].k = byLen[i].k<<32 | byLen[i].k>>32
	}
	slices.SortFunc(byLen, routeKey.compare)
	for j, key := range byLen {
		t.listed[j] = key.i
	}
	return t, nil
}

// routeKey is a route's prefix as an integer sort key, and its index.
type routeKey struct {
	k uint64
	i uint32
}

func (a routeKey) compare(b routeKey) int { return cmp.Compare(a.k, b.k) }

func (s *Switch) checkRoute(r Route) error {
	if !r.Prefix.IsValid() || !r.Prefix.Addr().Is4() {
		return errors.New("not an IPv4 prefix")
	}
	switch r.Kind {
	case RouteLocal:
		if r.Via.IsValid() && (!r.Via.Is4() || !s.subnet.Contains(r.Via) || r.Via == s.gateway) {
			return fmt.Errorf("via %s: not a host address of the node subnet %s", r.Via, s.subnet)
		}
		if r.Peer.IsValid() || !r.PeerMAC.IsZero() {
			return errors.New("a local route has no peer")
		}
	case RoutePeer:
		if !r.Peer.IsValid() {
			return errors.New("peer route without peer address")
		}
		if r.PeerMAC.IsZero() || r.PeerMAC.IsMulticast() {
			return fmt.Errorf("peer MAC %s: not a unicast MAC", r.PeerMAC)
		}
		if r.Via.IsValid() {
			return errors.New("a peer route has no via")
		}
		if r.Prefix.Overlaps(s.subnet) && r.Prefix.Bits() >= s.subnet.Bits() {
			return fmt.Errorf("inside the node subnet %s", s.subnet)
		}
	default:
		return fmt.Errorf("unknown kind %d", r.Kind)
	}
	return nil
}

// SetRoutes replaces the route table. The node subnet's Local route is kept
// whether or not routes lists it. Prefixes are masked; a prefix given twice
// or a malformed route fails the whole call and leaves the table as it was.
func (s *Switch) SetRoutes(routes []Route) error {
	t, err := s.compileRoutes(routes)
	if err != nil {
		return fmt.Errorf("set routes: %w", err)
	}
	s.ctl.Lock()
	s.routes.Store(t)
	s.ctl.Unlock()
	return nil
}

// Routes lists the current routes sorted by address then length.
func (s *Switch) Routes() []Route {
	t := s.routes.Load()
	out := make([]Route, len(t.listed))
	for j, i := range t.listed {
		out[j] = t.routes[i]
	}
	return out
}
