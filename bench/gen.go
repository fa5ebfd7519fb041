package bench

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/bench/internal/outerframe"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// Frame is one generated frame with what the generator means to happen to
// it once the switch is in steady state (every local MAC learned).
type Frame struct {
	Class  Class
	Data   []byte
	Expect Expect
}

// Expect is the intended fate of a generated frame.
type Expect struct {
	// Underlay: the frame is a full outer VXLAN frame from the underlay.
	Underlay bool
	// DecapDrop: decapsulation refuses it (and the switch never sees it).
	DecapDrop outerframe.DropReason
	// The switch's verdict: Port is the output port of a delivery and the
	// ingress port of a flood, Peer the underlay address of an encap.
	Action vswitch.Action
	Reason vswitch.DropReason
	Reply  bool
	Port   vswitch.PortID
	Peer   netip.Addr
}

// Class names what a generated frame is, for counting a mix.
type Class string

// Classes of regular traffic are "<proto>/<path>": path l2 (between local
// ports), cross-out (local port to a peer's pod, routed and encapsulated)
// or cross-in (from a peer's pod, a VXLAN frame from the underlay).
const (
	ClassARPGateway   Class = "arp/gateway-request"
	ClassARPRequest   Class = "arp/pod-request"
	ClassARPReply     Class = "arp/pod-reply"
	ClassARPToRouter  Class = "arp/reply-to-router"
	ClassEchoGateway  Class = "icmp/echo-gateway"
	ClassEchoPeerToGW Class = "icmp/echo-peer-to-gateway"

	ClassUnknownUnicast Class = "edge/unknown-unicast"
	ClassHairpin        Class = "edge/hairpin"
	ClassTTLExpired     Class = "edge/ttl-expired"
	ClassNoRoute        Class = "edge/no-route"
	ClassFragNeeded     Class = "edge/frag-needed"
	ClassTooBig         Class = "edge/too-big-no-df"
	ClassNeighMiss      Class = "edge/neighbour-miss"
	ClassIPv6ToRouter   Class = "edge/ipv6-to-router"
	ClassMartian        Class = "edge/martian"

	ClassRunt           Class = "bad/runt"
	ClassTruncatedIPv4  Class = "bad/truncated-ipv4"
	ClassBadIPVersion   Class = "bad/ip-version"
	ClassBadIPChecksum  Class = "bad/ip-checksum"
	ClassVLAN           Class = "bad/vlan-tagged"
	ClassUnknownEthType Class = "bad/unknown-ethertype"
	ClassMulticastSrc   Class = "bad/multicast-src-mac"
	ClassSpoofedIP      Class = "bad/spoofed-ip"
	ClassSpoofedARP     Class = "bad/spoofed-arp"

	ClassVXLANWrongVNI     Class = "vxlan-bad/wrong-vni"
	ClassVXLANUnknownPeer  Class = "vxlan-bad/unknown-peer"
	ClassVXLANBadFlags     Class = "vxlan-bad/flags"
	ClassVXLANReservedBits Class = "vxlan-bad/reserved-bits"
	ClassVXLANTruncated    Class = "vxlan-bad/truncated"
	ClassVXLANBadChecksum  Class = "vxlan-bad/outer-checksum"
	ClassVXLANNotVXLAN     Class = "vxlan-bad/not-vxlan"
	ClassVXLANFragment     Class = "vxlan-bad/outer-fragment"

	ClassOverlayNotRouter Class = "overlay-bad/not-router-mac"
	ClassOverlayARP       Class = "overlay-bad/arp"
	ClassOverlayTTL       Class = "overlay-bad/ttl-expired"
	ClassOverlayHairpin   Class = "overlay-bad/peer-to-peer"
	ClassOverlayNeighMiss Class = "overlay-bad/neighbour-miss"
)

// MixSpec sizes the realistic mix. Every conversation runs between a local
// endpoint (pod or host) and another local pod or a peer's pod.
type MixSpec struct {
	Seed     uint64
	L2TCP    int // TCP conversations between local pods
	L2UDP    int // UDP conversations between local pods
	CrossTCP int // TCP conversations between local pods and peers' pods
	CrossUDP int // UDP conversations between local pods and peers' pods
	HostTCP  int // TCP conversations of the host port, each way (to a pod, to a peer's pod)
	Pings    int // echo exchanges per local pod: with the gateway, a local pod, a peer's pod
}

