package main

// Helpers for the namespace integration tests of weftd: a weftd binary
// built once, sim clusters torn down with the test, API shortcuts, and
// traffic run from inside namespaces (ping through nsenter; TCP, raw
// sockets and UDP from Go on a thread switched into the namespace).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/sim"
	"golang.org/x/sys/unix"
)

// The weftd binary the sim runs is built on first use, once per test
// binary, so that the config tests alone do not pay for a build.
var (
	weftdOnce sync.Once
	weftdDir  string
	weftdPath string
	weftdErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if weftdDir != "" {
		os.RemoveAll(weftdDir)
	}
	os.Exit(code)
}

func weftdBinary(t *testing.T) string {
	t.Helper()
	weftdOnce.Do(func() {
		weftdDir, weftdErr = os.MkdirTemp("", "weft-wit-bin-")
		if weftdErr != nil {
			return
		}
		testenv.RecordPath(weftdDir)
		weftdPath = filepath.Join(weftdDir, "weftd")
		out, err := exec.Command("go", "build", "-o", weftdPath, "github.com/weftnet/weft/cmd/weftd").CombinedOutput()
		if err != nil {
			weftdErr = fmt.Errorf("build weftd: %w\n%s", err, out)
		}
	})
	if weftdErr != nil {
		t.Fatal(weftdErr)
	}
	return weftdPath
}

