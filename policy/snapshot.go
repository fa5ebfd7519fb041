package policy

import (
	"fmt"
	"strings"
)

// Snapshot is one compiled, immutable view of the cluster's policies. The
// data path reads it without locks; the control plane replaces it whole.
type Snapshot struct {
	gen    uint64
	ready  bool
	active bool // !ready, or some pod is isolated

	podByIP map[uint32]int32 // pod IPv4 -> index into pods
	hosts   []uint32         // this node's addresses (a few)
	pods    []podEntry
	tables  []table
	lists   []allowList // lists[emptyList] allows nothing
	spans   []portSpan  // the port maps of all lists, back to back
	rules   []ruleInfo  // canonical order: policy, ingress rules, egress rules
	names   []string    // policy "namespace/name", by policy index
	drops   []*dropSlot // by policy index; nil unless published by an Engine

	problems  []error
	summaries []PolicySummary
}

// PolicySummary is one policy as `weft policies` lists it.
type PolicySummary struct {
	Namespace, Name string
	Ingress, Egress bool     // the directions it isolates
	IngressRules    int      // rules as written
	EgressRules     int      //
	Selects         []string // "namespace/name" of the pods it selects
	Problem         string   // why it is enforced as deny-all, if invalid
}

// Policies lists the snapshot's policies, by namespace and name.
func (s *Snapshot) Policies() []PolicySummary { return s.summaries }

// podEntry is a pod's place in the snapshot: the table its ingress and
// egress are decided by, or -1 when it is not isolated in that direction.
type podEntry struct {
	ingress, egress int32
	name            string // "namespace/name", for Explain
}

// table holds the decisions of every pod selected by the same set of
// policies (for ingress, also with the same named ports): for each peer pod
// and for each range of other addresses, the allow list that applies.
type table struct {
	byPod     []uint32 // peer pod index -> allow list
	addrStart []uint32 // sorted; addrStart[0] == 0; range i is [addrStart[i], addrStart[i+1])
	addrList  []uint32
	policies  []int32 // the policies that isolate the pods of this table
}

// allowList is the union of the rules that apply to one (table, peer):
// the first rule admitting each protocol and port.
type allowList struct {
	any      int32 // first rule without ports (admits every protocol), or NoRule
	tcp, udp spanRange
}

type spanRange struct{ lo, hi uint32 }

// portSpan maps ports first..last to the first rule admitting them.
type portSpan struct {
	first, last uint16
	rule        int32
}

// ruleInfo names a rule for reasons and metrics.
type ruleInfo struct {
	policy int32
	egress bool
	index  int32
}

const emptyList = 0

// Active reports whether the snapshot can deny anything: some pod is
// isolated, or no policies are known yet. When it is false the data path
// skips the policy stage entirely (no decision, no conntrack entry), so a
// cluster without policies pays nothing for them.
func (s *Snapshot) Active() bool { return s.active }

// Generation is the snapshot's number; every Update of an Engine makes a
// larger one, and a Decision carries the one it was taken under.
func (s *Snapshot) Generation() uint64 { return s.gen }

// Problems lists the policies the snapshot could not take as written
// (Validate's errors) and how each was enforced instead: an invalid policy
// isolates what it selects (its whole namespace if the selector itself is
// invalid) in both directions and allows nothing.
func (s *Snapshot) Problems() []error { return s.problems }

// RuleName names a rule: "x/allow-web ingress[0]".
func (s *Snapshot) RuleName(rule int32) string {
	if rule < 0 || int(rule) >= len(s.rules) {
		return ""
	}
	r := s.rules[rule]
	dir := "ingress"
	if r.egress {
		dir = "egress"
	}
	return fmt.Sprintf("%s %s[%d]", s.names[r.policy], dir, r.index)
}

// RulePolicy is the "namespace/name" of the policy a rule belongs to, for
// counting per policy.
func (s *Snapshot) RulePolicy(rule int32) string {
	if rule < 0 || int(rule) >= len(s.rules) {
		return ""
	}
	return s.names[s.rules[rule].policy]
}

// Isolating lists the policies that isolate the pod at ip in a direction
// (egress if egress, else ingress): the ones a denied flow was denied by.
func (s *Snapshot) Isolating(ip [4]byte, egress bool) []string {
	i, ok := s.podByIP[be32(ip)]
	if !ok {
		return nil
	}
	t := s.pods[i].ingress
	if egress {
		t = s.pods[i].egress
	}
	if t < 0 {
		return nil
	}
	var out []string
	for _, p := range s.tables[t].policies {
		out = append(out, s.names[p])
	}
	return out
}

// Explain says in words why d was decided for f (for `weft trace`).
func (s *Snapshot) Explain(f Flow, d Decision) string {
	side := func(rule int32, pod [4]byte, egress bool) string {
		dir := "ingress"
		if egress {
			dir = "egress"
		}
		if rule != NoRule {
			return dir + " allowed by " + s.RuleName(rule)
		}
		if i, ok := s.podByIP[be32(pod)]; ok {
			if (egress && s.pods[i].egress < 0) || (!egress && s.pods[i].ingress < 0) {
				return s.pods[i].name + " not isolated for " + dir
			}
		}
		return ""
	}
	var parts []string
	switch d.Why {
	case WhyNotReady:
		return "denied: no policy snapshot yet (node starting)"
	case WhyNode:
		return "allowed: from the node itself"
	case WhyEgressIsolated:
		return fmt.Sprintf("denied: egress of %s isolated by %s, no rule allows it",
			s.podName(f.Src), strings.Join(s.Isolating(f.Src, true), ", "))
	case WhyIngressIsolated:
		if d.Egress != NoRule {
			parts = append(parts, side(d.Egress, f.Src, true))
		}
		return fmt.Sprintf("denied: ingress of %s isolated by %s, no rule allows it%s",
			s.podName(f.Dst), strings.Join(s.Isolating(f.Dst, false), ", "), prefixed("; ", parts))
	}
	if e := side(d.Egress, f.Src, true); e != "" {
		parts = append(parts, e)
	}
	if e := side(d.Ingress, f.Dst, false); e != "" {
		parts = append(parts, e)
	}
	if len(parts) == 0 {
		return "allowed: no pod policy applies"
	}
	return "allowed: " + strings.Join(parts, "; ")
}

func prefixed(p string, parts []string) string {
	if len(parts) == 0 {
		return ""
	}
	return p + strings.Join(parts, "; ")
}

func (s *Snapshot) podName(ip [4]byte) string {
	if i, ok := s.podByIP[be32(ip)]; ok {
		return s.pods[i].name
	}
	return fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], ip[3])
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
