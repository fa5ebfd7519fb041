// Package policy is weft's NetworkPolicy engine: it compiles Kubernetes
// networking.k8s.io/v1 NetworkPolicies, with the namespaces and pods they
// talk about, into an immutable Snapshot, and answers one question per new
// flow: may (src IPv4, dst IPv4, protocol, destination port) start, and
// why (which policy and rule allowed it, or which isolation denied it).
//
// The semantics are the upstream API's. A policy selects pods of its own
// namespace (podSelector, empty = all) and isolates them for the directions
// of policyTypes (when omitted: Ingress, plus Egress if the policy has an
// egress section). An isolated pod accepts, in that direction, exactly the
// union of what the policies selecting it allow; order never matters. A
// connection between two pods needs the source's egress and the
// destination's ingress to allow it; an address that is not a pod has no
// policy of its own. Choices where the API leaves room are written in
// DESIGN.md beside this package (ipBlock on pod IPs, SCTP, loopback, the
// node's own traffic, re-checking established flows).
//
// Compile does all the work: selectors are resolved to pod indices once,
// pods that the same policies select share one table, and for every
// (table, peer pod) pair the matching rules are reduced to an interned
// "allow list": a first-match port map per protocol. Decide is then two
// map lookups (IP -> pod index), two slice reads and a binary search over
// a handful of port spans, with no allocation. Addresses outside the pod
// set (ipBlock peers) are answered from a sorted interval list per table.
//
// Nothing here does I/O or keeps time; the node swaps Snapshots through an
// Engine (atomic pointer plus generation) and conntrack keeps a flow's
// Decision with the generation it was taken under, so a policy change is
// seen by every established flow on its next packet (see Recheck).
package policy
