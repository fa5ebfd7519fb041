package api

import (
	"fmt"
	"net/netip"
	"strings"
)

// PortMapping is a hostPort: traffic to the node at HostIP:HostPort (every
// node address when HostIP is not given) goes to the pod's ContainerPort.
// It is what CNI's portMappings capability carries.
type PortMapping struct {
	HostPort      int        `json:"host_port"`
	ContainerPort int        `json:"container_port"`
	Protocol      string     `json:"protocol"`         // "tcp" (default), "udp" or "sctp"
	HostIP        netip.Addr `json:"host_ip,omitzero"` // none or 0.0.0.0: every address of the node
}

func (m PortMapping) String() string {
	host := "*"
	if m.HostIP.IsValid() {
		host = m.HostIP.String()
	}
	return fmt.Sprintf("%s %s:%d -> %d", m.Protocol, host, m.HostPort, m.ContainerPort)
}

// normalizePortMappings lowercases protocols (default tcp), turns 0.0.0.0
// into "every address", and checks ranges; errors name the field.
func normalizePortMappings(ms []PortMapping) error {
	for i := range ms {
		m := &ms[i]
		field := fmt.Sprintf("port_mappings[%d]", i)
		m.Protocol = strings.ToLower(m.Protocol)
		if m.Protocol == "" {
			m.Protocol = "tcp"
		}
		switch {
		case m.Protocol != "tcp" && m.Protocol != "udp" && m.Protocol != "sctp":
			return BadRequest(field, fmt.Sprintf("protocol %q is not tcp, udp or sctp", m.Protocol))
		case m.HostPort < 1 || m.HostPort > 65535:
			return BadRequest(field, fmt.Sprintf("host_port %d is out of range 1..65535", m.HostPort))
		case m.ContainerPort < 1 || m.ContainerPort > 65535:
			return BadRequest(field, fmt.Sprintf("container_port %d is out of range 1..65535", m.ContainerPort))
		}
		if m.HostIP.IsValid() && m.HostIP.Is4() && m.HostIP.IsUnspecified() {
			m.HostIP = netip.Addr{}
		}
		if m.HostIP.IsValid() && !m.HostIP.Is4() {
			return BadRequest(field, fmt.Sprintf("host_ip %s: weft is IPv4-only", m.HostIP))
		}
	}
	return nil
}

// Egress is how a node's pods reach the outside and the outside reaches
// them (Status.Egress): weftd's nftables table and its counters.
type Egress struct {
	// Enabled: destinations outside the cluster are routed to the node's
	// own stack and weftd keeps its nftables table.
	Enabled bool `json:"enabled"`
	// Table is the nftables table weftd owns, "ip weft".
	Table string `json:"table,omitempty"`
	// Masquerade: pod traffic leaving the node gets the node's address.
	Masquerade bool `json:"masquerade"`
	// NonMasquerade are the destinations pods reach with their own
	// addresses.
	NonMasquerade []netip.Prefix `json:"non_masquerade,omitempty"`
	// Masqueraded counts connections masqueraded (the NAT rule sees the
	// first packet of each); OutPackets/InPackets count packets the node
	// forwarded from pods outwards and from outside to pods.
	Masqueraded uint64 `json:"masqueraded_connections"`
	OutPackets  uint64 `json:"out_packets"`
	OutBytes    uint64 `json:"out_bytes"`
	InPackets   uint64 `json:"in_packets"`
	InBytes     uint64 `json:"in_bytes"`
	// HostPorts and NodePorts are how many hostPort mappings and Service
	// node ports the table holds.
	HostPorts int `json:"host_ports"`
	NodePorts int `json:"node_ports"`
	// Error is the last failure to read or write the table, if any.
	Error string `json:"error,omitempty"`
}
