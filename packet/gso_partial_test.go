package packet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
)

// finishPartial completes a partial L4 checksum at l4Off+csumOff as the
// kernel's skb_checksum_help does (the field holds the pseudo-header sum).
func finishPartial(seg []byte, l4Off, csumOff int, udp bool) {
	c := ^Fold(Checksum(seg[l4Off:], 0))
	if udp && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[l4Off+csumOff:], c)
}

// TestSegmentPartialCompletes: every segment of SegmentTCPPartial and
// SegmentUDPPartial, completed the way a receiving kernel completes a
// CHECKSUM_PARTIAL packet, is byte for byte the segment SegmentTCP or
// SegmentUDP computes in full — so a partial segment carried end to end is
// the same packet once the receiver's stack has it.
func TestSegmentPartialCompletes(t *testing.T) {
	type split func(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int) (int, error)
	cases := []struct {
		name          string
		frame         []byte
		l4Off, mss    int
		csumOff       int
		full, partial split
		udp           bool
		wantSegs      int
	}{
		{"tcp v4 options", superFrame{tcpOpts: true, flags: TCPFlagACK | TCPFlagPSH, seq: 9, id: 3, payload: 5000}.build(t, -1, 0),
			EthHdrLen + IPv4MinHdrLen, 1448, TCPOffChecksum, SegmentTCP, SegmentTCPPartial, false, 4},
		{"tcp v4 ip options", superFrame{ipOptions: true, flags: TCPFlagACK, payload: 3000}.build(t, -1, 0),
			EthHdrLen + 24, 1000, TCPOffChecksum, SegmentTCP, SegmentTCPPartial, false, 3},
		{"tcp v6", superFrame{v6: true, flags: TCPFlagACK, payload: 4001}.build(t, -1, 0),
			EthHdrLen + IPv6HdrLen, 1000, TCPOffChecksum, SegmentTCP, SegmentTCPPartial, false, 5},
		{"udp v4", udpFrame(t, false, 7, 0, 1000), udpL4Off(false), 64, UDPOffChecksum, SegmentUDP, SegmentUDPPartial, true, 16},
		{"udp v6", udpFrame(t, true, 0, 0, 300), udpL4Off(true), 100, UDPOffChecksum, SegmentUDP, SegmentUDPPartial, true, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const gap = 8
			dstF, dstP := make([]byte, 1<<16), make([]byte, 1<<16)
			offsF, lensF, offsP, lensP := make([]int, 64), make([]int, 64), make([]int, 64), make([]int, 64)
			nF, err := c.full(dstF, gap, c.frame, EthHdrLen, c.l4Off, c.mss, offsF, lensF)
			if err != nil {
				t.Fatal(err)
			}
			nP, err := c.partial(dstP, gap, c.frame, EthHdrLen, c.l4Off, c.mss, offsP, lensP)
			if err != nil {
				t.Fatal(err)
			}
			if nF != c.wantSegs || nP != nF {
				t.Fatalf("segments: full %d, partial %d, want %d", nF, nP, c.wantSegs)
			}
			for i := range nP {
				if offsP[i] != offsF[i] || lensP[i] != lensF[i] {
					t.Fatalf("segment %d at %d+%d, full at %d+%d", i, offsP[i], lensP[i], offsF[i], lensF[i])
				}
				full := dstF[offsF[i] : offsF[i]+lensF[i]]
				seg := bytes.Clone(dstP[offsP[i] : offsP[i]+lensP[i]])
				if bytes.Equal(seg, full) {
					t.Fatalf("segment %d: the partial form equals the full one (checksum computed?)", i)
				}
				finishPartial(seg, c.l4Off, c.csumOff, c.udp)
				if !bytes.Equal(seg, full) {
					t.Fatalf("segment %d completed differs from the full one:\n got %x\nwant %x", i, seg[:c.l4Off+20], full[:c.l4Off+20])
				}
			}
		})
	}
}

