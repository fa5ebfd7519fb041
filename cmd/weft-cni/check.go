package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/netdev"
)

// expected is what CHECK looks for: the prevResult's interface named
// CNI_IFNAME, its addresses, and the routes through its gateways (routes
// another plugin of the chain added are that plugin's to check).
type expected struct {
	ifname string
	mac    net.HardwareAddr // nil: prevResult gives none
	mtu    int              // 0: prevResult gives none
	addrs  []netip.Prefix
	routes []route
}

type route struct {
	dst netip.Prefix
	gw  netip.Addr
}

func (r route) String() string {
	dst := r.dst.String()
	if r.dst.Bits() == 0 {
		dst = "default"
	}
	return dst + " via " + r.gw.String()
}

func expectedFrom(r *current.Result, ifname string) (expected, error) {
	want := expected{ifname: ifname}
	idx := slices.IndexFunc(r.Interfaces, func(i *current.Interface) bool { return i.Name == ifname && i.Sandbox != "" })
	if idx < 0 {
		return want, fmt.Errorf("no interface %s in a sandbox", ifname)
	}
	ifc := r.Interfaces[idx]
	if ifc.Mac != "" {
		mac, err := net.ParseMAC(ifc.Mac)
		if err != nil {
			return want, fmt.Errorf("interface %s: mac %q: %w", ifname, ifc.Mac, err)
		}
		want.mac = mac
	}
	want.mtu = ifc.Mtu
	gateways := map[netip.Addr]bool{}
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface != idx {
			continue
		}
		p, ok := ipNetPrefix(ip.Address)
		if !ok {
			return want, fmt.Errorf("interface %s: bad address %v", ifname, ip.Address)
		}
		want.addrs = append(want.addrs, p)
		if gw, ok := netipAddr(ip.Gateway); ok {
			gateways[gw] = true
		}
	}
	if len(want.addrs) == 0 {
		return want, fmt.Errorf("no address for interface %s", ifname)
	}
	for _, rt := range r.Routes {
		gw, ok := netipAddr(rt.GW)
		if !ok || !gateways[gw] {
			continue
		}
		dst, ok := ipNetPrefix(rt.Dst)
		if !ok {
			return want, fmt.Errorf("route %v: bad destination", rt)
		}
		want.routes = append(want.routes, route{dst: dst.Masked(), gw: gw})
	}
	return want, nil
}

// comparePort checks weftd's port for the attachment against want; found
// is false when weftd has no such port.
func comparePort(ports []api.Port, podID, ifname string, want expected) (diffs []string, found bool) {
	i := slices.IndexFunc(ports, func(p api.Port) bool { return p.PodID == podID && p.IfName == ifname })
	if i < 0 {
		return []string{fmt.Sprintf("weftd has no port for container %s interface %s (it was detached, or weftd lost its state)", podID, ifname)}, false
	}
	p := ports[i]
	if !slices.Contains(want.addrs, p.Address) {
		diffs = append(diffs, fmt.Sprintf("weftd's port has address %s, prevResult %s", p.Address, joinPrefixes(want.addrs)))
	}
	if want.mac != nil && p.MAC.String() != want.mac.String() {
		diffs = append(diffs, fmt.Sprintf("weftd's port has MAC %s, prevResult %s", p.MAC, want.mac))
	}
	return diffs, true
}

// verifyNetns compares the interface in the namespace at nsPath with want.
// Each difference is one line; err is for a failure to look at all.
func verifyNetns(nsPath, ifname string, want expected) ([]string, error) {
	if nsPath == "" {
		return []string{"CNI_NETNS is empty"}, nil
	}
	h, err := netdev.OpenHandle(nsPath)
	if errors.Is(err, os.ErrNotExist) {
		return []string{fmt.Sprintf("namespace %s does not exist", nsPath)}, nil
	}
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return []string{fmt.Sprintf("interface %s is missing", ifname)}, nil
		}
		return nil, fmt.Errorf("link %s: %w", ifname, err)
	}
	a := l.Attrs()
	var diffs []string
	if want.mac != nil && a.HardwareAddr.String() != want.mac.String() {
		diffs = append(diffs, fmt.Sprintf("MAC of %s is %s, prevResult %s", ifname, a.HardwareAddr, want.mac))
	}
	if want.mtu != 0 && a.MTU != want.mtu {
		diffs = append(diffs, fmt.Sprintf("MTU of %s is %d, prevResult %d", ifname, a.MTU, want.mtu))
	}
	if a.Flags&net.FlagUp == 0 {
		diffs = append(diffs, fmt.Sprintf("interface %s is down", ifname))
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", ifname, err)
	}
	var have []netip.Prefix
	for _, ad := range addrs {
		if p, ok := ipNetPrefix(*ad.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
			have = append(have, p)
		}
	}
	for _, w := range want.addrs {
		if !slices.Contains(have, w) {
			diffs = append(diffs, fmt.Sprintf("address %s is missing from %s (it has: %s)", w, ifname, joinPrefixes(have)))
		}
	}
	routes, err := h.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("routes of %s: %w", ifname, err)
	}
	for _, w := range want.routes {
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return routeMatches(r, w) }) {
			diffs = append(diffs, fmt.Sprintf("route %s is missing from %s", w, ifname))
		}
	}
	return diffs, nil
}

func routeMatches(r netlink.Route, w route) bool {
	gw, ok := netipAddr(r.Gw)
	if !ok || gw != w.gw {
		return false
	}
	if r.Dst == nil {
		return w.dst.Bits() == 0
	}
	dst, ok := ipNetPrefix(*r.Dst)
	return ok && dst.Masked() == w.dst
}

func netipAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

func ipNetPrefix(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netipAddr(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 128 && a.Is4() && ones >= 96 {
		ones, bits = ones-96, 32 // a 16-byte mask on an IPv4 address
	}
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

func joinPrefixes(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
