package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// The test node: subnet 10.244.1.0/24, pods A (.3, port 2) and B (.4,
// port 3) behind fake TAPs, peer "b" (underlay 10.98.0.2) owning
// 10.244.2.0/24.
var (
	routerMAC = packet.MAC{0x0a, 0xfe, 0x00, 0x00, 0x00, 0x01}
	peerMAC   = packet.MAC{0x0a, 0xfe, 0x00, 0x00, 0x00, 0x02}
	podAMAC   = packet.MAC{0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x03}
	podBMAC   = packet.MAC{0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x04}
	podAIP    = netip.MustParseAddr("10.244.1.3")
	podBIP    = netip.MustParseAddr("10.244.1.4")
	remoteIP  = netip.MustParseAddr("10.244.2.3")
	underB    = netip.MustParseAddr("10.98.0.2")
	fromB     = netip.AddrPortFrom(underB, overlay.DefaultPort)
)

const (
	overlayID vswitch.PortID = 0
	podAID    vswitch.PortID = 2
	podBID    vswitch.PortID = 3
	testVNI                  = 1
	testMTU                  = 1450
)

// rig is a data path with two pod ports over fake TAPs: dp* ends are the
// data path's devices, pod* ends the pods' side.
type rig struct {
	dp         *Datapath
	sw         *vswitch.Switch
	a, b       *Port
	dpA, dpB   *netdev.Fake
	podA, podB *netdev.Fake
	txA, txB   *Transmitter
	out        *sink // every worker's underlay writes
	decap      *overlay.Decapper
	peers      *overlay.PeerTable
	offloads   int
}

// newRig builds the rig; offloads is the TUN_F_* mask of both fake TAPs
// (-1: plain TAPs without virtio headers).
func newRig(t testing.TB, offloads int, coalesce bool) *rig {
	t.Helper()
	sw, err := vswitch.New(vswitch.Config{RouterMAC: routerMAC, Subnet: netip.MustParsePrefix("10.244.1.0/24"),
		Gateway: netip.MustParseAddr("10.244.1.1"), MTU: testMTU})
	if err != nil {
		t.Fatal(err)
	}
	must(t, sw.AddPort(vswitch.PortConfig{ID: overlayID, Kind: vswitch.PortOverlay}))
	must(t, sw.AddPort(vswitch.PortConfig{ID: podAID, Kind: vswitch.PortPod, MAC: podAMAC, IPv4: podAIP}))
	must(t, sw.AddPort(vswitch.PortConfig{ID: podBID, Kind: vswitch.PortPod, MAC: podBMAC, IPv4: podBIP}))
	peers := &overlay.PeerTable{}
	must(t, peers.Set([]overlay.Peer{{Name: "b", Underlay: underB, RouterMAC: peerMAC, Subnet: netip.MustParsePrefix("10.244.2.0/24"), VNI: testVNI}}))
	must(t, sw.SetRoutes([]vswitch.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), Kind: vswitch.RoutePeer, Peer: underB, PeerMAC: peerMAC}}))
	decap := overlay.NewDecapper(testVNI, peers)
	r := &rig{sw: sw, out: &sink{}, decap: decap, peers: peers, offloads: offloads}
	r.dp = New(Config{Switch: sw, Decap: decap, Peers: peers, VNI: testVNI, Port: overlay.DefaultPort, OverlayPort: overlayID, Coalesce: coalesce})
	batch := netdev.DefaultBatchSize
	if offloads > 0 {
		batch = SuperReadBatch
	}
	r.dpA, r.podA = netdev.NewPipeSize("dpA", "podA", 256, 2048, batch)
	r.dpB, r.podB = netdev.NewPipeSize("dpB", "podB", 256, 2048, batch)
	if offloads >= 0 {
		for _, f := range []*netdev.Fake{r.dpA, r.podA, r.dpB, r.podB} {
			f.SetVnet(offloads)
		}
	}
	r.a = &Port{ID: podAID, Dev: r.dpA}
	r.b = &Port{ID: podBID, Dev: r.dpB}
	r.txA = r.dp.NewTransmitter(r.a, r.dpA, r.out)
	r.txB = r.dp.NewTransmitter(r.b, r.dpB, r.out)
	r.dp.SetPort(r.a)
	r.dp.SetPort(r.b)
	t.Cleanup(func() { r.dpA.Close(); r.dpB.Close() })
	return r
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// sink is an underlay Writer that keeps copies of what it is given (or,
// with discard, only counts it). refuse makes it refuse datagram number
// refuse-1 of each call.
type sink struct {
	mu      sync.Mutex
	dgrams  [][]byte
	to      []netip.AddrPort
	count   int
	discard bool
	refuse  int
}

// WriteGather keeps each datagram whole: dgrams[i] and tails[i] joined,
// as the kernel gathers them.
func (s *sink) WriteGather(dgrams, tails [][]byte, to []netip.AddrPort) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse > 0 && len(dgrams) >= s.refuse {
		s.keep(dgrams[:s.refuse-1], tails, to)
		return s.refuse - 1, errRefused
	}
	s.keep(dgrams, tails, to)
	return len(dgrams), nil
}

func (s *sink) keep(dgrams, tails [][]byte, to []netip.AddrPort) {
	s.count += len(dgrams)
	if s.discard {
		return
	}
	for i, d := range dgrams {
		dg := append([]byte(nil), d...)
		if tails != nil {
			dg = append(dg, tails[i]...)
		}
		s.dgrams = append(s.dgrams, dg)
		s.to = append(s.to, to[i])
	}
}

