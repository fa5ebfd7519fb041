package api

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"

	"github.com/weftnet/weft/packet"
)

// ForeignNodes is implemented by a Service that can register nodes that
// run no weftd (`weft node add/remove`). The server serves its endpoints
// only when the Service has it.
type ForeignNodes interface {
	// AddForeignNode registers the node, or returns its registration
	// again if it is registered with the same underlay address and MAC.
	// A name held by a weftd node, or an underlay address another node
	// has, is ErrConflict.
	AddForeignNode(ctx context.Context, req ForeignNodeRequest) (ForeignNode, error)
	// RemoveForeignNode ends the registration and frees its subnet. An
	// unknown name is ErrNotFound; a weftd node's is ErrConflict.
	RemoveForeignNode(ctx context.Context, name string) error
}

// ForeignNodeRequest registers a node that runs no weftd: a Linux kernel
// VXLAN device, set up as flannel's vxlan backend sets one up.
type ForeignNodeRequest struct {
	Name     string     `json:"name"`
	Underlay netip.Addr `json:"underlay"` // its IPv4 underlay address: where weft nodes send its VXLAN
	VTEPMAC  packet.MAC `json:"vtep_mac"` // its vxlan device's MAC: the inner destination of frames to it
}

// Normalize checks the request.
func (r *ForeignNodeRequest) Normalize() error {
	switch {
	case r.Name == "":
		return BadRequest("name", "required")
	case len(r.Name) > 253:
		return BadRequest("name", "longer than 253 bytes")
	case !r.Underlay.Is4() || r.Underlay.IsUnspecified() || r.Underlay.IsMulticast() || r.Underlay.IsLoopback():
		return BadRequest("underlay", fmt.Sprintf("%v is not a unicast IPv4 address", r.Underlay))
	case r.VTEPMAC.IsZero() || r.VTEPMAC.IsMulticast():
		return BadRequest("vtep_mac", fmt.Sprintf("%s is not a unicast MAC", r.VTEPMAC))
	}
	return nil
}

// ForeignNode is a foreign node's registration and what it needs to know
// to join: the cluster's VXLAN settings and every other node.
type ForeignNode struct {
	Name     string       `json:"name"`
	Underlay netip.Addr   `json:"underlay"`
	VTEPMAC  packet.MAC   `json:"vtep_mac"`
	Subnet   netip.Prefix `json:"subnet"` // allocated from the cluster's pool, as for any node
	VNI      uint32       `json:"vni"`
	Port     uint16       `json:"port"`
	MTU      int          `json:"mtu"` // the pods' MTU (underlay MTU - 50)
	// Nodes are the other nodes it must route to, as they are now; a node
	// that joins later needs the same three entries (weft subnets lists
	// them).
	Nodes []Subnet `json:"nodes"`
}

// Commands returns the commands, one argv each, that make a Linux host a
// member of the cluster: the vxlan device dev (on underlay interface
// underlayDev) with <subnet>.0 on it, and for each other node a route to
// its subnet via its <subnet>.0 on-link, a permanent neighbour giving that
// address the node's router MAC, and an FDB entry sending that MAC to the
// node's underlay address (flannel's vxlan backend, the form
// cmd/weftd's TestKernelVXLANPeer runs).
func (f *ForeignNode) Commands(dev, underlayDev string) [][]string {
	net0 := f.Subnet.Masked().Addr()
	cmds := [][]string{
		{"ip", "link", "add", dev, "address", f.VTEPMAC.String(), "type", "vxlan", "id", fmt.Sprint(f.VNI),
			"dstport", fmt.Sprint(f.Port), "local", f.Underlay.String(), "dev", underlayDev, "nolearning"},
		{"ip", "addr", "add", netip.PrefixFrom(net0, 32).String(), "dev", dev},
		{"ip", "link", "set", dev, "mtu", fmt.Sprint(f.MTU), "up"},
	}
	for _, n := range f.Nodes {
		gw := n.Subnet.Masked().Addr()
		cmds = append(cmds,
			[]string{"ip", "route", "replace", n.Subnet.String(), "via", gw.String(), "dev", dev, "onlink"},
			[]string{"ip", "neigh", "replace", gw.String(), "lladdr", n.RouterMAC.String(), "dev", dev, "nud", "permanent"},
			[]string{"bridge", "fdb", "append", n.RouterMAC.String(), "dev", dev, "dst", n.Underlay.String()},
		)
	}
	return cmds
}

// AddForeignNode registers a node that runs no weftd (`weft node add`).
func (c *Client) AddForeignNode(ctx context.Context, req ForeignNodeRequest) (ForeignNode, error) {
	var v ForeignNode
	return v, c.do(ctx, http.MethodPost, "/v1/nodes", req, &v)
}

// RemoveForeignNode ends a foreign node's registration (`weft node remove`).
func (c *Client) RemoveForeignNode(ctx context.Context, name string) error {
	if name == "" {
		return BadRequest("name", "required")
	}
	return c.do(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(name), nil, nil)
}

// foreignRoutes serves the foreign-node endpoints when svc has them.
func (s *Server) foreignRoutes() {
	fn, ok := s.svc.(ForeignNodes)
	if !ok {
		return
	}
	s.mux.HandleFunc("POST /v1/nodes", handlePost(s, (*ForeignNodeRequest).Normalize, fn.AddForeignNode))
	s.mux.HandleFunc("DELETE /v1/nodes/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := fn.RemoveForeignNode(r.Context(), r.PathValue("name")); err != nil {
			s.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
