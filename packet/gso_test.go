package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// superFrame describes a TCP super-frame for the tests.
type superFrame struct {
	v6        bool
	ipOptions bool // IPv4 only: a 4-byte option (IHL 6)
	tcpOpts   bool // NOP, NOP, timestamps (12 bytes)
	flags     uint8
	seq       uint32
	id        uint16
	payload   int
}

var (
	gsoSrcMAC = net.HardwareAddr{0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x03}
	gsoDstMAC = net.HardwareAddr{0x02, 0x11, 0x22, 0x33, 0x44, 0x55}
)

func gsoPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return p
}

// build serialises the frame with gopacket: the super-frame itself (whole
// payload, checksums computed, which SegmentTCP must ignore) or, with
// seg >= 0, the expected segment seg of mss bytes, written independently of
// SegmentTCP's arithmetic.
func (s superFrame) build(t testing.TB, seg, mss int) []byte {
	t.Helper()
	payload := gsoPayload(s.payload)
	seq, id, flags := s.seq, s.id, s.flags
	if seg >= 0 {
		lo := seg * mss
		hi := min(lo+mss, len(payload))
		last := hi == len(payload)
		payload = payload[lo:hi]
		seq += uint32(lo)
		id += uint16(seg)
		if !last {
			flags &^= TCPFlagFIN | TCPFlagPSH
		}
		if seg != 0 {
			flags &^= TCPFlagCWR
		}
	}
	eth := &layers.Ethernet{SrcMAC: gsoSrcMAC, DstMAC: gsoDstMAC, EthernetType: layers.EthernetTypeIPv4}
	tcp := &layers.TCP{
		SrcPort: 40000, DstPort: 5201, Seq: seq, Ack: 0x11223344, Window: 512,
		FIN: flags&TCPFlagFIN != 0, SYN: flags&TCPFlagSYN != 0, RST: flags&TCPFlagRST != 0,
		PSH: flags&TCPFlagPSH != 0, ACK: flags&TCPFlagACK != 0, URG: flags&TCPFlagURG != 0,
		ECE: flags&TCPFlagECE != 0, CWR: flags&TCPFlagCWR != 0,
	}
	if s.tcpOpts {
		tcp.Options = []layers.TCPOption{
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 1, 2, 3, 4, 5, 6, 7}},
		}
	}
	var ip gopacket.SerializableLayer
	if s.v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, TrafficClass: 0x10, FlowLabel: 0x12345, NextHeader: layers.IPProtocolTCP, HopLimit: 63,
			SrcIP: net.ParseIP("fd00::3"), DstIP: net.ParseIP("fd00:1::3")}
		tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, TOS: 0x02, Id: id, Flags: layers.IPv4DontFragment, TTL: 63, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IP{10, 244, 0, 3}, DstIP: net.IP{10, 244, 1, 3}}
		if s.ipOptions {
			ip4.Options = []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0, 0}}} // router alert
		}
		tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// gopacket pads Ethernet frames to 60 bytes; a TAP frame has no padding.
	if s.v6 {
		return b[:EthHdrLen+IPv6HdrLen+int(binary.BigEndian.Uint16(b[EthHdrLen+IPv6OffPayloadLen:]))]
	}
	return b[:EthHdrLen+int(IPv4(b[EthHdrLen:]).TotalLen())]
}

// l4Off is where the TCP header starts in s's frames.
func (s superFrame) l4Off() int {
	switch {
	case s.v6:
		return EthHdrLen + IPv6HdrLen
	case s.ipOptions:
		return EthHdrLen + 24
	}
	return EthHdrLen + IPv4MinHdrLen
}

