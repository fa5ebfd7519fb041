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

// udpFrame builds, with gopacket, a UDP frame carrying payload bytes of
// the test pattern from offset off, with IPv4 ID id (or IPv6).
func udpFrame(t testing.TB, v6 bool, id uint16, off, payload int) []byte {
	t.Helper()
	data := gsoPayload(off + payload)[off:]
	eth := &layers.Ethernet{SrcMAC: gsoSrcMAC, DstMAC: gsoDstMAC, EthernetType: layers.EthernetTypeIPv4}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 5201}
	var ip gopacket.SerializableLayer
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolUDP, HopLimit: 63, SrcIP: net.ParseIP("fd00::3"), DstIP: net.ParseIP("fd00:1::3")}
		udp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, Id: id, Flags: layers.IPv4DontFragment, TTL: 63, Protocol: layers.IPProtocolUDP,
			SrcIP: net.IP{10, 244, 0, 3}, DstIP: net.IP{10, 244, 1, 3}}
		udp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp, gopacket.Payload(data)); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if v6 {
		return b[:EthHdrLen+IPv6HdrLen+int(binary.BigEndian.Uint16(b[EthHdrLen+IPv6OffPayloadLen:]))]
	}
	return b[:EthHdrLen+int(IPv4(b[EthHdrLen:]).TotalLen())] // no Ethernet padding
}

func udpL4Off(v6 bool) int {
	if v6 {
		return EthHdrLen + IPv6HdrLen
	}
	return EthHdrLen + IPv4MinHdrLen
}

func TestSegmentUDPMatchesGopacket(t *testing.T) {
	cases := []struct {
		name         string
		v6           bool
		payload, mss int
		want         int
	}{
		{"v4 short last", false, 1000, 64, 16},
		{"v4 exact", false, 640, 64, 10},
		{"v4 one", false, 50, 64, 1},
		{"v6 short last", true, 3000, 1200, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			super := udpFrame(t, c.v6, 9, 0, c.payload)
			// A USO frame from a TAP: checksum field partial, ignored.
			binary.BigEndian.PutUint16(super[udpL4Off(c.v6)+UDPOffChecksum:], 0x1234)
			dst := make([]byte, 1<<16)
			offs, lens := make([]int, 64), make([]int, 64)
			n, err := SegmentUDP(dst, 8, super, EthHdrLen, udpL4Off(c.v6), c.mss, offs, lens)
			if err != nil || n != c.want {
				t.Fatalf("%d segments, %v; want %d", n, err, c.want)
			}
			for i := range n {
				want := udpFrame(t, c.v6, 9+uint16(i), i*c.mss, min(c.mss, c.payload-i*c.mss))
				if got := dst[offs[i] : offs[i]+lens[i]]; !bytes.Equal(got, want) {
					t.Errorf("datagram %d differs from gopacket's\n got %x\nwant %x", i, got, want)
				}
			}
		})
	}
	if _, err := SegmentUDP(make([]byte, 1<<16), 0, udpFrame(t, false, 1, 0, 100), EthHdrLen, udpL4Off(false), 0, make([]int, 4), make([]int, 4)); !errors.Is(err, ErrGSOMSS) {
		t.Errorf("mss 0: %v", err)
	}
	tcp := superFrame{flags: TCPFlagACK, payload: 100}.build(t, -1, 0)
	if _, err := SegmentUDP(make([]byte, 1<<16), 0, tcp, EthHdrLen, EthHdrLen+IPv4MinHdrLen, 50, make([]int, 4), make([]int, 4)); !errors.Is(err, ErrGSOHeaders) {
		t.Errorf("TCP frame: %v", err)
	}
}

