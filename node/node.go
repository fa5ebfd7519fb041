package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/service"
	vswitch "github.com/weftnet/weft/switch"
	"github.com/weftnet/weft/switch/conntrack"
)

// Config is everything a node needs; cmd/weftd builds it from flags and the
// config file. Nothing below cmd/ reads flags or files of its own.
type Config struct {
	NodeName    string
	Underlay    string // interface name, IPv4 address, or "" for the default route's interface
	ClusterCIDR netip.Prefix
	NodeBits    int
	VNI         uint32
	Port        uint16 // VXLAN UDP port
	MTU         int    // pod MTU; 0 = underlay MTU - 50
	StateDir    string

	// Registry is the cluster registry client, opened by the caller (file
	// or etcd); RegistryBackend names it for `weft status`.
	Registry        registry.Registry
	RegistryBackend string
	LeaseTTL        time.Duration
	// ReleaseOnShutdown gives the subnet back on a graceful stop. Off by
	// default: a restarting node wants its subnet (and pods) back.
	ReleaseOnShutdown bool

	// ServiceCIDR holds the Services' cluster IPs ("" = 10.96.0.0/12); it
	// is routed into weft on the host port. Objects is the registry's
	// object store (nil: no Services, no published pod metadata).
	ServiceCIDR netip.Prefix
	Objects     registry.ObjectStore
	// KubePods: the object store's Pods are the Kubernetes API server's
	// (registry/kube), owned by the kubelet: the node publishes none of
	// its own, and takes its pods' labels and ports from the store
	// (kube.go).
	KubePods bool

	// PendingReleaseDir is where weft-cni records DELs it could not hand to
	// a stopped weftd; "" = StateDir/cni-pending (weft-cni's default).
	PendingReleaseDir string

	// HostPortName is the node's own TAP; "" = "weft0".
	HostPortName string
	Logger       *slog.Logger

	// Offload opens the TAPs with virtio headers and checksum offload and
	// turns on the kernel offloads below (offload.go). Off: plain TAPs and
	// sockets, whatever the Disable knobs say.
	Offload bool
	// DisableTSO keeps TCP super-frames (TAP TSO) off; USO goes with it.
	DisableTSO bool
	// DisableUSO keeps UDP segmentation off: TAP USO and UDP GSO
	// (UDP_SEGMENT) on the underlay.
	DisableUSO bool
	// DisableGRO keeps UDP GRO off on the underlay, and with it the
	// coalescing of received segments into super-frames for the TAPs.
	DisableGRO bool
	// PartialCsum (under Offload) leaves the checksums pods leave partial
	// uncomputed for local pods and for weft peers that advertise
	// registry.CapPartialCsum, and advertises it (offload.go).
	PartialCsum bool
	// ZeroCopy (under Offload, with UDP GSO) sends the transmitters' GSO
	// messages of 10 KB and more with MSG_ZEROCOPY (overlay/zerocopy_linux.go);
	// each writer gives it up where the kernel copies anyway (veth).
	ZeroCopy bool
	// RxSpin (under Offload, with UDP GRO): datapath.Config.RxSpin.
	RxSpin time.Duration

	// RxWorkers is how many sockets receive VXLAN, each with its own
	// worker (underlay.go); 0 or 1: one.
	RxWorkers int
	// TapQueues > 1 gives each TAP that many queues (IFF_MULTI_QUEUE),
	// each with its own transmitter; offload mode only. 0 or 1: one.
	TapQueues int

	// NetnsRoots are directories whose entries Attach accepts as pod
	// namespace paths, besides /run/netns and /var/run/netns (DefaultNetnsRoots);
	// /proc/PID/ns/net is always accepted.
	NetnsRoots []string

	// FloodRate and FloodBurst: the switch's per-port flood budget
	// (vswitch.Config); 0 = DefaultFloodRate, DefaultFloodBurst.
	FloodRate, FloodBurst int

	// ConntrackSize bounds the connection tracking table (flows) and
	// MaglevSize is the Maglev table size per service frontend (a prime);
	// 0 = DefaultConntrackSize, DefaultMaglevSize.
	ConntrackSize, MaglevSize int
	// FDBSize bounds the switch's learned MACs (vswitch.Config.FDBSize);
	// 0 = DefaultFDBSize.
	FDBSize int
	// Egress: pod traffic leaving the cluster, and hostPorts (egress.go).
	Egress EgressConfig
}