func TestSegmentTCPMatchesGopacket(t *testing.T) {
	const ackPSH = TCPFlagACK | TCPFlagPSH
	cases := []struct {
		name string
		sf   superFrame
		mss  int
		gap  int
		want int // segments
	}{
		{"v4 options short last", superFrame{tcpOpts: true, flags: ackPSH, seq: 1000, id: 7, payload: 4000}, 1448, 8, 3},
		{"v4 exact multiple", superFrame{tcpOpts: true, flags: ackPSH, seq: 1, id: 65535, payload: 2 * 1448}, 1448, 8, 2},
		{"v4 FIN and PSH only on the last", superFrame{flags: TCPFlagACK | TCPFlagPSH | TCPFlagFIN, seq: 0xfffffff0, payload: 3000}, 1000, 0, 3},
		{"v4 CWR only on the first", superFrame{tcpOpts: true, flags: TCPFlagACK | TCPFlagCWR | TCPFlagECE, payload: 5000}, 1400, 8, 4},
		{"v4 IP options", superFrame{ipOptions: true, tcpOpts: true, flags: TCPFlagACK, id: 100, payload: 2500}, 1000, 8, 3},
		{"v4 one segment", superFrame{tcpOpts: true, flags: ackPSH, payload: 500}, 1448, 8, 1},
		{"v4 odd sizes", superFrame{flags: TCPFlagACK, payload: 1001}, 333, 3, 4},
		{"v4 64 KiB", superFrame{tcpOpts: true, flags: ackPSH, payload: 65535 - 20 - 32}, 1398, 8, 47},
		{"v6 options short last", superFrame{v6: true, tcpOpts: true, flags: ackPSH, seq: 5, payload: 3000}, 1000, 8, 3},
		{"v6 FIN", superFrame{v6: true, flags: TCPFlagACK | TCPFlagFIN, payload: 1800}, 1200, 0, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frame := c.sf.build(t, -1, 0)
			orig := bytes.Clone(frame)
			// Spoil the checksum as a CHECKSUM_PARTIAL frame from a TAP has it.
			binary.BigEndian.PutUint16(frame[c.sf.l4Off()+TCPOffChecksum:], 0x1234)
			dst := bytes.Repeat([]byte{0xAA}, 100_000)
			offs, lens := make([]int, 64), make([]int, 64)
			n, err := SegmentTCP(dst, c.gap, frame, EthHdrLen, c.sf.l4Off(), c.mss, offs, lens)
			if err != nil {
				t.Fatal(err)
			}
			if n != c.want || n != TCPSegments(c.sf.payload, c.mss) {
				t.Fatalf("%d segments, want %d (TCPSegments %d)", n, c.want, TCPSegments(c.sf.payload, c.mss))
			}
			end := 0
			for i := range n {
				want := c.sf.build(t, i, c.mss)
				got := dst[offs[i] : offs[i]+lens[i]]
				if !bytes.Equal(got, want) {
					t.Errorf("segment %d differs from gopacket's\n got %x\nwant %x", i, got[:min(len(got), 80)], want[:min(len(want), 80)])
				}
				if offs[i] != end+c.gap {
					t.Errorf("segment %d at %d, want %d (packed with a %d-byte gap)", i, offs[i], end+c.gap, c.gap)
				}
				if !bytes.Equal(dst[end:offs[i]], bytes.Repeat([]byte{0xAA}, c.gap)) {
					t.Errorf("gap before segment %d was written", i)
				}
				end = offs[i] + lens[i]
				// And gopacket decodes it with valid checksums.
				checkSegmentDecodes(t, got, c.sf.v6)
			}
			frame[c.sf.l4Off()+TCPOffChecksum], frame[c.sf.l4Off()+TCPOffChecksum+1] = orig[c.sf.l4Off()+TCPOffChecksum], orig[c.sf.l4Off()+TCPOffChecksum+1]
			if !bytes.Equal(frame, orig) {
				t.Error("SegmentTCP modified its input")
			}
		})
	}
}

