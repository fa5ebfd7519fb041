package netdev

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/packet"
)

// putTCP builds an Ethernet/IPv4/TCP frame from the gateway to the pod
// with a correct checksum; mss > 0 adds an MSS option.
func putTCP(b []byte, dstMAC packet.MAC, sport, dport uint16, seq, ack uint32, flags uint8, mss uint16, payload []byte) []byte {
	hl := packet.TCPMinHdrLen
	if mss > 0 {
		hl += 4
	}
	l4 := 14 + packet.IPv4MinHdrLen
	b = b[:l4+hl+len(payload)]
	packet.PutEth(b, dstMAC, gwMAC, packet.EtherTypeIPv4)
	src, dst := gwIP.As4(), podIP.As4()
	tcpLen := uint16(hl + len(payload))
	packet.PutIPv4(b[14:], uint16(packet.IPv4MinHdrLen)+tcpLen, 7, true, 64, packet.IPProtoTCP, src, dst)
	tcp := b[l4:]
	clear(tcp[:hl])
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = byte(hl/4) << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	if mss > 0 {
		tcp[20], tcp[21] = 2, 4
		binary.BigEndian.PutUint16(tcp[22:], mss)
	}
	copy(tcp[hl:], payload)
	sum := packet.Checksum(tcp, packet.PseudoHeaderSum4(src, dst, packet.IPProtoTCP, tcpLen))
	binary.BigEndian.PutUint16(tcp[packet.TCPOffChecksum:], ^packet.Fold(sum))
	return b
}

// connectToPod opens a TCP connection from the gateway's port sport to
// the pod's dport through tap: SYN (initial sequence iss, MSS option mss),
// the pod's SYN-ACK, ACK. It returns the SYN-ACK.
func connectToPod(t *testing.T, tap *Tap, bufs [][]byte, sizes []int, sport, dport uint16, iss uint32, mss uint16) tcpSeg {
	t.Helper()
	frame := make([]byte, 256)
	syn := putTCP(frame, tap.MAC(), sport, dport, iss, 0, packet.TCPFlagSYN, mss, nil)
	if _, err := tap.Write([][]byte{syn}, 0); err != nil {
		t.Fatal(err)
	}
	var synack tcpSeg
	readUntil(t, tap, bufs, sizes, 0, ioTimeout, func(f []byte) bool {
		s, ok := parseTCPFromPod(f, sport)
		synack = s
		return ok && s.flags == packet.TCPFlagSYN|packet.TCPFlagACK
	})
	ack := putTCP(frame, tap.MAC(), sport, dport, iss+1, synack.seq+1, packet.TCPFlagACK, 0, nil)
	if _, err := tap.Write([][]byte{ack}, 0); err != nil {
		t.Fatal(err)
	}
	return synack
}

// tcpSeg is a TCP segment the pod sent, as parseTCPFromPod sees it.
type tcpSeg struct {
	seq, ack uint32
	flags    uint8
	payload  int
	csumOK   bool
}

// parseTCPFromPod parses a TCP frame sent by the pod to the gateway's port.
func parseTCPFromPod(f []byte, dport uint16) (tcpSeg, bool) {
	if len(f) < 14+packet.IPv4MinHdrLen+packet.TCPMinHdrLen || packet.EthType(f) != packet.EtherTypeIPv4 {
		return tcpSeg{}, false
	}
	ip := packet.IPv4(f[14:])
	if !ip.Valid() || ip.Proto() != packet.IPProtoTCP || ip.Src() != podIP {
		return tcpSeg{}, false
	}
	tcp := ip.Payload()
	if len(tcp) < packet.TCPMinHdrLen || binary.BigEndian.Uint16(tcp[2:]) != dport {
		return tcpSeg{}, false
	}
	sum := packet.Checksum(tcp, packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoTCP, uint16(len(tcp))))
	return tcpSeg{
		seq:     binary.BigEndian.Uint32(tcp[4:]),
		ack:     binary.BigEndian.Uint32(tcp[8:]),
		flags:   tcp[13],
		payload: len(tcp) - int(tcp[12]>>4)*4,
		csumOK:  packet.Fold(sum) == 0xffff,
	}, true
}

