package nft

import (
	"fmt"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// Count is a rule's counter.
type Count struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Counters are the table's rule counters. NAT rules see only the first
// packet of each connection, so their counts are connections.
type Counters struct {
	// Masqueraded counts connections leaving the cluster masqueraded.
	Masqueraded Count
	// Hairpin counts connections from a pod to a hostPort of its own node.
	Hairpin Count
	// Out and In count the packets forwarded from pods to the outside and
	// from the outside to pods.
	Out, In Count
	// HostPorts counts the connections each mapping translated, keyed by
	// HostPort.String().
	HostPorts map[string]Count
	// NodePorts counts the connections each node port translated, keyed
	// by NodePort.String(); NodePortMasq those masqueraded (Cluster).
	NodePorts    map[string]Count
	NodePortMasq Count
}

// Counters reads the counters back from the kernel.
func (t *Table) Counters() (Counters, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := Counters{HostPorts: map[string]Count{}, NodePorts: map[string]Count{}}
	for _, name := range []string{chainPostrouting, chainEgress, chainForward, chainPorts} {
		rules, err := t.conn.GetRules(t.table, t.chains[name])
		if err != nil {
			return out, fmt.Errorf("nftables: read chain %s of table ip %s: %w", name, t.table.Name, err)
		}
		for _, r := range rules {
			cmt := commentOf(r.UserData)
			var c Count
			for _, e := range r.Exprs {
				if ce, ok := e.(*expr.Counter); ok {
					c = Count{Packets: ce.Packets, Bytes: ce.Bytes}
				}
			}
			switch {
			case cmt == commentMasq:
				out.Masqueraded = c
			case cmt == commentHairpin:
				out.Hairpin = c
			case cmt == commentOut:
				out.Out = c
			case cmt == commentIn:
				out.In = c
			case cmt == commentNodeMsq:
				out.NodePortMasq = c
			case strings.HasPrefix(cmt, commentPortPfx):
				key, _, _ := strings.Cut(strings.TrimPrefix(cmt, commentPortPfx), " pod ")
				out.HostPorts[key] = c
			case strings.HasPrefix(cmt, commentNodePfx):
				key, _, _ := strings.Cut(strings.TrimPrefix(cmt, commentNodePfx), " svc ")
				sum := out.NodePorts[key]
				out.NodePorts[key] = Count{Packets: sum.Packets + c.Packets, Bytes: sum.Bytes + c.Bytes}
			}
		}
	}
	return out, nil
}

// commentOf reads the comment out of a rule's user data (TLVs: type byte,
// length byte, value), tolerating data it did not write: the library's own
// reader slices before it checks lengths.
func commentOf(ud []byte) string {
	for len(ud) >= 2 {
		typ, n := ud[0], int(ud[1])
		if 2+n > len(ud) {
			return ""
		}
		if typ == byte(userdata.TypeComment) {
			return strings.TrimSuffix(string(ud[2:2+n]), "\x00")
		}
		ud = ud[2+n:]
	}
	return ""
}
