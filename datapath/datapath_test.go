package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// modes are the TAP kinds a transmitter meets: plain, virtio header
// without offloads, with checksum offload and TSO/USO.
var modes = []struct {
	name     string
	offloads int
}{
	{"plain", -1},
	{"vnet", 0},
	{"tso", unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_USO4 | unix.TUN_F_USO6},
}

// TestTransmit: pod A's frames to pod B are delivered, to a remote pod
// encapsulated for the peer (VXLAN header in the headroom, inner frame
// routed), in every mode.
func TestTransmit(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			r := newRig(t, m.offloads, false)
			toB := udpFrame(podAMAC, routerMAC, podAIP, podBIP, 100, 64)
			toRemote := udpFrame(podAMAC, routerMAC, podAIP, remoteIP, 1000, 64)
			if _, err := r.podA.Write([][]byte{toB, toRemote}, 0); err != nil {
				t.Fatal(err)
			}
			if n, err := r.txA.Transmit(false); n != 2 || err != nil {
				t.Fatalf("Transmit = %d, %v; want 2 frames", n, err)
			}
			got, _ := readAll(t, r.podB)
			if len(got) != 1 || len(got[0]) != len(toB) || packet.EthDst(got[0]) != podBMAC || got[0][packet.EthHdrLen+8] != 63 {
				t.Fatalf("pod B got %d frames (%x), want the routed frame", len(got), got)
			}
			if len(r.out.dgrams) != 1 || r.out.to[0] != fromB {
				t.Fatalf("underlay got %d datagrams to %v, want 1 to %v", len(r.out.dgrams), r.out.to, fromB)
			}
			d := r.out.dgrams[0]
			if vni, reason := overlay.ParseHeader(d); reason != overlay.DropNone || vni != testVNI {
				t.Fatalf("VXLAN header: %v vni %d", reason, vni)
			}
			inner := d[overlay.HeaderLen:]
			if len(inner) != len(toRemote) || packet.EthDst(inner) != peerMAC || packet.EthSrc(inner) != routerMAC {
				t.Fatalf("inner frame %d bytes %s -> %s", len(inner), packet.EthSrc(inner), packet.EthDst(inner))
			}
			if r.a.RxFrames.Load() != 2 || r.b.TxFrames.Load() != 1 {
				t.Errorf("port counters: A rx %d, B tx %d", r.a.RxFrames.Load(), r.b.TxFrames.Load())
			}
		})
	}
}

// TestTransmitSuperFrame: a TSO super-frame from pod A reaches the peer as
// MSS-sized VXLAN datagrams, routed and checksummed, payload in order; to a
// port without TSO it is split into frames, and to one with TSO it goes
// whole with its header.
func TestTransmitSuperFrame(t *testing.T) {
	const mss, payload = 1398, 60000
	tso := modes[2].offloads
	r := newRig(t, tso, false)
	f, data, h := superFrame(t, payload, 1000, mss, remoteIP)
	if _, err := r.podA.WriteVnet([][]byte{f}, []netdev.VirtioHdr{h}, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := r.txA.Transmit(false); n != 1 || err != nil {
		t.Fatalf("Transmit = %d, %v", n, err)
	}
	segs := packet.TCPSegments(payload, mss)
	if len(r.out.dgrams) != segs {
		t.Fatalf("peer got %d datagrams, want %d", len(r.out.dgrams), segs)
	}
	var got []byte
	for i, d := range r.out.dgrams {
		inner := d[overlay.HeaderLen:]
		ip := packet.IPv4(inner[packet.EthHdrLen:])
		if packet.EthDst(inner) != peerMAC || ip.TTL() != 63 || !ip.HeaderChecksumOK() || int(ip.TotalLen()) != len(inner)-packet.EthHdrLen {
			t.Fatalf("segment %d: dst %s TTL %d header ok %v length %d of %d", i, packet.EthDst(inner), ip.TTL(), ip.HeaderChecksumOK(), ip.TotalLen(), len(inner))
		}
		tcp := inner[packet.EthHdrLen+packet.IPv4MinHdrLen:]
		sum := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoTCP, uint16(len(tcp)))
		if packet.Fold(packet.Checksum(tcp, sum)) != 0xffff {
			t.Fatalf("segment %d: bad TCP checksum", i)
		}
		got = append(got, tcp[32:]...)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("peer got %d payload bytes, not the %d sent in order", len(got), len(data))
	}
	if w := r.dp.Work(); w.SuperFrames.Load() != 1 || w.Segments.Load() != uint64(segs) {
		t.Errorf("work: %d super-frames, %d segments", w.SuperFrames.Load(), w.Segments.Load())
	}
}

// TestDeliverSuperFrame: a super-frame for a local port goes whole to a
// TAP that takes TSO and split to one that does not.
func TestDeliverSuperFrame(t *testing.T) {
	const mss, payload = 1000, 5500
	for _, bOffloads := range []int{modes[2].offloads, unix.TUN_F_CSUM} {
		r := newRig(t, modes[2].offloads, false)
		r.dpB.SetVnet(bOffloads)
		f, _, h := superFrame(t, payload, 1, mss, podBIP)
		must(t, writeVnet(r.podA, f, h))
		if _, err := r.txA.Transmit(false); err != nil {
			t.Fatal(err)
		}
		got, hdrs := readAll(t, r.podB)
		want := 1
		if bOffloads == unix.TUN_F_CSUM {
			want = packet.TCPSegments(payload, mss)
		}
		if len(got) != want {
			t.Fatalf("B (offloads %s) got %d frames, want %d", netdev.OffloadString(bOffloads), len(got), want)
		}
		if want == 1 && hdrs[0].GSO() != netdev.GSOTCPv4 {
			t.Errorf("whole super-frame lost its header: %+v", hdrs[0])
		}
	}
}

