package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/overlay"
)

// Underlay is the interface and address VXLAN leaves and arrives on.
type Underlay struct {
	IfName string
	Addr   netip.Addr
	MTU    int
}

// ResolveUnderlay turns the configured underlay — an interface name, an
// IPv4 address, or "" for the interface of the default route — into the
// interface, its first IPv4 address and its MTU.
func ResolveUnderlay(spec string) (Underlay, error) {
	if spec == "" {
		return defaultRouteUnderlay()
	}
	if a, err := netip.ParseAddr(spec); err == nil {
		if !a.Is4() {
			return Underlay{}, fmt.Errorf("underlay %s: only IPv4 underlays are supported", spec)
		}
		return underlayByAddr(a)
	}
	link, err := netlink.LinkByName(spec)
	if err != nil {
		return Underlay{}, fmt.Errorf("underlay interface %q: %w", spec, err)
	}
	return underlayOfLink(link)
}

func underlayOfLink(link netlink.Link) (Underlay, error) {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return Underlay{}, fmt.Errorf("underlay %s: list addresses: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && !ip.IsLoopback() {
			return Underlay{IfName: link.Attrs().Name, Addr: ip, MTU: link.Attrs().MTU}, nil
		}
	}
	return Underlay{}, fmt.Errorf("underlay %s has no IPv4 address", link.Attrs().Name)
}

func underlayByAddr(a netip.Addr) (Underlay, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return Underlay{}, fmt.Errorf("underlay %s: list links: %w", a, err)
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, la := range addrs {
			if ip, ok := netip.AddrFromSlice(la.IP.To4()); ok && ip == a {
				return Underlay{IfName: l.Attrs().Name, Addr: a, MTU: l.Attrs().MTU}, nil
			}
		}
	}
	return Underlay{}, fmt.Errorf("underlay %s: no interface in this namespace has that address", a)
}

func defaultRouteUnderlay() (Underlay, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return Underlay{}, fmt.Errorf("underlay: list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil && !isDefault(r.Dst) {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		return underlayOfLink(link)
	}
	return Underlay{}, errors.New("underlay: no default route in this namespace; set --underlay to an interface or address")
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// underlayRx is one socket that receives VXLAN, with GRO when offloaded.
type underlayRx struct {
	conn *overlay.Conn
	gro  *overlay.GROReader // nil: read plainly
}

// openUnderlay opens the VXLAN socket, and with RxWorkers > 1 as many
// receiving sockets in one SO_REUSEPORT group, spread by inner flow
// (overlay.SpreadByInnerFlow: the outer 4-tuple is the same for all of a
// peer's traffic, so the kernel's own hash would pick one socket). The
// first socket also sends for every worker. On error, Stop closes what was
// opened.
func (n *Node) openUnderlay(ctx context.Context) error {
	workers := max(1, n.cfg.RxWorkers)
	addr := netip.AddrPortFrom(n.underlay.Addr, n.cfg.Port)
	cfg := overlay.ConnConfig{Addr: addr, ReusePort: workers > 1}
	var err error
	if n.conn, err = overlay.ListenConn(ctx, cfg); err != nil {
		return fmt.Errorf("underlay socket %s: %w", addr, err)
	}
	n.startOffloadSocket() // offload_rx.go: UDP GSO/GRO when Offload
	n.rx = []underlayRx{{conn: n.conn, gro: n.off.gro}}
	for len(n.rx) < workers {
		c, err := overlay.ListenConn(ctx, cfg)
		if err != nil {
			return fmt.Errorf("underlay socket %s (receive worker %d): %w", addr, len(n.rx)+1, err)
		}
		n.rx = append(n.rx, underlayRx{conn: c, gro: n.groReader(c)})
	}
	if workers > 1 {
		if err := overlay.SpreadByInnerFlow(n.conn, workers); err != nil {
			return fmt.Errorf("underlay socket %s: %w", addr, err)
		}
		n.log.Info("underlay receive workers", "sockets", workers, "spread", "inner flow hash (SO_REUSEPORT, BPF)")
	}
	return nil
}

// closeUnderlay closes every underlay socket.
func (n *Node) closeUnderlay() {
	for _, rx := range n.rx {
		rx.conn.Close()
	}
	if len(n.rx) == 0 && n.conn != nil {
		n.conn.Close()
	}
}

// startUnderlayWorkers starts one worker per receiving socket.
func (n *Node) startUnderlayWorkers() {
	for _, rx := range n.rx {
		n.wg.Add(1)
		if rx.gro != nil {
			go n.runUnderlayOffload(rx.gro) // offload_rx.go
		} else {
			go n.runUnderlay(rx.conn) // dataplane.go
		}
	}
}
