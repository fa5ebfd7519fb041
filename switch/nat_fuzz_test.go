package vswitch

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/weftnet/weft/packet"
)

// natFuzzServices: a remote TCP backend, a local UDP backend, a hairpin
// frontend and one without endpoints.
func natFuzzServices() []ServiceSpec {
	return []ServiceSpec{
		tcpSvc("f/web:http", vipWeb, 80, backend(remoteBE.String(), 8080, true)),
		udpSvc("f/dns:dns", vipDNS, 53, backend(podBIP.String(), 5353, true)),
		tcpSvc("f/self:x", vipWeb, 81, backend(podAIP.String(), 9090, true)),
		udpSvc("f/empty:x", vipDNS, 54),
	}
}

// natFuzzSeeds are frames through every service path, and cut variants.
func natFuzzSeeds(t testing.TB) [][]byte {
	syn, synAck := uint8(packet.TCPFlagSYN), uint8(packet.TCPFlagSYN|packet.TCPFlagACK)
	seeds := [][]byte{
		l4Frame(t, routerMAC, podAMAC, podAIP, 40000, vipWeb, 80, packet.IPProtoTCP, syn, 0),
		l4Frame(t, routerMAC, peerMAC, remoteBE, 8080, podAIP, 40000, packet.IPProtoTCP, synAck, 0),
		l4Frame(t, routerMAC, podAMAC, podAIP, 40001, vipDNS, 53, packet.IPProtoUDP, 0, 30),
		l4Frame(t, podAMAC, podBMAC, podBIP, 5353, podAIP, 40001, packet.IPProtoUDP, 0, 60),
		l4Frame(t, routerMAC, podAMAC, podAIP, 40002, vipWeb, 81, packet.IPProtoTCP, syn, 10),
		l4Frame(t, routerMAC, podAMAC, podAIP, 9090, gwIP, 40002, packet.IPProtoTCP, synAck, 10),
		l4Frame(t, routerMAC, podAMAC, podAIP, 40003, vipDNS, 54, packet.IPProtoUDP, 0, 8),
		l4Frame(t, routerMAC, podAMAC, podAIP, 40004, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagRST, 0),
		l4Frame(t, routerMAC, hostMAC, hostIP, 40005, vipWeb, 80, packet.IPProtoTCP, packet.TCPFlagACK, 100),
	}
	n := len(seeds)
	for _, s := range seeds[:n] {
		seeds = append(seeds, s[:14+20+4], s[:14+20+12])
	}
	return seeds
}

// TestWriteNATFuzzSeeds regenerates testdata/fuzz/FuzzServiceNAT when
// WEFT_WRITE_SEEDS is set; otherwise it checks the files are there.
func TestWriteNATFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzServiceNAT")
	seeds := natFuzzSeeds(t)
	if os.Getenv("WEFT_WRITE_SEEDS") == "" {
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != len(seeds) {
			t.Fatalf("%s: %d seed files (%v), want %d: run with WEFT_WRITE_SEEDS=1", dir, len(ents), err, len(seeds))
		}
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbyte('\\x%02x')\n", s, byte(i))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzServiceNAT feeds arbitrary frames through a switch with services
// and tracked flows. Invariants: no panic, the frame stays within its
// capacity, Trace predicts Process's verdict, and a frame whose IPv4 and
// TCP/UDP checksums were right before NAT still has right ones after
// (the incremental patches equal a full recomputation).
func FuzzServiceNAT(f *testing.F) {
	s := svcSwitch(f, natFuzzServices()...)
	ins := []PortID{portA, portB, portHost, portOverlay}
	now := int64(sec)
	f.Fuzz(func(t *testing.T, frame []byte, port uint8) {
		in := ins[int(port)%len(ins)]
		now += 1000
		buf := withCap(frame)
		tv, _ := s.Trace(frame, in, now)
		wasValid := l4ChecksumsOK(frame)
		frames := [][]byte{buf}
		out := make([]Verdict, 1)
		s.Process(frames, in, out, now)
		v, res := out[0], frames[0]
		if v != tv && v.Reason != DropNoRoom && v.Reason != DropCTClash {
			t.Errorf("Process %+v, Trace %+v", v, tv)
		}
		if len(res) > cap(buf) {
			t.Fatal("frame grew beyond its capacity")
		}
		if wasValid && !v.Reply && v.Action != ActionDrop && !l4ChecksumsOK(res) {
			t.Errorf("checksums broken by the pipeline:\n in % x\nout % x", frame, res)
		}
		if c := s.Counters().Conntrack; c.Entries > uint64(s.Config().Conntrack.Size) {
			t.Fatalf("conntrack grew: %+v", c)
		}
	})
}

// l4ChecksumsOK reports whether f is Ethernet/IPv4 (no fragment) carrying
// TCP or UDP with a correct header checksum and a correct, full L4
// checksum (a UDP checksum of 0 counts as correct: none).
func l4ChecksumsOK(f []byte) bool {
	if len(f) < 14+20 || packet.EthType(f) != packet.EtherTypeIPv4 {
		return false
	}
	ip := packet.IPv4(f[14:])
	if !ip.Valid() || !ip.HeaderChecksumOK() || ip.IsFragment() || len(ip) < int(ip.TotalLen()) {
		return false
	}
	hl, tl := ip.HeaderLen(), int(ip.TotalLen())
	l4 := ip[hl:tl]
	switch ip.Proto() {
	case packet.IPProtoTCP:
		if len(l4) < packet.TCPMinHdrLen {
			return false
		}
	case packet.IPProtoUDP:
		if len(l4) < packet.UDPHdrLen {
			return false
		}
		if binary.BigEndian.Uint16(l4[packet.UDPOffChecksum:]) == 0 {
			return true
		}
	default:
		return false
	}
	ps := packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), ip.Proto(), uint16(len(l4)))
	return packet.Fold(packet.Checksum(slices.Clip(l4), ps)) == 0xffff
}
