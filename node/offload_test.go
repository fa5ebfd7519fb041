package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// offloadRig is a node cut down to what the offload output stage uses: a
// switch with one pod port and a route to one peer, and the underlay socket
// in netns A (with UDP GSO when gso), joined by a veth to a plain socket in
// netns B that plays the peer. Everything lives in namespaces the test
// creates and deletes.
type offloadRig struct {
	n    *Node
	peer *overlay.Conn
}

var (
	rigPodMAC    = packet.MAC{0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x03}
	rigRouterMAC = packet.MAC{0x0a, 0xfe, 0x00, 0x00, 0x00, 0x01}
	rigPeerMAC   = packet.MAC{0x0a, 0xfe, 0x00, 0x00, 0x00, 0x02}
	rigPodIP     = netip.MustParseAddr("10.244.1.3")
	rigRemoteIP  = netip.MustParseAddr("10.244.2.3")
	rigUnderA    = netip.MustParseAddr("10.98.0.1")
	rigUnderB    = netip.MustParseAddr("10.98.0.2")
)

func newOffloadRig(t testing.TB, gso bool) *offloadRig {
	t.Helper()
	testenv.RequireRoot(t)
	nameA, nameB := testenv.UniqueName("wbe"), testenv.UniqueName("wbe")
	var paths []string
	for _, name := range []string{nameA, nameB} {
		p, err := netdev.NewNetns(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := netdev.DeleteNetns(name); err != nil {
				t.Error(err)
			}
		})
		paths = append(paths, p)
	}
	if err := netdev.NewVeth(
		netdev.VethEnd{Name: nameA, NetnsPath: paths[0], Addr: netip.PrefixFrom(rigUnderA, 24)},
		netdev.VethEnd{Name: nameB, NetnsPath: paths[1], Addr: netip.PrefixFrom(rigUnderB, 24)},
	); err != nil {
		t.Fatal(err)
	}
	listen := func(path string, addr netip.Addr) *overlay.Conn {
		var c *overlay.Conn
		err := netdev.Do(path, func() error {
			var err error
			c, err = overlay.ListenConn(context.Background(), overlay.ConnConfig{Addr: netip.AddrPortFrom(addr, overlay.DefaultPort)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	n := &Node{
		cfg: Config{VNI: 1, Port: overlay.DefaultPort, Offload: true},
		log: slog.New(slog.DiscardHandler),
		ctx: context.Background(),
	}
	n.conn = listen(paths[0], rigUnderA)
	r := &offloadRig{n: n, peer: listen(paths[1], rigUnderB)}
	if gso {
		g, err := overlay.NewGSOWriter(n.conn, 0)
		if err != nil {
			t.Fatal(err)
		}
		n.off.gso = g
	}
	var err error
	n.sw, err = vswitch.New(vswitch.Config{RouterMAC: rigRouterMAC, Subnet: netip.MustParsePrefix("10.244.1.0/24"), MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.sw.AddPort(vswitch.PortConfig{ID: overlayPortID, Kind: vswitch.PortOverlay}); err != nil {
		t.Fatal(err)
	}
	if err := n.sw.AddPort(vswitch.PortConfig{ID: firstPodPort, Kind: vswitch.PortPod, MAC: rigPodMAC, IPv4: rigPodIP}); err != nil {
		t.Fatal(err)
	}
	n.peers = &overlay.PeerTable{}
	if err := n.peers.Set([]overlay.Peer{{Name: "b", Underlay: rigUnderB, RouterMAC: rigPeerMAC, Subnet: netip.MustParsePrefix("10.244.2.0/24"), VNI: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := n.sw.SetRoutes([]vswitch.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), Kind: vswitch.RoutePeer, Peer: rigUnderB, PeerMAC: rigPeerMAC}}); err != nil {
		t.Fatal(err)
	}
	// Resolve ARP on the veth before a burst: an unresolved neighbour
	// queues only a few packets.
	if _, err := n.conn.WriteBatch([][]byte{[]byte("prime")}, 0, []netip.AddrPort{r.peer.LocalAddr()}); err != nil {
		t.Fatal(err)
	}
	r.recv(t, 1, nil)
	return r
}

// superFrame is a pod's TSO frame to the remote pod as a virtio-header TAP
// hands it out: TCP checksum field holding the pseudo-header sum.
func superFrame(t testing.TB, payload int, seq uint32) ([]byte, []byte) {
	t.Helper()
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i*13 + i>>9)
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(rigPodMAC[:]), DstMAC: net.HardwareAddr(rigRouterMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: 100, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: rigPodIP.AsSlice(), DstIP: rigRemoteIP.AsSlice()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: seq, Ack: 1, ACK: true, PSH: true, Window: 1000,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)}}}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp, gopacket.Payload(data)); err != nil {
		t.Fatal(err)
	}
	f := buf.Bytes()
	l4 := packet.EthHdrLen + packet.IPv4MinHdrLen
	sum := packet.PseudoHeaderSum4(rigPodIP.As4(), rigRemoteIP.As4(), packet.IPProtoTCP, uint16(len(f)-l4))
	binary.BigEndian.PutUint16(f[l4+packet.TCPOffChecksum:], packet.Fold(sum))
	return f, data
}

// recv reads want datagrams at the peer; check, if set, sees each.
func (r *offloadRig) recv(t testing.TB, want int, check func(i int, dgram []byte)) {
	t.Helper()
	if err := r.peer.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	sizes := make([]int, len(bufs))
	got := 0
	for calls := 0; got < want && calls < 10*want; calls++ {
		k, err := r.peer.ReadBatch(bufs, sizes, 0, nil)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", got, want, err)
		}
		for i := range k {
			if check != nil {
				check(got, bufs[i][:sizes[i]])
			}
			got++
		}
	}
	if got != want {
		t.Fatalf("peer received %d datagrams, want %d", got, want)
	}
}

