package netdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named namespaces are bind-mounted, as `ip netns` does.
const NetnsDir = "/var/run/netns"

// NetnsPath is the path of the named namespace name.
func NetnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// NewNetns creates the named network namespace name exactly as `ip netns
// add` does (iproute2 ip/ipnetns.c, netns_add): NetnsDir made a shared
// mount point, then a bind mount of the new namespace on a file in it. It
// brings the loopback up and returns the path. The calling thread's
// namespace is not changed.
func NewNetns(name string) (path string, err error) {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return "", fmt.Errorf("new netns %q: bad name", name)
	}
	path = NetnsPath(name)
	if err := shareNetnsDir(); err != nil {
		return "", fmt.Errorf("new netns %s: %w", name, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("new netns %s: %w", name, err)
	}
	f.Close()
	defer func() {
		if err != nil {
			_ = unix.Unmount(path, unix.MNT_DETACH)
			_ = os.Remove(path)
		}
	}()
	// unshare moves the thread into the new namespace; onThread puts it back
	// (or retires the thread). The bind mount keeps the namespace alive.
	err = onThread(netns.None(), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("new netns %s: %w", name, err)
	}
	h, err := OpenHandle(path)
	if err != nil {
		return "", fmt.Errorf("new netns %s: %w", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return "", fmt.Errorf("new netns %s: loopback up: %w", name, err)
	}
	return path, nil
}

// shareNetnsDir makes NetnsDir a mount point with shared propagation,
// recursively, binding it onto itself first if it is a plain directory, as
// iproute2 does before it creates a namespace. Both matter: a namespace
// mounted on a plain directory is caught when another tool (ip netns add)
// later binds the directory onto itself, because MS_BIND|MS_REC copies
// every namespace mount into the new mount, and the copy in the directory
// underneath keeps the file busy (unlink: EBUSY) once the visible one is
// unmounted. Shared, an unmount propagates to every copy, in every mount
// namespace, so the namespace is freed. An exclusive flock on the directory
// keeps concurrent creators from binding it onto itself more than once
// (iproute2 does the same since Debian bug 949235: parallel `ip netns add`
// stacked the mounts until the machine locked up); like iproute2 it goes on
// without the lock if it cannot take it.
func shareNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	if lock, err := os.Open(NetnsDir); err == nil {
		defer lock.Close() // closing releases the lock
		_ = unix.Flock(int(lock.Fd()), unix.LOCK_EX)
	}
	for made := false; ; made = true {
		err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		// EINVAL: not a mount point (yet). Once bound, it is one.
		if !errors.Is(err, unix.EINVAL) || made {
			return fmt.Errorf("mount --make-rshared %s: %w", NetnsDir, err)
		}
		if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("mount --rbind %s %s: %w", NetnsDir, NetnsDir, err)
		}
	}
}

// DeleteNetns removes the named namespace; a missing one is not an error.
// Devices in it (TAPs included) go away once nothing else holds it.
func DeleteNetns(name string) error {
	path := NetnsPath(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// openNetns opens the namespace at nsPath; "" is the calling thread's.
// A missing path gives an error wrapping os.ErrNotExist.
func openNetns(nsPath string) (netns.NsHandle, error) {
	if nsPath == "" {
		h, err := netns.Get()
		if err != nil {
			return h, fmt.Errorf("current netns: %w", err)
		}
		return h, nil
	}
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		return h, fmt.Errorf("netns %s: %w", nsPath, err)
	}
	return h, nil
}

// OpenHandle returns a netlink handle whose sockets live in the namespace
// at nsPath ("" = the caller's), so links, addresses and routes can be
// changed there without switching threads. Close it after use. A missing
// namespace gives an error wrapping os.ErrNotExist.
func OpenHandle(nsPath string) (*netlink.Handle, error) {
	if nsPath == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("netlink handle: %w", err)
		}
		return h, nil
	}
	ns, err := openNetns(nsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", nsPath, err)
	}
	return h, nil
}

// Do runs f on a locked OS thread inside the namespace at nsPath ("" = the
// caller's namespace, no switch). f runs on its own goroutine, so the
// caller's thread is never switched; if the thread cannot be switched back,
// it is never unlocked and the runtime retires it with the goroutine. Files
// and sockets f opens keep the namespace they were opened in.
func Do(nsPath string, f func() error) error {
	target := netns.None()
	if nsPath != "" {
		var err error
		if target, err = openNetns(nsPath); err != nil {
			return err
		}
		defer target.Close()
	}
	return onThread(target, f)
}

// onThread runs f on a fresh locked thread switched into target (None =
// stay) and switches it back to the namespace it started in.
func onThread(target netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err, restored := switchRun(target, f)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// switchRun reports restored=false when the thread may be left in another
// namespace; its caller must then keep the thread locked.
func switchRun(target netns.NsHandle, f func() error) (err error, restored bool) {
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("current netns: %w", err), true
	}
	defer orig.Close()
	if target.IsOpen() {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter netns: %w", err), true // setns failed: thread unchanged
		}
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("restore netns: %w", err)), false
	}
	return ferr, true
}

// AddAddr adds address p to link ifName in the namespace at nsPath; an
// address already there is not an error.
func AddAddr(nsPath, ifName string, p netip.Prefix) error {
	h, err := OpenHandle(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("add addr %s to %s: %w", p, ifName, err)
	}
	return ensureAddr(h, l, p)
}