// checkSegmentDecodes decodes seg with gopacket and verifies its IPv4 header
// checksum and TCP checksum by recomputing them.
func checkSegmentDecodes(t *testing.T, seg []byte, v6 bool) {
	t.Helper()
	p := gopacket.NewPacket(seg, layers.LayerTypeEthernet, gopacket.Default)
	if p.ErrorLayer() != nil {
		t.Fatalf("gopacket: %v", p.ErrorLayer().Error())
	}
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp == nil {
		t.Fatal("no TCP layer")
	}
	var src, dst []byte
	if v6 {
		ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		src, dst = ip.SrcIP.To16(), ip.DstIP.To16()
		if int(ip.Length) != len(ip.Payload) {
			t.Errorf("IPv6 payload length %d, payload %d", ip.Length, len(ip.Payload))
		}
	} else {
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if Fold(Checksum(seg[EthHdrLen:EthHdrLen+int(ip.IHL)*4], 0)) != 0xffff {
			t.Error("bad IPv4 header checksum")
		}
		src, dst = ip.SrcIP.To4(), ip.DstIP.To4()
	}
	l4 := append(tcp.Contents, tcp.Payload...)
	var sum uint32
	if v6 {
		sum = PseudoHeaderSum6([16]byte(src), [16]byte(dst), IPProtoTCP, uint32(len(l4)))
	} else {
		sum = PseudoHeaderSum4([4]byte(src), [4]byte(dst), IPProtoTCP, uint16(len(l4)))
	}
	if Fold(Checksum(l4, sum)) != 0xffff {
		t.Error("bad TCP checksum")
	}
}

