package vswitch

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/weftnet/weft/packet"
)

// PortKind is the role of a port.
type PortKind uint8

const (
	// PortPod is a pod's TAP. Anti-spoofed: it may only send from its own
	// MAC and IPv4 address.
	PortPod PortKind = iota + 1
	// PortHost is the node's own weft0 TAP (the subnet's .2). Trusted.
	PortHost
	// PortOverlay is the single virtual port where frames decapsulated from
	// VXLAN enter. Only IPv4 to our router MAC is accepted (and routed);
	// nothing is learned from it or flooded to it.
	PortOverlay
)

func (k PortKind) String() string {
	switch k {
	case PortPod:
		return "pod"
	case PortHost:
		return "host"
	case PortOverlay:
		return "overlay"
	}
	return "kind?"
}

// PortConfig describes a port.
type PortConfig struct {
	ID   PortID     `json:"id"`
	Kind PortKind   `json:"kind"`
	MAC  packet.MAC `json:"mac,omitzero"` // pod: required; host: optional
	// IPv4 is the port's address: required for pods (anti-spoofing), and
	// for pods and the host port, when set, a static neighbour entry
	// (IPv4 -> MAC, port) is added with the port and removed with it.
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	MTU  int        `json:"mtu"` // 0 = Config.MTU; checked when routing out of this port
}

type portState struct {
	id     PortID
	kind   PortKind
	mac    packet.MAC
	macKey uint64 // macKey(mac)
	ip4    [4]byte
	ip4Key uint32 // ip4Key(ip4)
	mtu    int
	cfg    PortConfig
	flood  *limiter // local ports: this port's flood budget (Config.FloodRate)
}

// portTable is an immutable port snapshot indexed by PortID.
type portTable struct {
	byID  []*portState
	local []PortID // pod and host ports, ascending: the flood set
	list  []PortConfig
	// The smallest MTU among the local ports, the port that has it, and
	// the next smallest (0: none): the largest frame a flood from any
	// port may carry (floodMTU).
	minMTU, minMTU2 int
	minPort         PortID
}

// floodMTU returns the smallest MTU of the ports a flood from in reaches
// (0 when there are none).
func (t *portTable) floodMTU(in PortID) int {
	if in == t.minPort {
		return t.minMTU2
	}
	return t.minMTU
}

func (t *portTable) get(id PortID) *portState {
	if int(id) < len(t.byID) {
		return t.byID[id]
	}
	return nil
}

func (t *portTable) with(p *portState) *portTable {
	n := &portTable{byID: slices.Clone(t.byID)}
	if int(p.id) >= len(n.byID) {
		n.byID = append(n.byID, make([]*portState, int(p.id)+1-len(n.byID))...)
	}
	n.byID[p.id] = p
	n.index()
	return n
}

func (t *portTable) without(id PortID) *portTable {
	n := &portTable{byID: slices.Clone(t.byID)}
	n.byID[id] = nil
	for len(n.byID) > 0 && n.byID[len(n.byID)-1] == nil {
		n.byID = n.byID[:len(n.byID)-1]
	}
	n.index()
	return n
}

func (t *portTable) index() {
	for _, p := range t.byID {
		if p == nil {
			continue
		}
		t.list = append(t.list, p.cfg)
		if p.kind != PortOverlay {
			t.local = append(t.local, p.id)
			switch {
			case t.minMTU == 0 || p.mtu < t.minMTU:
				t.minMTU2, t.minMTU, t.minPort = t.minMTU, p.mtu, p.id
			case t.minMTU2 == 0 || p.mtu < t.minMTU2:
				t.minMTU2 = p.mtu
			}
		}
	}
}

