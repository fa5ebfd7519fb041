package sim

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
)

// The sim's hostPort: the first pod of every node (in a sim with an
// outside host) maps hostPort 8080/tcp to a server on its port 7790.
// The example Services, on the same pods' port 7790: sim/web, node port
// 30080, externalTrafficPolicy Cluster, every node's first pod a backend;
// sim/web-local, node port 30081, Local, the first node's first pod only.
const (
	simHostPort      = 8080
	simContainerPort = 7790
	simNodePort      = 30080
	simLocalNodePort = 30081
)

// simOutsideClusterIP is sim/outside's cluster IP: a Service without a
// selector whose one endpoint is the outside host's server on its second
// address (Outside.EndpointAddr; TCP and UDP on port 80), outside the
// cluster CIDR, as the `kubernetes` Service's endpoints (the API servers'
// host addresses) are in a real cluster.
const simOutsideClusterIP = "10.96.0.11"

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
	if o.Services {
		out = append(out, nodePortChecks(ctx, c, opts)...)
		for _, n := range c.Nodes {
			out = append(out, outsideServiceCheck(ctx, o, n, n.Name+" (node)", n.HostAddr, n.Netns))
			for _, p := range n.Pods {
				out = append(out, outsideServiceCheck(ctx, o, n, p.Name, p.IP(), p.Netns))
			}
		}
	}
	return out
}

// outsideServiceCheck: a pod of node n, or the node itself, reaches
// sim/outside, whose endpoint is the outside host, by its cluster IP over
// TCP and UDP: translated by n's weftd's service stage, then out through
// the node's stack like egress (the server sees the node's underlay
// address), and the answer translated back; the third probe's UDP
// datagrams, both ways, are larger than the MTU and travel in fragments,
// whose later pieces weftd translates as their first (switch/frag.go).
// The node's own flow comes
// out of weft0 and goes back into it: weftd masquerades it to the gateway
// first (switch/nat.go, hostHairpin).
func outsideServiceCheck(ctx context.Context, o *Outside, n *Node, who string, ip netip.Addr, netns string) Check {
	front := netip.AddrPortFrom(netip.MustParseAddr(simOutsideClusterIP), 80)
	ch := Check{Name: "service-outside", Detail: fmt.Sprintf("%s (%s) -> sim/outside %s -> %s", who, ip, front, o.EndpointAddrPort())}
	if ch.Error = probeMasqueraded(ctx, n, netns, front, "tcp", "udp", "udp-large"); ch.Error == "" {
		ch.Detail += ": server saw " + n.Underlay.String() + " over tcp, udp and udp in fragments"
	}
	return ch
}

// probeMasqueraded asks the outside server at dst from netns over each
// network whether it sees node n's underlay address (the node's stack
// masqueraded the flow); it returns what went wrong, or "".
func probeMasqueraded(ctx context.Context, n *Node, netns string, dst netip.AddrPort, networks ...string) string {
	for _, network := range networks {
		peer, err := OutsideProbe(ctx, netns, network, dst)
		switch {
		case err != nil:
			return fmt.Sprintf("%s: %v", network, err)
		case peer != n.Underlay:
			return fmt.Sprintf("%s: server saw %s, want node %s's address %s (masquerade)", network, peer, n.Name, n.Underlay)
		}
	}
	return ""
}

// outsideService is sim/outside (see simOutsideClusterIP).
func (c *Cluster) outsideService() string {
	o := c.Outside
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: outside, namespace: sim}
spec:
  clusterIP: %s
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: %d}
  - {name: udp, port: 80, protocol: UDP, targetPort: %d}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: outside-1, namespace: sim, labels: {kubernetes.io/service-name: outside}}
addressType: IPv4
ports:
- {name: tcp, port: %d, protocol: TCP}
- {name: udp, port: %d, protocol: UDP}
endpoints:
- {addresses: [%s], conditions: {ready: true}}
`, simOutsideClusterIP, o.Port, o.Port, o.Port, o.Port, o.EndpointAddr)
}

// nodePortServices are the sim's NodePort Services (see simNodePort).
func (c *Cluster) nodePortServices() string {
	var eps, local []string
	for _, n := range c.Nodes {
		if len(n.Pods) == 0 {
			continue
		}
		ep := fmt.Sprintf("- {addresses: [%s], nodeName: %s-%s, conditions: {ready: true}}", n.Pods[0].IP(), c.Name, n.Name)
		eps = append(eps, ep)
		if local == nil {
			local = append(local, ep)
		}
	}
	slice := func(name string, eps []string) string {
		return fmt.Sprintf(`---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s-1, namespace: sim, labels: {kubernetes.io/service-name: %s}}
