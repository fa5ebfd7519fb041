package sim

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/weftnet/weft/api"
)

// The sim's hostPort: the first pod of every node (in a sim with an
// outside host) maps hostPort 8080/tcp to a server on its port 7790.
const (
	simHostPort      = 8080
	simContainerPort = 7790
)

// podPortMappings are the hostPorts AddPod asks for pod number i (from 0)
// of a node.
func (c *Cluster) podPortMappings(i int) []api.PortMapping {
	if c.Outside == nil || i != 0 {
		return nil
	}
	return []api.PortMapping{{HostPort: simHostPort, ContainerPort: simContainerPort, Protocol: "tcp"}}
}

// outsideChecks are the checks through the node's stack: every pod reaches
// the outside host over TCP and UDP, masqueraded behind its node's
// underlay address, and the outside host reaches every hostPort pod on its
// node's address with its own address kept.
func outsideChecks(ctx context.Context, c *Cluster, opts MatrixOptions) []Check {
	o := c.Outside
	if o == nil {
		return nil
	}
	var out []Check
	for _, n := range c.Nodes {
		for _, p := range n.Pods {
			out = append(out, egressCheck(ctx, o, n, p))
		}
	}
	for _, n := range c.Nodes {
		for _, p := range n.Pods {
			for _, m := range p.HostPorts {
				out = append(out, hostPortCheck(ctx, o, n, p, m, opts))
			}
		}
	}
	return out
}

func egressCheck(ctx context.Context, o *Outside, n *Node, p *Pod) Check {
	ch := Check{Name: "egress", Detail: fmt.Sprintf("%s (%s) -> outside %s", p.Name, p.IP(), o.AddrPort())}
	var saw []string
	for _, network := range []string{"tcp", "udp"} {
		peer, err := OutsideProbe(ctx, p.Netns, network, o.AddrPort())
		switch {
		case err != nil:
			ch.Error = fmt.Sprintf("%s: %v", network, err)
			return ch
		case peer != n.Underlay:
			ch.Error = fmt.Sprintf("%s: server saw %s, want node %s's address %s (masquerade)", network, peer, n.Name, n.Underlay)
			return ch
		}
		saw = append(saw, network+" "+peer.String())
	}
	ch.Detail += ": server saw " + strings.Join(saw, ", ")
	return ch
}

func hostPortCheck(ctx context.Context, o *Outside, n *Node, p *Pod, m api.PortMapping, opts MatrixOptions) Check {
	front := netip.AddrPortFrom(n.Underlay, uint16(m.HostPort))
	ch := Check{Name: "hostport", Detail: fmt.Sprintf("outside -> %s %s (%s:%d on %s)", m.Protocol, front, p.Name, m.ContainerPort, n.Name)}
	srv, err := startServer(ctx, opts.Helper, p.Netns, ":"+strconv.Itoa(m.ContainerPort))
	if err != nil {
		ch.Error = err.Error()
		return ch
	}
	defer srv.stop()
	peer, errText := tcpCheck(ctx, o.Netns, front)
	switch {
	case errText != "":
		ch.Error = errText
	case peer != o.Gateway:
		ch.Error = fmt.Sprintf("the pod saw %s, want the outside host's own %s", peer, o.Gateway)
	default:
		ch.Detail += ": the pod saw " + peer.String()
	}
	return ch
}
