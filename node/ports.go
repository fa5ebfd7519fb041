package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/netdev"
	"golang.org/x/sys/unix"
)

// Attach gives a pod an interface: an address from IPAM (on disk first), a
// persistent TAP in the pod's namespace configured with it, a port record,
// and a switch port with its worker. It is idempotent per (pod ID, ifname);
// a failure leaves nothing behind (no address held, no device).
func (n *Node) Attach(ctx context.Context, req api.AttachRequest) (api.AttachResponse, error) {
	if err := req.Normalize(); err != nil {
		return api.AttachResponse{}, err
	}
	n.waitPodKnown(ctx, req.PodNamespace, req.PodName) // before ctlMu: other attaches go on
	key := ipam.Key{PodID: req.PodID, IfName: req.IfName}
	n.ctlMu.Lock()
	defer n.ctlMu.Unlock()
	if p, ok := n.byKey[key]; ok {
		if p.rec.Netns != req.Netns {
			return api.AttachResponse{}, fmt.Errorf("%w: pod %s %s is attached in netns %s, not %s",
				api.ErrConflict, req.PodID, req.IfName, p.rec.Netns, req.Netns)
		}
		return n.attachResponse(p.rec), nil
	}
	if err := checkStorable(req.PodID, req.IfName); err != nil {
		return api.AttachResponse{}, api.BadRequest("pod_id", err.Error())
	}
	nsIno, err := n.checkNetns(req.Netns)
	if err != nil {
		return api.AttachResponse{}, api.BadRequest("netns", err.Error())
	}
	if err := n.checkPortMappings(req); err != nil {
		return api.AttachResponse{}, err
	}
	alloc, err := n.ipam.Allocate(key, ipam.Meta{PodNamespace: req.PodNamespace, PodName: req.PodName})
	if err != nil {
		if errors.Is(err, ipam.ErrExhausted) {
			return api.AttachResponse{}, fmt.Errorf("%w: %v", api.ErrExhausted, err)
		}
		return api.AttachResponse{}, fmt.Errorf("allocate address for %s: %w", key, err)
	}
	rec := PortRecord{
		PodID: req.PodID, IfName: req.IfName, Netns: req.Netns,
		PodNamespace: req.PodNamespace, PodName: req.PodName, Owner: req.Owner, PodMeta: req.PodMeta,
		Addr: alloc.Prefix, MAC: PodMAC(alloc.Addr), MTU: n.mtu, Since: time.Now().UTC(),
		NetnsIno:     nsIno,
		PortMappings: req.PortMappings,
	}
	undo := func(what string, err error) (api.AttachResponse, error) {
		if rerr := n.ipam.Release(key); rerr != nil {
			n.log.Error("attach rollback: release address", "pod", req.PodID, "addr", alloc.Addr, "err", rerr)
		}
		n.log.Warn("attach failed", "pod", req.PodID, "ifname", req.IfName, "netns", req.Netns, "step", what, "err", err)
		if errors.Is(err, os.ErrNotExist) {
			return api.AttachResponse{}, api.BadRequest("netns", fmt.Sprintf("%s: %v", req.Netns, err))
		}
		if errors.Is(err, os.ErrExist) {
			return api.AttachResponse{}, fmt.Errorf("%w: %s: %v", api.ErrConflict, what, err)
		}
		return api.AttachResponse{}, fmt.Errorf("%s: %w", what, err)
	}
	tap, err := netdev.CreateTap(n.tapConfig(rec))
	if err != nil {
		return undo("create tap", err)
	}
	if err := n.records.put(rec); err != nil {
		tap.Close()
		netdev.DeleteTap(rec.IfName, rec.Netns)
		return undo("write port record", err)
	}
	if len(rec.PortMappings) > 0 {
		if err := n.syncHostPorts(rec); err != nil {
			tap.Close()
			netdev.DeleteTap(rec.IfName, rec.Netns)
			n.records.remove(rec.PodID, rec.IfName)
			return undo("program host ports", err)
		}
	}
	if err := n.addPodPort(rec, tap); err != nil {
		tap.Close()
		netdev.DeleteTap(rec.IfName, rec.Netns)
		n.records.remove(rec.PodID, rec.IfName)
		if len(rec.PortMappings) > 0 {
			n.resyncHostPorts("attach rollback")
		}
		return undo("add switch port", err)
	}
	delete(n.dormant, key) // attached again: the new record replaced the old
	n.podsChanged()
	n.log.Info("pod attached", "pod", req.PodID, "ifname", req.IfName, "netns", req.Netns, "ip", alloc.Prefix, "mac", rec.MAC)
	return n.attachResponse(rec), nil
}