addressType: IPv4
ports: [{name: http, port: %d, protocol: TCP}]
endpoints:
%s
`, name, name, simContainerPort, strings.Join(eps, "\n"))
	}
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: sim}
spec:
  type: NodePort
  ports: [{name: http, port: 80, targetPort: %d, nodePort: %d}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local, namespace: sim}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, targetPort: %d, nodePort: %d}]
`, simContainerPort, simNodePort, simContainerPort, simLocalNodePort) + slice("web", eps) + slice("web-local", local)
}

// applyNodePortServices stores the example NodePort Services (every node
// compiles them from the shared store).
func (c *Cluster) applyNodePortServices(ctx context.Context) error {
	if len(c.Nodes) == 0 || len(c.Nodes[0].Pods) == 0 {
		return nil
	}
	if _, err := c.Apply(ctx, c.nodePortServices()+c.outsideService()); err != nil {
		return fmt.Errorf("example NodePort services: %w", err)
	}
	// Every node compiles the store on its own; a node serves (and lists)
	// a Service only once its node ports are written.
	backends := 0
	for _, n := range c.Nodes {
		if len(n.Pods) > 0 {
			backends++
		}
	}
	if err := c.WaitService(ctx, "sim/web", backends, 10*time.Second); err != nil {
		return err
	}
	if err := c.WaitService(ctx, "sim/web-local", 1, 10*time.Second); err != nil {
		return err
	}
	if err := c.WaitService(ctx, "sim/outside", 1, 10*time.Second); err != nil {
		return err
	}
	c.Outside.Services = true
	c.logf("example services: sim/web on node port %d (Cluster), sim/web-local on %d (Local, %s only), sim/outside %s -> the outside host",
		simNodePort, simLocalNodePort, c.Nodes[0].Name, simOutsideClusterIP)
	return c.save()
}

// nodePortChecks: the outside host reaches sim/web on every node's
// address (externalTrafficPolicy Cluster: the backend sees the ingress
// node's weft0 address), and sim/web-local on the first node with its own
// address kept, while the other nodes, without a local endpoint, refuse.
func nodePortChecks(ctx context.Context, c *Cluster, opts MatrixOptions) []Check {
	o := c.Outside
	var servers []*helperProc
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	for _, n := range c.Nodes {
		if len(n.Pods) == 0 {
			continue
		}
		srv, err := startServer(ctx, opts.Helper, n.Pods[0].Netns, ":"+strconv.Itoa(simContainerPort))
		if err != nil {
			return []Check{{Name: "nodeport", Detail: "backend servers", Error: err.Error()}}
		}
		servers = append(servers, srv)
	}
	var out []Check
	for i, n := range c.Nodes {
		front := netip.AddrPortFrom(n.Underlay, simNodePort)
		ch := Check{Name: "nodeport", Detail: fmt.Sprintf("outside -> sim/web %s (Cluster)", front)}
		peer, errText := tcpCheck(ctx, o.Netns, front)
		switch {
		case errText != "":
			ch.Error = errText
		case peer != n.HostAddr:
			ch.Error = fmt.Sprintf("the backend saw %s, want %s's weft0 address %s (masqueraded so the answer returns through it)", peer, n.Name, n.HostAddr)
		default:
			ch.Detail += ": the backend saw " + peer.String()
		}
		out = append(out, ch)

		front = netip.AddrPortFrom(n.Underlay, simLocalNodePort)
		ch = Check{Name: "nodeport", Detail: fmt.Sprintf("outside -> sim/web-local %s (Local)", front)}
		if i == 0 {
			peer, errText := tcpCheck(ctx, o.Netns, front)
			switch {
			case errText != "":
				ch.Error = errText
			case peer != o.Gateway:
				ch.Error = fmt.Sprintf("the backend saw %s, want the client's own %s", peer, o.Gateway)
			default:
				ch.Detail += ": the backend saw the client's " + peer.String()
			}
		} else {
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			conn, err := DialIn(dctx, o.Netns, "tcp4", front.String())
			cancel()
			if err == nil {
				conn.Close()
				ch.Error = "answered on a node without a local endpoint"
			} else {
				ch.Detail += ": refused on a node without a local endpoint (" + lastLines(err.Error(), 1) + ")"
			}
		}
		out = append(out, ch)
	}
	return out
}

func egressCheck(ctx context.Context, o *Outside, n *Node, p *Pod) Check {
	ch := Check{Name: "egress", Detail: fmt.Sprintf("%s (%s) -> outside %s", p.Name, p.IP(), o.AddrPort())}
	if ch.Error = probeMasqueraded(ctx, n, p.Netns, o.AddrPort(), "tcp", "udp"); ch.Error == "" {
		ch.Detail += fmt.Sprintf(": server saw tcp %s, udp %s", n.Underlay, n.Underlay)
	}
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
