package vswitch

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/switch/conntrack"
	"github.com/weftnet/weft/switch/maglev"
)

// The service table: the frontends SetServices compiled, swapped whole
// through an atomic pointer like the routes. The service stage looks a
// frame's destination up here only on a conntrack miss (a flow's first
// packet); every later packet of the flow finds its backend in conntrack.

// frontKey packs a frontend's cluster IP, port and protocol.
func frontKey(ip uint32, port uint16, proto uint8) uint64 {
	return uint64(ip)<<24 | uint64(port)<<8 | uint64(proto)
}

// backendKey packs a backend's address and port: its Maglev identity, so
// a backend keeps its slots while others come and go.
func backendKey(ip uint32, port uint16) uint64 { return uint64(ip)<<16 | uint64(port) }

type backendVal struct {
	ip    uint32
	port  uint16
	local bool
}

// backendSet is the backends a frontend picks from, sorted by key, and
// their Maglev table (nil when the set is empty).
type backendSet struct {
	list  []backendVal
	table []uint16
}

func (b *backendSet) pick(h uint64) (backendVal, bool) {
	if len(b.table) == 0 {
		return backendVal{}, false
	}
	return b.list[b.table[h%uint64(len(b.table))]], true
}

// frontend is one compiled ServiceSpec.
type frontend struct {
	spec     ServiceSpec
	id       uint32 // stable per name (Switch.svcIDs); 0 is "no service" in conntrack
	vip      uint32
	port     uint16
	proto    uint8
	affinity int64 // ns; 0 = none
	local    bool  // internalTrafficPolicy: Local
	// eligible takes new flows: the ready backends, or if none the
	// serving and terminating ones (kube-proxy's fallback); local is the
	// same rule over the backends on this node.
	eligible backendSet
	localSet backendSet
	stats    *serviceStats
}

// set is the backends a new flow from this node may go to.
func (f *frontend) set() *backendSet {
	if f.local {
		return &f.localSet
	}
	return &f.eligible
}

// serviceStats outlive table swaps: a frontend keeps its counters (by
// name) while SetServices replaces its backends.
type serviceStats struct {
	newFlows  atomic.Uint64
	noBackend atomic.Uint64
}

type svcTable struct {
	// ends holds every frontend's frontKey and every backend's (address,
	// port, protocol) in the same packing: a tracked service flow's
	// original tuple has a frontend as destination and its reply tuple a
	// backend as source, so a packet matching neither cannot belong to
	// one and skips the conntrack lookup (two cache misses at a large
	// table). When the policy stage tracks every flow this filter goes.
	ends keySet
	// backs holds every backend's (address, port, protocol) alone, and
	// byBackend the frontends that list it (any state): a reply with no
	// flow is reverse-translated only when exactly one of them would
	// have picked that backend (recoverReply).
	backs     keySet
	byBackend map[uint64][]int32
	byKey     map[uint64]int32 // frontKey -> index in fronts
	byID      map[uint32]int32 // frontend id -> index in fronts
	fronts    []frontend
	specs     []ServiceSpec // as given (backends sorted), for listings
}

func (t *svcTable) lookup(ip uint32, port uint16, proto uint8) *frontend {
	if len(t.fronts) == 0 {
		return nil
	}
	i, ok := t.byKey[frontKey(ip, port, proto)]
	if !ok {
		return nil
	}
	return &t.fronts[i]
}

// frontend returns the frontend a conntrack entry names, or nil if that
// frontend no longer exists. Not on the hot path (traces, listings).
func (t *svcTable) frontend(id uint32) *frontend {
	i, ok := t.byID[id]
	if !ok {
		return nil
	}
	return &t.fronts[i]
}

// SetServices replaces the switch's service frontends with svcs. It
// validates the whole set first and changes nothing if any spec is bad;
// then it builds one Maglev table per frontend (off the hot path) and
// swaps the table in atomically, as SetRoutes does for routes. New flows
// use the new table at once; flows already tracked keep their backend,
// except flows to a backend that left (see flushStale).
func (s *Switch) SetServices(svcs []ServiceSpec) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	t, err := s.compileServices(svcs)
	if err != nil {
		return fmt.Errorf("set services: %w", err)
	}
	old := s.services.Load()
	s.services.Store(t)
	s.flushStale(old, t)
	return nil
}