// TestOffloadEncapSuperFrame sends TSO super-frames from a pod port through
// the offload output stage and checks what the peer receives: MSS-sized
// VXLAN datagrams whose inner segments are routed (MACs, TTL), correctly
// checksummed, and carry the payload in order; with and without UDP GSO.
func TestOffloadEncapSuperFrame(t *testing.T) {
	for _, gso := range []bool{true, false} {
		t.Run(map[bool]string{true: "gso", false: "no-gso"}[gso], func(t *testing.T) {
			r := newOffloadRig(t, gso)
			n := r.n
			const mss, payload = 1398, 60000
			w := newOffloadWorker(2)
			var want []byte
			for k := range 2 {
				f, data := superFrame(t, payload, uint32(1000+k*payload))
				want = append(want, data...)
				copy(w.bufs[k][headroom:], f)
				w.frames[k] = w.bufs[k][headroom : headroom+len(f)]
				w.bufIdx[k] = k
				w.hdrs[k] = netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, GSOType: netdev.GSOTCPv4, GSOSize: mss,
					CsumStart: packet.EthHdrLen + packet.IPv4MinHdrLen, CsumOffset: packet.TCPOffChecksum}
				l, ok := gsoSegmentIPLen(w.frames[k], &w.hdrs[k])
				if !ok {
					t.Fatal("gsoSegmentIPLen refused a good super-frame")
				}
				w.ipLens[k] = l
			}
			n.sw.ProcessGSO(w.frames[:2], w.ipLens[:2], firstPodPort, w.verdicts, 0)
			for k := range 2 {
				if v := w.verdicts[k]; v.Action != vswitch.ActionEncap || v.Peer != rigUnderB {
					t.Fatalf("verdict %d: %+v", k, v)
				}
			}
			n.outputOffload(w, 2, firstPodPort)
			segs := 2 * packet.TCPSegments(payload, mss)
			var got []byte
			r.recv(t, segs, func(i int, dgram []byte) {
				if vni, reason := overlay.ParseHeader(dgram); reason != overlay.DropNone || vni != 1 {
					t.Fatalf("datagram %d: VXLAN %v vni %d", i, reason, vni)
				}
				inner := dgram[overlay.HeaderLen:]
				if packet.EthDst(inner) != rigPeerMAC || packet.EthSrc(inner) != rigRouterMAC {
					t.Fatalf("segment %d: MACs %s -> %s", i, packet.EthSrc(inner), packet.EthDst(inner))
				}
				ip := packet.IPv4(inner[packet.EthHdrLen:])
				if ip.TTL() != 63 || !ip.HeaderChecksumOK() || int(ip.TotalLen()) != len(inner)-packet.EthHdrLen {
					t.Fatalf("segment %d: TTL %d, header checksum ok %v, length %d of %d", i, ip.TTL(), ip.HeaderChecksumOK(), ip.TotalLen(), len(inner))
				}
				tcp := inner[packet.EthHdrLen+packet.IPv4MinHdrLen:]
				sum := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoTCP, uint16(len(tcp)))
				if packet.Fold(packet.Checksum(tcp, sum)) != 0xffff {
					t.Fatalf("segment %d: bad TCP checksum", i)
				}
				if len(tcp)-32 > mss {
					t.Fatalf("segment %d: %d payload bytes, MSS %d", i, len(tcp)-32, mss)
				}
				got = append(got, tcp[32:]...)
			})
			if !bytes.Equal(got, want) {
				t.Errorf("peer got %d payload bytes, not the %d sent in order", len(got), len(want))
			}
			if n.off.segments.Load() != uint64(segs) || n.outDrops.udpSend.Load() != 0 {
				t.Errorf("segments counted %d (want %d), send drops %d", n.off.segments.Load(), segs, n.outDrops.udpSend.Load())
			}
		})
	}
}

