package bench

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// A capture taken on the underlay (between nodes) holds VXLAN frames in
// both directions of every node it saw. One node of it is replayed: the
// frames it received enter through decapsulation as captured; the frames
// it sent are turned back into what its pods wrote to their TAPs, so they
// cross the node's pipeline the way they did when they were captured
// (pod port -> route -> encap). See AsNode.

// vxlanPorts are the UDP destination ports that mark a VXLAN frame: the
// IANA port (weft's default) and the Linux kernel's default.
var vxlanPorts = [...]uint16{overlay.DefaultPort, 8472}

// CaptureSubnetBits is the prefix length of the node subnets AsNode
// derives from the inner addresses: weft's default node subnet size.
const CaptureSubnetBits = 24

// SkipReason says why AsNode left a captured frame out of the node's
// replay.
type SkipReason uint8

const (
	SkipNone SkipReason = iota
	// SkipARP: underlay ARP (the nodes finding each other's MACs).
	SkipARP
	// SkipIPv6: underlay IPv6 (link-local neighbour discovery, MLD).
	SkipIPv6
	// SkipOtherEtherType: neither IPv4, ARP nor IPv6 (LLDP, STP, ...).
	SkipOtherEtherType
	// SkipNotVXLAN: IPv4 on the underlay, but not UDP to a VXLAN port
	// (or a fragment, or malformed).
	SkipNotVXLAN
	// SkipOtherNodes: VXLAN between two other nodes.
	SkipOtherNodes
	// SkipFromNodeMalformed: VXLAN from the node with a VXLAN header or
	// inner frame that cannot be what a port sent.
	SkipFromNodeMalformed
	// SkipFromNodeNotIPv4: VXLAN from the node whose inner frame is not
	// IPv4 (the node's router only sends routed IPv4 to peers).
	SkipFromNodeNotIPv4
	// SkipFromRouter: VXLAN from the node that its router made itself
	// (an echo reply or ICMP error from the gateway address): no port sent
	// it, so there is nothing to replay through a port.
	SkipFromRouter
	// SkipFromNodeUnknownSource: VXLAN from the node whose inner source
	// address is not in the node's subnet.
	SkipFromNodeUnknownSource
	// SkipTooLong: longer than MaxFrameLen.
	SkipTooLong

	// NumSkipReasons is the number of SkipReason values, SkipNone included.
	NumSkipReasons int = iota
)

var skipReasonNames = [NumSkipReasons]string{
	SkipNone:                  "none",
	SkipARP:                   "underlay ARP",
	SkipIPv6:                  "underlay IPv6",
	SkipOtherEtherType:        "underlay, other EtherType",
	SkipNotVXLAN:              "underlay IPv4, not VXLAN",
	SkipOtherNodes:            "VXLAN between other nodes",
	SkipFromNodeMalformed:     "VXLAN from the node, malformed",
	SkipFromNodeNotIPv4:       "VXLAN from the node, inner frame not IPv4",
	SkipFromRouter:            "VXLAN from the node, made by its router (gateway address)",
	SkipFromNodeUnknownSource: "VXLAN from the node, inner source outside its subnet",
	SkipTooLong:               fmt.Sprintf("longer than %d bytes", MaxFrameLen),
}

func (r SkipReason) String() string {
	if int(r) < NumSkipReasons {
		return skipReasonNames[r]
	}
	return fmt.Sprintf("skip(%d)", uint8(r))
}

