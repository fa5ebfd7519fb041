package main

import (
	"fmt"
	"strings"

	"github.com/weftnet/weft/api"
)

// egressLines are `weft status`'s egress rows: on or off, what is
// masqueraded, and the counters of weftd's nftables table.
func egressLines(t *table, e *api.Egress) {
	if !e.Enabled {
		t.kv("egress", "off: pods reach only the cluster")
		return
	}
	masq := "masquerade off: pods leave with their own addresses"
	if e.Masquerade {
		var not []string
		for _, p := range e.NonMasquerade {
			not = append(not, p.String())
		}
		masq = "masquerade to the node's address (not to " + strings.Join(not, ", ") + ")"
	}
	t.kv("egress", fmt.Sprintf("on, nftables table %s; %s", e.Table, masq))
	if e.Error != "" {
		t.kv("egress error", e.Error)
		return
	}
	t.kv("egress counts", fmt.Sprintf("%d connections masqueraded; pods->outside %d packets (%s), outside->pods %d packets (%s); %d hostPorts, %d node ports",
		e.Masqueraded, e.OutPackets, byteSize(e.OutBytes), e.InPackets, byteSize(e.InBytes), e.HostPorts, e.NodePorts))
}