var errRefused = &net.OpError{Op: "sendmmsg", Err: net.UnknownNetworkError("refused")}

// source is an underlay Reader that hands out queued reads, one per slot:
// GRO runs of datagrams of segSize bytes, or truncated reads.
type source struct {
	reads     []srcRead
	next      int
	truncated uint64
}

type srcRead struct {
	data    []byte // the run, datagrams back to back; nil: truncated
	segSize int
	from    netip.AddrPort
}

func (s *source) ReadBatch(bufs [][]byte, sizes, segSizes []int, offset int, from []netip.AddrPort) (int, error) {
	n := 0
	for n < len(bufs) && s.next < len(s.reads) {
		rd := s.reads[s.next]
		s.next++
		if rd.data == nil {
			sizes[n], segSizes[n] = 0, 0
			s.truncated++
		} else {
			sizes[n] = copy(bufs[n][offset:], rd.data)
			segSizes[n] = rd.segSize
		}
		from[n] = rd.from
		n++
	}
	return n, nil
}

func (s *source) Truncated() uint64 { return s.truncated }

// udpFrame is a plain UDP/IPv4 frame from src to dst with payload bytes.
func udpFrame(srcMAC, dstMAC packet.MAC, src, dst netip.Addr, payload int, ttl uint8) []byte {
	total := packet.IPv4MinHdrLen + packet.UDPHdrLen + payload
	f := make([]byte, packet.EthHdrLen+total)
	packet.PutEth(f, dstMAC, srcMAC, packet.EtherTypeIPv4)
	packet.PutIPv4(f[packet.EthHdrLen:], uint16(total), 1, true, ttl, packet.IPProtoUDP, src.As4(), dst.As4())
	packet.PutUDP(f[packet.EthHdrLen+packet.IPv4MinHdrLen:], 40000, 5201, uint16(packet.UDPHdrLen+payload))
	for i := range payload {
		f[packet.EthHdrLen+packet.IPv4MinHdrLen+packet.UDPHdrLen+i] = byte(i)
	}
	return f
}

// vxlan wraps an inner frame in a VXLAN header with vni.
func vxlan(inner []byte, vni uint32) []byte {
	d := make([]byte, overlay.HeaderLen+len(inner))
	overlay.PutHeader(d, vni)
	copy(d[overlay.HeaderLen:], inner)
	return d
}

// tcpSegment is the inner frame of one TCP segment from the remote pod to
// pod A as the peer sends it (already routed by the peer: from its router
// MAC to ours).
func tcpSegment(t testing.TB, seq uint32, payload int) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(peerMAC[:]), DstMAC: net.HardwareAddr(routerMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 63, Id: uint16(seq), Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: remoteIP.AsSlice(), DstIP: podAIP.AsSlice()}
	tcp := &layers.TCP{SrcPort: 5201, DstPort: 40000, Seq: seq, Ack: 1, ACK: true, Window: 1000}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(seq) + byte(i)
	}
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(data)))
	return buf.Bytes()
}

// superFrame is pod A's TSO frame to dst as a virtio-header TAP
// hands it out (TCP checksum field holding the pseudo-header sum), with
// its header.
func superFrame(t testing.TB, payload int, seq uint32, mss uint16, dst netip.Addr) ([]byte, []byte, netdev.VirtioHdr) {
	t.Helper()
	return superFrameFrom(t, payload, seq, mss, podAMAC, podAIP, dst)
}

// superFrameFrom is superFrame from another pod (MAC, address).
func superFrameFrom(t testing.TB, payload int, seq uint32, mss uint16, srcMAC packet.MAC, src, dst netip.Addr) ([]byte, []byte, netdev.VirtioHdr) {
	t.Helper()
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i*13 + i>>9)
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(srcMAC[:]), DstMAC: net.HardwareAddr(routerMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: 100, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: seq, Ack: 1, ACK: true, PSH: true, Window: 1000,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)}}}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(data)))
	f := buf.Bytes()
	l4 := packet.EthHdrLen + packet.IPv4MinHdrLen
	sum := packet.PseudoHeaderSum4(src.As4(), dst.As4(), packet.IPProtoTCP, uint16(len(f)-l4))
	binary.BigEndian.PutUint16(f[l4+packet.TCPOffChecksum:], packet.Fold(sum))
	h := netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, GSOType: netdev.GSOTCPv4, GSOSize: mss,
		HdrLen: uint16(l4 + 32), CsumStart: uint16(l4), CsumOffset: packet.TCPOffChecksum}
	return f, data, h
}

// readAll reads what is queued at a fake's end without blocking for more.
func readAll(t testing.TB, f *netdev.Fake) (frames [][]byte, hdrs []netdev.VirtioHdr) {
	t.Helper()
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, SuperBufSize)
	}
	sizes := make([]int, 64)
	h := make([]netdev.VirtioHdr, 64)
	for {
		n := f.TryReadVnetTurn(bufs, sizes, h, 0)
		if n == 0 {
			return frames, hdrs
		}
		for i := range n {
			frames = append(frames, append([]byte(nil), bufs[i][:sizes[i]]...))
			hdrs = append(hdrs, h[i])
		}
		f.EndTurn()
	}
}
