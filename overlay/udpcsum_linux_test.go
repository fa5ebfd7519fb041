//go:build linux

package overlay

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/packet"
)

// The outer UDP checksum is what protects an inner frame whose own
// checksum travels partial (FlagPartialCsum): weft must send VXLAN with a
// UDP checksum, and the receiving kernel must drop a datagram whose
// checksum does not verify before weft reads it. These tests check both in
// the two-namespace topology (netns_linux_test.go).

// TestOuterUDPChecksumSent: weft's sockets do not turn the UDP checksum
// off (SO_NO_CHECK is 0), and what they send carries one:
//   - plain sends, with transmit checksum offload off on the sending veth
//     so that the kernel computes the checksum in software as a NIC would
//     on the wire: every captured datagram has a nonzero checksum that
//     verifies over the pseudo-header;
//   - UDP GSO sends with offload on: every packet has a nonzero field
//     that either verifies or is the partial sum the kernel left for the
//     "NIC" (TP_STATUS_CSUMNOTREADY), never 0 ("no checksum"). A veth
//     hands the GSO packet across unsegmented; a NIC (or the kernel's
//     software GSO) completes each segment's checksum from that sum.
func TestOuterUDPChecksumSent(t *testing.T) {
	u := newUnderlayPair(t)
	a := listen(t, u.nsA, ConnConfig{Addr: netip.AddrPortFrom(u.addrA, 0)})
	b := listen(t, u.nsB, ConnConfig{Addr: netip.AddrPortFrom(u.addrB, 0)})
	if v := soNoCheck(t, a); v != 0 {
		t.Fatalf("SO_NO_CHECK = %d on weft's socket: the UDP checksum is off", v)
	}
	capture := packetSocket(t, u.nsB, u.linkB)

	dgram := func(seq int, n int) []byte {
		d := make([]byte, HeaderLen+n)
		PutHeader(d, 7)
		MarkPartialCsum(d)
		for i := HeaderLen; i < len(d); i++ {
			d[i] = byte(seq + i)
		}
		return d
	}
	to := []netip.AddrPort{b.LocalAddr()}

	t.Run("plain, checksum computed", func(t *testing.T) {
		setTxChecksum(t, u.nsA, u.linkA, false)
		defer setTxChecksum(t, u.nsA, u.linkA, true)
		for i := range 3 {
			if _, err := a.WriteBatch([][]byte{dgram(i, 200+i)}, 0, to); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			ip, status := capture.next(t, b.LocalAddr().Port())
			sum, ok := udpChecksum(ip)
			if sum == 0 || !ok {
				t.Errorf("datagram %d: UDP checksum %#04x, verifies %v (status %#x)", i, sum, ok, status)
			}
		}
	})
	t.Run("GSO", func(t *testing.T) {
		g, err := NewGSOWriter(a, 0)
		if err != nil {
			t.Skipf("no UDP GSO here: %v", err) // the plain case above still ran
		}
		const segs = 4
		dgrams, tos := make([][]byte, segs), make([]netip.AddrPort, segs)
		for i := range segs {
			dgrams[i], tos[i] = dgram(i, 1000), b.LocalAddr()
		}
		if n, err := g.WriteGather(dgrams, nil, tos); n != segs || err != nil {
			t.Fatalf("WriteGather = %d, %v", n, err)
		}
		// Over a veth the kernel may hand the GSO packet across whole
		// (segmenting only for a real device): count payload bytes.
		for seen, i := 0, 0; seen < segs*len(dgrams[0]); i++ {
			ip, status := capture.next(t, b.LocalAddr().Port())
			sum, ok := udpChecksum(ip)
			if sum == 0 || !ok && status&unix.TP_STATUS_CSUMNOTREADY == 0 {
				t.Errorf("packet %d: UDP checksum %#04x, verifies %v, status %#x", i, sum, ok, status)
			}
			seen += int(packet.IPv4(ip).TotalLen()) - packet.IPv4(ip).HeaderLen() - packet.UDPHdrLen
		}
	})
}

// TestOuterUDPChecksumChecked: a VXLAN datagram whose UDP checksum does
// not verify is dropped by the receiving kernel (Udp InCsumErrors) and
// never reaches weft's socket; the same datagram with a good checksum
// does.
func TestOuterUDPChecksumChecked(t *testing.T) {
	u := newUnderlayPair(t)
	b := listen(t, u.nsB, ConnConfig{Addr: netip.AddrPortFrom(u.addrB, 0)})
	// The sender is a raw socket: the kernel sends its UDP header and
	// checksum as given, so a corrupted datagram is easy to make.
	// Transmit checksum offload off, so nothing on the way touches them.
	setTxChecksum(t, u.nsA, u.linkA, false)
	payload := make([]byte, HeaderLen+100)
	PutHeader(payload, 7)
	MarkPartialCsum(payload)
	good := rawUDP(u.addrA, b.LocalAddr(), payload, false)
	bad := rawUDP(u.addrA, b.LocalAddr(), payload, true)
	errs0 := udpInCsumErrors(t, u.nsB)
	err := inNetns(u.nsA, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		dst := &unix.SockaddrInet4{Addr: b.LocalAddr().Addr().As4()}
		for _, d := range [][]byte{bad, good} {
			if err := unix.Sendto(fd, d, 0, dst); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raw send: %v", err)
	}
	bufs, sizes, from := [][]byte{make([]byte, 2048), make([]byte, 2048)}, make([]int, 2), make([]netip.AddrPort, 2)
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	var got [][]byte
	for len(got) < 2 {
		n, err := b.ReadBatch(bufs, sizes, 0, from)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][:sizes[i]]...))
		}
		b.SetReadDeadline(time.Now().Add(300 * time.Millisecond)) // anything else is already queued
	}
	if len(got) != 1 || string(got[0]) != string(payload) {
		t.Errorf("weft's socket read %d datagrams, want only the one with the good checksum", len(got))
	}
	if d := udpInCsumErrors(t, u.nsB) - errs0; d != 1 {
		t.Errorf("Udp InCsumErrors grew by %d, want 1 (the corrupted datagram)", d)
	}
}

