package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
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