// DefaultMix is the mix committed as testdata/mix.pcap.
var DefaultMix = MixSpec{Seed: 1, L2TCP: 6, L2UDP: 4, CrossTCP: 12, CrossUDP: 8, HostTCP: 2, Pings: 1}

// gen builds frames for one topology. Randomness comes from a fixed
// SplitMix64 so that the committed pcaps are reproducible on any Go version.
type gen struct {
	t     *Topology
	rnd   uint64
	ipID  uint16
	flows uint16
}

func newGen(t *Topology, seed uint64) *gen { return &gen{t: t, rnd: seed} }

func (g *gen) next() uint64 {
	g.rnd += 0x9e3779b97f4a7c15
	z := g.rnd
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// intn returns a number in [0, n).
func (g *gen) intn(n int) int { return int(g.next() % uint64(n)) }

// side is one end of a conversation: a local port, or a pod behind a peer.
type side struct {
	ip    netip.Addr
	local *Endpoint
	peer  *PeerNode
}

func (t *Topology) localSide(e *Endpoint) side { return side{ip: e.IP, local: e} }

func (t *Topology) remoteSide(p *PeerNode, host byte) side {
	return side{ip: hostIn(p.Subnet, host), peer: p}
}

// gatewaySide is the router as the destination of a frame to the gateway
// address: a local endpoint with the router MAC. ipFrame's expectation for
// it is a delivery to port 0; callers set the real one (an answer).
func (t *Topology) gatewaySide() side {
	return side{ip: t.Gateway, local: &Endpoint{MAC: t.RouterMAC}}
}

// hostIn returns the address with host part h in prefix p.
func hostIn(p netip.Prefix, h byte) netip.Addr {
	a := p.Addr().As4()
	binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])|uint32(h))
	return netip.AddrFrom4(a)
}

func path(src, dst side) string {
	switch {
	case src.local != nil && dst.local != nil:
		return "l2"
	case src.local != nil:
		return "cross-out"
	default:
		return "cross-in"
	}
}

var serializeOpts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, ls...); err != nil {
		// Only a generator bug (a layer that cannot serialize) gets here.
		panic(fmt.Sprintf("bench: serialize: %v", err))
	}
	return append([]byte(nil), buf.Bytes()...)
}

func (g *gen) ipv4(src, dst netip.Addr, ttl uint8, proto layers.IPProtocol, df bool) *layers.IPv4 {
	g.ipID++
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: proto, Id: g.ipID,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	return ip
}

func eth(dst, src packet.MAC, et layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{DstMAC: dst[:], SrcMAC: src[:], EthernetType: et}
}

// ipFrame builds an IPv4 frame from src to dst as it appears on the wire
// where the node sees it: from a local port (to the other port's MAC, or
// to the router MAC when dst is a peer's pod) or, from a peer's pod, as a
// VXLAN frame from the underlay whose inner frame the peer's router sent.
// The expectation follows from the path.
func (g *gen) ipFrame(src, dst side, proto string, ttl uint8, l4 ...gopacket.SerializableLayer) Frame {
	t := g.t
	ipProto := layers.IPProtocolTCP
	switch proto {
	case "udp":
		ipProto = layers.IPProtocolUDP
	case "icmp":
		ipProto = layers.IPProtocolICMPv4
	}
	if src.local == nil && ttl > 1 {
		ttl-- // the peer's router forwarded it
	}
	ip := g.ipv4(src.ip, dst.ip, ttl, ipProto, true)
	for _, l := range l4 {
		if n, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			_ = n.SetNetworkLayerForChecksum(ip)
		}
	}
	f := Frame{Class: Class(proto + "/" + path(src, dst))}
	var e *layers.Ethernet
	switch {
	case src.local != nil && dst.local != nil:
		e = eth(dst.local.MAC, src.local.MAC, layers.EthernetTypeIPv4)
		f.Expect = Expect{Action: vswitch.ActionDeliver, Port: dst.local.Port}
	case src.local != nil:
		e = eth(t.RouterMAC, src.local.MAC, layers.EthernetTypeIPv4)
		f.Expect = Expect{Action: vswitch.ActionEncap, Peer: dst.peer.Underlay}
	default:
		e = eth(t.RouterMAC, src.peer.RouterMAC, layers.EthernetTypeIPv4)
		f.Expect = Expect{Underlay: true, Action: vswitch.ActionDeliver, Port: dst.local.Port}
	}
	inner := serialize(append([]gopacket.SerializableLayer{e, ip}, l4...)...)
	if src.local == nil {
		f.Data = g.vxlan(src.peer.Underlay, inner, vxlanOpts{})
	} else {
		f.Data = inner
	}
	return f
}

