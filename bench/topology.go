package bench

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// Endpoint is a local switch port: a pod's TAP or the node's weft0.
type Endpoint struct {
	Port vswitch.PortID
	Kind vswitch.PortKind
	MAC  packet.MAC
	IP   netip.Addr
}

// PeerNode is another node of the cluster as this node sees it: a route
// for its pod subnet and a peer-table entry for its underlay address.
type PeerNode struct {
	Name      string
	Subnet    netip.Prefix
	Underlay  netip.Addr
	RouterMAC packet.MAC
}

// Topology is the node the generated pcaps assume and the replay builds:
//
//	node subnet 10.244.1.0/24, gateway .1 answered with RouterMAC
//	port 0  overlay (frames decapsulated from VXLAN enter here)
//	port 1  host port weft0, 10.244.1.2
//	port 2..9  pods 10.244.1.3 .. 10.244.1.10, MAC 02:00:0a:f4:01:<last octet>
//	underlay 192.168.1.1 (NIC MAC 02:55:c0:a8:01:01), routed: every outer
//	  frame goes to and comes from the underlay gateway 192.168.1.254's MAC
//	peers node2..node5: 10.244.2.0/24 .. 10.244.5.0/24 via 192.168.1.2 .. .5
//
// With Routes > len(Peers) the route table and the peer table are padded
// with further nodes (10.N.M.0/24 via 192.168.10+.x) that no generated
// frame addresses unless the scenario is asked to spread over them.
type Topology struct {
	Subnet      netip.Prefix
	Gateway     netip.Addr
	RouterMAC   packet.MAC
	OverlayPort vswitch.PortID
	Host        Endpoint
	Pods        []Endpoint

	Underlay           netip.Addr
	UnderlayMAC        packet.MAC
	UnderlayGatewayMAC packet.MAC
	VNI                uint32
	VXLANPort          uint16

	// Peers are the nodes the generated traffic talks to.
	Peers []PeerNode
	// Routes is the number of peer routes to install: at least len(Peers);
	// the rest are filler nodes (see FillerPeer).
	Routes int
	// MTU is the overlay MTU of the switch; 0 is the switch's default
	// (vswitch.DefaultMTU).
	MTU int
}

// MaxRoutes bounds Topology.Routes: filler subnets are 10.x.y.0/24 below
// 10.244.0.0/16.
const MaxRoutes = 244 * 256

// DefaultTopology returns the topology documented on Topology, with 8 pods
// and 4 peers.
func DefaultTopology() *Topology {
	t := &Topology{
		Subnet:             netip.MustParsePrefix("10.244.1.0/24"),
		Gateway:            netip.MustParseAddr("10.244.1.1"),
		RouterMAC:          routerMAC(1),
		OverlayPort:        0,
		Host:               Endpoint{Port: 1, Kind: vswitch.PortHost, MAC: podMAC(2), IP: netip.MustParseAddr("10.244.1.2")},
		Underlay:           netip.MustParseAddr("192.168.1.1"),
		UnderlayMAC:        packet.MAC{0x02, 0x55, 192, 168, 1, 1},
		UnderlayGatewayMAC: packet.MAC{0x02, 0x55, 192, 168, 1, 254},
		VNI:                1,
		VXLANPort:          overlay.DefaultPort,
	}
	for i := range 8 {
		host := byte(3 + i)
		t.Pods = append(t.Pods, Endpoint{
			Port: vswitch.PortID(2 + i),
			Kind: vswitch.PortPod,
			MAC:  podMAC(host),
			IP:   netip.AddrFrom4([4]byte{10, 244, 1, host}),
		})
	}
	for n := 2; n <= 5; n++ {
		t.Peers = append(t.Peers, PeerNode{
			Name:      fmt.Sprintf("node%d", n),
			Subnet:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(n), 0}), 24),
			Underlay:  netip.AddrFrom4([4]byte{192, 168, 1, byte(n)}),
			RouterMAC: routerMAC(n),
		})
	}
	t.Routes = len(t.Peers)
	return t
}

// WithRoutes returns a copy of t with n peer routes (at least len(Peers)).
func (t *Topology) WithRoutes(n int) *Topology {
	c := *t
	c.Pods = append([]Endpoint(nil), t.Pods...)
	c.Peers = append([]PeerNode(nil), t.Peers...)
	c.Routes = n
	return &c
}

// routerMAC is node n's router MAC: locally administered, one per node.
func routerMAC(n int) packet.MAC {
	return packet.MAC{0x02, 0x77, 0x66, byte(n >> 8), byte(n), 0x01}
}

// podMAC is a local port's MAC, 02:00 and the IPv4 address 10.244.1.host.
func podMAC(host byte) packet.MAC { return packet.MAC{0x02, 0x00, 10, 244, 1, host} }