func (n *Node) attachResponse(r PortRecord) api.AttachResponse {
	return api.AttachResponse{
		PodID: r.PodID, IfName: r.IfName, Netns: r.Netns, TapName: r.IfName,
		IP: r.Addr.Addr(), Address: r.Addr, MAC: r.MAC, Gateway: ipam.Gateway(n.lease.Subnet), MTU: r.MTU,
	}
}

// Detach undoes Attach: the worker stops, the switch forgets the port, the
// TAP is deleted (a namespace already gone is fine) and the address freed.
func (n *Node) Detach(ctx context.Context, req api.DetachRequest) error {
	if err := req.Normalize(); err != nil {
		return err
	}
	key := ipam.Key{PodID: req.PodID, IfName: req.IfName}
	n.ctlMu.Lock()
	defer n.ctlMu.Unlock()
	p, ok := n.byKey[key]
	if !ok {
		if r, ok := n.dormant[key]; ok {
			return n.detachDormant(key, r)
		}
		// No port, but maybe an address left by a crash mid-attach.
		if _, held := n.ipam.Get(key); held {
			return n.ipam.Release(key)
		}
		return fmt.Errorf("%w: no port for pod %s interface %s", api.ErrNotFound, req.PodID, req.IfName)
	}
	p.closing.Store(true)
	if err := n.sw.RemovePort(p.ID); err != nil {
		n.log.Error("detach: remove switch port", "pod", req.PodID, "err", err)
	}
	n.stopPort(p)
	n.policyLocalPod(p.rec, true)
	delete(n.byKey, key)
	if len(p.rec.PortMappings) > 0 {
		n.resyncHostPorts("detach")
	}
	if err := netdev.DeleteTap(p.rec.IfName, p.rec.Netns); err != nil {
		n.log.Warn("detach: delete tap", "pod", req.PodID, "err", err)
	}
	if err := n.records.remove(p.rec.PodID, p.rec.IfName); err != nil {
		return err
	}
	if err := n.ipam.Release(key); err != nil {
		return fmt.Errorf("release %s: %w", p.addr.Addr(), err)
	}
	n.podsChanged()
	n.log.Info("pod detached", "pod", req.PodID, "ifname", req.IfName, "ip", p.addr)
	return nil
}

// Ports lists the attached pod ports.
func (n *Node) Ports(ctx context.Context) ([]api.Port, error) {
	n.ctlMu.Lock()
	defer n.ctlMu.Unlock()
	out := make([]api.Port, 0, len(n.byKey))
	for _, p := range n.byKey {
		out = append(out, n.apiPort(p))
	}
	sortBy(out, func(p api.Port) int { return p.PortID })
	return out, nil
}

func (n *Node) apiPort(p *port) api.Port {
	return api.Port{
		PodID: p.rec.PodID, PodNamespace: p.rec.PodNamespace, PodName: p.rec.PodName, Owner: p.rec.Owner,
		Netns: p.rec.Netns, IfName: p.rec.IfName, TapName: p.name,
		IP: p.addr.Addr(), Address: p.addr, MAC: p.mac, Gateway: ipam.Gateway(n.lease.Subnet),
		MTU: p.rec.MTU, PortID: int(p.ID),
		RxFrames: p.RxFrames.Load(), TxFrames: p.TxFrames.Load(),
		RxBytes: p.RxBytes.Load(), TxBytes: p.TxBytes.Load(), Since: p.since,
		Queues: p.Queues(), PortMappings: p.rec.PortMappings,
	}
}

// portByName finds a port by pod ID, switch port name or IP, for trace.
func (n *Node) portByName(name string) (*port, bool) {
	n.ctlMu.Lock()
	defer n.ctlMu.Unlock()
	if name == n.cfg.HostPortName || name == "host" {
		p := n.ports[hostPortID].Load()
		return p, p != nil
	}
	addr, _ := netip.ParseAddr(name)
	for k, p := range n.byKey {
		if k.PodID == name || p.addr.Addr() == addr || (p.rec.PodNamespace+"/"+p.rec.PodName) == name {
			return p, true
		}
	}
	return nil, false
}