// vxlanOpts bends an outer frame for the malformed cases.
type vxlanOpts struct {
	vni      uint32 // 0 = the topology's
	flags    byte   // 0 = the I flag only
	dstPort  uint16 // 0 = the topology's VXLAN port
	fragment bool
}

// vxlan wraps inner in a full outer frame from underlay address from to
// our underlay address, as the peer's kernel or weftd sends it: outer
// source port hashed from the inner flow, UDP checksum 0, DF.
func (g *gen) vxlan(from netip.Addr, inner []byte, o vxlanOpts) []byte {
	t := g.t
	vni := t.VNI
	if o.vni != 0 {
		vni = o.vni
	}
	dport := t.VXLANPort
	if o.dstPort != 0 {
		dport = o.dstPort
	}
	ip := g.ipv4(from, t.Underlay, 63, layers.IPProtocolUDP, !o.fragment)
	if o.fragment {
		ip.Flags = layers.IPv4MoreFragments
	}
	udp := &layers.UDP{SrcPort: layers.UDPPort(overlay.FlowSrcPort(inner, 0, 0)), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	b := serialize(eth(t.UnderlayMAC, t.UnderlayGatewayMAC, layers.EthernetTypeIPv4), ip, udp,
		&layers.VXLAN{ValidIDFlag: true, VNI: vni}, gopacket.Payload(inner))
	udpOff := packet.EthHdrLen + packet.IPv4MinHdrLen
	binary.BigEndian.PutUint16(b[udpOff+packet.UDPOffChecksum:], 0)
	if o.flags != 0 {
		b[udpOff+packet.UDPHdrLen] = o.flags
	}
	return b
}

// payload returns n pattern bytes.
func (g *gen) payload(n int) gopacket.Payload {
	p := make([]byte, max(n, 0))
	s := byte(g.next())
	for i := range p {
		p[i] = s + byte(i)
	}
	return p
}

// Frame and payload sizes. Pods have MTU 1450 (a 1500-byte underlay minus
// VXLAN), so the largest frame a pod sends is 1464 bytes; with TCP
// timestamps the MSS is 1450 - 20 - 32.
const (
	podMTU      = vswitch.DefaultMTU
	maxPodFrame = podMTU + packet.EthHdrLen
	tcpTSHdrLen = 32
	mss         = podMTU - packet.IPv4MinHdrLen - tcpTSHdrLen
	udpOverhead = packet.EthHdrLen + packet.IPv4MinHdrLen + packet.UDPHdrLen
)

// imixFrameLen draws a frame length from simple IMIX (7:4:1 of small,
// medium, full-size frames), with some spread around each.
func (g *gen) imixFrameLen() int {
	switch r := g.intn(12); {
	case r < 7:
		return 64 + 2*g.intn(16) // ACK-sized to 94
	case r < 11:
		return 576 + g.intn(64)
	default:
		return maxPodFrame - g.intn(2)*g.intn(400)
	}
}

// tcpConv is one TCP connection's state while its frames are generated.
type tcpConv struct {
	g               *gen
	cli, srv        side
	cport, sport    uint16
	cseq, sseq, tsv uint32
	frames          []Frame
}

func (c *tcpConv) send(fromCli bool, syn, fin bool, n int) {
	src, dst, sp, dp, seq, ack := c.cli, c.srv, c.cport, c.sport, &c.cseq, c.sseq
	if !fromCli {
		src, dst, sp, dp, seq, ack = c.srv, c.cli, c.sport, c.cport, &c.sseq, c.cseq
	}
	c.tsv += 3
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp), Seq: *seq, Window: 502,
		SYN: syn, FIN: fin, ACK: !(syn && fromCli), PSH: n > 0}
	if tcp.ACK {
		tcp.Ack = ack
	}
	ts := make([]byte, 8)
	binary.BigEndian.PutUint32(ts, c.tsv)
	binary.BigEndian.PutUint32(ts[4:], c.tsv-1)
	if syn {
		tcp.Window = 64240
		tcp.Options = []layers.TCPOption{
			{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{mss >> 8, mss & 0xff}},
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		}
	} else {
		tcp.Options = []layers.TCPOption{
			{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts},
		}
	}
	*seq += uint32(n)
	if syn || fin {
		*seq++
	}
	c.frames = append(c.frames, c.g.ipFrame(src, dst, "tcp", 64, tcp, c.g.payload(n)))
}