// TestOffloadEncapAllocs: the offload output stage (switch, split, VXLAN,
// UDP GSO send) allocates nothing per super-frame.
func TestOffloadEncapAllocs(t *testing.T) {
	r := newOffloadRig(t, true)
	n := r.n
	w := newOffloadWorker(1)
	f, _ := superFrame(t, 60000, 1)
	hdr := netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, GSOType: netdev.GSOTCPv4, GSOSize: 1398,
		CsumStart: packet.EthHdrLen + packet.IPv4MinHdrLen, CsumOffset: packet.TCPOffChecksum}
	run := func() {
		copy(w.bufs[0][headroom:], f)
		w.frames[0] = w.bufs[0][headroom : headroom+len(f)]
		w.bufIdx[0] = 0
		w.hdrs[0] = hdr
		w.ipLens[0], _ = gsoSegmentIPLen(w.frames[0], &w.hdrs[0])
		n.sw.ProcessGSO(w.frames[:1], w.ipLens[:1], firstPodPort, w.verdicts, 0)
		n.outputOffload(w, 1, firstPodPort)
	}
	run()
	if allocs := testing.AllocsPerRun(50, run); allocs != 0 {
		t.Errorf("offload output of a 60 KB super-frame: %v allocs, want 0", allocs)
	}
	if n.outDrops.udpSend.Load() != 0 || n.off.badGSO.Load() != 0 {
		t.Errorf("send drops %d, bad GSO %d", n.outDrops.udpSend.Load(), n.off.badGSO.Load())
	}
}

// BenchmarkOffloadEncap is the cost per 64 KiB super-frame of the offload
// output stage: switch, TSO split with checksums, VXLAN, UDP GSO sendmmsg
// to a veth peer (whose kernel drops what it has no room for).
func BenchmarkOffloadEncap(b *testing.B) {
	r := newOffloadRig(b, true)
	n := r.n
	w := newOffloadWorker(1)
	f, _ := superFrame(b, 65535-20-32, 1)
	hdr := netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, GSOType: netdev.GSOTCPv4, GSOSize: 1398,
		CsumStart: packet.EthHdrLen + packet.IPv4MinHdrLen, CsumOffset: packet.TCPOffChecksum}
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		copy(w.bufs[0][headroom:], f)
		w.frames[0] = w.bufs[0][headroom : headroom+len(f)]
		w.bufIdx[0] = 0
		w.hdrs[0] = hdr
		w.ipLens[0], _ = gsoSegmentIPLen(w.frames[0], &w.hdrs[0])
		n.sw.ProcessGSO(w.frames[:1], w.ipLens[:1], firstPodPort, w.verdicts, 0)
		n.outputOffload(w, 1, firstPodPort)
	}
}

