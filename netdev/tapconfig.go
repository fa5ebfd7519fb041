package netdev

import (
	"fmt"
	"log/slog"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/packet"
)

// TapConfig describes a TAP device and the link configuration weft gives it.
type TapConfig struct {
	// Name is the interface name inside the namespace; "" means "eth0".
	Name string
	// NetnsPath is the namespace the TAP lives in, e.g. /var/run/netns/X or
	// /proc/PID/ns/net; "" means the caller's namespace.
	NetnsPath string
	// MAC of the link; zero keeps the kernel's random one.
	MAC packet.MAC
	// MTU of the link; 0 keeps the kernel default (1500).
	MTU int
	// Addr is the interface address with its prefix (10.244.1.5/24); zero: none.
	Addr netip.Prefix
	// Gateway gets the default route unless Routes is set; zero: no route.
	Gateway netip.Addr
	// Routes go via Gateway instead of a default route (the host port uses
	// the cluster CIDR via .1); with no Gateway they are on-link routes.
	Routes []netip.Prefix
	// Persist keeps the device when its last file descriptor closes.
	Persist bool
	// VnetHdr opens the TAP with IFF_VNET_HDR and negotiates offloads (see
	// MaxOffload); without it the TAP is opened through songgao/water.
	VnetHdr bool
	// MaxOffload caps the offload ladder in VnetHdr mode.
	MaxOffload OffloadLevel
	// EnableIPv6 keeps IPv6 on the link. By default it is disabled
	// (net.ipv6.conf.<name>.disable_ipv6=1), which silences router
	// solicitations and DAD probes on a pod's eth0.
	EnableIPv6 bool
	// BatchSize is the most frames one Read returns; 0 means DefaultBatchSize.
	BatchSize int
	// GSOMaxSegs caps how many segments the kernel puts in one TSO/USO
	// super-frame on this link (gso_max_segs); 0 keeps the kernel's default.
	GSOMaxSegs int
	// Queues > 1 makes a multi-queue TAP (IFF_MULTI_QUEUE) with that many
	// queues, each a Tap of its own (Tap.Queues): the pod's stack spreads
	// its flows over them, so as many workers can read them. VnetHdr only;
	// 0 or 1 is one queue. A persistent TAP keeps the queue mode it was
	// created with: re-attaching in the other mode takes the device's mode
	// (a single-queue TAP then gets one queue), and logs it.
	Queues int
	// Logger receives the offload negotiation result; nil means slog.Default().
	Logger *slog.Logger
}

func (c *TapConfig) normalize() error {
	if c.Name == "" {
		c.Name = "eth0"
	}
	if err := checkIfName(c.Name); err != nil {
		return err
	}
	if c.MTU < 0 || c.MTU > 65535 {
		return fmt.Errorf("tap %s: mtu %d out of range", c.Name, c.MTU)
	}
	if c.MaxOffload > OffloadNone {
		return fmt.Errorf("tap %s: unknown offload level %d", c.Name, c.MaxOffload)
	}
	if c.Queues < 0 || c.Queues > MaxQueues {
		return fmt.Errorf("tap %s: %d queues out of range 0..%d", c.Name, c.Queues, MaxQueues)
	}
	if c.Queues > 1 && !c.VnetHdr {
		return fmt.Errorf("tap %s: %d queues need VnetHdr", c.Name, c.Queues)
	}
	if c.GSOMaxSegs < 0 || c.GSOMaxSegs > 65535 {
		return fmt.Errorf("tap %s: gso_max_segs %d out of range", c.Name, c.GSOMaxSegs)
	}
	if c.Gateway.IsValid() && !c.Addr.IsValid() {
		return fmt.Errorf("tap %s: gateway %s without an address", c.Name, c.Gateway)
	}
	if c.Gateway.IsValid() && c.Gateway.Is4() != c.Addr.Addr().Is4() {
		return fmt.Errorf("tap %s: gateway %s and address %s differ in family", c.Name, c.Gateway, c.Addr)
	}
	if c.MAC.IsMulticast() {
		return fmt.Errorf("tap %s: MAC %s is multicast", c.Name, c.MAC)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func checkIfName(name string) error {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ || name == "." || name == ".." {
		return fmt.Errorf("interface name %q: must be 1-15 bytes", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '/' || c == ':' || c <= ' ' || c >= 0x7f {
			return fmt.Errorf("interface name %q: bad character %q", name, c)
		}
	}
	return nil
}