// AddRoute routes dst via gw (zero gw: on-link) out of link ifName in the
// namespace at nsPath, replacing a route to dst that differs.
func AddRoute(nsPath, ifName string, dst netip.Prefix, gw netip.Addr) error {
	h, err := OpenHandle(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("add route %s via %s dev %s: %w", dst, gw, ifName, err)
	}
	return ensureRoute(h, l, dst, gw)
}

// LinkUp sets link ifName up in the namespace at nsPath.
func LinkUp(nsPath, ifName string) error {
	h, err := OpenHandle(nsPath)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("link %s up: %w", ifName, err)
	}
	return nil
}

// DeleteLink removes link ifName (of any kind) from the namespace at
// nsPath; a missing link or namespace is not an error.
func DeleteLink(nsPath, ifName string) error {
	h, err := OpenHandle(nsPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if isLinkNotFound(err) {
		return nil
	}
	if err == nil {
		err = h.LinkDel(l)
	}
	if err != nil && !isLinkNotFound(err) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", ifName, err)
	}
	return nil
}

// VethEnd is one end of a veth pair. Zero MAC, MTU or Addr leave the
// kernel's choice or nothing.
type VethEnd struct {
	Name      string
	NetnsPath string // "" = the caller's namespace
	MAC       [6]byte
	MTU       int
	Addr      netip.Prefix
}

// NewVeth creates a veth pair with end a in a.NetnsPath and end b in
// b.NetnsPath, gives each its MAC, MTU and address, and sets both up. On
// failure it deletes the pair.
func NewVeth(a, b VethEnd) (err error) {
	for _, e := range []VethEnd{a, b} {
		if err := checkIfName(e.Name); err != nil {
			return fmt.Errorf("new veth %s/%s: %w", a.Name, b.Name, err)
		}
	}
	ha, err := OpenHandle(a.NetnsPath)
	if err != nil {
		return fmt.Errorf("new veth %s: %w", a.Name, err)
	}
	defer ha.Close()
	nsB, err := openNetns(b.NetnsPath)
	if err != nil {
		return fmt.Errorf("new veth %s: peer %w", a.Name, err)
	}
	defer nsB.Close()
	hb, err := netlink.NewHandleAt(nsB)
	if err != nil {
		return fmt.Errorf("new veth %s: peer netlink handle: %w", a.Name, err)
	}
	defer hb.Close()

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: a.Name, MTU: a.MTU},
		PeerName:      b.Name,
		PeerMTU:       uint32(max(b.MTU, 0)),
		PeerNamespace: netlink.NsFd(nsB),
	}
	if a.MAC != ([6]byte{}) {
		veth.HardwareAddr = net.HardwareAddr(a.MAC[:])
	}
	if b.MAC != ([6]byte{}) {
		veth.PeerHardwareAddr = net.HardwareAddr(b.MAC[:])
	}
	if err := ha.LinkAdd(veth); err != nil {
		return fmt.Errorf("new veth %s/%s: %w", a.Name, b.Name, err)
	}
	defer func() {
		if err != nil {
			if l, lerr := ha.LinkByName(a.Name); lerr == nil {
				_ = ha.LinkDel(l)
			}
		}
	}()
	for _, side := range []struct {
		h *netlink.Handle
		e VethEnd
	}{{ha, a}, {hb, b}} {
		l, err := side.h.LinkByName(side.e.Name)
		if err != nil {
			return fmt.Errorf("new veth: look up %s: %w", side.e.Name, err)
		}
		if side.e.Addr.IsValid() {
			if err := ensureAddr(side.h, l, side.e.Addr); err != nil {
				return fmt.Errorf("new veth %s: %w", side.e.Name, err)
			}
		}
		if err := side.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("new veth %s: link up: %w", side.e.Name, err)
		}
	}
	return nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// ensureAddr adds p to l unless it is already there.
func ensureAddr(h *netlink.Handle, l netlink.Link, p netip.Prefix) error {
	addrs, err := h.AddrList(l, family(p.Addr()))
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if got, ok := netipPrefix(a.IPNet); ok && got == p {
			return nil
		}
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefixIPNet(p)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add address %s: %w", p, err)
	}
	return nil
}

// ensureRoute makes the main-table route to dst out of l go via gw (zero:
// on-link), leaving an identical route alone.
func ensureRoute(h *netlink.Handle, l netlink.Link, dst netip.Prefix, gw netip.Addr) error {
	dst = dst.Masked()
	want := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixIPNet(dst), Table: unix.RT_TABLE_MAIN}
	if gw.IsValid() {
		want.Gw = gw.AsSlice()
	} else {
		want.Scope = netlink.SCOPE_LINK
	}
	have, err := h.RouteListFiltered(family(dst.Addr()), want, netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes to %s: %w", dst, err)
	}
	for _, r := range have {
		if got, ok := netip.AddrFromSlice(r.Gw); (ok && got.Unmap() == gw) || (!ok && !gw.IsValid()) {
			return nil
		}
	}
	if err := h.RouteReplace(want); err != nil {
		return fmt.Errorf("route %s via %s: %w", dst, gw, err)
	}
	return nil
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	if a.Is4In6() && bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), true
}
