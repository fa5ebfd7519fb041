package packet

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// segmentsOf splits sf with SegmentTCP into separate frames.
func segmentsOf(t testing.TB, sf superFrame, mss int) [][]byte {
	t.Helper()
	frame := sf.build(t, -1, 0)
	dst := make([]byte, 1<<17)
	offs, lens := make([]int, 128), make([]int, 128)
	n, err := SegmentTCP(dst, 0, frame, EthHdrLen, sf.l4Off(), mss, offs, lens)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, n)
	for i := range n {
		out[i] = bytes.Clone(dst[offs[i] : offs[i]+lens[i]])
	}
	return out
}

// finishJoined is TCPRun.Finish with the parts joined into one frame, as a
// gathering write puts them on the wire.
func finishJoined(r *TCPRun) (frame []byte, mss, hdrLen int) {
	parts, n, mss, hdrLen := r.Finish()
	frame = bytes.Join(parts, nil)
	if len(frame) != n {
		panic("TCPRun.Finish: parts and length disagree")
	}
	return frame, mss, hdrLen
}

// completeChecksum finishes a CHECKSUM_PARTIAL TCP/IPv4 frame as the
// receiving kernel would treat it.
func completeChecksum(frame []byte) {
	tcp := frame[TCPRunL4Off:]
	sum := Checksum(tcp, 0) // the field holds the pseudo-header sum
	binary.BigEndian.PutUint16(tcp[TCPOffChecksum:], ^Fold(sum))
}

func TestTCPRunRebuildsSuperFrame(t *testing.T) {
	cases := []struct {
		name string
		sf   superFrame
		mss  int
	}{
		{"options, PSH on the short last", superFrame{tcpOpts: true, flags: TCPFlagACK | TCPFlagPSH, seq: 77, id: 5, payload: 5000}, 1448},
		{"no options, exact multiple", superFrame{flags: TCPFlagACK, seq: 0xffffff00, payload: 4 * 1000}, 1000},
		{"64 KiB", superFrame{tcpOpts: true, flags: TCPFlagACK | TCPFlagPSH, payload: 65535 - 20 - 32}, 1398},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			segs := segmentsOf(t, c.sf, c.mss)
			buf := make([][]byte, 0, 128)
			var r TCPRun
			if !r.Start(buf, segs[0]) {
				t.Fatal("Start refused the first segment")
			}
			for i, s := range segs[1:] {
				if !r.Add(s) {
					t.Fatalf("Add refused segment %d", i+1)
				}
			}
			if r.Segments() != len(segs) {
				t.Fatalf("%d segments in the run, want %d", r.Segments(), len(segs))
			}
			frame, mss, hdrLen := finishJoined(&r)
			if mss != c.mss || hdrLen != c.sf.l4Off()+TCPMinHdrLen+map[bool]int{true: 12}[c.sf.tcpOpts] {
				t.Errorf("mss %d hdrLen %d", mss, hdrLen)
			}
			completeChecksum(frame)
			want := c.sf.build(t, -1, 0)
			if !bytes.Equal(frame, want) {
				t.Errorf("merged frame differs from the super-frame\n got %x\nwant %x", frame[:80], want[:80])
			}
			if r.Segments() != 0 {
				t.Error("run not empty after Finish")
			}
		})
	}
}