// tcpConversation is a keep-alive connection: handshake, a few requests
// each answered with a response of up to 16 KiB (ACKed every second
// segment), then both FINs.
func (g *gen) tcpConversation(cli, srv side) []Frame {
	g.flows++
	c := &tcpConv{g: g, cli: cli, srv: srv, cport: 40000 + g.flows, sport: []uint16{80, 443, 8080, 6379}[g.intn(4)],
		cseq: uint32(g.next()), sseq: uint32(g.next()), tsv: uint32(g.next())}
	c.send(true, true, false, 0)
	c.send(false, true, false, 0)
	c.send(true, false, false, 0)
	for range 1 + g.intn(4) {
		c.send(true, false, false, 80+g.intn(500))
		resp := 200 + g.intn(16<<10)
		for seg := 0; resp > 0; seg++ {
			n := min(resp, mss)
			c.send(false, false, false, n)
			resp -= n
			if seg%2 == 1 || resp == 0 {
				c.send(true, false, false, 0)
			}
		}
	}
	c.send(true, false, true, 0)
	c.send(false, false, true, 0)
	c.send(true, false, false, 0)
	return c.frames
}

// udpConversation is request/response datagrams of IMIX sizes, like a
// DNS, RPC or media flow.
func (g *gen) udpConversation(cli, srv side) []Frame {
	g.flows++
	cport, sport := 40000+g.flows, []uint16{4000, 5201, 8125, 9000}[g.intn(4)]
	var fs []Frame
	for range 10 + g.intn(30) {
		req := &layers.UDP{SrcPort: layers.UDPPort(cport), DstPort: layers.UDPPort(sport)}
		fs = append(fs, g.ipFrame(cli, srv, "udp", 64, req, g.payload(g.imixFrameLen()-udpOverhead)))
		resp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(cport)}
		fs = append(fs, g.ipFrame(srv, cli, "udp", 64, resp, g.payload(g.imixFrameLen()-udpOverhead)))
	}
	return fs
}

func (g *gen) echo(src, dst side, reply bool, seq uint16) Frame {
	tc := layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0)
	if reply {
		tc = layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoReply, 0)
	}
	return g.ipFrame(src, dst, "icmp", 64, &layers.ICMPv4{TypeCode: tc, Id: 0x4242, Seq: seq}, g.payload(56))
}

// pingPair is an echo request and its reply.
func (g *gen) pingPair(a, b side, seq uint16) []Frame {
	return []Frame{g.echo(a, b, false, seq), g.echo(b, a, true, seq)}
}

func arpFrame(ethDst packet.MAC, op uint16, sha packet.MAC, spa netip.Addr, tha packet.MAC, tpa netip.Addr) []byte {
	return serialize(eth(ethDst, sha, layers.EthernetTypeARP), &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: op, SourceHwAddress: sha[:], SourceProtAddress: spa.AsSlice(), DstHwAddress: tha[:], DstProtAddress: tpa.AsSlice(),
	})
}