// The switch's defaults for Config.FloodRate and FloodBurst, for weftd's
// flag defaults.
const (
	DefaultFloodRate  = vswitch.DefaultFloodRate
	DefaultFloodBurst = vswitch.DefaultFloodBurst

	DefaultConntrackSize = conntrack.DefaultSize // 262144 flows, 24 MiB
	DefaultFDBSize       = vswitch.DefaultFDBSize
	MaxFDBSize           = vswitch.MaxFDBSize
	DefaultMaglevSize    = vswitch.DefaultMaglevSize
)

// switchConfig is the switch's configuration for the node's pod subnet.
func (n *Node) switchConfig(subnet netip.Prefix) vswitch.Config {
	return vswitch.Config{RouterMAC: n.routerMAC, Subnet: subnet, Gateway: ipam.Gateway(subnet), MTU: n.mtu,
		FloodRate: n.cfg.FloodRate, FloodBurst: n.cfg.FloodBurst, ServiceCIDR: n.cfg.ServiceCIDR,
		MaglevSize: n.cfg.MaglevSize, Conntrack: conntrack.Config{Size: n.cfg.ConntrackSize}, FDBSize: n.cfg.FDBSize}
}

// Switch port numbers. The overlay and the host port are fixed so that
// they read the same in every node's listings; pods take the rest.
const (
	overlayPortID vswitch.PortID = 0
	hostPortID    vswitch.PortID = 1
	firstPodPort  vswitch.PortID = 2

	defaultHostPort = "weft0"
)

