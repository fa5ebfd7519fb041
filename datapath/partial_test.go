package datapath

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// setPeer replaces the rig's peer "b" with one that does or does not take
// partial checksums, foreign or not.
func setPeer(t testing.TB, r *rig, partial, foreign bool) {
	t.Helper()
	must(t, r.peers.Set([]overlay.Peer{{Name: "b", Underlay: underB, RouterMAC: peerMAC,
		Subnet: netip.MustParsePrefix("10.244.2.0/24"), VNI: testVNI, PartialCsum: partial, Foreign: foreign}}))
}

// plainPartial is pod A's TCP frame of payload bytes to dst as a
// virtio-header TAP hands out a frame that needs no segmentation: checksum
// partial, NEEDS_CSUM without GSO.
func plainPartial(t testing.TB, dst netip.Addr, payload int) ([]byte, netdev.VirtioHdr) {
	t.Helper()
	f, _, h := superFrame(t, payload, 7, 1398, dst)
	h.GSOType, h.GSOSize, h.HdrLen = netdev.GSONone, 0, 0
	return f, h
}

// l4Sum verifies the TCP or UDP/IPv4 checksum of an inner frame: ok when
// complete and valid; partial when the field holds the pseudo-header sum
// (the frame completes to a valid checksum from there).
func l4Sum(frame []byte) (ok, partial bool) {
	ip := packet.IPv4(frame[packet.EthHdrLen:])
	l4 := frame[packet.EthHdrLen+ip.HeaderLen() : packet.EthHdrLen+int(ip.TotalLen())]
	off := packet.TCPOffChecksum
	if ip.Proto() == packet.IPProtoUDP {
		off = packet.UDPOffChecksum
	}
	pseudo := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), ip.Proto(), uint16(len(l4)))
	ok = packet.Fold(packet.Checksum(l4, pseudo)) == 0xffff
	completed := bytes.Clone(l4)
	binary.BigEndian.PutUint16(completed[off:], ^packet.Fold(packet.Checksum(completed, 0)))
	partial = binary.BigEndian.Uint16(l4[off:]) == packet.Fold(pseudo) &&
		packet.Fold(packet.Checksum(completed, pseudo)) == 0xffff
	return ok, partial
}

// TestPartialTransmit: a plain frame whose checksum pod A left partial
// goes to the peer partial and flagged only when the data path runs with
// PartialCsum and the peer takes it; otherwise complete and unflagged. To
// a local virtio-header TAP it goes partial with a NEEDS_CSUM header, to a
// plain TAP complete.
func TestPartialTransmit(t *testing.T) {
	for _, c := range []struct {
		name          string
		cfg, peer     bool
		wantPartial   bool
		wantLocalHdr  bool
		plainLocalTap bool
	}{
		{"on, peer takes it", true, true, true, true, false},
		{"on, peer does not", true, false, false, true, false},
		{"off, peer takes it", false, true, false, false, false},
		{"on, plain local TAP", true, true, true, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, modes[2].offloads, false)
			r.dp.cfg.PartialCsum = c.cfg
			setPeer(t, r, c.peer, false)
			podB := r.podB
			if c.plainLocalTap {
				dpB, pb := netdev.NewPipeSize("dpB2", "podB2", 16, 2048, 16)
				t.Cleanup(func() { dpB.Close() })
				r.dp.SetPort(&Port{ID: podBID, Dev: dpB})
				podB = pb
			}
			toRemote, h := plainPartial(t, remoteIP, 900)
			toB, hb := plainPartial(t, podBIP, 900)
			if _, err := r.podA.WriteVnet([][]byte{toRemote, toB}, []netdev.VirtioHdr{h, hb}, 0); err != nil {
				t.Fatal(err)
			}
			if n, err := r.txA.Transmit(false); n != 2 || err != nil {
				t.Fatalf("Transmit = %d, %v", n, err)
			}
			if len(r.out.dgrams) != 1 {
				t.Fatalf("%d datagrams to the peer", len(r.out.dgrams))
			}
			d := r.out.dgrams[0]
			if overlay.PartialCsum(d) != c.wantPartial {
				t.Errorf("VXLAN partial flag %v, want %v", overlay.PartialCsum(d), c.wantPartial)
			}
			ok, partial := l4Sum(d[overlay.HeaderLen:])
			if c.wantPartial && !partial || !c.wantPartial && !ok {
				t.Errorf("to the peer: checksum complete %v, partial %v; want partial %v", ok, partial, c.wantPartial)
			}
			got, hdrs := readAll(t, podB)
			if len(got) != 1 {
				t.Fatalf("pod B got %d frames", len(got))
			}
			ok, partial = l4Sum(got[0])
			wantHdr := netdev.VirtioHdr{Flags: netdev.VirtioFlagNeedsCsum, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}
			switch {
			case c.plainLocalTap && !ok:
				t.Error("a plain TAP got an incomplete checksum")
			case c.wantLocalHdr && (hdrs[0] != wantHdr || !partial):
				t.Errorf("pod B: header %+v (want %+v), partial %v", hdrs[0], wantHdr, partial)
			case !c.wantLocalHdr && !c.plainLocalTap && (hdrs[0] != netdev.VirtioHdr{} || !ok):
				t.Errorf("pod B: header %+v, checksum complete %v; want a zero header and a complete checksum", hdrs[0], ok)
			}
			if d := r.dp.DropCounts(); d["offload_bad_csum"] != 0 {
				t.Errorf("drops %v", d)
			}
		})
	}
}

