package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/registry"
)

var _ api.ForeignNodes = (*Node)(nil)

// AddForeignNode registers a node that runs no weftd (a kernel VXLAN node)
// in the registry: a lease of registry.ForeignTTL, marked Foreign, whose
// subnet the registry allocates from the pool as for any node. Every weftd
// then routes the subnet to the node's underlay address, with its VXLAN
// device's MAC as the inner destination.
func (n *Node) AddForeignNode(ctx context.Context, req api.ForeignNodeRequest) (api.ForeignNode, error) {
	if err := registry.ValidateNodeName(req.Name); err != nil {
		return api.ForeignNode{}, api.BadRequest("name", err.Error())
	}
	if req.Name == n.cfg.NodeName {
		return api.ForeignNode{}, fmt.Errorf("node %s is this weftd: %w", req.Name, api.ErrConflict)
	}
	leases, err := n.cfg.Registry.List(ctx)
	if err != nil {
		return api.ForeignNode{}, fmt.Errorf("%w: registry: %v", api.ErrNotReady, err)
	}
	for _, l := range leases {
		switch {
		case l.Node == req.Name && !l.Foreign:
			return api.ForeignNode{}, fmt.Errorf("node %s has a lease of its own weftd (underlay %s): %w", l.Node, l.Underlay, api.ErrConflict)
		case l.Node == req.Name && (l.Underlay != req.Underlay || l.RouterMAC != req.VTEPMAC):
			return api.ForeignNode{}, fmt.Errorf("foreign node %s is registered with underlay %s and MAC %s; remove it first: %w", l.Node, l.Underlay, l.RouterMAC, api.ErrConflict)
		case l.Node != req.Name && l.Underlay == req.Underlay:
			return api.ForeignNode{}, fmt.Errorf("underlay address %s is node %s's: %w", l.Underlay, l.Node, api.ErrConflict)
		}
	}
	lease, err := n.cfg.Registry.Acquire(ctx, registry.AcquireRequest{
		Node: req.Name, Underlay: req.Underlay, RouterMAC: req.VTEPMAC,
		VNI: n.cfg.VNI, Port: n.cfg.Port, TTL: registry.ForeignTTL, Foreign: true,
	})
	switch {
	case errors.Is(err, registry.ErrPoolExhausted):
		return api.ForeignNode{}, fmt.Errorf("foreign node %s: %v: %w", req.Name, err, api.ErrExhausted)
	case err != nil:
		return api.ForeignNode{}, fmt.Errorf("foreign node %s: %w", req.Name, err)
	}
	n.log.Info("foreign node registered", "node", lease.Node, "underlay", lease.Underlay, "subnet", lease.Subnet, "vtep_mac", lease.RouterMAC)
	out := api.ForeignNode{Name: lease.Node, Underlay: lease.Underlay, VTEPMAC: lease.RouterMAC, Subnet: lease.Subnet,
		VNI: n.cfg.VNI, Port: n.cfg.Port, MTU: n.mtu}
	for _, l := range leases {
		if l.Node != lease.Node {
			out.Nodes = append(out.Nodes, api.Subnet{Node: l.Node, Self: l.Node == n.cfg.NodeName, Underlay: l.Underlay,
				Subnet: l.Subnet, RouterMAC: l.RouterMAC, Expires: l.Expiry, Used: api.Unknown, Free: api.Unknown})
		}
	}
	return out, nil
}

// RemoveForeignNode ends a foreign node's lease and frees its subnet. The
// lease was acquired by whichever weftd served `weft node add`, and a
// backend releases only for the holder; so this weftd takes the lease over
// (Acquire replaces any holder's) and releases it.
func (n *Node) RemoveForeignNode(ctx context.Context, name string) error {
	leases, err := n.cfg.Registry.List(ctx)
	if err != nil {
		return fmt.Errorf("%w: registry: %v", api.ErrNotReady, err)
	}
	for _, l := range leases {
		if l.Node != name {
			continue
		}
		if !l.Foreign {
			return fmt.Errorf("node %s runs weftd (not added by weft node add); stop its weftd instead: %w", name, api.ErrConflict)
		}
		if _, err := n.cfg.Registry.Acquire(ctx, registry.AcquireRequest{Node: l.Node, Underlay: l.Underlay, RouterMAC: l.RouterMAC,
			VNI: l.VNI, Port: l.Port, TTL: registry.ForeignTTL, Foreign: true}); err != nil {
			return fmt.Errorf("remove foreign node %s: take over its lease: %w", name, err)
		}
		if err := n.cfg.Registry.Release(ctx, name); err != nil {
			return fmt.Errorf("remove foreign node %s: %w", name, err)
		}
		n.log.Info("foreign node removed", "node", name, "subnet", l.Subnet)
		return nil
	}
	return fmt.Errorf("no foreign node %q in the registry: %w", name, api.ErrNotFound)
}
