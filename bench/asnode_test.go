package bench

import (
	"bytes"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/bench/internal/outerframe"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// simCapture is the committed capture of a two-node `weft sim`
// (testdata/captures/README.md).
var simCapture = filepath.Join("testdata", "captures", "sim-crossnode.pcap")

func loadSimCapture(tb testing.TB) [][]byte {
	tb.Helper()
	c, err := LoadPcap(simCapture)
	if err != nil {
		tb.Fatal(err)
	}
	if c.Skipped != 0 || c.Truncated != 0 {
		tb.Fatalf("%s: %d frames skipped, %d truncated when loading", simCapture, c.Skipped, c.Truncated)
	}
	return c.Frames
}

// seenVXLAN is a captured VXLAN frame as gopacket decodes it: independent
// of the parsing under test.
type seenVXLAN struct {
	index                    int
	outerSrc, outerDst       netip.Addr
	outerLen                 int // Ethernet + the outer IPv4 total length
	innerSrcMAC, innerDstMAC packet.MAC
	innerSrc, innerDst       netip.Addr
	proto                    string // icmp, tcp, udp
	inner                    []byte // the inner frame (Ethernet onwards)
}

// decodeCapture splits a capture into its VXLAN frames (with an IPv4
// inner frame) and the number of other frames, by gopacket.
func decodeCapture(t *testing.T, frames [][]byte) (vx []seenVXLAN, other int) {
	t.Helper()
	for i, f := range frames {
		p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		ip4, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		v, _ := p.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
		if ip4 == nil || v == nil {
			other++
			continue
		}
		in := gopacket.NewPacket(v.Payload, layers.LayerTypeEthernet, gopacket.Default)
		ie, _ := in.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		iip, _ := in.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ie == nil || iip == nil {
			t.Fatalf("frame %d: VXLAN without an inner IPv4 frame", i)
		}
		s := seenVXLAN{
			index:    i,
			outerLen: packet.EthHdrLen + int(ip4.Length),
			inner:    v.Payload,
		}
		s.outerSrc, _ = netip.AddrFromSlice(ip4.SrcIP)
		s.outerDst, _ = netip.AddrFromSlice(ip4.DstIP)
		s.innerSrc, _ = netip.AddrFromSlice(iip.SrcIP)
		s.innerDst, _ = netip.AddrFromSlice(iip.DstIP)
		s.innerSrcMAC, s.innerDstMAC = packet.MAC(ie.SrcMAC), packet.MAC(ie.DstMAC)
		switch iip.Protocol {
		case layers.IPProtocolICMPv4:
			s.proto = "icmp"
		case layers.IPProtocolTCP:
			s.proto = "tcp"
		case layers.IPProtocolUDP:
			s.proto = "udp"
		default:
			s.proto = iip.Protocol.String()
		}
		vx = append(vx, s)
	}
	return vx, other
}

// mostReceived is the VXLAN destination seen most (ties: lowest address).
func mostReceived(vx []seenVXLAN) netip.Addr {
	n := map[netip.Addr]int{}
	for _, v := range vx {
		n[v.outerDst]++
	}
	var best netip.Addr
	for _, a := range slices.SortedFunc(maps.Keys(n), netip.Addr.Compare) {
		if !best.IsValid() || n[a] > n[best] {
			best = a
		}
	}
	return best
}

// TestReplaySimCapture replays the committed sim capture as each of its
// two nodes, with the topology derived from the capture, and checks the
// verdicts against what the capture itself holds (decoded by gopacket):
// every VXLAN frame to the node is decapsulated and delivered to the pod
// it is for, every one from the node re-enters as its pod's TAP frame and
// is routed and encapsulated to the peer it went to, and nothing else
// happens.
func TestReplaySimCapture(t *testing.T) {
	frames := loadSimCapture(t)
	vx, other := decodeCapture(t, frames)
	endpoints := map[netip.Addr]bool{}
	for _, v := range vx {
		endpoints[v.outerSrc], endpoints[v.outerDst] = true, true
	}
	if len(endpoints) != 2 {
		t.Fatalf("the sim capture has VXLAN endpoints %v, want 2 nodes", slices.Collect(maps.Keys(endpoints)))
	}
	def := mostReceived(vx)
	nodes := []netip.Addr{{}} // the default: AsNode picks
	for a := range endpoints {
		nodes = append(nodes, a)
	}
	for i, asNode := range nodes {
		name := "default"
		if asNode.IsValid() {
			name = asNode.String()
		}
		mode := Mode(i % 2) // both data path modes, over the nodes
		t.Run("as-node="+name+"/"+mode.String(), func(t *testing.T) {
			node := asNode
			if !node.IsValid() {
				node = def
			}
			// What the capture says, per direction.
			var to, from []seenVXLAN
			protos := map[string]map[string]int{"to": {}, "from": {}}
			for _, v := range vx {
				switch node {
				case v.outerDst:
					to = append(to, v)
					protos["to"][v.proto]++
				case v.outerSrc:
					from = append(from, v)
					protos["from"][v.proto]++
				}
			}
			for dir, ps := range protos {
				for _, p := range []string{"icmp", "tcp", "udp"} {
					if ps[p] == 0 {
						t.Errorf("no %s VXLAN frames %s the node in the capture", p, dir)
					}
				}
			}

			c, err := AsNode(frames, asNode)
			if err != nil {
				t.Fatal(err)
			}
			topo := c.Topology
			if topo.Underlay != node {
				t.Fatalf("node %v, want %v", topo.Underlay, node)
			}
			if c.ToNode != len(to) || c.FromNode != len(from) || c.SkippedTotal() != other {
				t.Errorf("%d frames to the node, %d from it, %d skipped (%v); the capture has %d, %d and %d non-VXLAN",
					c.ToNode, c.FromNode, c.SkippedTotal(), c.Skipped, len(to), len(from), other)
			}
			if len(c.UnknownPeers) != 0 {
				t.Errorf("peers left out: %v", c.UnknownPeers)
			}
			checkDerivedTopology(t, topo, to, from)

			r, err := NewReplayerMode(topo, c.Frames, mode)
			if err != nil {
				t.Fatal(err)
			}
			r.Warm()
			tx0 := peerTx(r)
			r.Pass()
			st := r.Stats()
			want := map[VerdictKey]uint64{
				{Action: vswitch.ActionDeliver}: uint64(len(to)),
				{Action: vswitch.ActionEncap}:   uint64(len(from)),
			}
			if got := st.Verdicts(); !maps.Equal(got, want) {
				t.Errorf("verdicts %v, want %v", got, want)
			}
			if st.Underlay != uint64(len(to)) || st.Decapped != uint64(len(to)) || st.DecapDropped() != 0 {
				t.Errorf("%d from the underlay, %d decapsulated, decap drops %v; want %d, all", st.Underlay, st.Decapped, st.DecapDrops, len(to))
			}
			if d := st.Switch.TotalDrops(); d != 0 {
				t.Errorf("switch counted %d drops: %v", d, st.Switch.Drops)
			}
			accounted(t, st)

			// Deliveries per pod, outer frames per peer, and their bytes.
			podFrames := map[netip.Addr]uint64{}
			for _, v := range to {
				podFrames[v.innerDst]++
			}
			for _, e := range topo.Ports() {
				if got := st.Ports[e.Port].Frames; got != podFrames[e.IP] {
					t.Errorf("port %d (%v): %d frames delivered, the capture has %d to it", e.Port, e.IP, got, podFrames[e.IP])
				}
			}
			var outerBytes uint64
			peerFrames := map[[4]byte]uint64{}
			for _, v := range from {
				outerBytes += uint64(v.outerLen)
				peerFrames[v.outerDst.As4()]++
			}
			if st.Encap.Frames != uint64(len(from)) || st.Encap.Bytes != outerBytes {
				t.Errorf("encap sink %d frames, %d bytes; the capture has %d frames, %d bytes from the node",
					st.Encap.Frames, st.Encap.Bytes, len(from), outerBytes)
			}
			tx1 := peerTx(r)
			for _, p := range topo.Peers {
				a := p.Underlay.As4()
				if d := tx1[a] - tx0[a]; d != peerFrames[a] {
					t.Errorf("peer %v: %d frames sent, the capture has %d", p.Underlay, d, peerFrames[a])
				}
			}
		})
	}
}

// checkDerivedTopology compares the topology AsNode derived with what
// gopacket finds in the frames to and from the node.
func checkDerivedTopology(t *testing.T, topo *Topology, to, from []seenVXLAN) {
	t.Helper()
	for _, v := range to {
		if v.innerDstMAC != topo.RouterMAC || !topo.Subnet.Contains(v.innerDst) {
			t.Errorf("frame %d to the node: inner %v -> %v (%v), topology router MAC %v, subnet %v",
				v.index, v.innerSrc, v.innerDst, v.innerDstMAC, topo.RouterMAC, topo.Subnet)
		}
	}
	peers := map[netip.Addr]PeerNode{}
	for _, p := range topo.Peers {
		peers[p.Underlay] = p
	}
	for _, v := range to {
		p, ok := peers[v.outerSrc]
		if !ok || p.RouterMAC != v.innerSrcMAC || !p.Subnet.Contains(v.innerSrc) {
			t.Errorf("frame %d from %v (router MAC %v, %v): peer %+v", v.index, v.outerSrc, v.innerSrcMAC, v.innerSrc, p)
		}
	}
	ports := map[netip.Addr]Endpoint{}
	for _, e := range topo.Ports() {
		ports[e.IP] = e
	}
	for _, v := range from {
		e, ok := ports[v.innerSrc]
		a := v.innerSrc.As4()
		if !ok || e.Kind != vswitch.PortPod || e.MAC != (packet.MAC{0x0a, 0x58, a[0], a[1], a[2], a[3]}) {
			t.Errorf("frame %d from the node's %v: port %+v, want a pod port with MAC 0a:58:<address>", v.index, v.innerSrc, e)
		}
	}
}

// TestSimCaptureRoundTrip checks the frames AsNode rebuilds, frame by
// frame through the switch: a pod's TAP frame, routed, is byte for byte
// the inner frame the node sent in the capture; and every frame to the
// node, decapsulated and routed, reaches the pod it is addressed to with
// the pod's MAC and one hop less.
func TestSimCaptureRoundTrip(t *testing.T) {
	frames := loadSimCapture(t)
	vx, _ := decodeCapture(t, frames)
	byIndex := map[int]seenVXLAN{}
	for _, v := range vx {
		byIndex[v.index] = v
	}
	for _, node := range []netip.Addr{vx[0].outerSrc, vx[0].outerDst} {
		t.Run("as-node="+node.String(), func(t *testing.T) {
			c, err := AsNode(frames, node)
			if err != nil {
				t.Fatal(err)
			}
			topo := c.Topology
			sw, err := topo.NewSwitch()
			if err != nil {
				t.Fatal(err)
			}
			pt, err := topo.NewPeerTable()
			if err != nil {
				t.Fatal(err)
			}
			dec := outerframe.NewDecapper(topo.VNI, topo.VXLANPort, pt)
			verdicts := make([]vswitch.Verdict, 1)
			for i, f := range c.Frames {
				want := byIndex[c.Index[i]]
				f = bytes.Clone(f)
				in, underlay := topo.Ingress(f)
				if underlay {
					inner, _, reason := dec.DecapFrame(f)
					if reason != outerframe.DropNone {
						t.Fatalf("frame %d: decap %v", c.Index[i], reason)
					}
					f = inner
				}
				sw.Process([][]byte{f}, in, verdicts, 0)
				v := verdicts[0]
				if underlay {
					pod := endpointByIP(topo, want.innerDst)
					ip := packet.IPv4(f[packet.EthHdrLen:])
					if v.Action != vswitch.ActionDeliver || pod == nil || v.Port != pod.Port ||
						packet.EthDst(f) != pod.MAC || packet.EthSrc(f) != topo.RouterMAC ||
						ip.TTL() != want.inner[packet.EthHdrLen+packet.IPv4OffTTL]-1 || !ip.HeaderChecksumOK() {
						t.Errorf("frame %d to %v: verdict %+v, delivered %v -> %v TTL %d", c.Index[i], want.innerDst, v,
							packet.EthSrc(f), packet.EthDst(f), ip.TTL())
					}
					continue
				}
				if v.Action != vswitch.ActionEncap || v.Peer != want.outerDst {
					t.Errorf("frame %d from %v: verdict %+v, want encap to %v", c.Index[i], want.innerSrc, v, want.outerDst)
					continue
				}
				if !bytes.Equal(f, want.inner) {
					t.Errorf("frame %d: routed TAP frame differs from the captured inner frame\n got %x\nwant %x", c.Index[i], f, want.inner)
				}
			}
		})
	}
}

func endpointByIP(t *Topology, ip netip.Addr) *Endpoint {
	for _, e := range t.Ports() {
		if e.IP == ip {
			return &e
		}
	}
	return nil
}

// TestZeroAllocsSimCapture pins the replay of the sim capture, as either
// node, at zero allocations per pass.
func TestZeroAllocsSimCapture(t *testing.T) {
	frames := loadSimCapture(t)
	for _, e := range VXLANEndpoints(frames) {
		t.Run("as-node="+e.Addr.String(), func(t *testing.T) {
			c, err := AsNode(frames, e.Addr)
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewReplayer(c.Topology, c.Frames)
			if err != nil {
				t.Fatal(err)
			}
			r.Warm()
			r.Pass()
			st := r.Stats()
			for _, k := range []VerdictKey{{Action: vswitch.ActionDeliver}, {Action: vswitch.ActionEncap}} {
				if st.Verdict(k) == 0 {
					t.Errorf("no %s verdict in a pass: %v", k, st.Verdicts())
				}
			}
			if n := testing.AllocsPerRun(20, r.Pass); n != 0 {
				t.Errorf("%.1f allocations per pass of %d frames", n, r.FramesPerPass())
			}
		})
	}
}

// Three nodes on one underlay for the synthetic cases: A (the node under
// test) 10.244.7.0/24, B 10.244.8.0/24, C 10.244.9.0/24.
var (
	ulA, ulB, ulC    = netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	nicA, nicB, nicC = packet.MAC{2, 0, 0, 0, 0, 1}, packet.MAC{2, 0, 0, 0, 0, 2}, packet.MAC{2, 0, 0, 0, 0, 3}
	rtrA, rtrB, rtrC = packet.MAC{0x0a, 0xfe, 1, 1, 1, 1}, packet.MAC{0x0a, 0xfe, 2, 2, 2, 2}, packet.MAC{0x0a, 0xfe, 3, 3, 3, 3}
	podA3, podA4     = netip.MustParseAddr("10.244.7.3"), netip.MustParseAddr("10.244.7.4")
	podB3, podC3     = netip.MustParseAddr("10.244.8.3"), netip.MustParseAddr("10.244.9.3")
	gwA              = netip.MustParseAddr("10.244.7.1")
	hostA            = netip.MustParseAddr("10.244.7.2")
)

// routedUDP is an inner frame as a node's router sends it over VXLAN.
func routedUDP(srcMAC, dstMAC packet.MAC, src, dst netip.Addr, ttl uint8, payload int) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: layers.IPProtocolUDP, Flags: layers.IPv4DontFragment,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 4000, DstPort: 5000}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return serialize(eth(dstMAC, srcMAC, layers.EthernetTypeIPv4), ip, udp, gopacket.Payload(make([]byte, payload)))
}

