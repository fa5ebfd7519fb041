package node

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/nft"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// NodePorts: every Service port of type NodePort is reachable on every
// address of every node. weftd writes one DNAT rule per node port into its
// nftables table (package nft): with externalTrafficPolicy Cluster to the
// cluster IP, which the node routes into weft through weft0 (the service
// CIDR route) so that weft's service stage picks the backend on any node,
// the source masqueraded to weft0's address so that the answer comes back
// through this node; with Local straight to one of this node's ready
// endpoints, the client's address kept, and on a node without one no rule
// at all: the node's own stack refuses the connection.

// nodePortsOf turns compiled frontends into the table's node ports. Two
// frontends claiming one port and protocol (stored before the apply-time
// check refused it) keep the first by name; the others are returned as
// problems.
func nodePortsOf(specs []vswitch.ServiceSpec) ([]nft.NodePort, []error) {
	var out []nft.NodePort
	var errs []error
	owner := map[string]string{}
	for _, sp := range specs {
		if sp.NodePort == 0 {
			continue
		}
		proto := nft.TCP
		if sp.Proto == packet.IPProtoUDP {
			proto = nft.UDP
		}
		k := fmt.Sprintf("%s/%d", proto, sp.NodePort)
		if o, ok := owner[k]; ok {
			errs = append(errs, fmt.Errorf("node port %s: claimed by %s and %s; %s keeps it", k, o, sp.Name, o))
			continue
		}
		owner[k] = sp.Name
		np := nft.NodePort{Proto: proto, Port: sp.NodePort, ClusterIP: sp.ClusterIP, ServicePort: sp.Port, Local: sp.ExternalLocal, Owner: sp.Name}
		if sp.ExternalLocal {
			np.Backends = localBackends(sp.Backends)
		}
		out = append(out, np)
	}
	return out, errs
}

// localBackends are the ready endpoints on this node, or, with none ready,
// the serving and terminating ones (so connections drain, as kube-proxy
// does).
func localBackends(bs []vswitch.ServiceBackend) []netip.AddrPort {
	var ready, draining []netip.AddrPort
	for _, b := range bs {
		switch {
		case !b.Local:
		case b.Ready:
			ready = append(ready, netip.AddrPortFrom(b.Addr, b.Port))
		case b.Serving && b.Terminating:
			draining = append(draining, netip.AddrPortFrom(b.Addr, b.Port))
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return draining
}

// setNodePorts writes the node ports of the compiled Services into the
// table, if they changed. Called after every compilation.
func (n *Node) setNodePorts(specs []vswitch.ServiceSpec) {
	if n.egress.table == nil {
		return
	}
	nps, problems := nodePortsOf(specs)
	n.egress.npMu.Lock()
	defer n.egress.npMu.Unlock()
	for _, err := range problems {
		n.log.Error("node port not served", "err", err)
	}
	if slices.EqualFunc(nps, n.egress.nodePorts, func(a, b nft.NodePort) bool {
		return a.String() == b.String() && a.Owner == b.Owner
	}) {
		return
	}
	if err := n.egress.table.SetNodePorts(nps); err != nil {
		n.log.Error("node ports not written; the previous ones stay", "err", err)
		return
	}
	n.egress.nodePorts = nps
	n.log.Info("node ports written", "node_ports", len(nps))
}