func TestUDPRunRebuildsSuperFrame(t *testing.T) {
	const payload, mss = 1000, 64
	super := udpFrame(t, false, 9, 0, payload)
	buf := make([]byte, EthHdrLen+0xffff)
	var r UDPRun
	for i := range TCPSegments(payload, mss) {
		d := udpFrame(t, false, 9+uint16(i), i*mss, min(mss, payload-i*mss))
		if i == 0 {
			if !r.Start(buf, d) {
				t.Fatal("Start refused the first datagram")
			}
		} else if !r.Add(d) {
			t.Fatalf("Add refused datagram %d", i)
		}
	}
	frame, gotMSS := r.Finish()
	if gotMSS != mss {
		t.Errorf("mss %d", gotMSS)
	}
	// Complete the partial checksum as the kernel would, then compare.
	udp := frame[EthHdrLen+IPv4MinHdrLen:]
	binary.BigEndian.PutUint16(udp[UDPOffChecksum:], ^Fold(Checksum(udp, 0)))
	if !bytes.Equal(frame, super) {
		t.Errorf("merged frame differs from the super-frame\n got %x\nwant %x", frame[:60], super[:60])
	}
}

func TestUDPRunRefuses(t *testing.T) {
	first := udpFrame(t, false, 1, 0, 64)
	next := udpFrame(t, false, 2, 64, 64)
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(next)
		f(b)
		return b
	}
	noCsum := mod(func(b []byte) {
		b[EthHdrLen+IPv4MinHdrLen+UDPOffChecksum], b[EthHdrLen+IPv4MinHdrLen+UDPOffChecksum+1] = 0, 0
	})
	refusals := []struct {
		name  string
		frame []byte
	}{
		{"bad checksum", mod(func(b []byte) { b[len(b)-1] ^= 1 })},
		{"other port", mod(func(b []byte) { b[EthHdrLen+IPv4MinHdrLen+1]++ })},
		{"longer", udpFrame(t, false, 2, 64, 65)},
		{"other TTL", mod(func(b []byte) { b[EthHdrLen+IPv4OffTTL]--; IPv4(b[EthHdrLen:]).ComputeChecksum() })},
		{"TCP", superFrame{flags: TCPFlagACK, payload: 64}.build(t, -1, 0)},
		{"IPv6", udpFrame(t, true, 0, 64, 64)},
		{"UDP length wrong", mod(func(b []byte) { b[EthHdrLen+IPv4MinHdrLen+UDPOffLen+1]-- })},
	}
	buf := make([]byte, EthHdrLen+0xffff)
	var r UDPRun
	for _, c := range refusals {
		if !r.Start(buf, first) {
			t.Fatal("Start refused a good datagram")
		}
		if r.Add(c.frame) {
			t.Errorf("Add took %s", c.name)
		}
	}
	// A datagram without a checksum joins; a shorter one closes the run.
	r.Start(buf, first)
	if !r.Add(noCsum) || !r.Add(udpFrame(t, false, 3, 128, 10)) || r.Add(udpFrame(t, false, 4, 138, 10)) {
		t.Error("no-checksum join or short close misbehaved")
	}
	// At most MaxUDPRunSegments.
	r.Start(buf, first)
	for i := 1; i < MaxUDPRunSegments; i++ {
		if !r.Add(next) {
			t.Fatalf("Add %d refused", i)
		}
	}
	if r.Add(next) {
		t.Error("run grew past MaxUDPRunSegments")
	}
}

func TestUDPRunAllocs(t *testing.T) {
	ds := make([][]byte, 32)
	for i := range ds {
		ds[i] = udpFrame(t, false, uint16(i), i*64, 64)
	}
	buf := make([]byte, EthHdrLen+0xffff)
	var r UDPRun
	allocs := testing.AllocsPerRun(100, func() {
		r.Start(buf, ds[0])
		for _, d := range ds[1:] {
			r.Add(d)
		}
		r.Finish()
	})
	if allocs != 0 {
		t.Errorf("UDPRun: %v allocs", allocs)
	}
}

func BenchmarkUDPRun64(b *testing.B) {
	ds := make([][]byte, MaxUDPRunSegments)
	for i := range ds {
		ds[i] = udpFrame(b, false, uint16(i), i*64, 64)
	}
	buf := make([]byte, EthHdrLen+0xffff)
	var r UDPRun
	b.ReportAllocs()
	for b.Loop() {
		r.Start(buf, ds[0])
		for _, d := range ds[1:] {
			r.Add(d)
		}
		r.Finish()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ds)), "ns/datagram")
}

