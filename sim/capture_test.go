package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/weftnet/weft/internal/childproc"
)

// captureOutEnv, when set, names where TestCaptureCrossNode copies its
// capture: this is how bench/testdata/captures/sim-crossnode.pcap is made.
const captureOutEnv = "WEFT_SIM_CAPTURE_OUT"

// TestCaptureCrossNode captures the underlay while pods on two nodes
// exchange ICMP echoes, a TCP transfer and UDP datagrams, and checks that
// all three crossed as VXLAN (UDP 4789) between the nodes' underlay
// addresses, with inner addresses the pods' own (no NAT on the wire).
func TestCaptureCrossNode(t *testing.T) {
	c := newTestCluster(t, Options{})
	if err := CheckTools("tcpdump"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx := context.Background()
	if err := c.Up(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	n1, n2 := c.Nodes[0], c.Nodes[1]
	p1, p2 := n1.Pods[0], n2.Pods[0]
	file := filepath.Join(t.TempDir(), "sim-crossnode.pcap")

	// tcpdump on n1's port of the underlay bridge, bounded in packets and
	// time; stopped by PID.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dump := Command(cctx, c.underlayNS(), "tcpdump", "-i", n1.Name, "-n", "-s", "0", "--immediate-mode", "-U", "-c", "1000", "-w", file)
	// A pipe of our own rather than StderrPipe: childproc reaps tcpdump
	// as soon as it exits, and the reader below must still get all of it.
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	dump.Stderr = stderrW
	proc, err := childproc.Start(dump) // dies with the test binary
	stderrW.Close()
	if err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 2)
	dumpDone := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var all []string
		for sc.Scan() {
			all = append(all, sc.Text())
			if strings.Contains(sc.Text(), "listening on") {
				listening <- ""
			}
		}
		listening <- strings.Join(all, "\n")
		dumpDone <- strings.Join(all, "\n")
	}()
	select {
	case msg := <-listening:
		if msg != "" {
			t.Fatalf("tcpdump: %s", msg)
		}
	case <-time.After(10 * time.Second):
		dump.Process.Kill()
		t.Fatal("tcpdump did not start within 10 s")
	}

	// ICMP: three echoes.
	if out, err := Command(ctx, p1.Netns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", p2.IP().String()).CombinedOutput(); err != nil {
		t.Errorf("ping: %v\n%s", err, out)
	}
	// TCP: a 32 KiB echo through the peer-report server.
	srv := echoServer(t, p2, 9100)
	if peer, errText := tcpCheckN(ctx, p1.Netns, srv, 32<<10); errText != "" || peer != p1.IP() {
		t.Errorf("tcp transfer: peer %s, %s", peer, errText)
	}
	// UDP: five datagrams, each answered.
	if err := udpExchange(ctx, p1, p2, 9101, 5); err != nil {
		t.Errorf("udp: %v", err)
	}
	// tcpdump drops what it has not read yet when interrupted: stop it
	// once the file holds the last answers (it writes each packet at once,
	// -U), or after 10 s; the checks below then say what is missing.
	want := map[string]int{"icmp": 2 * 3, "udp": 2 * 5}
	waitDeadline := time.Now().Add(10 * time.Second)
	for {
		counts, err := readCapture(file, n1.Underlay, n2.Underlay, p1.IP(), p2.IP())
		if err == nil && counts["icmp"] >= want["icmp"] && counts["udp"] >= want["udp"] && counts["tcp"] > 0 {
			break
		}
		if time.Now().After(waitDeadline) {
			t.Logf("capture incomplete after 10 s (%v, %v; want at least %v and some tcp); stopping tcpdump", counts, err, want)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	dump.Process.Signal(os.Interrupt)
	t.Logf("tcpdump: %s", <-dumpDone)
	if err := proc.Wait(); err != nil {
		t.Logf("tcpdump: %v", err)
	}

	counts := decodeCapture(t, file, n1.Underlay, n2.Underlay, p1.IP(), p2.IP())
	t.Logf("capture %s: %v", file, counts)
	for _, what := range []string{"icmp", "tcp", "udp"} {
		if counts[what] == 0 {
			t.Errorf("no VXLAN-encapsulated %s between %s and %s in the capture", what, p1.IP(), p2.IP())
		}
	}
	if counts["other-inner"] > 0 {
		t.Errorf("%d VXLAN packets carried addresses other than the pods' (NAT on the wire?)", counts["other-inner"])
	}
	if out := os.Getenv(captureOutEnv); out != "" && !t.Failed() {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", out, len(b))
	}
}

// tcpCheckN is tcpCheck with n bytes echoed.
func tcpCheckN(ctx context.Context, netns string, dst netip.AddrPort, n int) (netip.Addr, string) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := DialIn(dctx, netns, "tcp4", dst.String())
	cancel()
	if err != nil {
		return netip.Addr{}, err.Error()
	}
	defer conn.Close()
	p, err := EchoProbe(conn, n, time.Now().Add(echoTimeout))
	if err != nil {
		return p.Addr(), err.Error()
	}
	return p.Addr(), ""
}

// udpExchange sends count datagrams from a to b's echo socket on port and
// waits for each answer.
func udpExchange(ctx context.Context, a, b *Pod, port uint16, count int) error {
	pc, err := ListenPacketIn(b.Netns, "udp4", netip.AddrPortFrom(b.IP(), port).String())
	if err != nil {
		return err
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	conn, err := DialIn(ctx, a.Netns, "udp4", netip.AddrPortFrom(b.IP(), port).String())
	if err != nil {
		return err
	}
	defer conn.Close()
	buf := make([]byte, 2048)
	msg := []byte(strings.Repeat("weft sim udp ", 10))
	for i := range count {
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(msg); err != nil {
			return err
		}
		n, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("datagram %d: %w", i, err)
		}
		if string(buf[:n]) != string(msg) {
			return fmt.Errorf("datagram %d came back changed", i)
		}
	}
	return nil
}

// decodeCapture counts the inner protocols of VXLAN packets between the
// two underlay addresses whose inner addresses are the two pods'.
func decodeCapture(t *testing.T, file string, u1, u2, a, b netip.Addr) map[string]int {
	t.Helper()
	counts, err := readCapture(file, u1, u2, a, b)
	if err != nil {
		t.Fatal(err)
	}
	return counts
}

// readCapture is decodeCapture for a capture tcpdump may still be
// writing: a packet record cut short at the end is not counted.
func readCapture(file string, u1, u2, a, b netip.Addr) (map[string]int, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	pair := func(x, y netip.Addr, p, q netip.Addr) bool { return (x == p && y == q) || (x == q && y == p) }
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return counts, err
		}
		counts["frames"]++
		pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		vx, ok := pkt.Layer(layers.LayerTypeVXLAN).(*layers.VXLAN)
		if !ok {
			continue
		}
		outer := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		o1, _ := netip.AddrFromSlice(outer.SrcIP.To4())
		o2, _ := netip.AddrFromSlice(outer.DstIP.To4())
		if !pair(o1, o2, u1, u2) {
			continue
		}
		counts["vxlan"]++
		inner := gopacket.NewPacket(vx.Payload, layers.LayerTypeEthernet, gopacket.Default)
		ip, ok := inner.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok {
			counts["non-ip-inner"]++
			continue
		}
		i1, _ := netip.AddrFromSlice(ip.SrcIP.To4())
		i2, _ := netip.AddrFromSlice(ip.DstIP.To4())
		if !pair(i1, i2, a, b) {
			counts["other-inner"]++
			continue
		}
		switch ip.Protocol {
		case layers.IPProtocolICMPv4:
			counts["icmp"]++
		case layers.IPProtocolTCP:
			counts["tcp"]++
		case layers.IPProtocolUDP:
			counts["udp"]++
		}
	}
	return counts, nil
}
