package vswitch

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/policy"
	"github.com/weftnet/weft/switch/conntrack"
	"github.com/weftnet/weft/switch/maglev"
)

// MaxFDBSize bounds Config.FDBSize: the table takes 2-4 slots of 24 bytes
// per entry (newFDB), all allocated at New; 48 MiB at this size.
const MaxFDBSize = 1 << 20

// Defaults for zero Config fields.
const (
	DefaultMTU         = 1450 // 1500-byte underlay minus VXLAN over IPv4 (50)
	DefaultFDBSize     = 8192
	DefaultFDBMaxAge   = 300 * time.Second
	DefaultNeighSize   = 1024
	DefaultNeighMaxAge = 300 * time.Second
	DefaultICMPRate    = 100 // per second
	DefaultICMPBurst   = 50
	DefaultMaglevSize  = maglev.DefaultSize // 16381, as Cilium
	// A pod's legitimate floods are ARP requests, a few per neighbour per
	// minute, and brief unknown-unicast bursts until the FDB learns a
	// reply; a storm (484k frames in 10 s were seen from one pod) is cut
	// to this, per ingress port.
	DefaultFloodRate  = 1000 // per second
	DefaultFloodBurst = 500

	minMTU = 576 // every IPv4 host must take 576-byte datagrams (RFC 791)
	maxMTU = 65535
)

// Config is the switch's fixed configuration. Zero fields take the
// defaults above.
type Config struct {
	// RouterMAC is the router's MAC, the gateway's ARP answer: unicast,
	// and stable per node (derive it from the node name).
	RouterMAC packet.MAC
	// Subnet is the node's pod subnet, e.g. 10.244.1.0/24 (IPv4, /8../30).
	Subnet netip.Prefix
	// Gateway is the router's address in Subnet; default the first host (.1).
	Gateway netip.Addr
	// MTU is the overlay MTU and the default port MTU.
	MTU int
	// FDBSize bounds the learned MACs (1..MaxFDBSize); when full, learning
	// a new MAC evicts the least recently written one (Counters.FDBEvicted).
	FDBSize   int
	FDBMaxAge time.Duration
	// NeighSize bounds the neighbours learned from ARP (static ones are
	// not counted); NeighMaxAge ages them.
	NeighSize   int
	NeighMaxAge time.Duration
	// ICMPRate (per second) and ICMPBurst bound the ICMP errors the router
	// sends. A second bucket with the same figures bounds the ARP requests
	// sent on neighbour misses.
	ICMPRate  int
	ICMPBurst int

	// ServiceCIDR, when set, is where every service cluster IP must lie
	// (SetServices refuses others). Unset: any unicast IPv4 outside the
	// node subnet.
	ServiceCIDR netip.Prefix
	// MaglevSize is the Maglev lookup table size per service frontend: a
	// prime, maglev.MinSize..maglev.MaxSize. More slots spread more evenly
	// and move fewer flows when backends change (the paper wants
	// M > 100 x backends); each slot costs 2 bytes per frontend.
	MaglevSize int
	// FloodRate (per second) and FloodBurst bound the frames each local
	// port may have flooded (broadcast, multicast, unknown unicast): one
	// token bucket per ingress port, so a storm from one pod costs its
	// neighbours at most this much and leaves other ports' floods alone.
	FloodRate  int
	FloodBurst int
	// Conntrack sizes the connection tracking table and sets its
	// timeouts; zero fields take conntrack's defaults (262144 flows,
	// 24 MiB; see package conntrack).
	Conntrack conntrack.Config
}