// TestPartialSuperFrame: a TSO super-frame for a peer that takes partial
// checksums leaves as segments whose checksums are partial, each flagged,
// each completing to a valid checksum, payload in order.
func TestPartialSuperFrame(t *testing.T) {
	const mss, payload = 1398, 30000
	r := newRig(t, modes[2].offloads, false)
	setPeer(t, r, true, false)
	f, data, h := superFrame(t, payload, 1000, mss, remoteIP)
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
		if _, partial := l4Sum(inner); !partial || !overlay.PartialCsum(d) {
			t.Fatalf("segment %d: partial %v, flagged %v", i, partial, overlay.PartialCsum(d))
		}
		got = append(got, inner[packet.EthHdrLen+packet.IPv4MinHdrLen+32:]...)
	}
	if !bytes.Equal(got, data) {
		t.Error("payload not delivered in order")
	}
}

// partialSegment is tcpSegment with its checksum left partial, as a weft
// peer sends it with FlagPartialCsum.
func partialSegment(t testing.TB, seq uint32, payload int) []byte {
	f := tcpSegment(t, seq, payload)
	ip := packet.IPv4(f[packet.EthHdrLen:])
	l4 := f[packet.EthHdrLen+packet.IPv4MinHdrLen:]
	binary.BigEndian.PutUint16(l4[packet.TCPOffChecksum:], packet.Fold(packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoTCP, uint16(len(l4)))))
	return f
}

// vxlanPartial is vxlan with FlagPartialCsum.
func vxlanPartial(inner []byte) []byte {
	d := vxlan(inner, testVNI)
	overlay.MarkPartialCsum(d)
	return d
}