// listenInPod opens a TCP listener inside the pod namespace.
func listenInPod(t *testing.T, nsPath string, port int) net.Listener {
	t.Helper()
	var ln net.Listener
	err := Do(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(podIP, uint16(port)).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in pod: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// requireOffload stops t unless the kernel granted tap the offload flag.
// Outside CI a kernel without it skips the test; under CI (CI non-empty)
// it fails: every kernel weft supports grants TUN_F_CSUM and TUN_F_TSO4,
// so a refusal there is a broken negotiation, not a missing feature, and a
// skip would present an unrun check as passing.
func requireOffload(t *testing.T, tap *Tap, flag int) {
	t.Helper()
	if tap.Offloads()&flag != 0 {
		return
	}
	msg := fmt.Sprintf("kernel refused %s (got %s)", OffloadString(flag), OffloadString(tap.Offloads()))
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; under CI=%q a refused offload fails", msg, os.Getenv("CI"))
	}
	t.Skip(msg)
}

// TestVnetChecksumOffload: with TUN_F_CSUM the pod's TCP stack leaves the
// checksum to the "hardware" (us): ReadVnet shows NEEDS_CSUM and a partial
// checksum; Read completes it.
func TestVnetChecksumOffload(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	cfg.VnetHdr = true
	cfg.MaxOffload = OffloadCSUM
	tap := createTestTap(t, cfg)
	requireOffload(t, tap, unix.TUN_F_CSUM)
	listenInPod(t, cfg.NetnsPath, 8080)
	bufs, sizes := newBatch(8, 2048)
	checkARP(t, tap, bufs, sizes, 0)
	hdrs := make([]VirtioHdr, len(bufs))

	tests := []struct {
		name  string
		sport uint16
		vnet  bool
	}{
		{"ReadVnet leaves it partial", 40001, true},
		{"Read completes it", 40002, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			syn := putTCP(make([]byte, 128), tap.MAC(), tc.sport, 8080, 1000, 0, packet.TCPFlagSYN, 1400, nil)
			if _, err := tap.Write([][]byte{syn}, 0); err != nil {
				t.Fatal(err)
			}
			tap.SetReadDeadline(time.Now().Add(ioTimeout))
			defer tap.SetReadDeadline(time.Time{})
			for range 100 {
				var n int
				var err error
				if tc.vnet {
					n, err = tap.ReadVnet(bufs, sizes, hdrs, 0)
				} else {
					n, err = tap.Read(bufs, sizes, 0)
				}
				if err != nil {
					t.Fatalf("no SYN-ACK: %v", err)
				}
				for i := range n {
					f := bufs[i][:sizes[i]]
					seg, ok := parseTCPFromPod(f, tc.sport)
					if !ok || seg.flags != packet.TCPFlagSYN|packet.TCPFlagACK {
						continue
					}
					if !tc.vnet {
						if !seg.csumOK {
							t.Error("Read returned a SYN-ACK with a wrong checksum")
						}
						return
					}
					h := hdrs[i]
					if h.Flags&VirtioFlagNeedsCsum == 0 || h.CsumStart != 14+packet.IPv4MinHdrLen || h.CsumOffset != packet.TCPOffChecksum {
						t.Fatalf("SYN-ACK header %+v, want NEEDS_CSUM at 34+16", h)
					}
					if seg.csumOK {
						t.Error("partial checksum already verifies; want the pseudo-header sum only")
					}
					if err := FinishChecksum(f, &h); err != nil {
						t.Fatal(err)
					}
					if seg, _ = parseTCPFromPod(f, tc.sport); !seg.csumOK {
						t.Error("checksum wrong after FinishChecksum")
					}
					return
				}
			}
			t.Fatal("no SYN-ACK in 100 reads")
		})
	}
}