func (c *Config) setDefaults() {
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.FDBSize == 0 {
		c.FDBSize = DefaultFDBSize
	}
	if c.FDBMaxAge == 0 {
		c.FDBMaxAge = DefaultFDBMaxAge
	}
	if c.NeighSize == 0 {
		c.NeighSize = DefaultNeighSize
	}
	if c.NeighMaxAge == 0 {
		c.NeighMaxAge = DefaultNeighMaxAge
	}
	if c.ICMPRate == 0 {
		c.ICMPRate = DefaultICMPRate
	}
	if c.ICMPBurst == 0 {
		c.ICMPBurst = DefaultICMPBurst
	}
	if c.MaglevSize == 0 {
		c.MaglevSize = DefaultMaglevSize
	}
	if c.FloodRate == 0 {
		c.FloodRate = DefaultFloodRate
	}
	if c.FloodBurst == 0 {
		c.FloodBurst = DefaultFloodBurst
	}
	if !c.Gateway.IsValid() && c.Subnet.IsValid() && c.Subnet.Addr().Is4() {
		c.Gateway = c.Subnet.Masked().Addr().Next()
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.RouterMAC.IsZero() || c.RouterMAC.IsMulticast() {
		errs = append(errs, fmt.Errorf("router MAC %s: not a unicast MAC", c.RouterMAC))
	}
	switch {
	case !c.Subnet.IsValid() || !c.Subnet.Addr().Is4():
		errs = append(errs, fmt.Errorf("subnet %s: not an IPv4 prefix", c.Subnet))
	case c.Subnet.Bits() < 8 || c.Subnet.Bits() > 30:
		errs = append(errs, fmt.Errorf("subnet %s: length outside /8../30", c.Subnet))
	case c.Subnet != c.Subnet.Masked():
		errs = append(errs, fmt.Errorf("subnet %s: host bits set (want %s)", c.Subnet, c.Subnet.Masked()))
	default:
		p := c.Subnet
		last := ip4Key(p.Addr().As4()) | (1<<(32-p.Bits()) - 1)
		if !c.Gateway.Is4() || !p.Contains(c.Gateway) || c.Gateway == p.Addr() || ip4Key(c.Gateway.As4()) == last {
			errs = append(errs, fmt.Errorf("gateway %s: not a host address of %s", c.Gateway, p))
		}
	}
	if c.MTU < minMTU || c.MTU > maxMTU {
		errs = append(errs, fmt.Errorf("mtu %d outside %d..%d", c.MTU, minMTU, maxMTU))
	}
	if c.FDBSize < 1 || c.FDBSize > MaxFDBSize {
		errs = append(errs, fmt.Errorf("fdb size %d outside 1..%d", c.FDBSize, MaxFDBSize))
	}
	if c.NeighSize < 1 || c.NeighSize > 1<<20 {
		errs = append(errs, fmt.Errorf("neighbour table size %d outside 1..%d", c.NeighSize, 1<<20))
	}
	if c.FDBMaxAge < time.Second {
		errs = append(errs, fmt.Errorf("fdb max age %s: below 1s", c.FDBMaxAge))
	}
	if c.NeighMaxAge < time.Second {
		errs = append(errs, fmt.Errorf("neighbour max age %s: below 1s", c.NeighMaxAge))
	}
	if c.ICMPRate < 1 || c.ICMPRate > 1e6 {
		errs = append(errs, fmt.Errorf("icmp rate %d outside 1..1000000", c.ICMPRate))
	}
	if c.ICMPBurst < 1 || c.ICMPBurst > 1e6 {
		errs = append(errs, fmt.Errorf("icmp burst %d outside 1..1000000", c.ICMPBurst))
	}
	if err := maglev.CheckSize(c.MaglevSize); err != nil {
		errs = append(errs, err)
	}
	if c.ServiceCIDR.IsValid() && (!c.ServiceCIDR.Addr().Is4() || c.ServiceCIDR.Overlaps(c.Subnet)) {
		errs = append(errs, fmt.Errorf("service CIDR %s: not IPv4, or overlaps the node subnet", c.ServiceCIDR))
	}
	if c.FloodRate < 1 || c.FloodRate > 1e7 {
		errs = append(errs, fmt.Errorf("flood rate %d outside 1..10000000", c.FloodRate))
	}
	if c.FloodBurst < 1 || c.FloodBurst > 1e7 {
		errs = append(errs, fmt.Errorf("flood burst %d outside 1..10000000", c.FloodBurst))
	}
	return errors.Join(errs...)
}

// Switch is one node's forwarding decision. All methods are safe for
// concurrent use.
type Switch struct {
	cfg       Config
	routerMAC packet.MAC
	routerKey uint64 // macKey(routerMAC)
	subnet    netip.Prefix
	gateway   netip.Addr
	gw4       [4]byte
	net4      uint32 // subnet network address
	mask4     uint32 // subnet mask
	bcast4    uint32 // subnet broadcast address
	mtu       int

	ports  atomic.Pointer[portTable]
	routes atomic.Pointer[routeTable]
	static atomic.Pointer[neighSnap]
	// services is the compiled service frontends; svcStats keeps each
	// frontend's counters by name across SetServices (guarded by ctl).
	services atomic.Pointer[svcTable]
	svcStats map[string]*serviceStats
	svcIDs   map[string]uint32 // frontend name -> id, stable for the switch's life
	ct       *conntrack.Table
	policy   atomic.Pointer[policy.Snapshot] // nil: no policy stage
	affinity *affinityTable
	frags    *fragTable // translations of first fragments, for the later ones
	fdb      *fdb
	learned  *learnedNeigh

	icmpLimit *limiter
	arpLimit  *limiter
	ctr       counters

	ctl sync.Mutex // serialises control-plane snapshot swaps
}

// New builds a switch with no ports and only the node subnet's Local route.
func New(cfg Config) (*Switch, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("switch config: %w", err)
	}
	s := &Switch{
		cfg:       cfg,
		routerMAC: cfg.RouterMAC,
		routerKey: macKey(cfg.RouterMAC),
		subnet:    cfg.Subnet,
		gateway:   cfg.Gateway,
		gw4:       cfg.Gateway.As4(),
		mtu:       cfg.MTU,
		fdb:       newFDB(cfg.FDBSize, int64(cfg.FDBMaxAge), rand.Uint64()),
		learned:   newLearnedNeigh(cfg.NeighSize, int64(cfg.NeighMaxAge), rand.Uint32()),
		icmpLimit: newLimiter(cfg.ICMPRate, cfg.ICMPBurst),
		arpLimit:  newLimiter(cfg.ICMPRate, cfg.ICMPBurst),
		svcStats:  make(map[string]*serviceStats),
		svcIDs:    make(map[string]uint32),
		affinity:  newAffinityTable(),
		frags:     &fragTable{},
	}
	ct, err := conntrack.New(cfg.Conntrack)
	if err != nil {
		return nil, fmt.Errorf("switch config: %w", err)
	}
	s.ct = ct
	s.cfg.Conntrack = ct.Config()
	s.services.Store(&svcTable{})
	s.net4 = ip4Key(cfg.Subnet.Addr().As4())
	s.mask4 = ^uint32(0) << (32 - cfg.Subnet.Bits())
	s.bcast4 = s.net4 | ^s.mask4
	s.ports.Store(&portTable{})
	s.static.Store(buildNeighSnap(nil))
	rt, err := s.compileRoutes(nil)
	if err != nil {
		return nil, err
	}
	s.routes.Store(rt)
	return s, nil
}