// Services lists the frontends as SetServices was given them, sorted by
// name, each with its backends sorted by address and port.
func (s *Switch) Services() []ServiceSpec {
	t := s.services.Load()
	out := make([]ServiceSpec, len(t.specs))
	for i, sp := range t.specs {
		sp.Backends = slices.Clone(sp.Backends)
		out[i] = sp
	}
	return out
}

// ServiceStat is one frontend's counters.
type ServiceStat struct {
	Name      string `json:"name"`
	Backends  int    `json:"backends"`  // all known
	Eligible  int    `json:"eligible"`  // taking new flows (ready, or the serving fallback)
	NewFlows  uint64 `json:"new_flows"` // flows this node load-balanced to a backend
	NoBackend uint64 `json:"no_backend"`
}

// ServiceStats returns each frontend's counters, by name.
func (s *Switch) ServiceStats() []ServiceStat {
	t := s.services.Load()
	out := make([]ServiceStat, len(t.fronts))
	for i := range t.fronts {
		f := &t.fronts[i]
		out[i] = ServiceStat{
			Name: f.spec.Name, Backends: len(f.spec.Backends), Eligible: len(f.eligible.list),
			NewFlows: f.stats.newFlows.Load(), NoBackend: f.stats.noBackend.Load(),
		}
	}
	return out
}

func (s *Switch) compileServices(svcs []ServiceSpec) (*svcTable, error) {
	var errs []error
	specs := make([]ServiceSpec, len(svcs))
	for i, sp := range svcs {
		sp.Backends = slices.Clone(sp.Backends)
		slices.SortFunc(sp.Backends, func(a, b ServiceBackend) int {
			return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
		})
		if err := s.checkService(&sp); err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", sp.Name, err))
		}
		specs[i] = sp
	}
	slices.SortFunc(specs, func(a, b ServiceSpec) int { return cmp.Compare(a.Name, b.Name) })
	t := &svcTable{byKey: make(map[uint64]int32, len(specs)), byID: make(map[uint32]int32, len(specs)),
		fronts: make([]frontend, len(specs)), specs: specs}
	names := make(map[string]bool, len(specs))
	for i := range specs {
		sp := &specs[i]
		if names[sp.Name] {
			errs = append(errs, fmt.Errorf("service %q: name given twice", sp.Name))
		}
		names[sp.Name] = true
		if !sp.ClusterIP.Is4() {
			continue // reported by checkService
		}
		k := frontKey(ip4Key(sp.ClusterIP.As4()), sp.Port, sp.Proto)
		if j, dup := t.byKey[k]; dup {
			errs = append(errs, fmt.Errorf("service %q: %s:%d/%s already served by %q", sp.Name, sp.ClusterIP, sp.Port, protoName(sp.Proto), specs[j].Name))
			continue
		}
		t.byKey[k] = int32(i)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i := range specs {
		f, err := s.compileFrontend(&specs[i])
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", specs[i].Name, err)
		}
		t.fronts[i] = f
		t.byID[f.id] = int32(i)
	}
	var ends, backs []uint64
	t.byBackend = make(map[uint64][]int32)
	for i := range specs {
		sp := &specs[i]
		ends = append(ends, frontKey(ip4Key(sp.ClusterIP.As4()), sp.Port, sp.Proto))
		for _, b := range sp.Backends {
			k := frontKey(ip4Key(b.Addr.As4()), b.Port, sp.Proto)
			ends = append(ends, k)
			backs = append(backs, k)
			t.byBackend[k] = append(t.byBackend[k], int32(i))
		}
	}
	t.ends = newKeySet(ends)
	t.backs = newKeySet(backs)
	return t, nil
}

func (s *Switch) compileFrontend(sp *ServiceSpec) (frontend, error) {
	f := frontend{
		spec: *sp, id: s.frontendID(sp.Name), vip: ip4Key(sp.ClusterIP.As4()), port: sp.Port, proto: sp.Proto,
		affinity: int64(sp.AffinityTimeout), local: sp.InternalLocal,
		stats: s.statsFor(sp.Name),
	}
	var err error
	if f.eligible, err = s.buildSet(sp.Backends, false); err != nil {
		return f, err
	}
	if f.localSet, err = s.buildSet(sp.Backends, true); err != nil {
		return f, err
	}
	return f, nil
}

