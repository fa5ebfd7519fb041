package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/datapath"
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

// openUnderlay opens the VXLAN receiving sockets: RxWorkers of them in
// one SO_REUSEPORT group, spread by inner flow (overlay.SpreadByInnerFlow:
// the outer 4-tuple is the same for all of a peer's traffic, so the
// kernel's own hash would pick one socket). Each transmitter later joins
// the group with a send-only socket of its own (openSender): the group's
// BPF program picks among the first RxWorkers sockets only, and those stay
// first (the kernel fills a closed socket's slot with the group's last),
// so a send-only socket never receives. On error, Stop closes what was
// opened.
func (n *Node) openUnderlay(ctx context.Context) error {
	workers := max(1, n.cfg.RxWorkers)
	addr := netip.AddrPortFrom(n.underlay.Addr, n.cfg.Port)
	cfg := overlay.ConnConfig{Addr: addr, ReusePort: true}
	for len(n.rx) < workers {
		c, err := overlay.ListenConn(ctx, cfg)
		if err != nil {
			return fmt.Errorf("underlay socket %s (receive worker %d): %w", addr, len(n.rx)+1, err)
		}
		n.rx = append(n.rx, c)
	}
	if err := overlay.SpreadByInnerFlow(n.rx[0], workers); err != nil {
		return fmt.Errorf("underlay socket %s: %w", addr, err)
	}
	if workers > 1 {
		n.log.Info("underlay receive workers", "sockets", workers, "spread", "inner flow hash (SO_REUSEPORT, BPF)")
	}
	if n.udpGSO() {
		if _, err := overlay.NewGSOWriter(n.rx[0], 0); err != nil {
			n.log.Warn("UDP GSO unavailable; sending one datagram per segment", "err", err)
		} else {
			n.gsoOK = true
		}
	}
	return nil
}

// openSender opens a transmitter's own send socket on the VXLAN port, in
// the receiving sockets' SO_REUSEPORT group (see openUnderlay).
func (n *Node) openSender() (*overlay.Conn, error) {
	addr := netip.AddrPortFrom(n.underlay.Addr, n.cfg.Port)
	c, err := overlay.ListenConn(n.ctx, overlay.ConnConfig{Addr: addr, ReusePort: true})
	if err != nil {
		return nil, fmt.Errorf("send socket %s: %w", addr, err)
	}
	return c, nil
}

// underlayWriter is how a worker sends on c: UDP GSO when on and the
// kernel has it, else one datagram per message.
func (n *Node) underlayWriter(c *overlay.Conn) datapath.Writer {
	if n.gsoOK {
		if g, err := overlay.NewGSOWriter(c, 0); err == nil {
			return g
		}
	}
	return &datapath.PlainWriter{C: c}
}

// transmitWriter is underlayWriter for a transmitter's own (send-only)
// socket: with Config.ZeroCopy its GSO sends use MSG_ZEROCOPY. Only there:
// completions arrive on the socket's error queue, which would wake a
// receiver's reads for nothing.
func (n *Node) transmitWriter(c *overlay.Conn) datapath.Writer {
	w := n.underlayWriter(c)
	if g, ok := w.(*overlay.GSOWriter); ok && n.cfg.ZeroCopy {
		if err := g.EnableZeroCopy(&n.zc); err != nil {
			n.log.Warn("MSG_ZEROCOPY unavailable; sends copy", "err", err)
		}
	}
	return w
}

// underlayReader is how a receiver reads c: with UDP GRO when on and the
// kernel has it (then the socket is GRO's alone), else plainly.
func (n *Node) underlayReader(c *overlay.Conn) (r datapath.Reader, gro bool) {
	if n.gro() {
		g, err := overlay.NewGROReader(c, datapath.GROReadBatch)
		if err == nil {
			if g.Spin = n.dp.SpinDeadline(); g.Spin != nil {
				g.SpinIdle = n.dp.SpinIdle
			}
			n.gros = append(n.gros, g)
			return g, true
		}
		n.log.Warn("UDP GRO unavailable; receiving one datagram per read slot", "err", err)
	}
	return datapath.PlainReader{C: c}, false
}

// closeUnderlay closes every receiving socket.
func (n *Node) closeUnderlay() {
	for _, c := range n.rx {
		c.Close()
	}
}

// startUnderlayWorkers starts one receiver per receiving socket; it sends
// (transit, the router's answers to the overlay) on that socket.
func (n *Node) startUnderlayWorkers() {
	for _, c := range n.rx {
		r, gro := n.underlayReader(c)
		batch, size := c.BatchSize(), datapath.FrameBufSize
		if gro {
			batch, size = datapath.GROReadBatch, datapath.GROBufSize
			n.groOK = true
		}
		rx := n.dp.NewReceiver(r, n.underlayWriter(c), batch, size, &n.udpHist)
		n.wg.Add(1)
		go n.runReceiver(rx)
	}
	if n.rxSpin() > 0 {
		n.dp.SetSpinReaders(n.gros)
	}
	n.log.Info("underlay offloads", "udp_gso", n.gsoOK, "udp_gro", n.groOK)
}