func TestSegmentTCPRejects(t *testing.T) {
	good := superFrame{tcpOpts: true, flags: TCPFlagACK, payload: 3000}
	l4 := good.l4Off()
	mk := func(f func(b []byte)) []byte {
		b := good.build(t, -1, 0)
		f(b)
		return b
	}
	cases := []struct {
		name  string
		frame []byte
		l4Off int
		mss   int
		slots int
		dst   int
		want  error
	}{
		{"mss 0", mk(func([]byte) {}), l4, 0, 64, 1 << 16, ErrGSOMSS},
		{"not IP", mk(func(b []byte) { b[EthHdrLen] = 0x55 }), l4, 1000, 64, 1 << 16, ErrGSOHeaders},
		{"UDP", mk(func(b []byte) { b[EthHdrLen+IPv4OffProto] = IPProtoUDP }), l4, 1000, 64, 1 << 16, ErrGSOHeaders},
		{"fragment", mk(func(b []byte) { b[EthHdrLen+IPv4OffFlagsFrag] |= 0x20 }), l4, 1000, 64, 1 << 16, ErrGSOHeaders},
		{"l4Off not after IP header", mk(func([]byte) {}), l4 + 4, 1000, 64, 1 << 16, ErrGSOHeaders},
		{"l4Off past the end", mk(func([]byte) {}), 1 << 20, 1000, 64, 1 << 16, ErrGSOHeaders},
		{"total length wrong", mk(func(b []byte) { b[EthHdrLen+IPv4OffTotalLen]++ }), l4, 1000, 64, 1 << 16, ErrGSOLength},
		{"TCP data offset 60 still fits", mk(func(b []byte) { b[l4+12] = 0xf0 }), l4, 1000, 64, 1 << 16, nil},
		{"TCP data offset below 5", mk(func(b []byte) { b[l4+12] = 0x40 }), l4, 1000, 64, 1 << 16, ErrGSOHeaders},
		{"too many segments", mk(func([]byte) {}), l4, 100, 29, 1 << 16, ErrGSOSegments},
		{"dst too small", mk(func([]byte) {}), l4, 1000, 64, 3000, ErrGSOShortDst},
	}
	for _, c := range cases {
		dst := make([]byte, c.dst)
		offs, lens := make([]int, c.slots), make([]int, c.slots)
		_, err := SegmentTCP(dst, 8, c.frame, EthHdrLen, c.l4Off, c.mss, offs, lens)
		if c.want == nil {
			// A data offset of 60 bytes fits this 3 KB frame: the options
			// are garbage, but the frame is still split consistently.
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	short := mk(func([]byte) {})[:l4+10]
	if _, err := SegmentTCP(make([]byte, 1<<16), 0, short, EthHdrLen, l4, 1000, make([]int, 4), make([]int, 4)); !errors.Is(err, ErrGSOHeaders) {
		t.Errorf("truncated TCP header: %v", err)
	}
	v6 := superFrame{v6: true, payload: 2000}
	b := v6.build(t, -1, 0)
	b[EthHdrLen+IPv6OffNextHeader] = 0 // hop-by-hop extension header
	if _, err := SegmentTCP(make([]byte, 1<<16), 0, b, EthHdrLen, v6.l4Off(), 1000, make([]int, 4), make([]int, 4)); !errors.Is(err, ErrGSOHeaders) {
		t.Errorf("IPv6 extension header: %v", err)
	}
}

func TestSegmentTCPAllocs(t *testing.T) {
	sf := superFrame{tcpOpts: true, flags: TCPFlagACK | TCPFlagPSH, payload: 60000}
	frame := sf.build(t, -1, 0)
	dst := make([]byte, 70000)
	offs, lens := make([]int, 64), make([]int, 64)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := SegmentTCP(dst, 8, frame, EthHdrLen, sf.l4Off(), 1398, offs, lens); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("SegmentTCP allocates %v times per call", allocs)
	}
}

func BenchmarkSegmentTCP(b *testing.B) {
	sf := superFrame{tcpOpts: true, flags: TCPFlagACK | TCPFlagPSH, payload: 65535 - 20 - 32}
	frame := sf.build(b, -1, 0)
	dst := make([]byte, 70000)
	offs, lens := make([]int, 64), make([]int, 64)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SegmentTCP(dst, 8, frame, EthHdrLen, sf.l4Off(), 1398, offs, lens); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzSegmentTCP: any input either fails cleanly or yields segments whose
// lengths and checksums are right and whose payloads add up to the input's.
func FuzzSegmentTCP(f *testing.F) {
	for _, sf := range []superFrame{
		{tcpOpts: true, flags: TCPFlagACK | TCPFlagPSH, payload: 3000},
		{v6: true, flags: TCPFlagACK | TCPFlagFIN, payload: 2500},
		{ipOptions: true, flags: TCPFlagACK | TCPFlagCWR, payload: 900},
	} {
		f.Add(sf.build(f, -1, 0), uint8(sf.l4Off()-EthHdrLen), uint16(1000), uint8(8))
	}
	f.Fuzz(func(t *testing.T, frame []byte, l4Delta uint8, mss uint16, gap uint8) {
		l4Off := EthHdrLen + int(l4Delta)
		dst := make([]byte, 1<<17)
		offs, lens := make([]int, 128), make([]int, 128)
		n, err := SegmentTCP(dst, int(gap), frame, EthHdrLen, l4Off, int(mss), offs, lens)
		if err != nil {
			return
		}
		v6 := frame[EthHdrLen]>>4 == 6
		hdrLen := l4Off + int(frame[l4Off+12]>>4)*4
		var joined []byte
		for i := range n {
			seg := dst[offs[i] : offs[i]+lens[i]]
			if !bytes.Equal(seg[:EthHdrLen], frame[:EthHdrLen]) {
				t.Fatalf("segment %d: link header changed", i)
			}
			ip := seg[EthHdrLen:l4Off]
			l4 := seg[l4Off:]
			var sum uint32
			if v6 {
				if int(binary.BigEndian.Uint16(ip[IPv6OffPayloadLen:])) != len(l4) {
					t.Fatalf("segment %d: IPv6 payload length", i)
				}
				sum = PseudoHeaderSum6([16]byte(ip[IPv6OffSrc:]), [16]byte(ip[IPv6OffDst:]), IPProtoTCP, uint32(len(l4)))
			} else {
				if int(IPv4(ip).TotalLen()) != len(seg)-EthHdrLen || !IPv4(ip).HeaderChecksumOK() {
					t.Fatalf("segment %d: IPv4 length or header checksum", i)
				}
				sum = PseudoHeaderSum4(IPv4(ip).Src4(), IPv4(ip).Dst4(), IPProtoTCP, uint16(len(l4)))
			}
			if Fold(Checksum(l4, sum)) != 0xffff {
				t.Fatalf("segment %d: TCP checksum", i)
			}
			if i < n-1 && len(seg)-hdrLen != int(mss) {
				t.Fatalf("segment %d: %d payload bytes, want mss %d", i, len(seg)-hdrLen, mss)
			}
			joined = append(joined, seg[hdrLen:]...)
		}
		if !bytes.Equal(joined, frame[hdrLen:]) {
			t.Fatal("segments' payloads do not add up to the super-frame's")
		}
	})
}