// partialOf returns a copy of a full-checksum TCP or UDP/IPv4 frame with its
// checksum made partial, as a sender leaves it.
func partialOf(frame []byte, udp bool) []byte {
	f := bytes.Clone(frame)
	ip := IPv4(f[EthHdrLen:])
	l4 := f[EthHdrLen+ip.HeaderLen() : EthHdrLen+int(ip.TotalLen())]
	proto, off := uint8(IPProtoTCP), TCPOffChecksum
	if udp {
		proto, off = IPProtoUDP, UDPOffChecksum
	}
	binary.BigEndian.PutUint16(l4[off:], Fold(PseudoHeaderSum4(ip.Src4(), ip.Dst4(), proto, uint16(len(l4)))))
	return f
}

// TestRunsTakePartial: segments with partial checksums coalesce (nothing
// to verify), mixed with full ones, into the same super-frame as full
// ones; a run of one partial segment says it is partial and returns it
// unchanged; a full segment with a broken checksum is still refused.
func TestRunsTakePartial(t *testing.T) {
	segs := segmentsOf(t, superFrame{tcpOpts: true, flags: TCPFlagACK, payload: 4000}, 1000)
	parts, wantParts := make([][]byte, 0, 128), make([][]byte, 0, 128)
	buf, want := make([]byte, EthHdrLen+0xffff), make([]byte, EthHdrLen+0xffff) // the UDP runs'
	var r, w TCPRun
	if !r.StartPartial(parts, partialOf(segs[0], false)) || !w.Start(wantParts, segs[0]) {
		t.Fatal("Start refused")
	}
	for i, s := range segs[1:] {
		var add bool
		if i == 1 {
			add = r.Add(s) // a full one in the middle
		} else {
			add = r.AddPartial(partialOf(s, false))
		}
		if !add || !w.Add(s) {
			t.Fatalf("Add refused segment %d", i+1)
		}
	}
	if !r.Partial() {
		t.Error("a merged run is not Partial")
	}
	got, _, _ := finishJoined(&r)
	exp, _, _ := finishJoined(&w)
	if !bytes.Equal(got, exp) {
		t.Error("the run of partial segments differs from the run of full ones")
	}

	one := partialOf(segs[0], false)
	if !r.StartPartial(parts, one) || !r.Partial() {
		t.Fatal("a single partial segment: not started or not Partial")
	}
	if f, _, _ := finishJoined(&r); !bytes.Equal(f, one) {
		t.Error("a single partial segment came back changed")
	}
	if !r.Start(parts, segs[0]) || r.Partial() {
		t.Error("a single full segment: not started or Partial")
	}
	bad := bytes.Clone(segs[1])
	bad[len(bad)-1]++
	if r.Add(bad) {
		t.Error("Add took a full segment with a broken checksum")
	}
	if !r.AddPartial(bad) {
		t.Error("AddPartial refused the same bytes as a partial segment")
	}

	ds := [][]byte{udpFrame(t, false, 1, 0, 64), udpFrame(t, false, 2, 64, 64), udpFrame(t, false, 3, 128, 64)}
	var u, uw UDPRun
	if !u.StartPartial(buf, partialOf(ds[0], true)) || !uw.Start(want, ds[0]) {
		t.Fatal("UDP Start refused")
	}
	for _, d := range ds[1:] {
		if !u.AddPartial(partialOf(d, true)) || !uw.Add(d) {
			t.Fatal("UDP Add refused")
		}
	}
	if !u.Partial() {
		t.Error("a merged UDP run is not Partial")
	}
	gotU, _ := u.Finish()
	expU, _ := uw.Finish()
	if !bytes.Equal(gotU, expU) {
		t.Error("the UDP run of partial datagrams differs from the run of full ones")
	}
	if !u.StartPartial(buf, partialOf(ds[0], true)) || !u.Partial() {
		t.Error("a single partial datagram is not Partial")
	}
}

func TestSegmentPartialAllocs(t *testing.T) {
	frame := superFrame{tcpOpts: true, flags: TCPFlagACK, payload: 60000}.build(t, -1, 0)
	dst := make([]byte, 1<<17)
	offs, lens := make([]int, 64), make([]int, 64)
	allocs := testing.AllocsPerRun(100, func() {
		SegmentTCPPartial(dst, 8, frame, EthHdrLen, EthHdrLen+IPv4MinHdrLen, 1398, offs, lens)
	})
	if allocs != 0 {
		t.Errorf("SegmentTCPPartial: %v allocs per run, want 0", allocs)
	}
}