// vxlanFrame wraps inner in an outer frame between two underlay
// endpoints.
func vxlanFrame(srcMAC, dstMAC packet.MAC, src, dst netip.Addr, vni uint32, inner []byte) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(overlay.DefaultPort)}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return serialize(eth(dstMAC, srcMAC, layers.EthernetTypeIPv4), ip, udp,
		&layers.VXLAN{ValidIDFlag: true, VNI: vni}, gopacket.Payload(inner))
}

// underlayUDP is a non-VXLAN UDP frame between A and B.
func underlayUDP(port layers.UDPPort) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: ulA.AsSlice(), DstIP: ulB.AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: port}
	_ = udp.SetNetworkLayerForChecksum(ip)
	return serialize(eth(nicB, nicA, layers.EthernetTypeIPv4), ip, udp, gopacket.Payload(make([]byte, 20)))
}

func TestAsNodeThreeNodes(t *testing.T) {
	aToB := func(src netip.Addr, ttl uint8, n int) []byte {
		return vxlanFrame(nicA, nicB, ulA, ulB, 7, routedUDP(rtrA, rtrB, src, podB3, ttl, n))
	}
	frames := [][]byte{
		vxlanFrame(nicB, nicA, ulB, ulA, 7, routedUDP(rtrB, rtrA, podB3, podA3, 63, 10)),
		aToB(podA3, 63, 10),
		aToB(podA4, 254, 10),  // TTL given back: 255
		aToB(podA4, 255, 10),  // cannot be given back
		aToB(hostA, 63, 10),   // the host port
		aToB(podA3, 63, 3000), // a jumbo underlay: MTU follows
		aToB(gwA, 64, 10),     // the router's own
		vxlanFrame(nicA, nicB, ulA, ulB, 7, arpFrame(packet.BroadcastMAC, layers.ARPRequest, rtrA, gwA, packet.MAC{}, podB3)),
		vxlanFrame(nicA, nicB, ulA, ulB, 7, routedUDP(rtrA, rtrB, netip.MustParseAddr("10.99.0.1"), podB3, 63, 10)),
		// C only receives from A: its subnet and router MAC from those.
		vxlanFrame(nicA, nicC, ulA, ulC, 7, routedUDP(rtrA, rtrC, podA3, podC3, 63, 10)),
		vxlanFrame(nicB, nicC, ulB, ulC, 7, routedUDP(rtrB, rtrC, podB3, podC3, 63, 10)),
		arpFrame(packet.BroadcastMAC, layers.ARPRequest, nicA, ulA, packet.MAC{}, ulB),
		underlayUDP(53), // DNS on the underlay
	}
	c, err := AsNode(frames, ulA)
	if err != nil {
		t.Fatal(err)
	}
	topo := c.Topology
	checks := []struct {
		name      string
		got, want any
	}{
		{"subnet", topo.Subnet, netip.MustParsePrefix("10.244.7.0/24")},
		{"router MAC", topo.RouterMAC, rtrA},
		{"gateway", topo.Gateway, gwA},
		{"host", topo.Host, Endpoint{Port: 1, Kind: vswitch.PortHost, MAC: packet.MAC{0x0a, 0xfd, 1, 1, 1, 1}, IP: hostA}},
		{"pods", topo.Pods, []Endpoint{
			{Port: 2, Kind: vswitch.PortPod, MAC: packet.MAC{0x0a, 0x58, 10, 244, 7, 3}, IP: podA3},
			{Port: 3, Kind: vswitch.PortPod, MAC: packet.MAC{0x0a, 0x58, 10, 244, 7, 4}, IP: podA4},
		}},
		{"underlay", []any{topo.Underlay, topo.UnderlayMAC, topo.UnderlayGatewayMAC, topo.VNI, topo.VXLANPort},
			[]any{ulA, nicA, nicB, uint32(7), uint16(overlay.DefaultPort)}},
		{"peers", topo.Peers, []PeerNode{
			{Name: "node-10.0.0.2", Subnet: netip.MustParsePrefix("10.244.8.0/24"), Underlay: ulB, RouterMAC: rtrB},
			{Name: "node-10.0.0.3", Subnet: netip.MustParsePrefix("10.244.9.0/24"), Underlay: ulC, RouterMAC: rtrC},
		}},
		{"MTU", topo.MTU, packet.IPv4MinHdrLen + packet.UDPHdrLen + 3000},
		{"to, from", []int{c.ToNode, c.FromNode}, []int{1, 6}},
		{"index", c.Index, []int{0, 1, 2, 3, 4, 5, 9}},
	}
	for _, ck := range checks {
		if !equalAny(ck.got, ck.want) {
			t.Errorf("%s: %+v, want %+v", ck.name, ck.got, ck.want)
		}
	}
	wantSkips := map[SkipReason]int{SkipFromRouter: 1, SkipFromNodeNotIPv4: 1, SkipFromNodeUnknownSource: 1,
		SkipOtherNodes: 1, SkipARP: 1, SkipNotVXLAN: 1}
	for r := range NumSkipReasons {
		if c.Skipped[r] != wantSkips[SkipReason(r)] {
			t.Errorf("skipped %q: %d, want %d", SkipReason(r), c.Skipped[r], wantSkips[SkipReason(r)])
		}
	}
	ttls := []uint8{64, 255, 255}
	for i, want := range ttls {
		ip := packet.IPv4(c.Frames[1+i][packet.EthHdrLen:])
		if ip.TTL() != want || !ip.HeaderChecksumOK() {
			t.Errorf("TAP frame %d: TTL %d (checksum ok %v), want %d", 1+i, ip.TTL(), ip.HeaderChecksumOK(), want)
		}
	}

	r, err := NewReplayer(topo, c.Frames)
	if err != nil {
		t.Fatal(err)
	}
	r.Warm()
	r.Pass()
	st := r.Stats()
	want := map[VerdictKey]uint64{{Action: vswitch.ActionDeliver}: 1, {Action: vswitch.ActionEncap}: 6}
	if got := st.Verdicts(); !maps.Equal(got, want) {
		t.Errorf("verdicts %v, want %v", got, want)
	}
	accounted(t, st)
}

