package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Ruleset is everything weftd's table says; Table.Apply writes it.
type Ruleset struct {
	// HostIface is the node's host port (weft0): traffic to pods leaves
	// through it, pod traffic arrives on it.
	HostIface string
	// Cluster is the cluster CIDR: pod sources.
	Cluster netip.Prefix
	// Masquerade turns on egress masquerading: pod traffic leaving through
	// any other interface than HostIface to an address outside
	// NonMasquerade gets the outgoing interface's address (random, fully
	// random source ports). Off, pods keep their addresses (an underlay
	// that routes the cluster CIDR).
	Masquerade bool
	// NonMasquerade are the destinations pods reach with their own
	// addresses, as ip-masq-agent's nonMasqueradeCIDRs: at least the
	// cluster CIDR, and link-local (169.254.0.0/16) unless asked.
	NonMasquerade []netip.Prefix
	// HostPorts are the pods' hostPort mappings.
	HostPorts []HostPort
	// NodePorts are the Services' node ports.
	NodePorts []NodePort
}

// NodePort is one Service port exposed on every address of the node.
// With Local unset (externalTrafficPolicy Cluster) traffic is translated
// to ClusterIP:ServicePort, which the node routes into weft's service
// stage through weft0, and its source is masqueraded to weft0's address so
// that the answer comes back through this node. With Local set it goes
// straight to one of Backends, this node's ready endpoints, picked at
// random, with the client's address kept; with no local backend there is
// no rule, and the node's own stack refuses the connection (TCP reset,
// ICMP port unreachable), as externalTrafficPolicy Local wants.
type NodePort struct {
	Proto       string           `json:"protocol"`
	Port        uint16           `json:"node_port"`
	ClusterIP   netip.Addr       `json:"cluster_ip"`
	ServicePort uint16           `json:"port"`
	Local       bool             `json:"local,omitempty"`
	Backends    []netip.AddrPort `json:"backends,omitempty"`
	// Owner names the Service (namespace/name:port); it rides in the
	// rule's comment.
	Owner string `json:"owner,omitempty"`
}

func (p NodePort) String() string {
	if p.Local {
		return fmt.Sprintf("%s *:%d -> local %v", p.Proto, p.Port, p.Backends)
	}
	return fmt.Sprintf("%s *:%d -> %s:%d", p.Proto, p.Port, p.ClusterIP, p.ServicePort)
}

// Check returns an error naming what is wrong with p.
func (p NodePort) Check() error {
	if p.Proto != TCP && p.Proto != UDP {
		return fmt.Errorf("protocol %q: want tcp or udp", p.Proto)
	}
	if p.Port == 0 {
		return errors.New("nodePort 0: want 1..65535")
	}
	if p.Local {
		for _, b := range p.Backends {
			if !b.Addr().Is4() || b.Port() == 0 {
				return fmt.Errorf("backend %s: not an IPv4 address and port", b)
			}
		}
		return nil
	}
	if !p.ClusterIP.Is4() || p.ServicePort == 0 {
		return fmt.Errorf("cluster IP %s port %d: not an IPv4 address and port", p.ClusterIP, p.ServicePort)
	}
	return nil
}

// checkNodePorts checks each node port and that no two claim one port and
// protocol.
func checkNodePorts(nps []NodePort) error {
	seen := map[string]NodePort{}
	for _, p := range nps {
		if err := p.Check(); err != nil {
			return fmt.Errorf("node port %s: %w", p, err)
		}
		k := fmt.Sprintf("%s/%d", p.Proto, p.Port)
		if o, ok := seen[k]; ok {
			return fmt.Errorf("node port %s %d: claimed by %s and %s", p.Proto, p.Port, o.Owner, p.Owner)
		}
		seen[k] = p
	}
	return nil
}

// Protocols a port mapping may name.
const (
	TCP  = "tcp"
	UDP  = "udp"
	SCTP = "sctp"
)

var protoNumbers = map[string]byte{TCP: 6, UDP: 17, SCTP: 132}

// HostPort is one hostPort mapping: traffic to the node at HostIP:Port
// (any local address but loopback ones when HostIP is not valid) goes to
// Pod:PodPort. A loopback HostIP (127.0.0.0/8) is reached by the node's
// own processes only: the connection leaves through HostIface masqueraded
// to its address, which needs route_localnet on HostIface (the caller
// turns it on; the table's input rule drops what else that would let in).
type HostPort struct {
	Proto   string     `json:"protocol"`
	HostIP  netip.Addr `json:"host_ip,omitzero"` // invalid: every address of the node
	Port    uint16     `json:"host_port"`
	Pod     netip.Addr `json:"pod_ip"`
	PodPort uint16     `json:"container_port"`
	// Owner names who asked for the mapping (a pod ID); it rides in the
	// rule's comment.
	Owner string `json:"owner,omitempty"`
}