// Node is one running weft node.
type Node struct {
	cfg       Config
	log       *slog.Logger
	start     time.Time
	underlay  Underlay
	mtu       int
	routerMAC packet.MAC

	keeper  *registry.Keeper
	lease   registry.Lease
	sw      *vswitch.Switch
	ipam    *ipam.Allocator
	records *recordStore

	peers *overlay.PeerTable
	decap *overlay.Decapper
	dp    *datapath.Datapath
	rx    []*overlay.Conn       // the receiving sockets, one receiver each
	gsoOK bool                  // the kernel took UDP GSO (underlay.go)
	groOK bool                  // ... and UDP GRO
	zc    overlay.ZeroCopyStats // the transmitters' MSG_ZEROCOPY sends (Config.ZeroCopy)
	gros  []*overlay.GROReader  // the receivers' readers, for their spin counts
	// liveNames: the nodes with a live lease, sorted (leases.go).
	liveNames atomic.Pointer[[]string]
	subnet    atomic.Pointer[netip.Prefix] // the lease's subnet the node took at start, for onAcquire
	udpHist   batchHist
	svc       *serviceState // Services and pod metadata (services.go); nil without an object store
	pol       *policyState  // NetworkPolicy (policy.go); nil without an object store
	egress    egressState   // weftd's nftables table (egress.go)

	// view is what the lease watch accepted, rejected and holds (leases.go).
	view peerView

	// ports by switch port ID; the hot path reads them without locks.
	ports  [vswitch.MaxPorts]atomic.Pointer[port]
	ctlMu  sync.Mutex // attach, detach and port ID allocation
	byKey  map[ipam.Key]*port
	nextID vswitch.PortID

	// dormant holds the records of ports restorePorts could not re-open
	// while their TAP may still be configured: their addresses stay held
	// until the pod is detached. Guarded by ctlMu.
	dormant map[ipam.Key]PortRecord

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New checks cfg and fills defaults; Start brings the node up.
func New(cfg Config) (*Node, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("node: node name is empty")
	}
	if cfg.Registry == nil {
		return nil, errors.New("node: no registry client")
	}
	if !cfg.ClusterCIDR.IsValid() {
		cfg.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if !cfg.ServiceCIDR.IsValid() {
		cfg.ServiceCIDR = service.DefaultServiceCIDR
	}
	if cfg.NodeBits == 0 {
		cfg.NodeBits = ipam.DefaultNodeBits
	}
	if cfg.VNI == 0 {
		cfg.VNI = 1
	}
	if cfg.Port == 0 {
		cfg.Port = overlay.DefaultPort
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/weft"
	}
	if cfg.PendingReleaseDir == "" {
		cfg.PendingReleaseDir = filepath.Join(cfg.StateDir, "cni-pending")
	}
	if cfg.HostPortName == "" {
		cfg.HostPortName = defaultHostPort
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if _, err := ipam.NewSubnetPool(cfg.ClusterCIDR, cfg.NodeBits); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return &Node{
		cfg:       cfg,
		log:       cfg.Logger,
		routerMAC: RouterMAC(cfg.NodeName),
		byKey:     make(map[ipam.Key]*port),
		dormant:   make(map[ipam.Key]PortRecord),
		nextID:    firstPodPort,
	}, nil
}

// Start acquires the node's lease, opens the devices, restores the ports
// of a previous run and starts forwarding. It returns once the node
// forwards; the node runs until ctx ends or Stop is called.
func (n *Node) Start(ctx context.Context) (err error) {
	n.start = time.Now()
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()

	if n.underlay, err = ResolveUnderlay(n.cfg.Underlay); err != nil {
		return err
	}
	n.mtu = n.cfg.MTU
	if n.mtu == 0 {
		n.mtu = n.underlay.MTU - overlay.OuterIPv4Len
	}
	if n.mtu < 576 || n.mtu+overlay.OuterIPv4Len > n.underlay.MTU {
		return fmt.Errorf("mtu %d does not fit underlay %s (mtu %d) with %d bytes of VXLAN overhead",
			n.mtu, n.underlay.IfName, n.underlay.MTU, overlay.OuterIPv4Len)
	}
	n.log.Info("underlay", "iface", n.underlay.IfName, "addr", n.underlay.Addr, "underlay_mtu", n.underlay.MTU, "pod_mtu", n.mtu)

	if err := n.acquireLease(ctx); err != nil {
		return err
	}
	subnet := n.lease.Subnet
	if !n.cfg.ClusterCIDR.Contains(subnet.Addr()) {
		return fmt.Errorf("registry gave subnet %s outside cluster CIDR %s", subnet, n.cfg.ClusterCIDR)
	}

	if n.sw, err = vswitch.New(n.switchConfig(subnet)); err != nil {
		return fmt.Errorf("switch: %w", err)
	}
	n.startPolicy(ipam.HostAddr(subnet))
	if n.ipam, err = ipam.Open(filepath.Join(n.cfg.StateDir, "ipam"), subnet); err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	if n.records, err = openRecordStore(filepath.Join(n.cfg.StateDir, "ports")); err != nil {
		return err
	}

	n.peers = &overlay.PeerTable{}
	n.decap = overlay.NewDecapper(n.cfg.VNI, n.peers)
	n.dp = datapath.New(datapath.Config{Switch: n.sw, Decap: n.decap, Peers: n.peers, VNI: n.cfg.VNI, Port: n.cfg.Port,
		OverlayPort: overlayPortID, Coalesce: n.gro(), PartialCsum: n.partialCsum(), RxSpin: n.rxSpin(), Epoch: n.start})
	if err := n.openUnderlay(ctx); err != nil {
		return err
	}
	if err := n.sw.AddPort(vswitch.PortConfig{ID: overlayPortID, Kind: vswitch.PortOverlay}); err != nil {
		return fmt.Errorf("overlay port: %w", err)
	}
	if err := n.openHostPort(); err != nil {
		return err
	}
	// Load the peers once before any pod traffic flows: a restarted node
	// must not answer its pods' first packets with net-unreachable while
	// the watch is still starting.
	n.loadPeers(ctx)
	// The table before the Services: their first compilation writes the
	// node ports into it.
	if err := n.startEgress(); err != nil {
		return err
	}
	n.loadServices(ctx)
	n.restorePorts()
	n.syncRestoredHostPorts()
	n.applyPendingReleases()

	n.startUnderlayWorkers()
	n.startServices()
	n.wg.Add(2)
	go n.watchRegistry()
	go n.housekeeping()
	n.reportNetworkReady()
	n.log.Info("node up", "node", n.cfg.NodeName, "subnet", subnet, "gateway", ipam.Gateway(subnet),
		"router_mac", n.routerMAC, "vni", n.cfg.VNI, "port", n.cfg.Port, "ports", len(n.byKey))
	return nil
}

// loadPeers applies the registry's live leases synchronously. If the
// registry does not answer, the watch fills the peers in when it does.
func (n *Node) loadPeers(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	leases, err := n.cfg.Registry.List(lctx)
	if err != nil {
		n.log.Warn("registry list failed; peers arrive with the watch", "err", err)
		return
	}
	n.applyLeases(registry.LeaseMap(leases))
}

// acquireLease starts the keeper and waits for the first lease: without it
// the node does not know its subnet.
//
// A node that served a subnet before (its IPAM state holds one) asks for
// exactly that one: its pods are on it. If the registry gives that subnet
// to another node, or says this node claims another, Start fails with
// that conflict rather than advertise a subnet it does not serve.
func (n *Node) acquireLease(ctx context.Context) error {
	ipamDir := filepath.Join(n.cfg.StateDir, "ipam")
	served, _, err := ipam.DirSubnet(ipamDir)
	if err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	k, err := registry.NewKeeper(n.cfg.Registry, registry.KeeperConfig{
		Request: registry.AcquireRequest{
			Node: n.cfg.NodeName, Underlay: n.underlay.Addr, RouterMAC: n.routerMAC,
			VNI: n.cfg.VNI, Port: n.cfg.Port, TTL: n.cfg.LeaseTTL, Subnet: served, Caps: n.caps(),
		},
		ReleaseOnStop: n.cfg.ReleaseOnShutdown,
		OnAcquire:     n.onAcquire,
		Logger:        n.log,
	})
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	n.keeper = k
	// A peer's vanished lease is believed only once this keeper's registry
	// calls succeed again (leases.go), and after an outage only once the
	// peers had a renewal period to come back.
	ttl := n.cfg.LeaseTTL
	if ttl <= 0 {
		ttl = registry.DefaultTTL
	}
	n.view.health, n.view.poke, n.view.settle = k.Health, k.Poke, ttl/3
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := k.Run(n.ctx); err != nil {
			n.log.Error("registry keeper stopped", "err", err)
		}
	}()
	n.log.Info("acquiring node lease", "node", n.cfg.NodeName, "registry", n.cfg.RegistryBackend, "serves", served)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
wait:
	for {
		select {
		case <-k.Acquired():
			break wait
		case <-ctx.Done():
			return fmt.Errorf("waiting for the node lease: %w (registry: %s)", ctx.Err(), k.Health().LastError)
		case <-poll.C:
			if h := k.Health(); errors.Is(h.Err, registry.ErrSubnetConflict) {
				return fmt.Errorf("registry: %w (this node's pods are on %s, kept in %s: fix the registry's claims, or remove that state to start afresh)",
					h.Err, served, ipamDir)
			}
		}
	}
	l, _ := k.Lease()
	n.lease = l
	subnet := l.Subnet
	n.subnet.Store(&subnet)
	n.log.Info("node lease acquired", "subnet", l.Subnet, "expires", l.Expiry.Format(time.RFC3339))
	return nil
}

// onAcquire runs on every (re-)acquire. The keeper asks for the subnet it
// first got (registry.AcquireRequest.Subnet), so the subnet cannot change;
// a registry that lost this node's claim makes the keeper degraded with an
// ErrSubnetConflict instead, and the lease lapses rather than advertise
// another subnet. Should a backend still hand out another, say it loudly
// rather than renumber live pods.
// It runs on the keeper's goroutine, so it reads the subnet the node took
// from n.subnet, not from n.lease, which Start writes meanwhile.
func (n *Node) onAcquire(l registry.Lease) {
	if old := n.subnet.Load(); old != nil && l.Subnet != *old {
		n.log.Error("registry gave this node a different subnet; pods keep the old one until weftd restarts",
			"old", *old, "new", l.Subnet)
	}
}

func (n *Node) openHostPort() error {
	subnet := n.lease.Subnet
	cfg := netdev.TapConfig{
		Name:    n.cfg.HostPortName,
		MAC:     HostMAC(n.cfg.NodeName),
		MTU:     n.mtu,
		Addr:    netip.PrefixFrom(ipam.HostAddr(subnet), subnet.Bits()),
		Gateway: ipam.Gateway(subnet),
		Routes:  []netip.Prefix{n.cfg.ClusterCIDR, n.cfg.ServiceCIDR},
		Persist: true,
		Logger:  n.log,
	}
	n.offloadTapConfig(&cfg)
	tap, err := netdev.OpenTap(cfg)
	if errors.Is(err, os.ErrNotExist) {
		tap, err = netdev.CreateTap(cfg)
	}
	if err != nil {
		return fmt.Errorf("host port %s: %w", cfg.Name, err)
	}
	p := &port{Port: datapath.Port{ID: hostPortID, Dev: tap}, name: cfg.Name, mac: cfg.MAC, addr: cfg.Addr, since: time.Now()}
	if err := n.sw.AddPort(vswitch.PortConfig{ID: hostPortID, Kind: vswitch.PortHost, MAC: cfg.MAC, IPv4: cfg.Addr.Addr(), MTU: n.mtu}); err != nil {
		tap.Close()
		return fmt.Errorf("host port %s: %w", cfg.Name, err)
	}
	if err := n.startPort(p); err != nil {
		tap.Close()
		return fmt.Errorf("host port %s: %w", cfg.Name, err)
	}
	return nil
}

// restorePorts re-opens the persistent TAPs of the ports a previous weftd
// attached, then frees the addresses no port holds (leaked by a crash
// between allocation and record). An address is freed only when its TAP
// is provably not configured any more (the TAP or its namespace is gone);
// a port whose namespace cannot be reached keeps its record and address
// (dormant) until the pod is detached. If any record is unreadable, GC is
// skipped: the address that record holds is unknown.
func (n *Node) restorePorts() {
	recs, errs := n.records.list()
	for _, err := range errs {
		n.log.Error("skipping port record", "err", err)
	}
	n.ctlMu.Lock()
	defer n.ctlMu.Unlock()
	for _, r := range recs {
		key := ipam.Key{PodID: r.PodID, IfName: r.IfName}
		if _, ok := n.ipam.Get(key); !ok || !n.lease.Subnet.Contains(r.Addr.Addr()) {
			n.log.Warn("port record has no matching address in this node's IPAM; dropping it", "pod", r.PodID, "addr", r.Addr)
			n.records.remove(r.PodID, r.IfName)
			continue
		}
		n.restorePort(key, r)
	}
	if len(errs) > 0 {
		n.log.Warn("ipam gc skipped: some port records are unreadable, and the addresses they hold are unknown", "unreadable", len(errs))
		return
	}
	freed, err := n.ipam.GC(func(podID, ifname string) bool {
		k := ipam.Key{PodID: podID, IfName: ifname}
		_, live := n.byKey[k]
		_, dormant := n.dormant[k]
		return live || dormant
	})
	if err != nil {
		n.log.Error("ipam gc", "err", err)
	}
	for _, a := range freed {
		n.log.Info("ipam gc freed an address no port holds", "addr", a.Addr, "pod", a.PodID)
	}
}

// restorePort re-opens one recorded port, releases it if its TAP is
// provably gone, or keeps it dormant. Caller holds ctlMu.
func (n *Node) restorePort(key ipam.Key, r PortRecord) {
	release := func(why string) {
		n.log.Warn("pod port gone; releasing it", "pod", r.PodID, "ifname", r.IfName, "netns", r.Netns, "ip", r.Addr, "why", why)
		n.records.remove(r.PodID, r.IfName)
		n.ipam.Release(key)
	}
	dormant := func(why string) {
		n.log.Warn("pod port unreachable; keeping its address until the pod is detached",
			"pod", r.PodID, "ifname", r.IfName, "netns", r.Netns, "ip", r.Addr, "why", why)
		n.dormant[key] = r
	}
	st, why := netnsState(r)
	switch st {
	case nsGone:
		release(why)
		return
	case nsUnknown:
		dormant(why)
		return
	}
	tap, err := netdev.OpenTap(n.tapConfig(r))
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist) && (r.NetnsIno != 0 || !isProcNetns(r.Netns)):
		// The namespace is the pod's and holds no such TAP: deleted.
		release(err.Error())
		return
	default:
		dormant(err.Error())
		return
	}
	if err := n.addPodPort(r, tap); err != nil {
		n.log.Error("restoring port", "pod", r.PodID, "err", err)
		tap.Close()
		n.dormant[key] = r
		return
	}
	n.log.Info("port restored", "pod", r.PodID, "ifname", r.IfName, "ip", r.Addr)
}