// FillerPeer is the i-th padding node of a large route table: subnet
// 10.(i/256).(i%256).0/24, underlay 192.168.(10+i/250).(1+i%250).
func FillerPeer(i int) PeerNode {
	return PeerNode{
		Name:      fmt.Sprintf("filler%d", i),
		Subnet:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24),
		Underlay:  netip.AddrFrom4([4]byte{192, 168, byte(10 + i/250), byte(1 + i%250)}),
		RouterMAC: routerMAC(6 + i),
	}
}

// AllPeers lists the peers and then the filler nodes, Routes in all.
// Filler nodes that would clash with the node or a peer (same subnet or
// underlay address, which a topology taken from a capture may have) are
// passed over.
func (t *Topology) AllPeers() []PeerNode {
	all := append([]PeerNode(nil), t.Peers...)
	if len(all) >= t.Routes {
		return all
	}
	taken := map[netip.Addr]bool{t.Underlay: true}
	for _, p := range t.Peers {
		taken[p.Underlay] = true
	}
	clashes := func(f PeerNode) bool {
		if taken[f.Underlay] || f.Subnet.Overlaps(t.Subnet) {
			return true
		}
		for _, p := range t.Peers {
			if f.Subnet.Overlaps(p.Subnet) {
				return true
			}
		}
		return false
	}
	for i := 0; len(all) < t.Routes && i < MaxRoutes; i++ {
		if f := FillerPeer(i); !clashes(f) {
			all = append(all, f)
		}
	}
	return all
}

// Ports lists every local port: host first, then the pods.
func (t *Topology) Ports() []Endpoint {
	return append([]Endpoint{t.Host}, t.Pods...)
}

func (t *Topology) check() error {
	if t.Routes > MaxRoutes {
		return fmt.Errorf("topology: %d routes: at most %d", t.Routes, MaxRoutes)
	}
	if !t.Underlay.Is4() {
		return fmt.Errorf("topology: underlay %v is not IPv4", t.Underlay)
	}
	return nil
}

// NewSwitch builds the node's switch: ports, static neighbours (from the
// ports' addresses) and the peer routes.
func (t *Topology) NewSwitch() (*vswitch.Switch, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	sw, err := vswitch.New(vswitch.Config{RouterMAC: t.RouterMAC, Subnet: t.Subnet, Gateway: t.Gateway, MTU: t.MTU})
	if err != nil {
		return nil, fmt.Errorf("topology: new switch: %w", err)
	}
	if err := sw.AddPort(vswitch.PortConfig{ID: t.OverlayPort, Kind: vswitch.PortOverlay}); err != nil {
		return nil, fmt.Errorf("topology: overlay port: %w", err)
	}
	for _, e := range t.Ports() {
		if err := sw.AddPort(vswitch.PortConfig{ID: e.Port, Kind: e.Kind, MAC: e.MAC, IPv4: e.IP}); err != nil {
			return nil, fmt.Errorf("topology: port %d: %w", e.Port, err)
		}
	}
	peers := t.AllPeers()
	routes := make([]vswitch.Route, len(peers))
	for i, p := range peers {
		routes[i] = vswitch.Route{Prefix: p.Subnet, Kind: vswitch.RoutePeer, Peer: p.Underlay, PeerMAC: p.RouterMAC}
	}
	if err := sw.SetRoutes(routes); err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	return sw, nil
}

// NewPeerTable builds the peer table decapsulation trusts.
func (t *Topology) NewPeerTable() (*overlay.PeerTable, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	peers := t.AllPeers()
	ps := make([]overlay.Peer, len(peers))
	for i, p := range peers {
		ps[i] = overlay.Peer{Name: p.Name, Underlay: p.Underlay, RouterMAC: p.RouterMAC, Subnet: p.Subnet, VNI: t.VNI}
	}
	pt := new(overlay.PeerTable)
	if err := pt.Set(ps); err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	return pt, nil
}

// Ingress says where a captured frame enters the node: from the underlay
// (an IPv4 frame to our underlay address: it goes through decapsulation,
// which refuses what is not VXLAN for us) or from a local port, chosen by
// the frame's source MAC. A frame whose source MAC is no port's (or that is
// too short to have one) enters on the host port: the node's own TAP is
// the one trusted port, where any sender may appear.
func (t *Topology) Ingress(frame []byte) (port vswitch.PortID, underlay bool) {
	if len(frame) >= packet.EthHdrLen+packet.IPv4MinHdrLen && packet.EthType(frame) == packet.EtherTypeIPv4 {
		ip := frame[packet.EthHdrLen:]
		if ip[0]>>4 == 4 && [4]byte(ip[packet.IPv4OffDst:packet.IPv4OffDst+4]) == t.Underlay.As4() {
			return t.OverlayPort, true
		}
	}
	if len(frame) >= 12 {
		src := packet.EthSrc(frame)
		for _, e := range t.Pods {
			if e.MAC == src {
				return e.Port, false
			}
		}
	}
	return t.Host.Port, false
}