// buildSet applies kube-proxy's endpoint choice: the ready backends; if
// there are none, the ones that are serving and terminating (so a rolling
// update drains instead of refusing). localOnly restricts it to this node.
func (s *Switch) buildSet(bs []ServiceBackend, localOnly bool) (backendSet, error) {
	var ready, draining []backendVal
	for _, b := range bs {
		if localOnly && !b.Local {
			continue
		}
		v := backendVal{ip: ip4Key(b.Addr.As4()), port: b.Port, local: b.Local}
		switch {
		case b.Ready:
			ready = append(ready, v)
		case b.Serving && b.Terminating:
			draining = append(draining, v)
		}
	}
	list := ready
	if len(list) == 0 {
		list = draining
	}
	if len(list) == 0 {
		return backendSet{}, nil
	}
	keys := make([]uint64, len(list))
	for i, b := range list {
		keys[i] = backendKey(b.ip, b.port)
	}
	tab, err := maglev.Build(keys, s.cfg.MaglevSize)
	if err != nil {
		return backendSet{}, err
	}
	return backendSet{list: list, table: tab}, nil
}

// frontendID returns the id of a frontend name, the same for the
// switch's life, so that conntrack entries keep naming their frontend
// across SetServices; called with s.ctl held.
func (s *Switch) frontendID(name string) uint32 {
	if id, ok := s.svcIDs[name]; ok {
		return id
	}
	id := uint32(len(s.svcIDs) + 1)
	s.svcIDs[name] = id
	return id
}

// statsFor returns the counters kept for a frontend name; called with
// s.ctl held.
func (s *Switch) statsFor(name string) *serviceStats {
	if st, ok := s.svcStats[name]; ok {
		return st
	}
	st := &serviceStats{}
	s.svcStats[name] = st
	return st
}

// checkService validates one spec (backends already sorted).
func (s *Switch) checkService(sp *ServiceSpec) error {
	var errs []error
	if sp.Name == "" {
		errs = append(errs, errors.New("no name"))
	}
	switch {
	case !sp.ClusterIP.Is4():
		errs = append(errs, fmt.Errorf("cluster IP %s: not IPv4", sp.ClusterIP))
	case s.subnet.Contains(sp.ClusterIP) || s.martian(ip4Key(sp.ClusterIP.As4())):
		errs = append(errs, fmt.Errorf("cluster IP %s: in the node subnet or not a unicast address", sp.ClusterIP))
	case s.cfg.ServiceCIDR.IsValid() && !s.cfg.ServiceCIDR.Contains(sp.ClusterIP):
		errs = append(errs, fmt.Errorf("cluster IP %s: outside the service CIDR %s", sp.ClusterIP, s.cfg.ServiceCIDR))
	}
	if sp.Port == 0 {
		errs = append(errs, errors.New("port 0"))
	}
	if sp.Proto != packet.IPProtoTCP && sp.Proto != packet.IPProtoUDP {
		errs = append(errs, fmt.Errorf("protocol %d: only TCP (6) and UDP (17)", sp.Proto))
	}
	if sp.AffinityTimeout < 0 {
		errs = append(errs, fmt.Errorf("affinity timeout %s: negative", sp.AffinityTimeout))
	}
	if len(sp.Backends) > maglev.MaxBackends || len(sp.Backends) >= s.cfg.MaglevSize {
		errs = append(errs, fmt.Errorf("%d backends: more than the Maglev table (%d slots) takes", len(sp.Backends), s.cfg.MaglevSize))
	}
	for i, b := range sp.Backends {
		if !b.Addr.Is4() || s.martian(ip4Key(b.Addr.As4())) {
			errs = append(errs, fmt.Errorf("backend %s: not a unicast IPv4 address", b.Addr))
		}
		if b.Port == 0 {
			errs = append(errs, fmt.Errorf("backend %s: port 0", b.Addr))
		}
		if i > 0 && sp.Backends[i-1].Addr == b.Addr && sp.Backends[i-1].Port == b.Port {
			errs = append(errs, fmt.Errorf("backend %s:%d given twice", b.Addr, b.Port))
		}
	}
	return errors.Join(errs...)
}

func protoName(p uint8) string {
	switch p {
	case packet.IPProtoTCP:
		return "TCP"
	case packet.IPProtoUDP:
		return "UDP"
	case packet.IPProtoICMP:
		return "ICMP"
	}
	return fmt.Sprintf("proto-%d", p)
}