// Config returns the configuration with defaults filled in.
func (s *Switch) Config() Config { return s.cfg }

// AddStaticNeighbour adds ip -> (mac, port): a host address of the node
// subnet on an attached local port. It replaces a learned entry for ip.
func (s *Switch) AddStaticNeighbour(ip netip.Addr, mac packet.MAC, port PortID) error {
	if err := s.checkHostAddr(ip); err != nil {
		return fmt.Errorf("add neighbour: %w", err)
	}
	if mac.IsZero() || mac.IsMulticast() {
		return fmt.Errorf("add neighbour %s: mac %s not unicast", ip, mac)
	}
	s.ctl.Lock()
	defer s.ctl.Unlock()
	p := s.ports.Load().get(port)
	if p == nil || p.kind == PortOverlay {
		return fmt.Errorf("add neighbour %s: port %d is not an attached local port", ip, port)
	}
	ns := s.static.Load()
	if _, ok := ns.lookup(ip4Key(ip.As4())); ok {
		return fmt.Errorf("add neighbour %s: already static", ip)
	}
	s.static.Store(buildNeighSnap(ns.with(Neighbour{IP: ip, MAC: mac, Port: port, Static: true})))
	s.learned.remove(ip4Key(ip.As4()))
	return nil
}

// RemoveNeighbour removes the static or learned entry for ip (a port's own
// address goes with the port, but may be removed here too).
func (s *Switch) RemoveNeighbour(ip netip.Addr) error {
	if !ip.Is4() {
		return fmt.Errorf("remove neighbour %s: not IPv4", ip)
	}
	s.ctl.Lock()
	defer s.ctl.Unlock()
	k := ip4Key(ip.As4())
	ns := s.static.Load()
	if _, ok := ns.lookup(k); ok {
		s.static.Store(buildNeighSnap(ns.without(func(n Neighbour) bool { return n.IP == ip })))
		return nil
	}
	if s.learned.remove(k) {
		return nil
	}
	return fmt.Errorf("remove neighbour %s: no such neighbour", ip)
}

// Neighbours lists static then learned neighbours, each sorted by IP.
func (s *Switch) Neighbours() []Neighbour {
	out := slices.Clone(s.static.Load().list)
	l := s.learned.list()
	slices.SortFunc(l, func(a, b Neighbour) int { return a.IP.Compare(b.IP) })
	return append(out, l...)
}

// FDB lists the learned MACs, least recently written first.
func (s *Switch) FDB() []FDBEntry { return s.fdb.list() }

// Expire ages out conntrack flows past their timeout, and FDB entries and
// learned neighbours not refreshed for their max age. The node calls it periodically (every few seconds) with
// the clock it passes to Process.
func (s *Switch) Expire(now int64) {
	s.ct.Expire(now)
	s.fdb.expire(now)
	s.ctr.neighExpired.Add(uint64(s.learned.expire(now)))
}

// Counters returns a snapshot of all counters.
func (s *Switch) Counters() Counters {
	var c Counters
	for i := range c.Drops {
		c.Drops[i] = s.ctr.drops[i].Load()
	}
	c.ARPReplies = s.ctr.arpReplies.Load()
	c.ARPRequests = s.ctr.arpRequests.Load()
	c.ICMPErrors = s.ctr.icmpErrors.Load()
	c.EchoReplies = s.ctr.echoReplies.Load()
	c.FDBLearned = s.fdb.learned.Load()
	c.FDBMoved = s.fdb.moved.Load()
	c.FDBEvicted = s.fdb.evicted.Load()
	c.FDBExpired = s.fdb.expired.Load()
	c.FDBEntries = uint64(s.fdb.entries.Load())
	c.NeighLearned = s.ctr.neighLearned.Load()
	c.NeighEvicted = s.ctr.neighEvicted.Load()
	c.NeighExpired = s.ctr.neighExpired.Load()
	c.Conntrack = s.ct.Stats()
	c.ReplyRecovered = s.ctr.replyRecovered.Load()
	c.ReplyUnrecovered = s.ctr.replyUnrecovered.Load()
	c.FragTranslated = s.ctr.fragTranslated.Load()
	return c
}