func (h HostPort) String() string {
	host := "*"
	if h.HostIP.IsValid() {
		host = h.HostIP.String()
	}
	return fmt.Sprintf("%s %s:%d -> %s:%d", h.Proto, host, h.Port, h.Pod, h.PodPort)
}

// Check returns an error naming what is wrong with h.
func (h HostPort) Check() error {
	if _, ok := protoNumbers[h.Proto]; !ok {
		return fmt.Errorf("protocol %q: want tcp, udp or sctp", h.Proto)
	}
	if h.Port == 0 {
		return errors.New("hostPort 0: want 1..65535")
	}
	if h.PodPort == 0 {
		return errors.New("containerPort 0: want 1..65535")
	}
	if !h.Pod.Is4() {
		return fmt.Errorf("pod address %s: not IPv4", h.Pod)
	}
	if h.HostIP.IsValid() {
		switch {
		case !h.HostIP.Is4():
			return fmt.Errorf("hostIP %s: weft is IPv4-only", h.HostIP)
		case h.HostIP.IsUnspecified():
			return errors.New("hostIP 0.0.0.0: give none for every address of the node")
		case h.HostIP.IsMulticast():
			return fmt.Errorf("hostIP %s: not a unicast address", h.HostIP)
		}
	}
	return nil
}

// Conflicts reports whether a and b claim the same traffic: one protocol,
// one port, and host addresses that overlap (equal, or either one every
// address of the node).
func Conflicts(a, b HostPort) bool {
	if a.Proto != b.Proto || a.Port != b.Port {
		return false
	}
	return !a.HostIP.IsValid() || !b.HostIP.IsValid() || a.HostIP == b.HostIP
}

// CheckHostPorts checks each of add and that none conflicts with another
// or with one of have. The error names the mapping and who holds it.
func CheckHostPorts(have, add []HostPort) error {
	for i, h := range add {
		if err := h.Check(); err != nil {
			return fmt.Errorf("port mapping %s: %w", h, err)
		}
		for _, o := range add[:i] {
			if Conflicts(h, o) {
				return fmt.Errorf("port mapping %s: given twice (also %s)", h, o)
			}
		}
		for _, o := range have {
			if Conflicts(h, o) {
				who := o.Owner
				if who == "" {
					who = "another mapping"
				}
				return fmt.Errorf("%w: %s %d on %s is taken by %s (%s)", ErrPortTaken, h.Proto, h.Port, hostIPName(h.HostIP), who, o)
			}
		}
	}
	return nil
}

// ErrPortTaken is a hostPort already mapped on that host address and
// protocol.
var ErrPortTaken = errors.New("host port taken")

func hostIPName(a netip.Addr) string {
	if !a.IsValid() {
		return "every node address"
	}
	return a.String()
}

// LinkLocal is 169.254.0.0/16, never masqueraded unless asked.
var LinkLocal = netip.MustParsePrefix("169.254.0.0/16")

// check validates a whole ruleset before anything is sent to the kernel.
func (rs *Ruleset) check() error {
	if rs.HostIface == "" || len(rs.HostIface) > 15 || strings.ContainsAny(rs.HostIface, "/ \x00") {
		return fmt.Errorf("host interface %q: not an interface name", rs.HostIface)
	}
	if !rs.Cluster.IsValid() || !rs.Cluster.Addr().Is4() {
		return fmt.Errorf("cluster CIDR %s: not an IPv4 prefix", rs.Cluster)
	}
	for _, p := range rs.NonMasquerade {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("non-masquerade CIDR %s: not an IPv4 prefix", p)
		}
	}
	if err := CheckHostPorts(nil, rs.HostPorts); err != nil {
		return err
	}
	return checkNodePorts(rs.NodePorts)
}

// sortedHostPorts orders mappings so that a rewrite with the same
// mappings writes the same rules, and specific host addresses come before
// the every-address rule of another protocol.
func sortedHostPorts(hs []HostPort) []HostPort {
	out := slices.Clone(hs)
	slices.SortFunc(out, func(a, b HostPort) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		if a.Proto != b.Proto {
			return strings.Compare(a.Proto, b.Proto)
		}
		return b.HostIP.Compare(a.HostIP) // valid (specific) before invalid
	})
	return out
}

func prefix32(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }

// sortedNodePorts orders node ports by port and protocol.
func sortedNodePorts(ps []NodePort) []NodePort {
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b NodePort) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return strings.Compare(a.Proto, b.Proto)
	})
	return out
}
