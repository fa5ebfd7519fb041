package netdev

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/packet"
)

// Test addressing: the TAP is the "pod" at podIP; the test plays the
// gateway at gwIP with gwMAC, writing frames into the TAP and reading the
// kernel's answers.
var (
	podIP  = netip.MustParseAddr("10.244.1.5")
	gwIP   = netip.MustParseAddr("10.244.1.1")
	podMAC = packet.MAC{0x02, 0x77, 0x6e, 0x64, 0x00, 0x05}
	gwMAC  = packet.MAC{0x02, 0x77, 0x6e, 0x64, 0x00, 0x01}
)

// newTestNetns creates a namespace with the test prefix, deleted at cleanup.
func newTestNetns(t testing.TB) string {
	t.Helper()
	name := testenv.UniqueName("wnd")
	path, err := NewNetns(name)
	if err != nil {
		t.Fatalf("NewNetns: %v", err)
	}
	t.Cleanup(func() {
		if err := DeleteNetns(name); err != nil {
			t.Errorf("DeleteNetns(%s): %v", name, err)
		}
	})
	return path
}

// podTapConfig is a pod-style eth0 in nsPath.
func podTapConfig(nsPath string) TapConfig {
	return TapConfig{
		Name:      "eth0",
		NetnsPath: nsPath,
		MAC:       podMAC,
		MTU:       1450,
		Addr:      netip.PrefixFrom(podIP, 24),
		Gateway:   gwIP,
		Persist:   true,
	}
}

// createTestTap creates a TAP and registers its close and deletion.
func createTestTap(t testing.TB, cfg TapConfig) *Tap {
	t.Helper()
	tap, err := CreateTap(cfg)
	if err != nil {
		t.Fatalf("CreateTap: %v", err)
	}
	t.Cleanup(func() {
		tap.Close()
		if err := DeleteTap(tap.Name(), cfg.NetnsPath); err != nil {
			t.Errorf("DeleteTap: %v", err)
		}
	})
	return tap
}

func arpRequest(b []byte, srcMAC packet.MAC, srcIP, targetIP netip.Addr) []byte {
	b = b[:42]
	packet.PutEth(b, packet.BroadcastMAC, srcMAC, packet.EtherTypeARP)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1) // request
	copy(a[8:14], srcMAC[:])
	s4, t4 := srcIP.As4(), targetIP.As4()
	copy(a[14:18], s4[:])
	clear(a[18:24])
	copy(a[24:28], t4[:])
	return b
}

// arpReplyFor reports whether frame is an ARP reply telling who has ip.
func arpReplyFor(frame []byte, ip netip.Addr) (packet.MAC, bool) {
	if len(frame) < 42 || packet.EthType(frame) != packet.EtherTypeARP {
		return packet.MAC{}, false
	}
	a := frame[14:]
	if binary.BigEndian.Uint16(a[6:]) != 2 || netip.AddrFrom4([4]byte(a[14:18])) != ip {
		return packet.MAC{}, false
	}
	return packet.MAC(a[8:14]), true
}

// arpReplyTo answers an ARP request in frame for ip with mac; ok=false if
// frame is not such a request.
func arpReplyTo(out, frame []byte, ip netip.Addr, mac packet.MAC) ([]byte, bool) {
	if len(frame) < 42 || packet.EthType(frame) != packet.EtherTypeARP {
		return nil, false
	}
	a := frame[14:]
	if binary.BigEndian.Uint16(a[6:]) != 1 || netip.AddrFrom4([4]byte(a[24:28])) != ip {
		return nil, false
	}
	out = out[:42]
	packet.PutEth(out, packet.MAC(a[8:14]), mac, packet.EtherTypeARP)
	o := out[14:]
	copy(o[0:6], a[0:6])
	binary.BigEndian.PutUint16(o[6:], 2)
	copy(o[8:14], mac[:])
	copy(o[14:18], a[24:28])
	copy(o[18:28], a[8:18])
	return out, true
}

// echoRequest builds an ICMP echo request from the gateway to dst.
func echoRequest(b []byte, dstMAC packet.MAC, src, dst netip.Addr, id, seq uint16, payload int) []byte {
	total := packet.IPv4MinHdrLen + packet.ICMPHdrLen + payload
	b = b[:14+total]
	packet.PutEth(b, dstMAC, gwMAC, packet.EtherTypeIPv4)
	packet.PutIPv4(b[14:], uint16(total), seq, true, 64, packet.IPProtoICMP, src.As4(), dst.As4())
	ic := b[14+packet.IPv4MinHdrLen:]
	ic[0], ic[1] = packet.ICMPEchoRequest, 0
	ic[2], ic[3] = 0, 0
	binary.BigEndian.PutUint16(ic[4:], id)
	binary.BigEndian.PutUint16(ic[6:], seq)
	for i := range payload {
		ic[8+i] = byte(i)
	}
	binary.BigEndian.PutUint16(ic[2:], ^packet.Fold(packet.Checksum(ic, 0)))
	return b
}

// echoReply returns the sequence number if frame is an ICMP echo reply
// from src with a valid checksum.
func echoReply(frame []byte, src netip.Addr, id uint16) (uint16, bool) {
	if len(frame) < 14+packet.IPv4MinHdrLen+packet.ICMPHdrLen || packet.EthType(frame) != packet.EtherTypeIPv4 {
		return 0, false
	}
	ip := packet.IPv4(frame[14:])
	if !ip.Valid() || ip.Proto() != packet.IPProtoICMP || ip.Src() != src {
		return 0, false
	}
	ic := ip.Payload()
	if len(ic) < 8 || ic[0] != packet.ICMPEchoReply || binary.BigEndian.Uint16(ic[4:]) != id {
		return 0, false
	}
	if packet.Fold(packet.Checksum(ic, 0)) != 0xffff {
		return 0, false
	}
	return binary.BigEndian.Uint16(ic[6:]), true
}

// newBatch allocates n buffers of size bytes.
func newBatch(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

// readUntil reads from d until match accepts a frame or the deadline
// passes; each read batch is handed to match frame by frame. It returns the
// number of reads it took.
func readUntil(t testing.TB, tap *Tap, bufs [][]byte, sizes []int, offset int, timeout time.Duration, match func(frame []byte) bool) {
	t.Helper()
	if err := tap.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	defer tap.SetReadDeadline(time.Time{})
	for range 1000 {
		n, err := tap.Read(bufs, sizes, offset)
		for i := range n {
			if match(bufs[i][offset : offset+sizes[i]]) {
				return
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("no matching frame within %v", timeout)
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
	}
	t.Fatal("no matching frame in 1000 reads")
}
