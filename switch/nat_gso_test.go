package vswitch

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/packet"
)

// superFrame builds a TSO/USO super-frame as a TAP with a virtio header
// hands it out: IP total length covering the whole payload, and the L4
// checksum field holding the folded pseudo-header sum, uncomplemented
// (CHECKSUM_PARTIAL).
func superFrame(t testing.TB, srcMAC packet.MAC, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, proto uint8, payload int) []byte {
	f := l4Frame(t, routerMAC, srcMAC, src, sport, dst, dport, proto, packet.TCPFlagACK|packet.TCPFlagPSH, payload)
	buf := make([]byte, len(f), len(f)+maxICMPErrLen)
	copy(buf, f)
	l4 := buf[packet.EthHdrLen+packet.IPv4MinHdrLen:]
	off := packet.TCPOffChecksum
	if proto == packet.IPProtoUDP {
		off = packet.UDPOffChecksum
	}
	binary.BigEndian.PutUint16(l4[off:], packet.Fold(packet.PseudoHeaderSum4(src.As4(), dst.As4(), proto, uint16(len(l4)))))
	return buf
}

// completePartial finishes a partial checksum as a TAP (or the kernel)
// would: the sum over the L4 bytes seeded by the field, complemented.
func completePartial(f []byte, proto uint8) []byte {
	out := append([]byte(nil), f...)
	l4 := out[packet.EthHdrLen+packet.IPv4MinHdrLen:]
	off := packet.TCPOffChecksum
	if proto == packet.IPProtoUDP {
		off = packet.UDPOffChecksum
	}
	seed := uint32(binary.BigEndian.Uint16(l4[off:]))
	binary.BigEndian.PutUint16(l4[off:], 0)
	sum := ^packet.Fold(packet.Checksum(l4, seed))
	if sum == 0 && proto == packet.IPProtoUDP {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], sum)
	return out
}

// Service NAT on TCP and UDP super-frames whose checksum is still partial:
// the forward super-frame (to a remote backend) is segmented afterwards
// (packet.SegmentTCP / SegmentUDP) into segments gopacket verifies; the
// reply super-frame (from a local backend, port and address rewritten) is
// delivered whole and completes to a correct checksum.
func TestServiceNATPartialChecksum(t *testing.T) {
	const mss, payload = 1000, 4321
	for _, proto := range []uint8{packet.IPProtoTCP, packet.IPProtoUDP} {
		t.Run(protoName(proto), func(t *testing.T) {
			s := svcSwitch(t,
				ServiceSpec{Name: "default/remote:x", ClusterIP: vipWeb, Port: 80, Proto: proto, Backends: []ServiceBackend{backend(remoteBE.String(), 8080, true)}},
				ServiceSpec{Name: "default/local:x", ClusterIP: vipDNS, Port: 80, Proto: proto, Backends: []ServiceBackend{backend(podBIP.String(), 8080, true)}})
			hdr := packet.IPv4MinHdrLen + packet.UDPHdrLen
			if proto == packet.IPProtoTCP {
				hdr = packet.IPv4MinHdrLen + packet.TCPMinHdrLen
			}
			ipLens := []uint16{uint16(hdr + mss)}
			out := make([]Verdict, 1)

			// Forward: pod A -> cluster IP, to the remote backend, then split.
			frames := [][]byte{superFrame(t, podAMAC, podAIP, 40000, vipWeb, 80, proto, payload)}
			s.ProcessGSO(frames, ipLens, portA, out, sec)
			if out[0].Action != ActionEncap {
				t.Fatalf("verdict %+v", out[0])
			}
			f := frames[0]
			l4 := f[packet.EthHdrLen+packet.IPv4MinHdrLen:]
			off := packet.TCPOffChecksum
			if proto == packet.IPProtoUDP {
				off = packet.UDPOffChecksum
			}
			// Still exactly the pseudo-header sum, of the new addresses.
			if got, want := binary.BigEndian.Uint16(l4[off:]), packet.Fold(packet.PseudoHeaderSum4(podAIP.As4(), remoteBE.As4(), proto, uint16(len(l4)))); got != want {
				t.Fatalf("partial checksum %#04x, want pseudo-header sum %#04x", got, want)
			}
			dst := make([]byte, 64<<10)
			offs, lens := make([]int, 16), make([]int, 16)
			var n int
			var err error
			if proto == packet.IPProtoTCP {
				n, err = packet.SegmentTCP(dst, 8, f, packet.EthHdrLen, packet.EthHdrLen+packet.IPv4MinHdrLen, mss, offs, lens)
			} else {
				n, err = packet.SegmentUDP(dst, 8, f, packet.EthHdrLen, packet.EthHdrLen+packet.IPv4MinHdrLen, mss, offs, lens)
			}
			if err != nil || n != (payload+mss-1)/mss {
				t.Fatalf("segment: %d, %v", n, err)
			}
			for i := range n {
				got := checkFrame(t, dst[offs[i]:offs[i]+lens[i]], false)
				if got.src != podAIP || got.sport != 40000 || got.dst != remoteBE || got.dport != 8080 {
					t.Fatalf("segment %d: %+v", i, got)
				}
			}

			// Establish a flow to the local backend, then its reply
			// super-frame comes back through reverse NAT.
			first := [][]byte{l4Frame(t, routerMAC, podAMAC, podAIP, 41000, vipDNS, 80, proto, packet.TCPFlagSYN, 0)}
			s.Process(first, portA, out, sec)
			if out[0].Action != ActionDeliver || out[0].Port != portB {
				t.Fatalf("first packet verdict %+v", out[0])
			}
			frames = [][]byte{superFrame(t, podBMAC, podBIP, 8080, podAIP, 41000, proto, payload)}
			packet.PutEth(frames[0], podAMAC, podBMAC, packet.EtherTypeIPv4) // L2: straight to the client
			s.ProcessGSO(frames, ipLens, portB, out, 2*sec)
			if out[0].Action != ActionDeliver || out[0].Port != portA {
				t.Fatalf("reply verdict %+v", out[0])
			}
			got := checkFrame(t, completePartial(frames[0], proto), false)
			if got.src != vipDNS || got.sport != 80 || got.dst != podAIP || got.dport != 41000 {
				t.Fatalf("reply %+v", got)
			}
		})
	}
}