// detachDormant ends a port that restorePorts could not re-open (its
// namespace was unreachable): the TAP is deleted if its namespace is still
// the one the pod had, then the record and the address go. Caller holds
// ctlMu.
func (n *Node) detachDormant(key ipam.Key, r PortRecord) error {
	if st, _ := netnsState(r); st == nsPresent {
		if err := netdev.DeleteTap(r.IfName, r.Netns); err != nil {
			n.log.Warn("detach: delete tap", "pod", r.PodID, "err", err)
		}
	}
	if err := n.records.remove(r.PodID, r.IfName); err != nil {
		return err
	}
	delete(n.dormant, key)
	if len(r.PortMappings) > 0 {
		n.resyncHostPorts("detach")
	}
	if err := n.ipam.Release(key); err != nil {
		return fmt.Errorf("release %s: %w", r.Addr.Addr(), err)
	}
	n.log.Info("pod detached (its port was not restored)", "pod", r.PodID, "ifname", r.IfName, "ip", r.Addr)
	return nil
}

// DefaultNetnsRoots are the directories whose entries are pod namespace
// paths everywhere: iproute2's (and so CNI runtimes') bind mounts.
var DefaultNetnsRoots = []string{"/run/netns", "/var/run/netns"}

// checkNetns accepts a pod namespace path only in the places namespaces
// live: an entry of a netns root directory (a bind mount, whose lifetime
// the runtime owns) or /proc/PID/ns/net. A relative or unclean path
// (../../proc/PID/ns/net) depends on weftd's working directory and hides
// what it names, so it is refused. It also tells a missing path, or one
// that is not a network namespace (a plain file, a directory), from a real
// one before anything is allocated, so the caller gets a 400 naming the
// path rather than a setns EINVAL deep inside TAP creation. It returns the
// namespace's inode, the identity restorePorts checks the path against.
func (n *Node) checkNetns(path string) (uint64, error) {
	if err := checkNetnsPath(path, n.cfg.NetnsRoots); err != nil {
		return 0, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a network namespace (bind mount under /var/run/netns or /proc/PID/ns/net)", path)
	}
	var fi unix.Stat_t
	if err := unix.Stat(path, &fi); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return fi.Ino, nil
}

// checkNetnsPath checks the shape of a namespace path: absolute, clean, and
// either /proc/PID/ns/net or directly inside one of DefaultNetnsRoots or
// extra.
func checkNetnsPath(path string, extra []string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("%q is not a clean absolute path", path)
	}
	if isProcNetns(path) {
		return nil
	}
	dir := filepath.Dir(path)
	if slices.Contains(DefaultNetnsRoots, dir) || slices.Contains(extra, dir) {
		return nil
	}
	return fmt.Errorf("%s is not under a namespace directory (%s, /proc/PID/ns/net%s)", path,
		strings.Join(DefaultNetnsRoots, ", "), strings.Join(append([]string{""}, extra...), ", "))
}

// isProcNetns reports whether path is /proc/PID/ns/net.
func isProcNetns(path string) bool {
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return false
	}
	pid, ok := strings.CutSuffix(rest, "/ns/net")
	if !ok || pid == "" || len(pid) > 10 {
		return false
	}
	for _, c := range []byte(pid) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// nsState is what restorePorts knows about a pod's namespace.
type nsState uint8

const (
	// nsPresent: the path holds the namespace the pod was attached in.
	nsPresent nsState = iota
	// nsGone: the namespace was removed from its bind mount: the pod is
	// gone, and its TAP with it.
	nsGone
	// nsUnknown: weftd cannot reach the namespace, and cannot prove it is
	// gone (a /proc path whose process exited, a path that now holds
	// another namespace, an error): its TAP may still be configured.
	nsUnknown
)

// netnsState tells, for a port record, whether its namespace is still
// there, provably gone, or unknown.
func netnsState(r PortRecord) (nsState, string) {
	proc := isProcNetns(r.Netns)
	var fi unix.Stat_t
	err := unix.Stat(r.Netns, &fi)
	switch {
	case errors.Is(err, unix.ENOENT) && proc:
		return nsUnknown, "its process exited; the namespace may live on"
	case errors.Is(err, unix.ENOENT):
		return nsGone, "namespace path removed"
	case err != nil:
		return nsUnknown, err.Error()
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(r.Netns, &fs); err != nil {
		return nsUnknown, err.Error()
	}
	if fs.Type != unix.NSFS_MAGIC && fs.Type != unix.PROC_SUPER_MAGIC {
		if proc {
			return nsUnknown, "not a namespace"
		}
		return nsGone, "namespace unmounted from its path"
	}
	if r.NetnsIno != 0 && fi.Ino != r.NetnsIno {
		return nsUnknown, fmt.Sprintf("the path now holds another namespace (inode %d, the pod's was %d)", fi.Ino, r.NetnsIno)
	}
	return nsPresent, ""
}
