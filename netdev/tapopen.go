package netdev

import (
	"errors"
	"fmt"
	"os"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
	offloads, err := negotiateOffloads(fd, &cfg)
	if err != nil {
		return nil, err
	}
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
