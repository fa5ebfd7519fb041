package netdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
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

// OffloadLevel caps what a VnetHdr TAP asks of TUNSETOFFLOAD. Each level
// steps down the ladder if the kernel refuses it.
type OffloadLevel uint8

const (
	// OffloadAll: CSUM|TSO4|TSO6|USO4|USO6, then CSUM|TSO4|TSO6, CSUM, none.
	OffloadAll OffloadLevel = iota
	// OffloadTSO: start at CSUM|TSO4|TSO6 (no USO).
	OffloadTSO
	// OffloadCSUM: checksum offload only; the kernel segments before the
	// TAP, so Read never meets a GSO superframe.
	OffloadCSUM
	// OffloadNone: the virtio header without offloads.
	OffloadNone
)

// The ladder, most capable first. TSO_ECN is left out as wireguard-go does:
// it would oblige segmentation to clear CWR on every segment but the first.
var offloadLadder = [...]int{
	unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_USO4 | unix.TUN_F_USO6,
	unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6,
	unix.TUN_F_CSUM,
	0,
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

// CreateTap creates the TAP cfg.Name in cfg.NetnsPath (persistent if
// cfg.Persist, as weftd's ports are), opens it and configures MAC, MTU,
// address, IPv6 off, link up and routes. It fails with
// an error wrapping os.ErrExist if the name is already taken (by a TAP or
// anything else) and wrapping os.ErrNotExist if the namespace is missing.
// On any failure it removes the device it created.
func CreateTap(cfg TapConfig) (*Tap, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	h, err := OpenHandle(cfg.NetnsPath)
	if err != nil {
		return nil, fmt.Errorf("create tap %s: %w", cfg.Name, err)
	}
	defer h.Close()
	if l, err := h.LinkByName(cfg.Name); err == nil {
		return nil, fmt.Errorf("create tap %s in %s: name taken by a %s device: %w", cfg.Name, nsLabel(cfg.NetnsPath), linkKind(l), os.ErrExist)
	} else if !isLinkNotFound(err) {
		return nil, fmt.Errorf("create tap %s: look up link: %w", cfg.Name, err)
	}
	t, err := openTapIn(cfg, true)
	if err != nil {
		// A failure after TUNSETIFF (persist, ipv6 sysctl) may leave a
		// persistent device behind.
		removeCreated(h, cfg.Name)
		return nil, fmt.Errorf("create tap %s: %w", cfg.Name, err)
	}
	if err := configureLink(h, t, &cfg); err != nil {
		t.Close()
		removeCreated(h, cfg.Name)
		return nil, fmt.Errorf("create tap %s: %w", cfg.Name, err)
	}
	return t, nil
}

// removeCreated deletes the TAP name that a failed CreateTap made (it
// checked beforehand that the name was free). Closing the fd removes a
// non-persistent TAP; a persistent one needs the explicit delete.
func removeCreated(h *netlink.Handle, name string) {
	if l, err := h.LinkByName(name); err == nil && isTap(l) {
		_ = h.LinkDel(l)
	}
}

// OpenTap re-attaches to the existing TAP cfg.Name in cfg.NetnsPath (a
// persistent one left by a previous daemon) and brings its configuration to
// cfg, changing only what differs: addresses and routes already right are
// left untouched, so open connections in the pod survive. A missing device
// gives an error wrapping os.ErrNotExist, a TAP another fd holds one
// wrapping EBUSY. cfg.Persist and cfg.VnetHdr apply again (Persist false
// makes the device vanish on Close). OpenTap does not remove addresses or
// routes that cfg does not name.
func OpenTap(cfg TapConfig) (t *Tap, err error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	h, err := OpenHandle(cfg.NetnsPath)
	if err != nil {
		return nil, fmt.Errorf("open tap %s: %w", cfg.Name, err)
	}
	defer h.Close()
	l, err := h.LinkByName(cfg.Name)
	if isLinkNotFound(err) {
		return nil, fmt.Errorf("open tap %s in %s: %w", cfg.Name, nsLabel(cfg.NetnsPath), os.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open tap %s: look up link: %w", cfg.Name, err)
	}
	if !isTap(l) {
		return nil, fmt.Errorf("open tap %s: it is a %s device, not a tap", cfg.Name, linkKind(l))
	}
	// water leaks its fd when TUNSETIFF fails, so refuse the one failure we
	// can foresee: a single-queue TAP that another fd already holds.
	if tt := l.(*netlink.Tuntap); tt.Queues > 0 && tt.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 {
		return nil, fmt.Errorf("open tap %s: already attached to another file descriptor: %w", cfg.Name, unix.EBUSY)
	}
	t, err = openTapIn(cfg, false)
	if err != nil {
		return nil, fmt.Errorf("open tap %s: %w", cfg.Name, err)
	}
	if err = configureLink(h, t, &cfg); err != nil {
		t.Close()
		return nil, fmt.Errorf("open tap %s: %w", cfg.Name, err)
	}
	return t, nil
}

// DeleteTap removes the TAP name from the namespace at netnsPath. A missing
// device or namespace is not an error, so detaching twice is harmless; a
// device of another kind under that name is left alone and reported.
func DeleteTap(name, netnsPath string) error {
	if err := checkIfName(name); err != nil {
		return fmt.Errorf("delete tap: %w", err)
	}
	h, err := OpenHandle(netnsPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete tap %s: look up link: %w", name, err)
	}
	if !isTap(l) {
		return fmt.Errorf("delete tap %s: refusing to delete a %s device", name, linkKind(l))
	}
	if err := h.LinkDel(l); err != nil && !isLinkNotFound(err) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	return nil
}

// openTapIn opens /dev/net/tun on a thread inside cfg.NetnsPath (the TAP
// lands in the namespace of the opening thread) and, unless IPv6 is wanted,
// turns it off through that namespace's /proc/sys before the link comes up.
func openTapIn(cfg TapConfig, create bool) (*Tap, error) {
	var t *Tap
	err := Do(cfg.NetnsPath, func() error {
		var err error
		if cfg.VnetHdr {
			t, err = openVnetTap(cfg, create)
		} else {
			t, err = openWaterTap(cfg)
		}
		if err != nil {
			return err
		}
		if !cfg.EnableIPv6 {
			// /proc/sys/net resolves to the opening thread's namespace.
			err = os.WriteFile("/proc/sys/net/ipv6/conf/"+cfg.Name+"/disable_ipv6", []byte("1\n"), 0)
			if errors.Is(err, os.ErrNotExist) {
				err = nil // kernel without IPv6
			}
			if err != nil {
				t.Close()
				t = nil
				return fmt.Errorf("disable ipv6: %w", err)
			}
		}
		return nil
	})
	return t, err
}

// openWaterTap is the plain TAP: water opens /dev/net/tun O_NONBLOCK (so the
// netpoller serves it), sets IFF_TAP|IFF_NO_PI and TUNSETPERSIST.
func openWaterTap(cfg TapConfig) (*Tap, error) {
	ifce, err := water.New(water.Config{
		DeviceType: water.TAP,
		PlatformSpecificParams: water.PlatformSpecificParams{
			Name:    cfg.Name,
			Persist: cfg.Persist,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("water: %w", err)
	}
	f, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, fmt.Errorf("water returned %T, want *os.File", ifce.ReadWriteCloser)
	}
	t, err := newTap(f, ifce.Name(), cfg.NetnsPath, false, 0, cfg.BatchSize)
	if err != nil {
		f.Close()
		return nil, err
	}
	// water opens without O_CLOEXEC (syscall.Open adds none): a child the
	// daemon starts would inherit the fd and keep the TAP attached.
	if err := t.rc.Control(func(fd uintptr) { unix.CloseOnExec(int(fd)) }); err != nil {
		f.Close()
		return nil, fmt.Errorf("set close-on-exec: %w", err)
	}
	// A persistent TAP keeps the offloads an earlier VnetHdr open gave it:
	// the pod would go on sending TSO frames and CHECKSUM_PARTIAL frames
	// (the TCP checksum field holding only the pseudo-header sum) that a
	// reader without the virtio header cannot tell apart, so TCP through
	// it breaks. Turn them off; on a fresh TAP this changes nothing.
	var oerr error
	if err := t.rc.Control(func(fd uintptr) { oerr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, 0) }); err != nil || oerr != nil {
		f.Close()
		return nil, fmt.Errorf("TUNSETOFFLOAD 0: %w", errors.Join(err, oerr))
	}
	return t, nil
}

// offloadLogged makes the first negotiation result of the process an Info
// record and later ones Debug: "logged once" without hiding it from tests.
var offloadLogged atomic.Bool

// MaxQueues bounds TapConfig.Queues.
const MaxQueues = 16

// tunAttach opens /dev/net/tun and attaches it to (or creates) the TAP
// name with flags, as one queue.
func tunAttach(name string, flags uint16) (int, error) {
	// O_NONBLOCK before os.NewFile, so the runtime hands the fd to the netpoller.
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF: %w", err)
	}
	return fd, nil
}

// openVnetTap opens the TAP itself with golang.org/x/sys/unix because water
// has no IFF_VNET_HDR, TUNSETOFFLOAD, IFF_TUN_EXCL or IFF_MULTI_QUEUE.
func openVnetTap(cfg TapConfig, create bool) (*Tap, error) {
	queues := max(1, cfg.Queues)
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if queues > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	}
	excl := uint16(0)
	if create {
		excl = unix.IFF_TUN_EXCL // fail instead of attaching to a device created meanwhile
	}
	fd, err := tunAttach(cfg.Name, flags|excl)
	if err != nil && !create && errors.Is(err, unix.EINVAL) {
		// The persistent device was made in the other queue mode, which
		// it keeps: attach in its mode.
		flags ^= unix.IFF_MULTI_QUEUE
		if fd, err = tunAttach(cfg.Name, flags); err == nil {
			if flags&unix.IFF_MULTI_QUEUE == 0 {
				queues = 1
			}
			cfg.Logger.Warn("tap keeps the queue mode it was created with; re-create it to change", "tap", cfg.Name,
				"multi_queue", flags&unix.IFF_MULTI_QUEUE != 0, "queues", queues, "asked", cfg.Queues)
		}
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) && create {
			err = fmt.Errorf("%w: %w", err, os.ErrExist)
		}
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	persist := 0
	if cfg.Persist {
		persist = 1
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, persist); err != nil {
		return nil, fmt.Errorf("TUNSETPERSIST: %w", err)
	}
	offloads, lastErr := -1, error(nil)
	for _, mask := range offloadLadder[cfg.MaxOffload:] {
		if lastErr = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, mask); lastErr == nil {
			offloads = mask
			break
		}
	}
	if offloads < 0 {
		return nil, fmt.Errorf("TUNSETOFFLOAD: %w", lastErr)
	}
	level := slog.LevelDebug
	if offloadLogged.CompareAndSwap(false, true) {
		level = slog.LevelInfo
	}
	cfg.Logger.Log(context.Background(), level, "tap offloads negotiated",
		"tap", cfg.Name, "offloads", OffloadString(offloads), "asked", OffloadString(offloadLadder[cfg.MaxOffload]))
	t, err := newTap(os.NewFile(uintptr(fd), "/dev/net/tun"), cfg.Name, cfg.NetnsPath, true, offloads, cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	ok = true
	for len(t.queues)+1 < queues {
		// Offloads and persistence are the device's; the queues share them.
		qfd, err := tunAttach(cfg.Name, flags)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("queue %d: %w", len(t.queues)+1, err)
		}
		f := os.NewFile(uintptr(qfd), "/dev/net/tun")
		q, err := newTap(f, cfg.Name, cfg.NetnsPath, true, offloads, cfg.BatchSize)
		if err != nil {
			f.Close()
			t.Close()
			return nil, fmt.Errorf("queue %d: %w", len(t.queues)+1, err)
		}
		t.queues = append(t.queues, q)
	}
	return t, nil
}

// OffloadString names the TUN_F_* bits in mask, e.g. "csum|tso4|tso6".
func OffloadString(mask int) string {
	if mask == 0 {
		return "none"
	}
	names := []struct {
		bit  int
		name string
	}{
		{unix.TUN_F_CSUM, "csum"}, {unix.TUN_F_TSO4, "tso4"}, {unix.TUN_F_TSO6, "tso6"},
		{unix.TUN_F_TSO_ECN, "tso_ecn"}, {unix.TUN_F_UFO, "ufo"}, {unix.TUN_F_USO4, "uso4"},
		{unix.TUN_F_USO6, "uso6"},
	}
	var b []byte
	for _, n := range names {
		if mask&n.bit != 0 {
			if len(b) > 0 {
				b = append(b, '|')
			}
			b = append(b, n.name...)
			mask &^= n.bit
		}
	}
	if mask != 0 {
		b = fmt.Appendf(b, "|%#x", mask)
	}
	return string(b)
}

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