// UnderlayCapture is a capture of underlay VXLAN traffic seen as one node
// of it (AsNode): that node's topology and the frames it read.
type UnderlayCapture struct {
	// Topology is the node under test: its underlay address, subnet,
	// router MAC and one port per local address the capture shows, and a
	// peer for every other VXLAN endpoint.
	Topology *Topology
	// Frames are the node's ingress frames, in capture order: every
	// VXLAN frame to the node as captured (replayed through decapsulation
	// and the overlay port), and for every VXLAN frame from the node the
	// TAP frame its pod (or host port) wrote: the inner frame with the
	// port's MAC as source, the router MAC as destination and the TTL
	// the node's routing took off given back (replayed through the port,
	// routing and encapsulation).
	Frames [][]byte
	// Index maps Frames to the capture: Frames[i] comes from captured
	// frame Index[i].
	Index []int
	// ToNode and FromNode count the VXLAN frames in Frames by direction.
	ToNode, FromNode int
	// Skipped counts the captured frames left out, by reason.
	Skipped [NumSkipReasons]int
	// UnknownPeers are VXLAN endpoints left out of the peer table because
	// their frames show no usable router MAC or IPv4 subnet; their frames
	// to the node stay in the replay, and decapsulation refuses them
	// (unknown_peer) as the node would a sender without a lease.
	UnknownPeers []netip.Addr
}

// SkippedTotal returns the number of captured frames left out.
func (c *UnderlayCapture) SkippedTotal() int {
	n := 0
	for _, k := range c.Skipped {
		n += k
	}
	return n
}

// VXLANEndpoint is an underlay address and the VXLAN frames it sent and
// received in a capture.
type VXLANEndpoint struct {
	Addr           netip.Addr
	Sent, Received int
}

