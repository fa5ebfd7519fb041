package netdev

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/packet"
)

// configureLink brings the link to cfg, touching only what differs, and
// records the resulting MAC and MTU on t.
func configureLink(h *netlink.Handle, t *Tap, cfg *TapConfig) error {
	l, err := h.LinkByName(cfg.Name)
	if err != nil {
		return fmt.Errorf("look up link: %w", err)
	}
	a := l.Attrs()
	if !cfg.MAC.IsZero() && !bytes.Equal(a.HardwareAddr, cfg.MAC[:]) {
		if err := h.LinkSetHardwareAddr(l, net.HardwareAddr(cfg.MAC[:])); err != nil {
			return fmt.Errorf("set mac %s: %w", cfg.MAC, err)
		}
	}
	if cfg.MTU != 0 && a.MTU != cfg.MTU {
		if err := h.LinkSetMTU(l, cfg.MTU); err != nil {
			return fmt.Errorf("set mtu %d: %w", cfg.MTU, err)
		}
	}
	if cfg.GSOMaxSegs != 0 && a.GSOMaxSegs != uint32(cfg.GSOMaxSegs) {
		if err := h.LinkSetGSOMaxSegs(l, cfg.GSOMaxSegs); err != nil {
			return fmt.Errorf("set gso_max_segs %d: %w", cfg.GSOMaxSegs, err)
		}
	}
	if cfg.Addr.IsValid() {
		if err := ensureAddr(h, l, cfg.Addr); err != nil {
			return err
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set link up: %w", err)
		}
	}
	routes := cfg.Routes
	if len(routes) == 0 && cfg.Gateway.IsValid() {
		routes = []netip.Prefix{defaultRoute(cfg.Gateway)}
	}
	for _, dst := range routes {
		if err := ensureRoute(h, l, dst, cfg.Gateway); err != nil {
			return err
		}
	}
	if l, err = h.LinkByName(cfg.Name); err != nil {
		return fmt.Errorf("look up link: %w", err)
	}
	if len(l.Attrs().HardwareAddr) == 6 {
		t.mac = packet.MAC(l.Attrs().HardwareAddr)
	}
	t.mtu = l.Attrs().MTU
	for _, q := range t.queues {
		q.mac, q.mtu = t.mac, t.mtu
	}
	return nil
}

func defaultRoute(gw netip.Addr) netip.Prefix {
	if gw.Is4() {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

func isTap(l netlink.Link) bool {
	tt, ok := l.(*netlink.Tuntap)
	return ok && tt.Mode == netlink.TUNTAP_MODE_TAP
}

func linkKind(l netlink.Link) string {
	if tt, ok := l.(*netlink.Tuntap); ok && tt.Mode == netlink.TUNTAP_MODE_TUN {
		return "tun"
	}
	if isTap(l) {
		return "tap"
	}
	return l.Type()
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func nsLabel(nsPath string) string {
	if nsPath == "" {
		return "current netns"
	}
	return nsPath
}