func equalAny(a, b any) bool {
	switch x := a.(type) {
	case []Endpoint:
		return slices.Equal(x, b.([]Endpoint))
	case []PeerNode:
		return slices.Equal(x, b.([]PeerNode))
	case []int:
		return slices.Equal(x, b.([]int))
	case []any:
		return slices.Equal(x, b.([]any))
	}
	return a == b
}

func TestAsNodeErrors(t *testing.T) {
	ab := vxlanFrame(nicA, nicB, ulA, ulB, 7, routedUDP(rtrA, rtrB, podA3, podB3, 63, 10))
	tests := []struct {
		name   string
		frames [][]byte
		node   netip.Addr
		want   string
	}{
		{"no VXLAN", loadTestdata(t, "l2"), netip.Addr{}, "no VXLAN"},
		{"empty", nil, netip.Addr{}, "no VXLAN"},
		{"node not in the capture", [][]byte{ab}, ulC, "10.0.0.2 (0 sent, 1 received)"},
		{"no IPv4 inside", [][]byte{vxlanFrame(nicA, nicB, ulA, ulB, 7,
			arpFrame(packet.BroadcastMAC, layers.ARPRequest, rtrA, gwA, packet.MAC{}, podB3))}, ulA, "pod subnet is unknown"},
		{"multicast router MAC", [][]byte{vxlanFrame(nicA, nicB, ulA, ulB, 7,
			routedUDP(rtrA, packet.BroadcastMAC, podA3, podB3, 63, 10))}, ulB, "router MAC"},
		{"two nodes, one subnet", [][]byte{ab,
			vxlanFrame(nicC, nicB, ulC, ulB, 7, routedUDP(rtrC, rtrB, podA4, podB3, 63, 10))}, ulB, "both send from 10.244.7.0/24"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := AsNode(tc.frames, tc.node)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestAsNodeUnknownPeer: an endpoint whose frames show no subnet stays
// out of the peer table; its frames to the node are refused by
// decapsulation, as by a node without its lease.
func TestAsNodeUnknownPeer(t *testing.T) {
	frames := [][]byte{
		vxlanFrame(nicB, nicA, ulB, ulA, 7, routedUDP(rtrB, rtrA, podB3, podA3, 63, 10)),
		vxlanFrame(nicC, nicA, ulC, ulA, 7, arpFrame(rtrA, layers.ARPReply, rtrC, podC3, rtrA, podA3)),
	}
	c, err := AsNode(frames, ulA)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.UnknownPeers, []netip.Addr{ulC}) || len(c.Topology.Peers) != 1 {
		t.Fatalf("unknown peers %v, peers %+v", c.UnknownPeers, c.Topology.Peers)
	}
	r, err := NewReplayer(c.Topology, c.Frames)
	if err != nil {
		t.Fatal(err)
	}
	r.Pass()
	st := r.Stats()
	if st.DecapDrops[outerframe.Decap(overlay.DropUnknownPeer)] != 1 || st.Verdict(VerdictKey{Action: vswitch.ActionDeliver}) != 1 {
		t.Errorf("decap drops %v, verdicts %v", st.DecapDrops, st.Verdicts())
	}
}

// TestAllPeersSkipsClashes: filler routes pass over a topology's own
// subnets and underlay addresses.
func TestAllPeersSkipsClashes(t *testing.T) {
	topo := &Topology{
		Subnet:   FillerPeer(1).Subnet,
		Underlay: FillerPeer(2).Underlay,
		Peers:    []PeerNode{{Subnet: FillerPeer(3).Subnet, Underlay: netip.MustParseAddr("10.0.0.9")}},
		Routes:   10,
	}
	all := topo.AllPeers()
	if len(all) != 10 {
		t.Fatalf("%d peers, want 10", len(all))
	}
	for _, p := range all[1:] {
		if p.Subnet == topo.Subnet || p.Underlay == topo.Underlay || p.Subnet == topo.Peers[0].Subnet {
			t.Errorf("filler %+v clashes", p)
		}
	}
	// The default topology's fillers are FillerPeer(0..) unchanged.
	d := DefaultTopology().WithRoutes(100).AllPeers()
	for i, p := range d[4:] {
		if p != FillerPeer(i) {
			t.Fatalf("filler %d is %+v, want %+v", i, p, FillerPeer(i))
		}
	}
}

// FuzzAsNode derives a node from whatever frames the input splits into
// (at "|||") and replays them: an error or every frame accounted for,
// never a panic.
func FuzzAsNode(f *testing.F) {
	sim := loadSimCapture(f)
	f.Add(bytes.Join(sim[:8], []byte("|||")))
	f.Add(bytes.Join([][]byte{
		vxlanFrame(nicB, nicA, ulB, ulA, 7, routedUDP(rtrB, rtrA, podB3, podA3, 63, 10)),
		vxlanFrame(nicA, nicB, ulA, ulB, 7, routedUDP(rtrA, rtrB, podA3, podB3, 1, 10)),
	}, []byte("|||")))
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := bytes.Split(data, []byte("|||"))
		c, err := AsNode(frames, netip.Addr{})
		if err != nil {
			return
		}
		if len(c.Frames)+c.SkippedTotal() != len(frames) || c.ToNode+c.FromNode != len(c.Frames) {
			t.Fatalf("%d frames: %d replayed (%d to, %d from), %d skipped", len(frames), len(c.Frames), c.ToNode, c.FromNode, c.SkippedTotal())
		}
		r, err := NewReplayer(c.Topology, c.Frames)
		if err != nil {
			t.Fatalf("derived topology refused: %v", err)
		}
		r.Pass()
		r.Pass()
		accounted(t, r.Stats())
	})
}