// VXLANEndpoints lists the underlay addresses of a capture's VXLAN
// frames, the most received first (ties: by address).
func VXLANEndpoints(frames [][]byte) []VXLANEndpoint {
	byAddr := map[netip.Addr]*VXLANEndpoint{}
	get := func(a netip.Addr) *VXLANEndpoint {
		e := byAddr[a]
		if e == nil {
			e = &VXLANEndpoint{Addr: a}
			byAddr[a] = e
		}
		return e
	}
	for _, f := range frames {
		v, ok := parseUnderlayVXLAN(f)
		if !ok {
			continue
		}
		get(v.src).Sent++
		get(v.dst).Received++
	}
	out := make([]VXLANEndpoint, 0, len(byAddr))
	for _, e := range byAddr {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b VXLANEndpoint) int {
		if c := cmp.Compare(b.Received, a.Received); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	return out
}

// underlayVXLAN is a captured frame that is UDP to a VXLAN port.
type underlayVXLAN struct {
	outerSrcMAC, outerDstMAC packet.MAC
	src, dst                 netip.Addr
	port                     uint16
	vni                      uint32
	headerOK                 bool   // the VXLAN header parses (overlay.ParseHeader)
	inner                    []byte // the inner frame when headerOK
}

// parseUnderlayVXLAN recognises an IPv4 frame carrying UDP to a VXLAN
// port, unfragmented.
func parseUnderlayVXLAN(f []byte) (v underlayVXLAN, ok bool) {
	if len(f) < packet.EthHdrLen+packet.IPv4MinHdrLen+packet.UDPHdrLen || packet.EthType(f) != packet.EtherTypeIPv4 {
		return v, false
	}
	ip := packet.IPv4(f[packet.EthHdrLen:])
	if !ip.Valid() || ip.Proto() != packet.IPProtoUDP || ip.IsFragment() {
		return v, false
	}
	l4 := ip[ip.HeaderLen():ip.TotalLen()]
	if len(l4) < packet.UDPHdrLen {
		return v, false
	}
	port := binary.BigEndian.Uint16(l4[packet.UDPOffDstPort:])
	if !slices.Contains(vxlanPorts[:], port) {
		return v, false
	}
	ulen := int(binary.BigEndian.Uint16(l4[packet.UDPOffLen:]))
	if ulen < packet.UDPHdrLen || ulen > len(l4) {
		return v, false
	}
	v = underlayVXLAN{
		outerSrcMAC: packet.EthSrc(f), outerDstMAC: packet.EthDst(f),
		src: ip.Src(), dst: ip.Dst(), port: port,
	}
	payload := l4[packet.UDPHdrLen:ulen]
	vni, reason := overlay.ParseHeader(payload)
	if reason == overlay.DropNone && len(payload) >= overlay.HeaderLen+packet.EthHdrLen {
		v.vni, v.headerOK, v.inner = vni, true, payload[overlay.HeaderLen:]
	}
	return v, true
}

// innerIPv4 returns the inner frame's IPv4 header when it has a valid one.
func innerIPv4(inner []byte) (packet.IPv4, bool) {
	if len(inner) < packet.EthHdrLen+packet.IPv4MinHdrLen || packet.EthType(inner) != packet.EtherTypeIPv4 {
		return nil, false
	}
	ip := packet.IPv4(inner[packet.EthHdrLen:])
	return ip, ip.Valid()
}

// tally counts values and returns the most frequent (ties: the one seen
// first), so that a stray frame does not decide a node's identity.
type tally[K comparable] struct {
	order []K
	n     map[K]int
}

func (t *tally[K]) add(k K) {
	if t.n == nil {
		t.n = map[K]int{}
	}
	if t.n[k] == 0 {
		t.order = append(t.order, k)
	}
	t.n[k]++
}

func (t *tally[K]) top() (k K, ok bool) {
	best := 0
	for _, c := range t.order {
		if t.n[c] > best {
			k, best = c, t.n[c]
		}
	}
	return k, best > 0
}

// firstTop returns the most frequent value of the first tally that has
// any: direct evidence before indirect.
func firstTop[K comparable](ts ...*tally[K]) (K, bool) {
	for _, t := range ts {
		if k, ok := t.top(); ok {
			return k, true
		}
	}
	var zero K
	return zero, false
}

// endpointEvidence is what a capture says about one underlay endpoint.
type endpointEvidence struct {
	// From the frames it sent: inner source MAC (its router MAC) and
	// inner source /24 (its subnet), outer source MAC (its NIC) and outer
	// destination MAC (its next hop).
	sentRouterMAC, sentDstRouterMAC tally[packet.MAC]
	sentSubnet                      tally[netip.Prefix]
	sentNICMAC, sentNextHopMAC      tally[packet.MAC]
	// From the frames it received: inner destination MAC and /24, outer
	// destination MAC and outer source MAC.
	recvRouterMAC              tally[packet.MAC]
	recvSubnet                 tally[netip.Prefix]
	recvNICMAC, recvPrevHopMAC tally[packet.MAC]
	vni                        tally[uint32]
	port                       tally[uint16]
	maxInnerIP                 int
}

func subnetOf(a [4]byte) netip.Prefix {
	p, _ := netip.AddrFrom4(a).Prefix(CaptureSubnetBits)
	return p
}

// TopologyFromCapture derives the topology of the node whose underlay
// address is nodeUnderlay from a capture of underlay VXLAN traffic; an
// invalid nodeUnderlay picks the VXLAN destination seen most. See AsNode.
func TopologyFromCapture(frames [][]byte, nodeUnderlay netip.Addr) (*Topology, error) {
	c, err := AsNode(frames, nodeUnderlay)
	if err != nil {
		return nil, err
	}
	return c.Topology, nil
}

// AsNode takes a capture of underlay traffic — VXLAN between nodes, as
// captured on the underlay bridge or a node's NIC — and returns what the
// node whose underlay address is nodeUnderlay read (an invalid
// nodeUnderlay picks the VXLAN destination seen most):
//
//   - The node: our subnet is the /24 (CaptureSubnetBits) of the inner
//     destinations of the VXLAN frames to us (or else of the inner
//     sources of the frames from us), the router MAC their inner
//     destination MAC (or the inner source MAC of frames from us), the
//     gateway .1. The VNI and UDP port are those of our VXLAN frames; the
//     underlay MAC is our outer source MAC and the next hop's MAC the
//     outer destination of our frames. The overlay MTU is the switch
//     default, or the largest inner IPv4 packet if that is larger.
//   - Local ports: the host port weft0 (.2, MAC from the router MAC as
//     the node derives it: 0a:fd:...) and a pod port for every other
//     address of our subnet the inner frames show (not .0, .1 or the
//     broadcast), in address order, with the node's pod MAC 0a:58:<IPv4>:
//     the inner frames on the underlay carry router MACs only.
//   - Peers: every other VXLAN endpoint, with the router MAC and the /24
//     of the inner sources of the frames it sends (or else the inner
//     destination MAC and /24 of the frames sent to it).
//
// Frames: see UnderlayCapture. Everything else is skipped and counted by
// reason. It is an error when the node sends and receives no VXLAN, when
// its subnet cannot be found, or when two nodes claim one subnet.
func AsNode(frames [][]byte, nodeUnderlay netip.Addr) (*UnderlayCapture, error) {
	eps := VXLANEndpoints(frames)
	if len(eps) == 0 {
		return nil, errors.New("as node: the capture holds no VXLAN (IPv4 UDP to port 4789 or 8472)")
	}
	node := nodeUnderlay
	if !node.IsValid() {
		node = eps[0].Addr
	}
	node = node.Unmap()
	if !slices.ContainsFunc(eps, func(e VXLANEndpoint) bool { return e.Addr == node }) {
		return nil, fmt.Errorf("as node %v: it sends and receives no VXLAN in the capture (endpoints: %s)", node, endpointList(eps))
	}

	ev := map[netip.Addr]*endpointEvidence{}
	evOf := func(a netip.Addr) *endpointEvidence {
		e := ev[a]
		if e == nil {
			e = &endpointEvidence{}
			ev[a] = e
		}
		return e
	}
	for _, f := range frames {
		v, ok := parseUnderlayVXLAN(f)
		if !ok || v.src == v.dst {
			continue
		}
		s, d := evOf(v.src), evOf(v.dst)
		s.sentNICMAC.add(v.outerSrcMAC)
		s.sentNextHopMAC.add(v.outerDstMAC)
		d.recvNICMAC.add(v.outerDstMAC)
		d.recvPrevHopMAC.add(v.outerSrcMAC)
		s.port.add(v.port)
		d.port.add(v.port)
		if !v.headerOK {
			continue
		}
		s.vni.add(v.vni)
		d.vni.add(v.vni)
		s.sentRouterMAC.add(packet.EthSrc(v.inner))
		s.sentDstRouterMAC.add(packet.EthDst(v.inner))
		d.recvRouterMAC.add(packet.EthDst(v.inner))
		if ip, ok := innerIPv4(v.inner); ok {
			s.sentSubnet.add(subnetOf(ip.Src4()))
			d.recvSubnet.add(subnetOf(ip.Dst4()))
			n := int(ip.TotalLen())
			s.maxInnerIP = max(s.maxInnerIP, n)
			d.maxInnerIP = max(d.maxInnerIP, n)
		}
	}

	me := evOf(node)
	t := &Topology{OverlayPort: 0}
	var ok bool
	if t.Subnet, ok = firstTop(&me.recvSubnet, &me.sentSubnet); !ok {
		return nil, fmt.Errorf("as node %v: no IPv4 inside its VXLAN frames, so its pod subnet is unknown", node)
	}
	if t.RouterMAC, ok = firstTop(&me.recvRouterMAC, &me.sentRouterMAC); !ok || !usableMAC(t.RouterMAC) {
		return nil, fmt.Errorf("as node %v: no usable router MAC in its VXLAN frames (found %v)", node, t.RouterMAC)
	}
	t.Gateway = t.Subnet.Addr().Next()
	t.Underlay = node
	t.UnderlayMAC, _ = firstTop(&me.sentNICMAC, &me.recvNICMAC)
	t.UnderlayGatewayMAC, _ = firstTop(&me.sentNextHopMAC, &me.recvPrevHopMAC)
	t.VNI, _ = me.vni.top()
	t.VXLANPort, _ = me.port.top()
	if me.maxInnerIP > vswitch.DefaultMTU {
		t.MTU = me.maxInnerIP
	}
	hostMAC := t.RouterMAC
	hostMAC[1] = 0xfd // node.HostMAC's derivation from the router MAC
	t.Host = Endpoint{Port: 1, Kind: vswitch.PortHost, MAC: hostMAC, IP: t.Gateway.Next()}

	// Peers: every other endpoint, in address order.
	others := make([]netip.Addr, 0, len(ev))
	for a := range ev {
		if a != node {
			others = append(others, a)
		}
	}
	slices.SortFunc(others, netip.Addr.Compare)
	claimed := map[netip.Prefix]netip.Addr{t.Subnet: node}
	var unknown []netip.Addr
	for _, a := range others {
		e := ev[a]
		subnet, ok1 := firstTop(&e.sentSubnet, &e.recvSubnet)
		mac, ok2 := firstTop(&e.sentRouterMAC, &e.recvRouterMAC)
		if !ok1 || !ok2 || !usableMAC(mac) || !a.Is4() {
			unknown = append(unknown, a)
			continue
		}
		if other, dup := claimed[subnet]; dup {
			return nil, fmt.Errorf("as node %v: nodes %v and %v both send from %v", node, other, a, subnet)
		}
		claimed[subnet] = a
		t.Peers = append(t.Peers, PeerNode{Name: "node-" + a.String(), Subnet: subnet, Underlay: a, RouterMAC: mac})
	}
	t.Routes = len(t.Peers)

	c := &UnderlayCapture{Topology: t, UnknownPeers: unknown}
	// Local addresses: what the inner frames to and from us carry.
	local := map[netip.Addr]bool{}
	bcast := lastAddr(t.Subnet)
	addLocal := func(a [4]byte) {
		ip := netip.AddrFrom4(a)
		if t.Subnet.Contains(ip) && ip != t.Subnet.Addr() && ip != t.Gateway && ip != t.Host.IP && ip != bcast {
			local[ip] = true
		}
	}
	for _, f := range frames {
		v, ok := parseUnderlayVXLAN(f)
		if !ok || !v.headerOK {
			continue
		}
		ip, ok := innerIPv4(v.inner)
		switch {
		case !ok:
		case v.dst == node:
			addLocal(ip.Dst4())
		case v.src == node:
			addLocal(ip.Src4())
		}
	}
	pods := make([]netip.Addr, 0, len(local))
	for a := range local {
		pods = append(pods, a)
	}
	slices.SortFunc(pods, netip.Addr.Compare)
	if len(pods) > vswitch.MaxPorts-2 {
		return nil, fmt.Errorf("as node %v: %d local addresses, more than the switch's %d ports", node, len(pods), vswitch.MaxPorts-2)
	}
	for i, a := range pods {
		a4 := a.As4()
		t.Pods = append(t.Pods, Endpoint{
			Port: vswitch.PortID(2 + i), Kind: vswitch.PortPod,
			MAC: packet.MAC{0x0a, 0x58, a4[0], a4[1], a4[2], a4[3]}, IP: a,
		})
	}
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("as node %v: %w", node, err)
	}

	for i, f := range frames {
		if len(f) > MaxFrameLen {
			c.Skipped[SkipTooLong]++
			continue
		}
		v, isVXLAN := parseUnderlayVXLAN(f)
		switch {
		case !isVXLAN:
			c.Skipped[classifyNonVXLAN(f)]++
		case v.dst == node && v.src != node:
			c.Frames = append(c.Frames, f)
			c.Index = append(c.Index, i)
			c.ToNode++
		case v.src == node && v.dst != node:
			tap, reason := c.tapFrame(v)
			if reason != SkipNone {
				c.Skipped[reason]++
				continue
			}
			c.Frames = append(c.Frames, tap)
			c.Index = append(c.Index, i)
			c.FromNode++
		default:
			c.Skipped[SkipOtherNodes]++
		}
	}
	return c, nil
}