func writeVnet(f *netdev.Fake, frame []byte, h netdev.VirtioHdr) error {
	_, err := f.WriteVnet([][]byte{frame}, []netdev.VirtioHdr{h}, 0)
	return err
}

// TestReceive: datagrams from the peer reach pod A; a GRO run of TCP
// segments is coalesced into one super-frame for a TSO TAP when Coalesce
// is on, and written one by one when it is off or the TAP is plain.
func TestReceive(t *testing.T) {
	const mss, segs = 1000, 4
	for _, tc := range []struct {
		name       string
		offloads   int
		coalesce   bool
		wantFrames int
	}{
		{"coalesce", modes[2].offloads, true, 1},
		{"no-coalesce", modes[2].offloads, false, segs},
		{"plain", -1, true, segs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.offloads, tc.coalesce)
			var run []byte
			for i := range segs {
				run = append(run, vxlan(tcpSegment(t, uint32(1+i*mss), mss), testVNI)...)
			}
			dgram := len(run) / segs
			src := &source{reads: []srcRead{{data: run, segSize: dgram, from: fromB}}}
			rx := r.dp.NewReceiver(src, r.out, GROReadBatch, GROBufSize, nil)
			must(t, rx.Receive())
			got, hdrs := readAll(t, r.podA)
			if len(got) != tc.wantFrames {
				t.Fatalf("pod A got %d frames, want %d", len(got), tc.wantFrames)
			}
			if tc.wantFrames == 1 && (hdrs[0].GSO() != netdev.GSOTCPv4 || hdrs[0].GSOSize != mss) {
				t.Errorf("coalesced header %+v", hdrs[0])
			}
			if p, _ := r.peers.Lookup(underB.As4()); p.Stats().RxFrames.Load() != segs {
				t.Errorf("peer rx frames %d, want %d", p.Stats().RxFrames.Load(), segs)
			}
		})
	}
}

// TestTransmitUDPSuperFrame: a USO super-frame from pod A reaches the peer
// as separate, checksummed VXLAN datagrams carrying the payload in order.
func TestTransmitUDPSuperFrame(t *testing.T) {
	const mss, payload = 64, 64*20 + 10
	r := newRig(t, modes[2].offloads, false)
	f := udpFrame(podAMAC, routerMAC, podAIP, remoteIP, payload, 64)
	data := append([]byte(nil), f[packet.EthHdrLen+packet.IPv4MinHdrLen+packet.UDPHdrLen:]...)
	l4 := packet.EthHdrLen + packet.IPv4MinHdrLen
	sum := packet.PseudoHeaderSum4(podAIP.As4(), remoteIP.As4(), packet.IPProtoUDP, uint16(len(f)-l4))
	binary.BigEndian.PutUint16(f[l4+packet.UDPOffChecksum:], packet.Fold(sum)) // as the pod's stack leaves it
	h := netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, GSOType: netdev.GSOUDPL4, GSOSize: mss,
		HdrLen: uint16(l4 + packet.UDPHdrLen), CsumStart: uint16(l4), CsumOffset: packet.UDPOffChecksum}
	must(t, writeVnet(r.podA, f, h))
	if _, err := r.txA.Transmit(false); err != nil {
		t.Fatal(err)
	}
	if want := packet.TCPSegments(payload, mss); len(r.out.dgrams) != want {
		t.Fatalf("peer got %d datagrams, want %d", len(r.out.dgrams), want)
	}
	var got []byte
	for i, d := range r.out.dgrams {
		inner := d[overlay.HeaderLen:]
		ip := packet.IPv4(inner[packet.EthHdrLen:])
		u := inner[packet.EthHdrLen+packet.IPv4MinHdrLen:]
		sum := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoUDP, uint16(len(u)))
		if packet.Fold(packet.Checksum(u, sum)) != 0xffff || int(binary.BigEndian.Uint16(u[4:])) != len(u) {
			t.Fatalf("datagram %d: bad UDP checksum or length", i)
		}
		got = append(got, u[packet.UDPHdrLen:]...)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("peer got %d bytes, not the %d sent in order", len(got), len(data))
	}
}

// TestReceiveForeignChecksum: from a foreign peer, an inner TCP segment
// whose checksum does not verify is counted on the peer and still
// delivered (the pod's stack drops it); from a weft peer nothing is
// checked.
func TestReceiveForeignChecksum(t *testing.T) {
	for _, foreign := range []bool{true, false} {
		r := newRig(t, -1, false)
		must(t, r.peers.Set([]overlay.Peer{{Name: "b", Underlay: underB, RouterMAC: peerMAC,
			Subnet: netip.MustParsePrefix("10.244.2.0/24"), VNI: testVNI, Foreign: foreign}}))
		seg := tcpSegment(t, 1, 100)
		seg[len(seg)-1] ^= 0xff // payload changed after the checksum
		d := vxlan(seg, testVNI)
		receive(t, r, srcRead{data: d, segSize: len(d), from: fromB})
		got, _ := readAll(t, r.podA)
		p, _ := r.peers.Lookup(underB.As4())
		want := uint64(0)
		if foreign {
			want = 1
		}
		if len(got) != 1 || p.Stats().RxBadL4Checksum.Load() != want {
			t.Errorf("foreign=%v: %d frames delivered, bad checksums counted %d, want 1 and %d", foreign, len(got), p.Stats().RxBadL4Checksum.Load(), want)
		}
	}
}
