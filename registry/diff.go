package registry

import (
	"cmp"
	"slices"
)

// Diff returns the events that turn the live set prev into next (both keyed
// by node name): Removed, Changed and Added, each group sorted by node name.
// Leases that differ only in Expiry produce no event. Backends whose store
// cannot say what changed (a polled directory, an etcd re-list after
// compaction) use it to turn two views into watch events.
func Diff(prev, next map[string]Lease) []Event {
	var removed, changed, added []Event
	for name, old := range prev {
		if _, ok := next[name]; !ok {
			removed = append(removed, Event{Type: Removed, Lease: old})
		}
	}
	for name, cur := range next {
		old, ok := prev[name]
		switch {
		case !ok:
			added = append(added, Event{Type: Added, Lease: cur})
		case !old.SameAs(cur):
			changed = append(changed, Event{Type: Changed, Lease: cur})
		}
	}
	byNode := func(a, b Event) int { return cmp.Compare(a.Lease.Node, b.Lease.Node) }
	slices.SortFunc(removed, byNode)
	slices.SortFunc(changed, byNode)
	slices.SortFunc(added, byNode)
	// Removed first: a subnet freed by one node and claimed by another in
	// the same poll must leave the watcher's route table before it returns.
	return slices.Concat(removed, changed, added)
}

// SortLeases sorts leases by node name, the order List and Snapshot use.
func SortLeases(leases []Lease) {
	slices.SortFunc(leases, func(a, b Lease) int { return cmp.Compare(a.Node, b.Node) })
}

// LeaseMap indexes leases by node name.
func LeaseMap(leases []Lease) map[string]Lease {
	m := make(map[string]Lease, len(leases))
	for _, l := range leases {
		m[l.Node] = l
	}
	return m
}

// SnapshotEvent builds the first event of a watch from the live set.
func SnapshotEvent(live map[string]Lease) Event {
	leases := make([]Lease, 0, len(live))
	for _, l := range live {
		leases = append(leases, l)
	}
	SortLeases(leases)
	return Event{Type: Snapshot, Leases: leases}
}