// usableMAC reports whether m can be a router MAC: unicast, not zero.
func usableMAC(m packet.MAC) bool { return m != packet.MAC{} && !m.IsMulticast() }

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := binary.BigEndian.Uint32(a[:]) | host
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

func classifyNonVXLAN(f []byte) SkipReason {
	if len(f) < packet.EthHdrLen {
		return SkipOtherEtherType
	}
	switch packet.EthType(f) {
	case packet.EtherTypeARP:
		return SkipARP
	case packet.EtherTypeIPv6:
		return SkipIPv6
	case packet.EtherTypeIPv4:
		return SkipNotVXLAN
	}
	return SkipOtherEtherType
}

// tapFrame turns the inner frame of a VXLAN frame the node sent back into
// the frame its port wrote to the TAP before the router forwarded it.
func (c *UnderlayCapture) tapFrame(v underlayVXLAN) ([]byte, SkipReason) {
	t := c.Topology
	if !v.headerOK {
		return nil, SkipFromNodeMalformed
	}
	ip, ok := innerIPv4(v.inner)
	if !ok {
		if len(v.inner) >= packet.EthHdrLen && packet.EthType(v.inner) != packet.EtherTypeIPv4 {
			return nil, SkipFromNodeNotIPv4
		}
		return nil, SkipFromNodeMalformed
	}
	src := ip.Src()
	var port *Endpoint
	switch {
	case src == t.Gateway:
		return nil, SkipFromRouter
	case src == t.Host.IP:
		port = &t.Host
	default:
		for i := range t.Pods {
			if t.Pods[i].IP == src {
				port = &t.Pods[i]
				break
			}
		}
	}
	if port == nil {
		return nil, SkipFromNodeUnknownSource
	}
	// The inner frame ends where its IPv4 packet does: VXLAN carries no
	// Ethernet padding, and a TAP read returns the packet's length.
	n := packet.EthHdrLen + int(ip.TotalLen())
	f := append([]byte(nil), v.inner[:n]...)
	packet.PutEth(f, t.RouterMAC, port.MAC, packet.EtherTypeIPv4)
	tip := packet.IPv4(f[packet.EthHdrLen:])
	if ttl := tip.TTL(); ttl < 255 {
		old := binary.BigEndian.Uint16(tip[packet.IPv4OffTTL:])
		tip[packet.IPv4OffTTL] = ttl + 1
		tip.SetChecksum(packet.UpdateChecksum16(tip.Checksum(), old, binary.BigEndian.Uint16(tip[packet.IPv4OffTTL:])))
	}
	return f, SkipNone
}

