package policy

import (
	"slices"
	"strings"
	"sync/atomic"
)

// Drops per policy. A flow is denied because a pod is isolated in a
// direction and no policy selecting it allows the flow: no single policy
// is to blame, every policy isolating that pod in that direction could
// have allowed it. So the drop counts once under each of them (the same
// packet can count under several; the per-reason counters policy_ingress
// and policy_egress count it once). A denial of a node that has not read
// its policies yet (not ready) names no policy and counts only per reason.
//
// The data path counts into slots its snapshot resolved at compile time
// (the table that denied lists its isolating policies by index, and the
// snapshot holds one slot per policy index): a few atomic adds, no map,
// no allocation. The slots belong to the Engine and outlive snapshots, so
// counts survive policy updates; a deleted policy's slot goes with it.

// PolicyDrops is one policy's drop counts, by the direction it isolates.
type PolicyDrops struct {
	Policy          string // "namespace/name"
	Ingress, Egress uint64
}

type dropSlot struct{ ingress, egress atomic.Uint64 }

// CountDrop counts a denied decision under the policies isolating the
// denied side. It does nothing for an allowed or not-ready decision, or on
// a snapshot compiled without an Engine. No allocation.
func (s *Snapshot) CountDrop(d Decision) {
	if d.deniedBy < 0 || int(d.deniedBy) >= len(s.tables) || s.drops == nil {
		return
	}
	for _, p := range s.tables[d.deniedBy].policies {
		if slot := s.drops[p]; d.Why == WhyEgressIsolated {
			slot.egress.Add(1)
		} else {
			slot.ingress.Add(1)
		}
	}
}

// attachDrops gives s the Engine's slot of each of its policies, making
// slots for new policies and forgetting those of policies s no longer has.
// Caller holds e.mu.
func (e *Engine) attachDrops(s *Snapshot) {
	next := make(map[string]*dropSlot, len(s.names))
	s.drops = make([]*dropSlot, len(s.names))
	for i, name := range s.names {
		slot := e.drops[name]
		if slot == nil {
			slot = &dropSlot{}
		}
		next[name], s.drops[i] = slot, slot
	}
	e.drops = next
}

// DropCounts lists the drops of every policy in force, by name. Policies
// deleted since are not listed (their counts went with them).
func (e *Engine) DropCounts() []PolicyDrops {
	e.mu.Lock()
	out := make([]PolicyDrops, 0, len(e.drops))
	for name, slot := range e.drops {
		out = append(out, PolicyDrops{Policy: name, Ingress: slot.ingress.Load(), Egress: slot.egress.Load()})
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b PolicyDrops) int { return strings.Compare(a.Policy, b.Policy) })
	return out
}
