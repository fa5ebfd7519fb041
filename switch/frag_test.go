package vswitch

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/weftnet/weft/packet"
)

// fragment splits a one-datagram frame (Ethernet + 20-byte IPv4 header)
// into two frames at IP payload offset at (a multiple of 8), as the
// sender's stack fragments: the first with MF, the second at offset at,
// each with its own length and header checksum, DF cleared.
func fragment(t *testing.T, f []byte, at int) (first, second []byte) {
	t.Helper()
	const hdr = packet.EthHdrLen + 20
	if at%8 != 0 || hdr+at >= len(f) {
		t.Fatalf("cannot fragment a %d-byte frame at %d", len(f), at)
	}
	mk := func(payload []byte, flagsFrag uint16) []byte {
		out := append(append([]byte(nil), f[:hdr]...), payload...)
		ip := packet.IPv4(out[packet.EthHdrLen:])
		ip.SetTotalLen(uint16(20 + len(payload)))
		binary.BigEndian.PutUint16(ip[packet.IPv4OffFlagsFrag:], flagsFrag)
		ip.SetChecksum(0)
		ip.SetChecksum(^packet.Fold(packet.Checksum(ip[:20], 0)))
		return out
	}
	return mk(f[hdr:hdr+at], packet.IPv4FlagMF), mk(f[hdr+at:], uint16(at/8))
}

// reassembled checks both fragments' IP header checksums and that they
// carry src -> dst, and returns the datagram's L4 bytes with its L4
// checksum verified over them.
func reassembled(t *testing.T, first, second []byte, src, dst netip.Addr) []byte {
	t.Helper()
	var l4 []byte
	for i, f := range [][]byte{first, second} {
		ip := packet.IPv4(f[packet.EthHdrLen:])
		if packet.Fold(packet.Checksum(ip[:20], 0)) != 0xffff {
			t.Fatalf("fragment %d: bad IP header checksum", i+1)
		}
		if ip.Src4() != src.As4() || ip.Dst4() != dst.As4() {
			t.Fatalf("fragment %d: %v -> %v, want %s -> %s", i+1, ip.Src4(), ip.Dst4(), src, dst)
		}
		l4 = append(l4, f[packet.EthHdrLen+20:]...)
	}
	sum := packet.Checksum(l4, packet.PseudoHeaderSum4(src.As4(), dst.As4(), packet.IPProtoUDP, uint16(len(l4))))
	if packet.Fold(sum) != 0xffff {
		t.Fatalf("reassembled datagram %s -> %s: bad UDP checksum", src, dst)
	}
	return l4
}

// TestServiceFragments: a UDP datagram larger than the MTU, sent to a
// cluster IP in two fragments, reaches the backend whole: the first
// fragment is translated with its flow, the later one takes the same
// addresses; the backend's fragmented answer is translated back alike,
// and the UDP checksum of each reassembled datagram holds. A later
// fragment whose first was never seen is left untouched.
func TestServiceFragments(t *testing.T) {
	s := svcSwitch(t, udpSvc("default/dns:big", vipWeb, 53, backend(podBIP.String(), 5353, true)))
	req := l4Frame(t, routerMAC, podAMAC, podAIP, 40000, vipWeb, 53, packet.IPProtoUDP, 0, 2000)
	f1, f2 := fragment(t, req, 1416)
	for i, f := range [][]byte{f1, f2} {
		v, _ := process(s, f, portA, sec)
		if v.Action != ActionDeliver || v.Port != portB {
			t.Fatalf("request fragment %d: verdict %+v, want deliver to the backend's port", i+1, v)
		}
	}
	l4 := reassembled(t, f1, f2, podAIP, podBIP)
	if sp, dp := packet.Ports(l4); sp != 40000 || dp != 5353 {
		t.Fatalf("request ports %d -> %d, want 40000 -> 5353", sp, dp)
	}

	resp := l4Frame(t, routerMAC, podBMAC, podBIP, 5353, podAIP, 40000, packet.IPProtoUDP, 0, 2000)
	r1, r2 := fragment(t, resp, 1416)
	for i, f := range [][]byte{r1, r2} {
		v, _ := process(s, f, portB, 2*sec)
		if v.Action != ActionDeliver || v.Port != portA {
			t.Fatalf("answer fragment %d: verdict %+v, want deliver to the client's port", i+1, v)
		}
	}
	l4 = reassembled(t, r1, r2, vipWeb, podAIP)
	if sp, dp := packet.Ports(l4); sp != 53 || dp != 40000 {
		t.Fatalf("answer ports %d -> %d, want 53 -> 40000", sp, dp)
	}
	if got := s.Counters().FragTranslated; got != 2 {
		t.Errorf("FragTranslated = %d, want 2", got)
	}

	// A later fragment of a datagram whose first fragment never came.
	lone := l4Frame(t, routerMAC, podAMAC, podAIP, 40001, vipWeb, 53, packet.IPProtoUDP, 0, 2000)
	binary.BigEndian.PutUint16(lone[packet.EthHdrLen+packet.IPv4OffID:], 99)
	_, l2 := fragment(t, lone, 1416)
	process(s, l2, portA, 3*sec)
	if ip := packet.IPv4(l2[packet.EthHdrLen:]); ip.Dst4() != vipWeb.As4() {
		t.Errorf("a lone later fragment was rewritten to %v", ip.Dst4())
	}
}