func (n *Node) tapConfig(r PortRecord) netdev.TapConfig {
	cfg := netdev.TapConfig{
		Name: r.IfName, NetnsPath: r.Netns, MAC: r.MAC, MTU: r.MTU,
		Addr: r.Addr, Gateway: ipam.Gateway(n.lease.Subnet), Persist: true, Logger: n.log,
	}
	n.offloadTapConfig(&cfg)
	return cfg
}

// allocPortID finds a free switch port ID. Caller holds ctlMu.
func (n *Node) allocPortID() (vswitch.PortID, error) {
	for range vswitch.MaxPorts {
		id := n.nextID
		n.nextID++
		if n.nextID >= vswitch.MaxPorts {
			n.nextID = firstPodPort
		}
		if n.ports[id].Load() == nil {
			return id, nil
		}
	}
	return 0, fmt.Errorf("all %d switch ports in use", vswitch.MaxPorts-int(firstPodPort))
}

// addPodPort registers an opened pod TAP with the switch and starts its
// worker. Caller holds ctlMu.
func (n *Node) addPodPort(r PortRecord, tap *netdev.Tap) error {
	id, err := n.allocPortID()
	if err != nil {
		return err
	}
	n.policyLocalPod(r, false) // in the policy snapshot before its first packet
	if err := n.sw.AddPort(vswitch.PortConfig{ID: id, Kind: vswitch.PortPod, MAC: r.MAC, IPv4: r.Addr.Addr(), MTU: r.MTU}); err != nil {
		n.policyLocalPod(r, true)
		return err
	}
	p := &port{Port: datapath.Port{ID: id, Dev: tap}, name: r.IfName, mac: r.MAC, addr: r.Addr, rec: r, since: r.Since}
	if err := n.startPort(p); err != nil {
		if rerr := n.sw.RemovePort(id); rerr != nil {
			n.log.Error("remove switch port", "pod", r.PodID, "err", rerr)
		}
		n.policyLocalPod(r, true)
		return err
	}
	n.byKey[ipam.Key{PodID: r.PodID, IfName: r.IfName}] = p
	return nil
}

// housekeeping ages the FDB and neighbours out of band, and frees the
// data path's buffers that no worker needed for a whole tick.
func (n *Node) housekeeping() {
	defer n.wg.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.sw.Expire(n.now())
			n.dp.TrimBuffers()
		}
	}
}

// now is the monotonic clock the switch ages entries by.
func (n *Node) now() int64 { return int64(time.Since(n.start)) }

// Stop stops forwarding and closes the devices. Pod TAPs are persistent and
// stay, as do port records and IPAM state, so a restarted weftd resumes.
func (n *Node) Stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.closeUnderlay()
	for i := range n.ports {
		if p := n.ports[i].Load(); p != nil {
			p.Dev.Close()
		}
	}
	n.wg.Wait()
	n.stopEgress()
	if n.ipam != nil {
		n.ipam.Close()
	}
	n.log.Info("node stopped", "node", n.cfg.NodeName)
}