// control is the ARP and ping traffic of every local endpoint.
func (g *gen) control(spec MixSpec) [][]Frame {
	t := g.t
	var seqs [][]Frame
	locals := t.Ports()
	for i := range locals {
		e := &locals[i]
		seqs = append(seqs, []Frame{{Class: ClassARPGateway,
			Data:   arpFrame(packet.BroadcastMAC, packet.ARPOpRequest, e.MAC, e.IP, packet.MAC{}, t.Gateway),
			Expect: Expect{Action: vswitch.ActionDeliver, Port: e.Port, Reply: true}}})
	}
	for i := range t.Pods {
		a, b := &t.Pods[i], &t.Pods[(i+1)%len(t.Pods)]
		seqs = append(seqs, []Frame{
			{Class: ClassARPRequest, Data: arpFrame(packet.BroadcastMAC, packet.ARPOpRequest, a.MAC, a.IP, packet.MAC{}, b.IP),
				Expect: Expect{Action: vswitch.ActionFlood, Port: a.Port}},
			{Class: ClassARPReply, Data: arpFrame(a.MAC, packet.ARPOpReply, b.MAC, b.IP, a.MAC, a.IP),
				Expect: Expect{Action: vswitch.ActionDeliver, Port: a.Port}},
		})
		if i%2 == 0 {
			seqs = append(seqs, []Frame{{Class: ClassARPToRouter,
				Data:   arpFrame(t.RouterMAC, packet.ARPOpReply, a.MAC, a.IP, t.RouterMAC, t.Gateway),
				Expect: Expect{Action: vswitch.ActionDrop, Reason: vswitch.DropForRouter}}})
		}
		for s := range spec.Pings {
			seq := uint16(s + 1)
			gw := g.echo(t.localSide(a), t.gatewaySide(), false, seq)
			gw.Class = ClassEchoGateway
			gw.Expect = Expect{Action: vswitch.ActionDeliver, Port: a.Port, Reply: true}
			p := &t.Peers[i%len(t.Peers)]
			seqs = append(seqs, []Frame{gw},
				g.pingPair(t.localSide(a), t.localSide(b), seq),
				g.pingPair(t.localSide(a), t.remoteSide(p, byte(3+i)), seq))
			if i < len(t.Peers) {
				in := g.echo(t.remoteSide(p, 3), t.gatewaySide(), false, seq)
				in.Class = ClassEchoPeerToGW
				in.Expect = Expect{Underlay: true, Action: vswitch.ActionEncap, Peer: p.Underlay, Reply: true}
				seqs = append(seqs, []Frame{in})
			}
		}
	}
	return seqs
}

// Mix generates the realistic traffic mix of spec for topology t: ARP,
// echo, TCP and UDP conversations inside the node and with peers' pods
// (their return direction as VXLAN frames from the underlay), the edge
// cases the router answers, and malformed frames, interleaved at random
// with each conversation's order kept.
func Mix(t *Topology, spec MixSpec) []Frame {
	g := newGen(t, spec.Seed)
	seqs := g.control(spec)
	pod := func() *Endpoint { return &t.Pods[g.intn(len(t.Pods))] }
	otherPod := func(a *Endpoint) *Endpoint {
		for {
			if b := pod(); b != a {
				return b
			}
		}
	}
	remote := func() side { return t.remoteSide(&t.Peers[g.intn(len(t.Peers))], byte(3+g.intn(8))) }
	for range spec.L2TCP {
		a := pod()
		seqs = append(seqs, g.tcpConversation(t.localSide(a), t.localSide(otherPod(a))))
	}
	for range spec.L2UDP {
		a := pod()
		seqs = append(seqs, g.udpConversation(t.localSide(a), t.localSide(otherPod(a))))
	}
	for i := range spec.CrossTCP {
		// Half the connections are opened by the peer's pod.
		if i%2 == 0 {
			seqs = append(seqs, g.tcpConversation(t.localSide(pod()), remote()))
		} else {
			seqs = append(seqs, g.tcpConversation(remote(), t.localSide(pod())))
		}
	}
	for range spec.CrossUDP {
		seqs = append(seqs, g.udpConversation(t.localSide(pod()), remote()))
	}
	for range spec.HostTCP {
		seqs = append(seqs, g.tcpConversation(t.localSide(&t.Host), t.localSide(pod())),
			g.tcpConversation(t.localSide(&t.Host), remote()))
	}
	for _, f := range g.malformed() {
		seqs = append(seqs, []Frame{f})
	}
	return g.interleave(seqs)
}

// interleave merges the sequences at random, keeping each one's order:
// every step takes the next frame of a sequence chosen with probability
// proportional to what it has left, so they all run through the capture.
func (g *gen) interleave(seqs [][]Frame) []Frame {
	total := 0
	for _, s := range seqs {
		total += len(s)
	}
	out := make([]Frame, 0, total)
	for left := total; left > 0; left-- {
		k := g.intn(left)
		for i, s := range seqs {
			if k < len(s) {
				out = append(out, s[0])
				seqs[i] = s[1:]
				break
			}
			k -= len(s)
		}
	}
	return out
}