func endpointList(eps []VXLANEndpoint) string {
	parts := make([]string, len(eps))
	for i, e := range eps {
		parts[i] = fmt.Sprintf("%v (%d sent, %d received)", e.Addr, e.Sent, e.Received)
	}
	return strings.Join(parts, ", ")
}

// WriteSummary prints the derived node, its ports and peers, and what
// became of the captured frames.
func (c *UnderlayCapture) WriteSummary(w io.Writer) {
	t := c.Topology
	fmt.Fprintf(w, "node %v: subnet %v, router MAC %v, VXLAN VNI %d UDP %d, underlay MAC %v, next hop MAC %v",
		t.Underlay, t.Subnet, t.RouterMAC, t.VNI, t.VXLANPort, t.UnderlayMAC, t.UnderlayGatewayMAC)
	if t.MTU != 0 {
		fmt.Fprintf(w, ", overlay MTU %d", t.MTU)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  port %d host %v (%v)\n", t.Host.Port, t.Host.IP, t.Host.MAC)
	const show = 8
	for i, p := range t.Pods {
		if i == show {
			fmt.Fprintf(w, "  ... %d more pods\n", len(t.Pods)-show)
			break
		}
		fmt.Fprintf(w, "  port %d pod %v (%v)\n", p.Port, p.IP, p.MAC)
	}
	for _, p := range t.Peers {
		fmt.Fprintf(w, "  peer %v: subnet %v, router MAC %v\n", p.Underlay, p.Subnet, p.RouterMAC)
	}
	for _, a := range c.UnknownPeers {
		fmt.Fprintf(w, "  peer %v left out: no IPv4 subnet or router MAC in its frames (its VXLAN to the node: decap drop unknown_peer)\n", a)
	}
	fmt.Fprintf(w, "  %d VXLAN frames to the node (decap -> overlay port), %d from it (replayed from its ports' TAPs -> route -> encap), %d captured frames skipped",
		c.ToNode, c.FromNode, c.SkippedTotal())
	sep := ": "
	for r, n := range c.Skipped {
		if n != 0 {
			fmt.Fprintf(w, "%s%s %d", sep, SkipReason(r), n)
			sep = ", "
		}
	}
	fmt.Fprintln(w)
}