// upCluster builds a sim cluster named opts.Name (default wit<hex>) with nodes nodes of pods
// pods each; Down runs when the test ends, pass or fail, after the nodes'
// logs are attached to a failed test.
func upCluster(t *testing.T, opts sim.Options, nodes, pods int) *sim.Cluster {
	t.Helper()
	testenv.RequireRoot(t)
	if opts.Name == "" {
		opts.Name = testenv.UniqueName("wit")
	}
	opts.Dir = filepath.Join(t.TempDir(), "sim")
	testenv.RecordPath(opts.Dir)
	opts.Weftd = weftdBinary(t)
	opts.DieWithCaller = true
	if opts.Progress == nil {
		opts.Progress = func(format string, args ...any) { t.Logf("sim: "+format, args...) }
	}
	c, err := sim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// WEFT_TEST_LOGS=1 shows the logs of passing tests too.
		if t.Failed() || os.Getenv("WEFT_TEST_LOGS") != "" {
			for _, n := range c.Nodes {
				t.Logf("--- weftd log of %s (%s):\n%s", n.Name, n.Log, tailFile(n.Log, 60))
			}
		}
		if err := c.Down(); err != nil {
			t.Errorf("sim down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Up(ctx, nodes, pods); err != nil {
		t.Fatalf("sim up: %v", err)
	}
	return c
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// nodeClient returns an API client for node n, closed with the test.
func nodeClient(t *testing.T, n *sim.Node) *api.Client {
	t.Helper()
	cl := api.NewClient(n.Socket)
	t.Cleanup(cl.Close)
	return cl
}

func apiCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func status(t *testing.T, cl *api.Client) api.Status {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func counters(t *testing.T, cl *api.Client) api.Counters {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	c, err := cl.Counters(ctx)
	if err != nil {
		t.Fatalf("counters: %v", err)
	}
	return c
}

// counter reads one counter and fails the test if the node does not have
// it at all: a renamed counter must not make a check vacuous.
func counter(t *testing.T, c api.Counters, name string) uint64 {
	t.Helper()
	v, ok := c[name]
	if !ok {
		names := make([]string, 0, len(c))
		for k := range c {
			names = append(names, k)
		}
		slices.Sort(names)
		t.Fatalf("no counter %q; the node has %v", name, names)
	}
	return v
}

func peers(t *testing.T, cl *api.Client) []api.Peer {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	p, err := cl.Peers(ctx)
	if err != nil {
		t.Fatalf("peers: %v", err)
	}
	return p
}

func routes(t *testing.T, cl *api.Client) []api.Route {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	r, err := cl.Routes(ctx)
	if err != nil {
		t.Fatalf("routes: %v", err)
	}
	return r
}

func ports(t *testing.T, cl *api.Client) []api.Port {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	p, err := cl.Ports(ctx)
	if err != nil {
		t.Fatalf("ports: %v", err)
	}
	return p
}

func ipamOf(t *testing.T, cl *api.Client) api.IPAM {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	v, err := cl.IPAM(ctx)
	if err != nil {
		t.Fatalf("ipam: %v", err)
	}
	return v
}

func hasPeerRoute(rs []api.Route, subnet netip.Prefix) bool {
	return slices.ContainsFunc(rs, func(r api.Route) bool { return r.Kind == api.RoutePeer && r.Prefix == subnet })
}

func hasPeer(ps []api.Peer, node string) bool {
	return slices.ContainsFunc(ps, func(p api.Peer) bool { return p.Node == node })
}

func findPeer(ps []api.Peer, node string) (api.Peer, bool) {
	i := slices.IndexFunc(ps, func(p api.Peer) bool { return p.Node == node })
	if i < 0 {
		return api.Peer{}, false
	}
	return ps[i], true
}

// waitFor polls cond every 100 ms until it holds or timeout passes, and
// fails the test with what cond last said.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runNS runs argv in netns and returns its combined output.
func runNS(ctx context.Context, netns string, argv ...string) (string, error) {
	out, err := sim.Command(ctx, netns, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w\n%s", strings.Join(argv, " "), netns, err, out)
	}
	return string(out), nil
}

func mustRun(t *testing.T, netns string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := runNS(ctx, netns, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// ping sends count echo requests from netns to dst, 0.2 s apart, and
// returns how many were answered and ping's output. extra goes before dst.
func ping(t *testing.T, netns string, dst netip.Addr, count int, extra ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*time.Second+10*time.Second)
	defer cancel()
	argv := append([]string{"ping", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2"}, extra...)
	argv = append(argv, dst.String())
	out, _ := sim.Command(ctx, netns, argv...).CombinedOutput() // exit 1 = no reply: judged from the output
	m := pingStats.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("ping %s from %s: no statistics in output:\n%s", dst, netns, out)
	}
	got, _ := strconv.Atoi(m[2])
	return got, string(out)
}

// pingAll fails the test unless every echo request is answered.
func pingAll(t *testing.T, netns string, dst netip.Addr) {
	t.Helper()
	const count = 3
	if got, out := ping(t, netns, dst, count); got != count {
		t.Errorf("ping %s from %s: %d of %d answered:\n%s", dst, netns, got, count, out)
	}
}

// inNetns runs f on a thread inside the named namespace; sockets f opens
// stay in it and may be used from any goroutine afterwards.
func inNetns(t *testing.T, netns string, f func() error) {
	t.Helper()
	if err := netdev.Do(netdev.NetnsPath(netns), f); err != nil {
		t.Fatalf("in netns %s: %v", netns, err)
	}
}

// listenTCP opens a TCP listener on addr (any port) inside netns.
func listenTCP(t *testing.T, netns string, addr netip.Addr) *net.TCPListener {
	t.Helper()
	var ln *net.TCPListener
	inNetns(t, netns, func() (err error) {
		ln, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialTCP connects from inside netns to to.
func dialTCP(t *testing.T, netns string, to netip.AddrPort) *net.TCPConn {
	t.Helper()
	var c net.Conn
	inNetns(t, netns, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp4", to.String())
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// tcpPair is one TCP connection between two namespaces, both ends held.
type tcpPair struct {
	client, server *net.TCPConn
	peerSeen       netip.Addr // the client address the server saw
}

// connectTCP opens a connection from clientNS to serverAddr in serverNS.
func connectTCP(t *testing.T, clientNS, serverNS string, serverAddr netip.Addr) *tcpPair {
	t.Helper()
	ln := listenTCP(t, serverNS, serverAddr)
	type accepted struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		ln.SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.AcceptTCP()
		ch <- accepted{c, err}
	}()
	client := dialTCP(t, clientNS, ln.Addr().(*net.TCPAddr).AddrPort())
	a := <-ch
	ln.Close()
	if a.err != nil {
		t.Fatalf("accept on %s in %s: %v", ln.Addr(), serverNS, a.err)
	}
	t.Cleanup(func() { a.c.Close() })
	return &tcpPair{client: client, server: a.c, peerSeen: a.c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()}
}

// roundTrip sends msg client -> server and its echo back, within timeout.
func (p *tcpPair) roundTrip(msg string, timeout time.Duration) error {
	dl := time.Now().Add(timeout)
	p.client.SetDeadline(dl)
	p.server.SetDeadline(dl)
	if _, err := p.client.Write([]byte(msg)); err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	return p.finishRoundTrip(msg)
}

// finishRoundTrip reads msg at the server (written by the client
// earlier), echoes it and reads the echo at the client.
func (p *tcpPair) finishRoundTrip(msg string) error {
	buf := make([]byte, len(msg))
	if _, err := ioReadFull(p.server, buf); err != nil {
		return fmt.Errorf("server read: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("server read %q, want %q", buf, msg)
	}
	if _, err := p.server.Write(buf); err != nil {
		return fmt.Errorf("server write: %w", err)
	}
	clear(buf)
	if _, err := ioReadFull(p.client, buf); err != nil {
		return fmt.Errorf("client read: %w", err)
	}
	if string(buf) != msg {
		return fmt.Errorf("client read %q, want %q", buf, msg)
	}
	return nil
}

func ioReadFull(c net.Conn, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// icmpWatch is a raw ICMP socket inside a namespace: it sees a copy of
// every ICMP packet the namespace receives, so a test can tell whether a
// frame it injected elsewhere arrived.
type icmpWatch struct {
	conn *net.IPConn
}

func watchICMP(t *testing.T, netns string) *icmpWatch {
	t.Helper()
	var c *net.IPConn
	inNetns(t, netns, func() (err error) {
		c, err = net.ListenIP("ip4:icmp", &net.IPAddr{IP: net.IPv4zero})
		return err
	})
	t.Cleanup(func() { c.Close() })
	return &icmpWatch{conn: c}
}

// echoRequests reads for d and counts the echo requests with ICMP
// identifier id, and those among them from src (if valid).
func (w *icmpWatch) echoRequests(d time.Duration, id uint16, src netip.Addr) (withID, fromSrc int) {
	w.conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	for {
		n, from, err := w.conn.ReadFromIP(buf)
		if err != nil {
			return withID, fromSrc
		}
		b := buf[:n] // IPv4 header already stripped
		if n < 8 || b[0] != 8 || binary.BigEndian.Uint16(b[4:]) != id {
			continue
		}
		withID++
		if a, ok := netip.AddrFromSlice(from.IP); ok && a.Unmap() == src {
			fromSrc++
		}
	}
}

// linkExists reports whether netns has a link named name.
func linkExists(t *testing.T, netns, name string) bool {
	t.Helper()
	h, err := netdev.OpenHandle(netdev.NetnsPath(netns))
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", netns, err)
	}
	defer h.Close()
	_, err = h.LinkByName(name)
	return err == nil
}

// linkIndex returns the ifindex of link name in netns.
func linkIndex(t *testing.T, netns, name string) int {
	t.Helper()
	h, err := netdev.OpenHandle(netdev.NetnsPath(netns))
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", netns, err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s in %s: %v", name, netns, err)
	}
	return l.Attrs().Index
}

// linkNames lists the links of netns, sorted.
func linkNames(t *testing.T, netns string) []string {
	t.Helper()
	h, err := netdev.OpenHandle(netdev.NetnsPath(netns))
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", netns, err)
	}
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		t.Fatalf("links in %s: %v", netns, err)
	}
	names := make([]string, 0, len(ls))
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

// sendRaw writes each frame count times out of link ifName inside netns
// through an AF_PACKET socket: nothing of the namespace's own stack
// (routing, ARP, source address choice) touches them.
func sendRaw(t *testing.T, netns, ifName string, frames [][]byte, count int) {
	t.Helper()
	inNetns(t, netns, func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: send only
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		for range count {
			for _, f := range frames {
				if err := unix.Sendto(fd, f, 0, sa); err != nil {
					return fmt.Errorf("send on %s: %w", ifName, err)
				}
			}
		}
		return nil
	})
}

// sendUDP sends each payload from a socket bound to from (port 0 = any)
// inside netns to to.
func sendUDP(t *testing.T, netns string, from netip.Addr, to netip.AddrPort, payloads ...[]byte) {
	t.Helper()
	inNetns(t, netns, func() error {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)))
		if err != nil {
			return err
		}
		defer c.Close()
		for _, p := range payloads {
			if _, err := c.WriteToUDPAddrPort(p, to); err != nil {
				return fmt.Errorf("send from %s to %s: %w", c.LocalAddr(), to, err)
			}
		}
		return nil
	})
}

// isRemote reports whether err is an API error with the given HTTP status.
func isRemote(err error, status int) bool {
	var re *api.RemoteError
	return errors.As(err, &re) && re.Status == status
}

// echoFrame builds an Ethernet frame carrying an ICMP echo request with
// identifier id, built by gopacket rather than weft's own packet code.
func echoFrame(t *testing.T, dstMAC, srcMAC packet.MAC, src, dst netip.Addr, ttl uint8, id uint16) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: srcMAC[:], DstMAC: dstMAC[:], EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: ttl, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolICMPv4,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: id, Seq: 1}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, icmp, gopacket.Payload("weft integration test"))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// arpFrame builds an ARP request from (sha, spa) asking for tpa.
func arpFrame(t *testing.T, sha packet.MAC, spa, tpa netip.Addr) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: sha[:], DstMAC: packet.BroadcastMAC[:], EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6,
		ProtAddressSize: 4, Operation: layers.ARPRequest, SourceHwAddress: sha[:], SourceProtAddress: spa.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: tpa.AsSlice()}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, arp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// vxlanPayload is a VXLAN UDP payload (RFC 7348 §5: flags 0x08, 24-bit
// VNI) around inner, written here by hand so that the test does not share
// weft's encoder.
func vxlanPayload(vni uint32, inner []byte) []byte {
	b := make([]byte, 8+len(inner))
	b[0] = 0x08
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	copy(b[8:], inner)
	return b
}