// TestPartialReceive: frames that arrive flagged partial from a weft peer
// reach a virtio-header TAP partial (one segment: NEEDS_CSUM alone; a run:
// the coalesced super-frame) and a plain TAP complete; flagged from a
// foreign peer, or flagged around something that is not TCP/UDP over
// IPv4, they are dropped and counted.
func TestPartialReceive(t *testing.T) {
	const mss = 1000
	run := func(n int) srcRead {
		var b []byte
		for i := range n {
			b = append(b, vxlanPartial(partialSegment(t, uint32(1+i*mss), mss))...)
		}
		return srcRead{data: b, segSize: len(b) / n, from: fromB}
	}
	for _, c := range []struct {
		name       string
		offloads   int
		segs       int
		wantFrames int
		wantGSO    uint8
	}{
		{"run of 4", modes[2].offloads, 4, 1, netdev.GSOTCPv4},
		{"one", modes[2].offloads, 1, 1, netdev.GSONone},
		{"plain TAP", -1, 3, 3, netdev.GSONone},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.offloads, true)
			receive(t, r, run(c.segs))
			got, hdrs := readAll(t, r.podA)
			if len(got) != c.wantFrames {
				t.Fatalf("pod A got %d frames, want %d", len(got), c.wantFrames)
			}
			for i, f := range got {
				ok, partial := l4Sum(f)
				if c.offloads < 0 {
					if !ok {
						t.Errorf("frame %d to a plain TAP: checksum not completed", i)
					}
					continue
				}
				h := hdrs[i]
				if !partial || h.GSO() != c.wantGSO || h.Flags != netdev.VirtioFlagNeedsCsum ||
					h.CsumStart != packet.TCPRunL4Off || h.CsumOffset != packet.TCPOffChecksum {
					t.Errorf("frame %d: partial %v, header %+v", i, partial, h)
				}
			}
		})
	}

	t.Run("foreign peer", func(t *testing.T) {
		r := newRig(t, modes[2].offloads, true)
		setPeer(t, r, false, true)
		receive(t, r, run(1))
		if got, _ := readAll(t, r.podA); len(got) != 0 || r.decap.Drops.Get(overlay.DropReservedBits) != 1 {
			t.Errorf("%d frames delivered, reserved-bit drops %d", len(got), r.decap.Drops.Get(overlay.DropReservedBits))
		}
	})
	t.Run("not TCP or UDP", func(t *testing.T) {
		r := newRig(t, modes[2].offloads, true)
		f := tcpSegment(t, 1, 100)
		f[packet.EthHdrLen+packet.IPv4OffProto] = packet.IPProtoICMP
		d := vxlanPartial(f)
		receive(t, r, srcRead{data: d, segSize: len(d), from: fromB})
		if got, _ := readAll(t, r.podA); len(got) != 0 || r.dp.DropCounts()["offload_bad_partial"] != 1 {
			t.Errorf("%d frames delivered, drops %v", len(got), r.dp.DropCounts())
		}
	})
}

// TestPartialHdr: which frames may carry a partial checksum.
func TestPartialHdr(t *testing.T) {
	tcp, _ := plainPartial(t, remoteIP, 100)
	udp := udpFrame(podAMAC, routerMAC, podAIP, remoteIP, 10, 64)
	mod := func(f []byte, fn func(b []byte)) []byte { b := bytes.Clone(f); fn(b); return b }
	ip := packet.EthHdrLen
	for _, c := range []struct {
		name      string
		f         []byte
		ok        bool
		start     uint16
		csumOff   uint16
		wantIPLen uint16
	}{
		{"tcp", tcp, true, 34, packet.TCPOffChecksum, uint16(len(tcp) - ip)},
		{"udp", udp, true, 34, packet.UDPOffChecksum, uint16(len(udp) - ip)},
		{"padded", append(bytes.Clone(udp), 0, 0, 0, 0), true, 34, packet.UDPOffChecksum, uint16(len(udp) - ip)},
		{"icmp", mod(udp, func(b []byte) { b[ip+packet.IPv4OffProto] = packet.IPProtoICMP }), false, 0, 0, 0},
		{"fragment", mod(udp, func(b []byte) { b[ip+packet.IPv4OffFlagsFrag] |= 0x20 }), false, 0, 0, 0},
		{"total beyond frame", mod(udp, func(b []byte) { b[ip+3] += 10 }), false, 0, 0, 0},
		{"ihl short", mod(udp, func(b []byte) { b[ip] = 0x44 }), false, 0, 0, 0},
		{"no L4 room", udp[:ip+packet.IPv4MinHdrLen+4], false, 0, 0, 0},
		{"ipv6", mod(udp, func(b []byte) { b[12], b[13] = 0x86, 0xdd }), false, 0, 0, 0},
		{"short", udp[:20], false, 0, 0, 0},
	} {
		h, ipLen, ok := partialHdr(c.f)
		if ok != c.ok || ok && (h.CsumStart != c.start || h.CsumOffset != c.csumOff || ipLen != c.wantIPLen || h.Flags != netdev.VirtioFlagNeedsCsum) {
			t.Errorf("%s: %+v, %d, %v", c.name, h, ipLen, ok)
		}
	}
}