func TestTCPRunRefuses(t *testing.T) {
	base := superFrame{tcpOpts: true, flags: TCPFlagACK, seq: 1000, payload: 3000}
	segs := segmentsOf(t, base, 1000) // 3 x 1000
	mod := func(i int, f func(b []byte)) []byte {
		b := bytes.Clone(segs[i])
		f(b)
		return b
	}
	// fixCsum recomputes the TCP checksum after a header change.
	fixCsum := func(b []byte) {
		tcp := b[TCPRunL4Off:]
		tcp[TCPOffChecksum], tcp[TCPOffChecksum+1] = 0, 0
		ip := IPv4(b[EthHdrLen:])
		s := PseudoHeaderSum4(ip.Src4(), ip.Dst4(), IPProtoTCP, uint16(len(tcp)))
		binary.BigEndian.PutUint16(tcp[TCPOffChecksum:], ^Fold(Checksum(tcp, s)))
	}
	startRefusals := []struct {
		name  string
		frame []byte
	}{
		{"bad checksum", mod(0, func(b []byte) { b[len(b)-1] ^= 0xff })},
		{"SYN", mod(0, func(b []byte) { b[TCPRunL4Off+13] |= TCPFlagSYN; fixCsum(b) })},
		{"pure ACK", segmentsOf(t, superFrame{flags: TCPFlagACK, payload: 0}, 1000)[0]},
		{"IPv6", segmentsOf(t, superFrame{v6: true, flags: TCPFlagACK, payload: 100}, 1000)[0]},
		{"IPv4 options", segmentsOf(t, superFrame{ipOptions: true, flags: TCPFlagACK, payload: 100}, 1000)[0]},
		{"truncated", segs[0][:30]},
	}
	buf := make([][]byte, 0, 128)
	var r TCPRun
	for _, c := range startRefusals {
		if r.Start(buf, c.frame) {
			t.Errorf("Start took %s", c.name)
		}
	}
	addRefusals := []struct {
		name  string
		frame []byte
	}{
		{"gap in sequence", segs[2]},
		{"repeat", segs[0]},
		{"other port", mod(1, func(b []byte) { b[TCPRunL4Off+1]++; fixCsum(b) })},
		{"other ack", mod(1, func(b []byte) { b[TCPRunL4Off+11]++; fixCsum(b) })},
		{"other window", mod(1, func(b []byte) { b[TCPRunL4Off+15]++; fixCsum(b) })},
		{"other options", mod(1, func(b []byte) { b[TCPRunL4Off+25]++; fixCsum(b) })},
		{"other TTL", mod(1, func(b []byte) { b[EthHdrLen+IPv4OffTTL]--; IPv4(b[EthHdrLen:]).ComputeChecksum() })},
		{"other MAC", mod(1, func(b []byte) { b[0]++ })},
		{"bad checksum", mod(1, func(b []byte) { b[len(b)-1] ^= 0xff })},
		{"FIN", mod(1, func(b []byte) { b[TCPRunL4Off+13] |= TCPFlagFIN; fixCsum(b) })},
	}
	for _, c := range addRefusals {
		if !r.Start(buf, segs[0]) {
			t.Fatal("Start refused a good segment")
		}
		if r.Add(c.frame) {
			t.Errorf("Add took %s", c.name)
		}
		if r.Segments() != 1 {
			t.Errorf("%s: run changed", c.name)
		}
	}
	// A short segment closes the run; so does PSH.
	short := segmentsOf(t, superFrame{tcpOpts: true, flags: TCPFlagACK, seq: 1000, payload: 2500}, 1000)
	r.Start(buf, short[0])
	if !r.Add(short[1]) || !r.Add(short[2]) || r.Add(segs[2]) {
		t.Error("a run went on after its short segment")
	}
	psh := segmentsOf(t, superFrame{tcpOpts: true, flags: TCPFlagACK | TCPFlagPSH, seq: 1000, payload: 2000}, 1000)
	r.Start(buf, segs[0])
	if !r.Add(psh[1]) || r.Add(segs[2]) {
		t.Error("a run went on after a PSH segment")
	}
	// A full parts list ends the run; one without room for a merge
	// starts none.
	small := make([][]byte, 0, 2)
	if !r.Start(small, segs[0]) || r.Add(segs[1]) {
		t.Error("Add overflowed the parts list")
	}
	if r.Start(make([][]byte, 0, 1), segs[0]) {
		t.Error("Start took a parts list without room for the payload")
	}
}

func TestTCPRunAllocs(t *testing.T) {
	segs := segmentsOf(t, superFrame{tcpOpts: true, flags: TCPFlagACK, payload: 60000}, 1448)
	buf := make([][]byte, 0, 128)
	var r TCPRun
	allocs := testing.AllocsPerRun(50, func() {
		r.Start(buf, segs[0])
		for _, s := range segs[1:] {
			r.Add(s)
		}
		r.Finish()
	})
	if allocs != 0 {
		t.Errorf("TCPRun allocates %v times per run", allocs)
	}
}

func BenchmarkTCPRun(b *testing.B) {
	segs := segmentsOf(b, superFrame{tcpOpts: true, flags: TCPFlagACK, payload: 65535 - 20 - 32}, 1398)
	buf := make([][]byte, 0, 128)
	var r TCPRun
	b.SetBytes(65535)
	b.ReportAllocs()
	for b.Loop() {
		r.Start(buf, segs[0])
		for _, s := range segs[1:] {
			r.Add(s)
		}
		r.Finish()
	}
}

// FuzzTCPRun: arbitrary frames never make Add or Finish misbehave, and a
// finished run's lengths and partial checksum are consistent.
func FuzzTCPRun(f *testing.F) {
	segs := segmentsOf(f, superFrame{tcpOpts: true, flags: TCPFlagACK, payload: 3000}, 1000)
	f.Add(segs[0], segs[1])
	f.Add(segs[0], segs[2])
	f.Fuzz(func(t *testing.T, a, b []byte) {
		buf := make([][]byte, 0, 128)
		var r TCPRun
		if !r.Start(buf, a) {
			return
		}
		added := r.Add(b)
		frame, mss, hdrLen := finishJoined(&r)
		if hdrLen > len(frame) || mss <= 0 {
			t.Fatalf("hdrLen %d mss %d frame %d", hdrLen, mss, len(frame))
		}
		if added {
			if int(IPv4(frame[EthHdrLen:]).TotalLen()) != len(frame)-EthHdrLen || !IPv4(frame[EthHdrLen:]).HeaderChecksumOK() {
				t.Fatal("merged IPv4 header inconsistent")
			}
			completeChecksum(frame)
			ip := IPv4(frame[EthHdrLen:])
			s := PseudoHeaderSum4(ip.Src4(), ip.Dst4(), IPProtoTCP, uint16(len(frame)-TCPRunL4Off))
			if Fold(Checksum(frame[TCPRunL4Off:], s)) != 0xffff {
				t.Fatal("merged frame's checksum does not complete")
			}
		}
	})
}
