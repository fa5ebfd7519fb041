package policy

import (
	"container/heap"
	"encoding/binary"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// buildTables gives every isolated pod the table of its direction. Pods
// isolated by the same policies share a table; for ingress, named ports
// resolve on the selected pod, so pods that differ in them do not.
func (c *compiler) buildTables() {
	keys := map[string]int32{}
	for p := range c.pods {
		c.s.pods[p].ingress = c.tableFor(keys, false, int32(p), c.ingressBy[p])
		c.s.pods[p].egress = c.tableFor(keys, true, int32(p), c.egressBy[p])
		c.s.active = c.s.active || c.s.pods[p].ingress >= 0 || c.s.pods[p].egress >= 0
	}
}

func (c *compiler) tableFor(keys map[string]int32, egress bool, pod int32, pols []int32) int32 {
	if len(pols) == 0 {
		return -1
	}
	var rules []*rule
	named := false
	for _, pi := range pols {
		rs := c.ingress[pi]
		if egress {
			rs = c.egress[pi]
		}
		for _, r := range rs {
			named = named || r.named
		}
		rules = append(rules, rs...)
	}
	key := make([]byte, 0, 4*len(pols)+8)
	key = append(key, 'i')
	if egress {
		key[0] = 'e'
	}
	key = binary.LittleEndian.AppendUint32(key, uint32(len(pols)))
	for _, pi := range pols {
		key = binary.LittleEndian.AppendUint32(key, uint32(pi))
	}
	if named && !egress {
		key = binary.LittleEndian.AppendUint32(key, uint32(c.portSig[pod]))
	}
	if t, ok := keys[string(key)]; ok {
		return t
	}
	t := int32(len(c.s.tables))
	keys[string(key)] = t
	c.s.tables = append(c.s.tables, c.newTable(egress, pod, pols, rules))
	return t
}

// newTable resolves, for every peer pod and every range of other
// addresses, which of rules (ascending) match it, and interns the result.
func (c *compiler) newTable(egress bool, pod int32, pols []int32, rules []*rule) table {
	tab := table{policies: slices.Clone(pols), byPod: make([]uint32, len(c.pods))}
	perPeer := make([][]int32, len(c.pods))
	for _, r := range rules {
		if r.allPeers {
			for p := range perPeer {
				perPeer[p] = append(perPeer[p], r.ref)
			}
			continue
		}
		for _, p := range r.pods {
			perPeer[p] = append(perPeer[p], r.ref)
		}
	}
	for p, refs := range perPeer {
		// Named ports resolve on the destination: the selected pod for
		// ingress, the peer for egress.
		resolver := pod
		if egress {
			resolver = int32(p)
		}
		tab.byPod[p] = c.list(refs, resolver)
	}

	// Addresses that are not pods: only ipBlock peers and rules without
	// peers can match them. Cut the address space at every block edge and
	// decide each piece by its first address.
	bounds := []uint64{0}
	for _, r := range rules {
		for _, b := range r.blocks {
			bounds = append(bounds, uint64(b.first), uint64(b.last)+1)
			for _, e := range b.except {
				bounds = append(bounds, uint64(e[0]), uint64(e[1])+1)
			}
		}
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	// A named port resolves on the destination: for ingress the selected
	// pod; for egress to an address that is no pod, on nothing.
	addrResolver := pod
	if egress {
		addrResolver = -1
	}
	var refs []int32
	for _, start := range bounds {
		if start > 0xffffffff {
			break
		}
		ip := uint32(start)
		refs = refs[:0]
		for _, r := range rules {
			if r.allPeers || slices.ContainsFunc(r.blocks, func(b ipRange) bool { return b.contains(ip) }) {
				refs = append(refs, r.ref)
			}
		}
		id := c.list(refs, addrResolver)
		if n := len(tab.addrList); n > 0 && tab.addrList[n-1] == id {
			continue
		}
		tab.addrStart = append(tab.addrStart, ip)
		tab.addrList = append(tab.addrList, id)
	}
	return tab
}

// list interns the allow list of rules refs (ascending) with named ports
// resolved on pod resolver (-1: none).
func (c *compiler) list(refs []int32, resolver int32) uint32 {
	if len(refs) == 0 {
		return emptyList
	}
	sig := int32(-1)
	if resolver >= 0 && slices.ContainsFunc(refs, func(ref int32) bool { return c.all[ref].named }) {
		sig = c.portSig[resolver]
	}
	key := make([]byte, 0, 4*len(refs)+4)
	key = binary.LittleEndian.AppendUint32(key, uint32(sig))
	for _, ref := range refs {
		key = binary.LittleEndian.AppendUint32(key, uint32(ref))
	}
	if id, ok := c.listIDs[string(key)]; ok {
		return id
	}
	var tcp, udp []portRule
	al := allowList{any: NoRule}
	add := func(proto uint8, first, last uint16, ref int32) {
		switch proto {
		case ProtoTCP:
			tcp = append(tcp, portRule{first, last, ref})
		case ProtoUDP:
			udp = append(udp, portRule{first, last, ref})
		}
		// SCTP: weft does not read SCTP ports; such a rule matches nothing.
	}
	for _, ref := range refs {
		r := c.all[ref]
		if r.allPorts {
			al.any = ref
			add(ProtoTCP, 0, 65535, ref)
			add(ProtoUDP, 0, 65535, ref)
			break // covers everything: no later rule can come first anywhere
		}
		for _, m := range r.ports {
			if m.name == "" {
				add(m.proto, m.first, m.last, ref)
				continue
			}
			if resolver < 0 {
				continue
			}
			for _, np := range c.pods[resolver].Ports {
				if np.Name == m.name && protoNumber(np.Protocol) == m.proto && np.Port >= 1 && np.Port <= 65535 {
					add(m.proto, uint16(np.Port), uint16(np.Port), ref)
				}
			}
		}
	}
	al.tcp = c.appendSpans(firstMatch(tcp))
	al.udp = c.appendSpans(firstMatch(udp))
	id := uint32(len(c.s.lists))
	c.s.lists = append(c.s.lists, al)
	c.listIDs[string(key)] = id
	return id
}

func protoNumber(p corev1.Protocol) uint8 {
	switch p {
	case corev1.ProtocolUDP:
		return ProtoUDP
	case corev1.ProtocolSCTP:
		return ProtoSCTP
	}
	return ProtoTCP // the Pod API's default
}

func (c *compiler) appendSpans(spans []portSpan) spanRange {
	lo := uint32(len(c.s.spans))
	c.s.spans = append(c.s.spans, spans...)
	return spanRange{lo, uint32(len(c.s.spans))}
}

type portRule struct {
	first, last uint16
	rule        int32
}

// firstMatch turns port ranges (in any order) into disjoint ascending
// spans, each naming the lowest rule that covers it: a sweep over the range
// edges with a heap of the ranges covering the current port.
func firstMatch(rs []portRule) []portSpan {
	if len(rs) == 0 {
		return nil
	}
	edges := make([]int, 0, 2*len(rs))
	for _, r := range rs {
		edges = append(edges, int(r.first), int(r.last)+1)
	}
	slices.Sort(edges)
	edges = slices.Compact(edges)
	slices.SortFunc(rs, func(a, b portRule) int { return int(a.first) - int(b.first) })
	var out []portSpan
	active := &ruleHeap{}
	next := 0
	for k := 0; k+1 < len(edges); k++ {
		port := edges[k]
		for next < len(rs) && int(rs[next].first) <= port {
			heap.Push(active, rs[next])
			next++
		}
		for active.Len() > 0 && int((*active)[0].last) < port {
			heap.Pop(active)
		}
		if active.Len() == 0 {
			continue
		}
		rule, end := (*active)[0].rule, uint16(edges[k+1]-1)
		if n := len(out); n > 0 && out[n-1].rule == rule && int(out[n-1].last)+1 == port {
			out[n-1].last = end
			continue
		}
		out = append(out, portSpan{first: uint16(port), last: end, rule: rule})
	}
	return out
}

// ruleHeap orders ranges by rule, lowest first.
type ruleHeap []portRule

func (h ruleHeap) Len() int           { return len(h) }
func (h ruleHeap) Less(i, j int) bool { return h[i].rule < h[j].rule }
func (h ruleHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ruleHeap) Push(x any)        { *h = append(*h, x.(portRule)) }
func (h *ruleHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