// TestPartialAllocs: the partial paths allocate nothing per frame once warm.
func TestPartialAllocs(t *testing.T) {
	r := newRig(t, modes[2].offloads, true)
	r.dp.cfg.PartialCsum = true
	setPeer(t, r, true, false)
	r.out.discard = true
	drainA := drainer(r.podA)
	plain, ph := plainPartial(t, remoteIP, 900)
	super, _, sh := superFrame(t, 60000, 1, 1398, remoteIP)
	var run []byte
	for i := range 8 {
		run = append(run, vxlanPartial(partialSegment(t, uint32(1+i*1000), 1000))...)
	}
	src := &source{}
	rx := r.dp.NewReceiver(src, r.out, GROReadBatch, GROBufSize, nil)
	for _, c := range []struct {
		name string
		fn   func()
	}{
		{"transmit partial", func() {
			r.podA.WriteVnet([][]byte{plain}, []netdev.VirtioHdr{ph}, 0)
			r.txA.Transmit(false)
		}},
		{"transmit super-frame partial", func() {
			r.podA.WriteVnet([][]byte{super}, []netdev.VirtioHdr{sh}, 0)
			r.txA.Transmit(false)
		}},
		{"receive partial", func() {
			src.reads = append(src.reads[:0], srcRead{data: run, segSize: len(run) / 8, from: fromB})
			src.next = 0
			rx.Receive()
			drainA()
		}},
	} {
		for range 300 {
			c.fn()
		}
		if allocs := testing.AllocsPerRun(100, c.fn); allocs != 0 {
			t.Errorf("%s: %v allocs per run, want 0", c.name, allocs)
		}
	}
	if d := r.dp.DropCounts(); d["offload_bad_partial"]+d["offload_bad_gso"]+d["out_tap_write"] != 0 {
		t.Errorf("drops: %v", d)
	}
}

// BenchmarkPartialTransmitSuperFrameEncap is BenchmarkTransmitSuperFrameEncap
// towards a peer that takes partial checksums: the segments are copied but
// not summed.
func BenchmarkPartialTransmitSuperFrameEncap(b *testing.B) {
	r := newRig(b, modes[2].offloads, true)
	setPeer(b, r, true, false)
	r.out.discard = true
	f, _, h := superFrame(b, 65535-20-32, 1, 1398, remoteIP)
	frames, hdrs := [][]byte{f}, []netdev.VirtioHdr{h}
	step := func() {
		r.podA.WriteVnet(frames, hdrs, 0)
		r.txA.Transmit(false)
	}
	for range 300 {
		step()
	}
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		step()
	}
}

// BenchmarkPartialReceiveCoalesce is BenchmarkReceiveCoalesce with the
// segments flagged partial: coalesced without verifying their checksums.
func BenchmarkPartialReceiveCoalesce(b *testing.B) {
	const segs, mss = 44, 1398
	r := newRig(b, modes[2].offloads, true)
	var run []byte
	for i := range segs {
		run = append(run, vxlanPartial(partialSegment(b, uint32(1+i*mss), mss))...)
	}
	src := &source{}
	rx := r.dp.NewReceiver(src, r.out, GROReadBatch, GROBufSize, nil)
	drain := drainer(r.podA)
	step := func() {
		src.reads = append(src.reads[:0], srcRead{data: run, segSize: len(run) / segs, from: fromB})
		src.next = 0
		rx.Receive()
		drain()
	}
	for range 300 {
		step()
	}
	b.SetBytes(int64(len(run)))
	b.ReportAllocs()
	for b.Loop() {
		step()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*segs), "ns/segment")
}

// FuzzPartialHdr: partialHdr never panics, and what it accepts has its
// checksum field and IP length inside the frame, at the L4 offset the IPv4
// header gives.
func FuzzPartialHdr(f *testing.F) {
	tcp, _ := plainPartial(f, remoteIP, 100)
	f.Add(tcp)
	f.Add(udpFrame(podAMAC, routerMAC, podAIP, remoteIP, 10, 64))
	f.Add(tcp[:40])
	f.Fuzz(func(t *testing.T, fr []byte) {
		h, ipLen, ok := partialHdr(fr)
		if !ok {
			return
		}
		if int(h.CsumStart)+int(h.CsumOffset)+2 > len(fr) || int(ipLen)+packet.EthHdrLen > len(fr) ||
			int(h.CsumStart) != packet.EthHdrLen+packet.IPv4(fr[packet.EthHdrLen:]).HeaderLen() {
			t.Fatalf("accepted %+v ipLen %d for a %d-byte frame", h, ipLen, len(fr))
		}
	})
}