// TestOffloadEncapUDPSuperFrame: a USO super-frame from a pod reaches the
// peer as separate, checksummed VXLAN datagrams carrying the payload in order.
func TestOffloadEncapUDPSuperFrame(t *testing.T) {
	r := newOffloadRig(t, true)
	n := r.n
	const mss, payload = 64, 64*20 + 10
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i * 31)
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(rigPodMAC[:]), DstMAC: net.HardwareAddr(rigRouterMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: 7, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP,
		SrcIP: rigPodIP.AsSlice(), DstIP: rigRemoteIP.AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 5201}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload(data)); err != nil {
		t.Fatal(err)
	}
	f := buf.Bytes()
	w := newOffloadWorker(1)
	copy(w.bufs[0][headroom:], f)
	w.frames[0] = w.bufs[0][headroom : headroom+len(f)]
	w.bufIdx[0] = 0
	w.hdrs[0] = netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, GSOType: netdev.GSOUDPL4, GSOSize: mss,
		CsumStart: packet.EthHdrLen + packet.IPv4MinHdrLen, CsumOffset: packet.UDPOffChecksum}
	l, ok := gsoSegmentIPLen(w.frames[0], &w.hdrs[0])
	if !ok || l != packet.IPv4MinHdrLen+packet.UDPHdrLen+mss {
		t.Fatalf("gsoSegmentIPLen = %d, %v", l, ok)
	}
	w.ipLens[0] = l
	n.sw.ProcessGSO(w.frames[:1], w.ipLens[:1], firstPodPort, w.verdicts, 0)
	n.outputOffload(w, 1, firstPodPort)
	var got []byte
	r.recv(t, packet.TCPSegments(payload, mss), func(i int, dgram []byte) {
		inner := dgram[overlay.HeaderLen:]
		ip := packet.IPv4(inner[packet.EthHdrLen:])
		u := inner[packet.EthHdrLen+packet.IPv4MinHdrLen:]
		sum := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoUDP, uint16(len(u)))
		if packet.Fold(packet.Checksum(u, sum)) != 0xffff || int(binary.BigEndian.Uint16(u[4:])) != len(u) {
			t.Fatalf("datagram %d: bad UDP checksum or length", i)
		}
		got = append(got, u[packet.UDPHdrLen:]...)
	})
	if !bytes.Equal(got, data) {
		t.Errorf("peer got %d bytes, not the %d sent in order", len(got), len(data))
	}
}

// TestGSOMaxSegs: a pod's super-frame fits one UDP GSO message.
func TestGSOMaxSegs(t *testing.T) {
	for _, tc := range []struct{ mtu, want int }{
		{1450, 44}, // 44 x 1472 = 64,768 <= 65,507; 45 would not fit
		{1500, 43},
		{8950, 7},
		{576, 64}, // capped at the datagrams one message may carry
		{0, 43},   // the kernel's default MTU
	} {
		got := gsoMaxSegs(tc.mtu)
		if got != tc.want {
			t.Errorf("gsoMaxSegs(%d) = %d, want %d", tc.mtu, got, tc.want)
		}
		mtu := tc.mtu
		if mtu == 0 {
			mtu = 1500
		}
		if bytes := got * (mtu + overlay.HeaderLen + packet.EthHdrLen); bytes > overlay.MaxGSOBytes {
			t.Errorf("MTU %d: %d segments make %d bytes of UDP payload, more than one message holds", tc.mtu, got, bytes)
		}
	}
}