// soNoCheck reads SO_NO_CHECK on c's socket.
func soNoCheck(t *testing.T, c *Conn) int {
	t.Helper()
	rc, err := c.uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK) }); err != nil || gerr != nil {
		t.Fatalf("getsockopt SO_NO_CHECK: %v %v", err, gerr)
	}
	return v
}

// setTxChecksum turns transmit checksum offload of link in ns on or off
// (ethtool -K link tx on|off: SIOCETHTOOL, ETHTOOL_STXCSUM). Off, the
// kernel completes every checksum in software before the device.
func setTxChecksum(t *testing.T, ns netns.NsHandle, link string, on bool) {
	t.Helper()
	type ethtoolValue struct{ cmd, data uint32 }
	type ifreq struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	err := inNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		v := &ethtoolValue{cmd: unix.ETHTOOL_STXCSUM}
		if on {
			v.data = 1
		}
		ifr := &ifreq{data: unsafe.Pointer(v)}
		copy(ifr.name[:], link)
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr))); errno != 0 {
			return errno
		}
		runtime.KeepAlive(v)
		return nil
	})
	if err != nil {
		t.Fatalf("ethtool -K %s tx %v: %v", link, on, err)
	}
}

// capture reads IPv4 packets arriving on one link (AF_PACKET, cooked),
// with the kernel's checksum status for each (PACKET_AUXDATA).
type capture struct{ fd int }

func packetSocket(t *testing.T, ns netns.NsHandle, link string) *capture {
	t.Helper()
	var c capture
	err := inNetns(ns, func() error {
		l, err := netlink.LinkByName(link)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_IP))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		c.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: l.Attrs().Index}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
	})
	if c.fd > 0 {
		t.Cleanup(func() { unix.Close(c.fd) })
	}
	if err != nil {
		t.Fatalf("packet socket on %s: %v", link, err)
	}
	return &c
}

// next returns the next captured IPv4/UDP packet to port, and its status.
func (c *capture) next(t *testing.T, port uint16) ([]byte, uint32) {
	t.Helper()
	buf, oob := make([]byte, 65536), make([]byte, 256)
	for range 100 {
		n, oobn, _, _, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		ip := buf[:n]
		if n < packet.IPv4MinHdrLen+packet.UDPHdrLen || packet.IPv4(ip).Proto() != packet.IPProtoUDP {
			continue
		}
		l4 := ip[packet.IPv4(ip).HeaderLen():]
		if binary.BigEndian.Uint16(l4[2:4]) != port {
			continue
		}
		var status uint32
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 4 {
				status = (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0])).Status
			}
		}
		return append([]byte(nil), ip...), status
	}
	t.Fatal("capture: no UDP packet to the port among 100")
	return nil, 0
}

// udpChecksum returns an IPv4/UDP packet's checksum field and whether it
// verifies over the pseudo-header.
func udpChecksum(ip []byte) (uint16, bool) {
	v4 := packet.IPv4(ip)
	l4 := ip[v4.HeaderLen():v4.TotalLen()]
	sum := binary.BigEndian.Uint16(l4[packet.UDPOffChecksum:])
	return sum, packet.Fold(packet.Checksum(l4, packet.PseudoHeaderSum4(v4.Src4(), v4.Dst4(), packet.IPProtoUDP, uint16(len(l4))))) == 0xffff
}

// rawUDP is a UDP header and payload from src to dst with a correct
// checksum, or with corrupt, one that is off by one.
func rawUDP(src netip.Addr, dst netip.AddrPort, payload []byte, corrupt bool) []byte {
	d := make([]byte, packet.UDPHdrLen+len(payload))
	packet.PutUDP(d, 40000, dst.Port(), uint16(len(d)))
	copy(d[packet.UDPHdrLen:], payload)
	c := ^packet.Fold(packet.Checksum(d, packet.PseudoHeaderSum4(src.As4(), dst.Addr().As4(), packet.IPProtoUDP, uint16(len(d)))))
	if c == 0 {
		c = 0xffff
	}
	if corrupt {
		c++
		if c == 0 {
			c = 1
		}
	}
	binary.BigEndian.PutUint16(d[packet.UDPOffChecksum:], c)
	return d
}

// udpInCsumErrors reads the Udp InCsumErrors counter of ns
// (/proc/net/snmp as a thread in ns sees it).
func udpInCsumErrors(t *testing.T, ns netns.NsHandle) uint64 {
	t.Helper()
	var v uint64
	err := inNetns(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Udp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == "InCsumErrors" && i < len(f) {
					v, err = strconv.ParseUint(f[i], 10, 64)
					return err
				}
			}
		}
		return errors.New("no Udp InCsumErrors in /proc/net/snmp")
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