// TestVnetTSOSuperframe drives a real TCP connection from the pod: with
// TSO negotiated the pod sends GSO superframes. ReadVnet returns them with
// their header; Read drops and counts them.
func TestVnetTSOSuperframe(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	cfg.VnetHdr = true
	cfg.MaxOffload = OffloadTSO
	tap := createTestTap(t, cfg)
	requireOffload(t, tap, unix.TUN_F_TSO4)
	ln := listenInPod(t, cfg.NetnsPath, 8081)
	bufs, sizes := newBatch(16, 70000)
	hdrs := make([]VirtioHdr, len(bufs))
	checkARP(t, tap, bufs, sizes, 0)

	const sport, iss = 40100, 5000
	synack := connectToPod(t, tap, bufs, sizes, sport, 8081, iss, 1400)
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		io.Copy(c, io.LimitReader(zeroReader{}, 1<<20))
		<-ctx.Done()
	}()

	// First burst: ReadVnet must show a TSO superframe.
	var got VirtioHdr
	var gotLen int
	tap.SetReadDeadline(time.Now().Add(ioTimeout))
	for reads := 0; got.GSO() == GSONone && reads < 100; reads++ {
		n, err := tap.ReadVnet(bufs, sizes, hdrs, 0)
		if err != nil {
			t.Fatalf("ReadVnet: %v", err)
		}
		for i := range n {
			if s, ok := parseTCPFromPod(bufs[i][:sizes[i]], sport); ok && s.payload > 0 && hdrs[i].GSO() != GSONone {
				got, gotLen = hdrs[i], sizes[i]
				break
			}
		}
	}
	if got.GSO() != GSOTCPv4 || got.GSOSize == 0 || gotLen <= cfg.MTU+14 {
		t.Fatalf("no TSO superframe: header %+v, frame %d bytes", got, gotLen)
	}
	t.Logf("superframe: %d bytes, gso_size %d, header %+v", gotLen, got.GSOSize, got)

	// Acknowledge everything sent so far (exactly: the kernel ignores an
	// ack beyond snd_nxt); the next burst is again TSO, and Read must drop
	// it as DropGSO.
	before := tap.Drops(DropGSO)
	var highest uint32
	tap.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	for range 50 { // drain the rest of the burst, tracking snd_nxt
		n, err := tap.ReadVnet(bufs, sizes, hdrs, 0)
		if err != nil {
			break
		}
		for i := range n {
			if s, ok := parseTCPFromPod(bufs[i][:sizes[i]], sport); ok {
				if end := s.seq + uint32(s.payload); end-highest < 1<<31 || highest == 0 {
					highest = end
				}
			}
		}
	}
	if highest == 0 {
		highest = synack.seq + 1 + uint32(gotLen-54)
	}
	ack := putTCP(make([]byte, 256), tap.MAC(), sport, 8081, iss+1, highest, packet.TCPFlagACK, 0, nil)
	if _, err := tap.Write([][]byte{ack}, 0); err != nil {
		t.Fatal(err)
	}
	tap.SetReadDeadline(time.Now().Add(time.Second))
	for range 50 {
		if _, err := tap.Read(bufs, sizes, 0); err != nil {
			break
		}
		if tap.Drops(DropGSO) > before {
			break
		}
	}
	if tap.Drops(DropGSO) == before {
		t.Error("Read did not count a GSO superframe as DropGSO")
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestVnetOffloadLadder checks each cap of the ladder and that the result
// is logged.
func TestVnetOffloadLadder(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newTestNetns(t)
	tests := []struct {
		level OffloadLevel
		max   int
	}{
		{OffloadAll, offloadLadder[0]},
		{OffloadTSO, offloadLadder[1]},
		{OffloadCSUM, unix.TUN_F_CSUM},
		{OffloadNone, 0},
	}
	for i, tc := range tests {
		t.Run(OffloadString(tc.max), func(t *testing.T) {
			var logs bytes.Buffer
			cfg := TapConfig{
				Name: "eth" + string(rune('0'+i)), NetnsPath: ns, VnetHdr: true, MaxOffload: tc.level,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			}
			tap := createTestTap(t, cfg)
			if tap.Offloads()&^tc.max != 0 {
				t.Errorf("offloads %s exceed the cap %s", OffloadString(tap.Offloads()), OffloadString(tc.max))
			}
			if !strings.Contains(logs.String(), "tap offloads negotiated") || !strings.Contains(logs.String(), "offloads="+OffloadString(tap.Offloads())) {
				t.Errorf("negotiation not logged; log: %q", logs.String())
			}
			t.Logf("negotiated %s", OffloadString(tap.Offloads()))
		})
	}
}

func TestOffloadString(t *testing.T) {
	tests := []struct {
		mask int
		want string
	}{
		{0, "none"},
		{unix.TUN_F_CSUM, "csum"},
		{unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6, "csum|tso4|tso6"},
		{unix.TUN_F_USO6 | 0x100, "uso6|0x100"},
	}
	for _, tc := range tests {
		if got := OffloadString(tc.mask); got != tc.want {
			t.Errorf("OffloadString(%#x) = %q, want %q", tc.mask, got, tc.want)
		}
	}
}

// TestVnetWriteGather: a TSO super-frame handed to WriteVnetGather in
// parts cut at odd places (headers alone, then payload pieces of 1000, 3,
// 2997 and 4000 bytes), its checksum partial, reaches the pod's socket
// byte for byte: tun gathers the iovecs as one frame. A frame the kernel
// refuses (a GSO header longer than the frame) is counted, not an error.
func TestVnetWriteGather(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	cfg.VnetHdr = true
	cfg.MaxOffload = OffloadTSO
	tap := createTestTap(t, cfg)
	requireOffload(t, tap, unix.TUN_F_TSO4)
	ln := listenInPod(t, cfg.NetnsPath, 8082)
	bufs, sizes := newBatch(16, 70000)
	checkARP(t, tap, bufs, sizes, 0)

	const sport, iss = 40200, 9000
	synack := connectToPod(t, tap, bufs, sizes, sport, 8082, iss, 1000)
	conn, err := acceptWithin(ln, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	payload := make([]byte, 8000)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	super := putTCP(make([]byte, 54+len(payload)), tap.MAC(), sport, 8082, iss+1, synack.seq+1, packet.TCPFlagACK|packet.TCPFlagPSH, 0, payload)
	const l4 = 14 + packet.IPv4MinHdrLen
	ip := packet.IPv4(super[14:])
	binary.BigEndian.PutUint16(super[l4+packet.TCPOffChecksum:],
		packet.Fold(packet.PseudoHeaderSum4(ip.Src4(), ip.Dst4(), packet.IPProtoTCP, uint16(len(super)-l4))))
	hdr := VirtioHdr{Flags: VirtioFlagNeedsCsum, CsumStart: l4, CsumOffset: packet.TCPOffChecksum,
		GSOType: GSOTCPv4, HdrLen: 54, GSOSize: 1000}
	parts := [][]byte{super[:54], super[54:1054], super[1054:1057], super[1057:4054], super[4054:]}
	if n, err := tap.WriteVnetGather(parts, hdr); n != 1 || err != nil {
		t.Fatalf("WriteVnetGather = %d, %v", n, err)
	}
	got := make([]byte, len(payload))
	conn.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("pod read: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("the pod received other bytes than the gathered frame carried")
	}

	before := tap.Drops(DropWriteRejected)
	bad := VirtioHdr{GSOType: GSOTCPv4, HdrLen: 54, GSOSize: 1000}
	if n, err := tap.WriteVnetGather([][]byte{super[:20], super[20:40]}, bad); n != 0 || err != nil {
		t.Errorf("refused frame: WriteVnetGather = %d, %v; want 0, nil", n, err)
	}
	if tap.Drops(DropWriteRejected) != before+1 {
		t.Error("the refused frame was not counted as DropWriteRejected")
	}
	if _, err := tap.WriteVnetGather(make([][]byte, MaxGatherParts+1), hdr); err == nil {
		t.Error("WriteVnetGather took more than MaxGatherParts parts")
	}
}

// acceptWithin accepts one connection on ln, or fails after d.
func acceptWithin(ln net.Listener, d time.Duration) (net.Conn, error) {
	if tl, ok := ln.(*net.TCPListener); ok {
		tl.SetDeadline(time.Now().Add(d))
	}
	return ln.Accept()
}