// AddPort attaches a port. Pod ports need a unicast MAC and an IPv4 host
// address in the node subnet; there is at most one overlay port.
func (s *Switch) AddPort(pc PortConfig) error {
	if err := s.checkPort(&pc); err != nil {
		return fmt.Errorf("add port %d: %w", pc.ID, err)
	}
	s.ctl.Lock()
	defer s.ctl.Unlock()
	pt := s.ports.Load()
	if pt.get(pc.ID) != nil {
		return fmt.Errorf("add port %d: id in use", pc.ID)
	}
	if pc.Kind == PortOverlay {
		for _, q := range pt.list {
			if q.Kind == PortOverlay {
				return fmt.Errorf("add port %d: overlay port %d exists", pc.ID, q.ID)
			}
		}
	}
	p := &portState{id: pc.ID, kind: pc.Kind, mac: pc.MAC, macKey: macKey(pc.MAC), mtu: pc.MTU, cfg: pc}
	if pc.Kind != PortOverlay {
		p.flood = newLimiter(s.cfg.FloodRate, s.cfg.FloodBurst)
	}
	if pc.IPv4.IsValid() {
		p.ip4 = pc.IPv4.As4()
		p.ip4Key = ip4Key(p.ip4)
		ns := s.static.Load()
		if _, ok := ns.lookup(ip4Key(p.ip4)); ok {
			return fmt.Errorf("add port %d: address %s already has a static neighbour", pc.ID, pc.IPv4)
		}
		// Neighbour before port: the frames the port sends are answered.
		s.static.Store(buildNeighSnap(ns.with(Neighbour{IP: pc.IPv4, MAC: pc.MAC, Port: pc.ID, Static: true})))
	}
	s.ports.Store(pt.with(p))
	return nil
}

func (s *Switch) checkPort(pc *PortConfig) error {
	if pc.ID >= MaxPorts {
		return fmt.Errorf("id above %d", MaxPorts-1)
	}
	if pc.MTU == 0 {
		pc.MTU = s.cfg.MTU
	}
	if pc.MTU < minMTU || pc.MTU > maxMTU {
		return fmt.Errorf("mtu %d outside %d..%d", pc.MTU, minMTU, maxMTU)
	}
	switch pc.Kind {
	case PortPod, PortHost:
		if pc.Kind == PortPod && (pc.MAC.IsZero() || !pc.IPv4.IsValid()) {
			return errors.New("a pod port needs a MAC and an IPv4 address")
		}
		if pc.MAC.IsMulticast() || pc.MAC == s.cfg.RouterMAC {
			return fmt.Errorf("mac %s: multicast or the router's", pc.MAC)
		}
		if pc.IPv4.IsValid() {
			if pc.MAC.IsZero() {
				return errors.New("an address needs a MAC for its neighbour entry")
			}
			if err := s.checkHostAddr(pc.IPv4); err != nil {
				return err
			}
		}
	case PortOverlay:
		if !pc.MAC.IsZero() || pc.IPv4.IsValid() {
			return errors.New("the overlay port has no MAC or address")
		}
	default:
		return fmt.Errorf("unknown kind %d", pc.Kind)
	}
	return nil
}

// checkHostAddr accepts an IPv4 host address of the node subnet other than
// the gateway.
func (s *Switch) checkHostAddr(a netip.Addr) error {
	if !a.Is4() || !s.subnet.Contains(a) {
		return fmt.Errorf("address %s: not in the node subnet %s", a, s.subnet)
	}
	k := ip4Key(a.As4())
	if k == s.net4 || k == s.bcast4 || a == s.gateway {
		return fmt.Errorf("address %s: the subnet's network, broadcast or gateway address", a)
	}
	return nil
}

// RemovePort detaches a port and flushes its FDB entries and its static and
// learned neighbours. Frames of a batch already in Process may still be
// given the old port; the caller drops writes to a port it closed.
func (s *Switch) RemovePort(id PortID) error {
	s.ctl.Lock()
	defer s.ctl.Unlock()
	pt := s.ports.Load()
	if pt.get(id) == nil {
		return fmt.Errorf("remove port %d: no such port", id)
	}
	s.ports.Store(pt.without(id))
	ns := s.static.Load()
	s.static.Store(buildNeighSnap(ns.without(func(n Neighbour) bool { return n.Port == id })))
	s.fdb.flushPort(id)
	s.learned.removeIf(func(_ uint32, v neighVal, _ int64) bool { return v.port == id })
	return nil
}

// Ports lists the attached ports by ID.
func (s *Switch) Ports() []PortConfig { return slices.Clone(s.ports.Load().list) }

// FloodSet appends to dst the ports a flooded frame from in goes to: every
// pod and host port but in. It allocates only if dst is too small.
func (s *Switch) FloodSet(in PortID, dst []PortID) []PortID {
	for _, p := range s.ports.Load().local {
		if p != in {
			dst = append(dst, p)
		}
	}
	return dst
}