// flushStale removes the conntrack flows that must not outlive a
// SetServices, and the affinity entries of frontends that lost affinity:
//
//   - every flow of a frontend that is gone;
//   - UDP flows to a backend that no longer takes new flows (removed, not
//     ready, or not serving): UDP has no connection to drain, and a client
//     that keeps its socket (a resolver talking to CoreDNS) would
//     otherwise send to a dead backend until the entry idles out (the
//     kube-proxy stale-UDP bug);
//   - TCP flows to a backend that left the endpoints or stopped serving.
//     A TCP flow to a backend that is only not ready (terminating but
//     serving) is kept: it drains, as with kube-proxy. A flushed TCP
//     flow's next packet is picked up as a new flow to a live backend,
//     which answers a segment of a connection it does not know with a RST
//     (reverse-translated, so the client sees it from the cluster IP): the
//     client's connection is reset, not left to time out.
func (s *Switch) flushStale(old, t *svcTable) {
	type allowed struct {
		proto uint8
		keep  map[uint64]bool
	}
	stale := map[uint32]*allowed{}
	lostAffinity := map[uint32]bool{}
	for i := range old.fronts {
		of := &old.fronts[i]
		nf := t.frontend(of.id)
		if nf == nil {
			stale[of.id] = &allowed{proto: of.proto}
			lostAffinity[of.id] = true
			continue
		}
		if of.affinity != 0 && nf.affinity == 0 {
			lostAffinity[of.id] = true
		}
		keep := map[uint64]bool{}
		if nf.proto == packet.IPProtoUDP {
			for _, b := range nf.set().list {
				keep[backendKey(b.ip, b.port)] = true
			}
		} else {
			for _, b := range nf.spec.Backends {
				if b.Ready || b.Serving {
					keep[backendKey(ip4Key(b.Addr.As4()), b.Port)] = true
				}
			}
		}
		for _, b := range of.spec.Backends {
			if !keep[backendKey(ip4Key(b.Addr.As4()), b.Port)] {
				stale[of.id] = &allowed{proto: nf.proto, keep: keep}
				break
			}
		}
	}
	s.affinity.forget(lostAffinity)
	if len(stale) == 0 || s.ct.Len() == 0 {
		return
	}
	s.ct.FlushIf(func(e *conntrack.Entry) bool {
		a, ok := stale[e.Service]
		return ok && !a.keep[backendKey(e.Reply.Src, e.Reply.SrcPort)]
	})
}

// flowHash is the hash a new flow's backend is picked with: seedless (see
// maglev.Mix), so every node and every restart picks the same backend
// for the same flow and the same backend set.
func flowHash(src, dst uint32, sport, dport uint16, proto uint8) uint64 {
	return maglev.Mix(uint64(src)<<32|uint64(dst)) ^ maglev.Mix(uint64(sport)<<24|uint64(dport)<<8|uint64(proto))
}

// clientHash is the hash for sessionAffinity ClientIP: the client address
// alone, so all of a client's flows pick the same backend.
func clientHash(src uint32) uint64 { return maglev.Mix(uint64(src) | 1<<40) }

// mayTrack reports whether a packet with tuple t can belong to a service
// flow (see svcTable.ends).
func (t *svcTable) mayTrack(src, dst uint32, sport, dport uint16, proto uint8) bool {
	return t.ends.has(frontKey(dst, dport, proto)) || t.ends.has(frontKey(src, sport, proto))
}

// keySet is an immutable open-addressed set of non-zero uint64 keys.
type keySet struct {
	keys []uint64
	mask uint64
}

func newKeySet(keys []uint64) keySet {
	n := 8
	for n < 2*len(keys) {
		n <<= 1
	}
	s := keySet{keys: make([]uint64, n), mask: uint64(n - 1)}
	for _, k := range keys {
		i := maglev.Mix(k) & s.mask
		for s.keys[i] != 0 && s.keys[i] != k {
			i = (i + 1) & s.mask
		}
		s.keys[i] = k
	}
	return s
}

func (s *keySet) has(k uint64) bool {
	if len(s.keys) == 0 {
		return false
	}
	i := maglev.Mix(k) & s.mask
	for {
		switch s.keys[i] {
		case k:
			return true
		case 0:
			return false
		}
		i = (i + 1) & s.mask
	}
}
