package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/api"
)

// runtimeConfig is what a runtime passes for the capabilities weft-cni
// declares ("capabilities": {"portMappings": true} in the network config).
type runtimeConfig struct {
	PortMappings []portMapping `json:"portMappings,omitempty"`
}

// portMapping is one entry of the portMappings capability, as the CNI
// conventions document it (and containerd and CRI-O send it).
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// apiPortMappings converts the runtime's port mappings for weftd. Ranges
// and protocols are weftd's to check (its error names the field); only
// a hostIP that is not an address at all is refused here.
func (c *NetConf) apiPortMappings() ([]api.PortMapping, *types.Error) {
	var out []api.PortMapping
	for i, m := range c.RuntimeConfig.PortMappings {
		pm := api.PortMapping{HostPort: m.HostPort, ContainerPort: m.ContainerPort, Protocol: m.Protocol}
		if m.HostIP != "" {
			a, err := netip.ParseAddr(m.HostIP)
			if err != nil {
				return nil, invalidConf(fmt.Sprintf("runtimeConfig.portMappings[%d].hostIP", i), fmt.Sprintf("%q is not an IP address", m.HostIP))
			}
			pm.HostIP = a
		}
		out = append(out, pm)
	}
	return out, nil
}

// comparePortMappings lists how weftd's port's mappings differ from the
// runtime's, both normalized as weftd does (protocol lowercase, tcp by
// default; 0.0.0.0 is every address).
func comparePortMappings(have []api.PortMapping, want []api.PortMapping) []string {
	norm := func(ms []api.PortMapping) []string {
		var out []string
		for _, m := range ms {
			m.Protocol = strings.ToLower(m.Protocol)
			if m.Protocol == "" {
				m.Protocol = "tcp"
			}
			if m.HostIP.IsValid() && m.HostIP.IsUnspecified() {
				m.HostIP = netip.Addr{}
			}
			out = append(out, m.String())
		}
		slices.Sort(out)
		return out
	}
	h, w := norm(have), norm(want)
	if slices.Equal(h, w) {
		return nil
	}
	return []string{fmt.Sprintf("weftd's port maps host ports [%s], the runtime asks for [%s]", strings.Join(h, ", "), strings.Join(w, ", "))}
}