func BenchmarkSegmentTCP64K(b *testing.B) {
	frame := superFrame{tcpOpts: true, flags: TCPFlagACK, payload: 65535 - 20 - 32}.build(b, -1, 0)
	dst := make([]byte, 1<<17)
	offs, lens := make([]int, 64), make([]int, 64)
	for _, c := range []struct {
		name string
		fn   func(dst []byte, gap int, frame []byte, l3Off, l4Off, mss int, offs, lens []int) (int, error)
	}{{"full", SegmentTCP}, {"partial", SegmentTCPPartial}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.fn(dst, 8, frame, EthHdrLen, EthHdrLen+IPv4MinHdrLen, 1398, offs, lens); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSegmentTCPHeaders: the headers SegmentTCPHeaders writes, each
// followed by its chunk, are byte for byte the segments SegmentTCP (and
// SegmentTCPPartial) write, chunks lie inside the frame (no copy), and a
// dst with room for the headers alone is enough.
func TestSegmentTCPHeaders(t *testing.T) {
	for _, c := range []struct {
		name string
		sf   superFrame
		mss  int
	}{
		{"options, PSH, short last", superFrame{tcpOpts: true, flags: TCPFlagACK | TCPFlagPSH | TCPFlagCWR, seq: 77, id: 5, payload: 5000}, 1448},
		{"64 KiB", superFrame{tcpOpts: true, flags: TCPFlagACK, payload: 65535 - 20 - 32}, 1398},
		{"IPv6", superFrame{v6: true, flags: TCPFlagACK, payload: 3000}, 1000},
		{"one segment", superFrame{flags: TCPFlagACK, payload: 500}, 1000},
	} {
		for _, partial := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/partial=%v", c.name, partial), func(t *testing.T) {
				frame := c.sf.build(t, -1, 0)
				l4 := c.sf.l4Off()
				want := make([]byte, 1<<17)
				wOffs, wLens := make([]int, 64), make([]int, 64)
				seg := SegmentTCP
				if partial {
					seg = SegmentTCPPartial
				}
				wn, err := seg(want, 8, frame, EthHdrLen, l4, c.mss, wOffs, wLens)
				if err != nil {
					t.Fatal(err)
				}
				hdrRoom := wn * (8 + l4 + 64)
				dst := make([]byte, hdrRoom)
				offs, lens, chunks := make([]int, 64), make([]int, 64), make([][]byte, 64)
				n, err := SegmentTCPHeaders(dst, 8, frame, EthHdrLen, l4, c.mss, offs, lens, chunks, partial)
				if err != nil || n != wn {
					t.Fatalf("SegmentTCPHeaders = %d, %v; SegmentTCP made %d", n, err, wn)
				}
				for i := range n {
					got := append(bytes.Clone(dst[offs[i]:offs[i]+lens[i]]), chunks[i]...)
					if w := want[wOffs[i] : wOffs[i]+wLens[i]]; !bytes.Equal(got, w) {
						t.Fatalf("segment %d differs\n got %x\nwant %x", i, got[:min(80, len(got))], w[:min(80, len(w))])
					}
					if len(chunks[i]) > 0 && (cap(chunks[i]) > cap(frame) || &chunks[i][:cap(chunks[i])][cap(chunks[i])-1] != &frame[len(frame)-1]) {
						t.Fatalf("chunk %d is not a slice of the frame", i)
					}
				}
			})
		}
	}
	frame := superFrame{flags: TCPFlagACK, payload: 3000}.build(t, -1, 0)
	offs, lens := make([]int, 8), make([]int, 8)
	if _, err := SegmentTCPHeaders(make([]byte, 4096), 8, frame, EthHdrLen, EthHdrLen+IPv4MinHdrLen, 1000, offs, lens, make([][]byte, 2), true); err != ErrGSOSegments {
		t.Errorf("3 segments, 2 chunk slots: err %v, want ErrGSOSegments", err)
	}
	dst, chunks := make([]byte, 4096), make([][]byte, 8)
	if allocs := testing.AllocsPerRun(50, func() {
		SegmentTCPHeaders(dst, 8, frame, EthHdrLen, EthHdrLen+IPv4MinHdrLen, 1000, offs, lens, chunks, true)
	}); allocs != 0 {
		t.Errorf("SegmentTCPHeaders allocates %v times", allocs)
	}
}