// FuzzSegmentUDP: any input fails cleanly or splits into datagrams with
// right lengths and checksums whose payloads add up to the input's.
func FuzzSegmentUDP(f *testing.F) {
	f.Add(udpFrame(f, false, 1, 0, 1000), uint8(20), uint16(64), uint8(8))
	f.Add(udpFrame(f, true, 0, 0, 300), uint8(40), uint16(100), uint8(0))
	f.Fuzz(func(t *testing.T, frame []byte, l4Delta uint8, mss uint16, gap uint8) {
		l4Off := EthHdrLen + int(l4Delta)
		dst := make([]byte, 1<<17)
		offs, lens := make([]int, 128), make([]int, 128)
		n, err := SegmentUDP(dst, int(gap), frame, EthHdrLen, l4Off, int(mss), offs, lens)
		if err != nil {
			return
		}
		v6 := frame[EthHdrLen]>>4 == 6
		var joined []byte
		for i := range n {
			seg := dst[offs[i] : offs[i]+lens[i]]
			ip, udp := seg[EthHdrLen:l4Off], seg[l4Off:]
			if int(binary.BigEndian.Uint16(udp[UDPOffLen:])) != len(udp) {
				t.Fatalf("datagram %d: UDP length", i)
			}
			var sum uint32
			if v6 {
				sum = PseudoHeaderSum6([16]byte(ip[IPv6OffSrc:]), [16]byte(ip[IPv6OffDst:]), IPProtoUDP, uint32(len(udp)))
			} else {
				if !IPv4(ip).HeaderChecksumOK() || int(IPv4(ip).TotalLen()) != len(seg)-EthHdrLen {
					t.Fatalf("datagram %d: IPv4 header", i)
				}
				sum = PseudoHeaderSum4(IPv4(ip).Src4(), IPv4(ip).Dst4(), IPProtoUDP, uint16(len(udp)))
			}
			if Fold(Checksum(udp, sum)) != 0xffff {
				t.Fatalf("datagram %d: UDP checksum", i)
			}
			joined = append(joined, udp[UDPHdrLen:]...)
		}
		if !bytes.Equal(joined, frame[l4Off+UDPHdrLen:]) {
			t.Fatal("payloads do not add up")
		}
	})
}

// FuzzUDPRun: arbitrary frames never make Start, Add or Finish misbehave,
// and a merged frame's lengths and partial checksum are consistent.
func FuzzUDPRun(f *testing.F) {
	f.Add(udpFrame(f, false, 1, 0, 64), udpFrame(f, false, 2, 64, 64))
	f.Add(udpFrame(f, false, 1, 0, 64), udpFrame(f, false, 2, 64, 10))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		buf := make([]byte, EthHdrLen+0xffff)
		var r UDPRun
		if !r.Start(buf, a) {
			return
		}
		added := r.Add(b)
		frame, mss := r.Finish()
		if mss <= 0 || len(frame) < UDPRunHdrLen {
			t.Fatalf("mss %d frame %d", mss, len(frame))
		}
		if added {
			ip := IPv4(frame[EthHdrLen:])
			udp := frame[EthHdrLen+IPv4MinHdrLen:]
			if int(ip.TotalLen()) != len(frame)-EthHdrLen || !ip.HeaderChecksumOK() || int(binary.BigEndian.Uint16(udp[UDPOffLen:])) != len(udp) {
				t.Fatal("merged headers inconsistent")
			}
			binary.BigEndian.PutUint16(udp[UDPOffChecksum:], ^Fold(Checksum(udp, 0)))
			s := PseudoHeaderSum4(ip.Src4(), ip.Dst4(), IPProtoUDP, uint16(len(udp)))
			if Fold(Checksum(udp, s)) != 0xffff {
				t.Fatal("merged frame's checksum does not complete")
			}
		}
	})
}
