package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/netdev"
)

// The outside host stands for the internet (or a LAN) beyond the cluster:
// a namespace on the underlay bridge, the nodes' default gateway, with a
// server address from 203.0.113.0/24 (TEST-NET-3, RFC 5737) that no
// cluster range holds. Its echo server (TCP and UDP) reports the source
// address it saw, so a check sees whether a pod's traffic was
// masqueraded behind its node's address.
//
//	pod --weft--> node (kernel: route, masquerade) --u0--> br0 --o0--> outside
//	                                                       192.168.100.254, server 203.0.113.10 on lo

// Outside is the recorded outside host.
type Outside struct {
	Netns string `json:"netns"`
	// Gateway is its address on the underlay, the nodes' default route.
	Gateway netip.Addr `json:"gateway"`
	// Addr is the server's address, outside every cluster range.
	Addr netip.Addr `json:"addr"`
	Port int        `json:"port"` // TCP and UDP
	// EndpointAddr is the server's second address, sim/outside's endpoint
	// (simOutsideClusterIP). A separate address because weftd cannot tell a
	// direct flow whose server speaks first after a weftd restart from a
	// reply of a service flow it has forgotten (switch/nat.go,
	// untrackedToOrFromBackend): with one address, the direct egress
	// stream of TestEgressStreamSurvivesRestart would be taken for
	// sim/outside's reply and reset.
	EndpointAddr netip.Addr `json:"endpoint_addr,omitempty"`
	PID          int        `json:"pid"`
	Log          string     `json:"log"`
	// Helper is the command line that runs HelperMain (recorded so that
	// a restart of the server uses the same binary).
	Helper []string `json:"helper"`
	// Services: the example NodePort Services are applied.
	Services bool `json:"services,omitempty"`
}

// AddrPort is where the outside server listens.
func (o *Outside) AddrPort() netip.AddrPort { return netip.AddrPortFrom(o.Addr, uint16(o.Port)) }

// EndpointAddrPort is where it also listens for sim/outside's flows.
func (o *Outside) EndpointAddrPort() netip.AddrPort {
	return netip.AddrPortFrom(o.EndpointAddr, uint16(o.Port))
}

// Defaults of the outside host.
var (
	DefaultOutsideAddr         = netip.MustParseAddr("203.0.113.10")
	defaultOutsideEndpointAddr = netip.MustParseAddr("203.0.113.11")
)

const (
	defaultOutsidePort = 7780
	// HelperOutside is the outside host's long-running echo server.
	HelperOutside = "_outside"
	// outsideLife bounds the outside server's life: Down stops it long
	// before; a sim forgotten for a day loses only its outside server.
	outsideLife = 24 * time.Hour
)

func (c *Cluster) outsideNS() string { return c.Name + "-o" }

// outsideGateway is the last host address of the underlay network.
func (c *Cluster) outsideGateway() netip.Addr {
	p := c.UnderlayNet.Masked()
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 2 // last address before broadcast
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// upOutside creates the outside host on the underlay bridge and starts
// its echo server.
func (c *Cluster) upOutside(ctx context.Context, helper []string) error {
	o := &Outside{
		Netns: c.outsideNS(), Gateway: c.outsideGateway(), Addr: DefaultOutsideAddr, Port: defaultOutsidePort,
		EndpointAddr: defaultOutsideEndpointAddr,
		Log:          filepath.Join(c.Dir, "outside.log"), Helper: helper,
	}
	c.Outside = o
	if err := c.save(); err != nil {
		return err
	}
	c.logf("outside host: namespace %s, gateway %s on the underlay, server %s and %s (tcp+udp)", o.Netns, o.Gateway, o.AddrPort(), o.EndpointAddrPort())
	if _, err := netdev.NewNetns(o.Netns); err != nil {
		return err
	}
	if err := netdev.NewVeth(
		netdev.VethEnd{Name: "o0", NetnsPath: netdev.NetnsPath(o.Netns), Addr: netip.PrefixFrom(o.Gateway, c.UnderlayNet.Bits())},
		netdev.VethEnd{Name: "out0", NetnsPath: netdev.NetnsPath(c.underlayNS())},
	); err != nil {
		return fmt.Errorf("outside host: %w", err)
	}
	if err := runIn(c.underlayNS(), "ip", "link", "set", "out0", "master", "br0", "up"); err != nil {
		return err
	}
	for _, a := range []netip.Addr{o.Addr, o.EndpointAddr} {
		if err := netdev.AddAddr(netdev.NetnsPath(o.Netns), "lo", netip.PrefixFrom(a, 32)); err != nil {
			return fmt.Errorf("outside host: %w", err)
		}
	}
	return c.startOutsideServer(ctx)
}

// startOutsideServer runs the _outside helper in the outside namespace,
// in its own process group so that it outlives `weft sim up`.
func (c *Cluster) startOutsideServer(ctx context.Context) error {
	o := c.Outside
	logf, err := os.OpenFile(o.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("outside log: %w", err)
	}
	defer logf.Close()
	argv := append(append([]string(nil), o.Helper...), HelperOutside,
		"--listen", o.AddrPort().String()+","+o.EndpointAddrPort().String(), "--sim-dir", filepath.Join(c.Dir, "outside"))
	cmd := exec.Command("nsenter", append([]string{"--net=" + netdev.NetnsPath(o.Netns), "--"}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	pid, err := c.startDaemon(cmd)
	if err != nil {
		return fmt.Errorf("outside server: %w", err)
	}
	o.PID = pid
	if err := c.save(); err != nil {
		return err
	}
	// Ready when it answers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := OutsideProbe(ctx, o.Netns, "tcp", o.AddrPort())
		if err == nil {
			c.logf("outside server: pid %d, log %s", o.PID, o.Log)
			return nil
		}
		if time.Now().After(deadline) || !pidAlive(o.PID) {
			return fmt.Errorf("outside server (pid %d) not answering on %s: %v; see %s:\n%s", o.PID, o.AddrPort(), err, o.Log, tail(o.Log, 5))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// routeOutside gives node n its default route through the outside host.
func (c *Cluster) routeOutside(n *Node) error {
	if c.Outside == nil {
		return nil
	}
	if err := netdev.AddRoute(netdev.NetnsPath(n.Netns), "u0", netip.MustParsePrefix("0.0.0.0/0"), c.Outside.Gateway); err != nil {
		return fmt.Errorf("node %s: default route via the outside host: %w", n.Name, err)
	}
	return nil
}

// downOutside stops the outside server (if it is ours) and removes the
// namespace.
func (c *Cluster) downOutside() error {
	o := c.Outside
	if o == nil {
		return nil
	}
	if o.PID > 0 && c.ownsProc(o.PID) {
		c.logf("outside: stopping server pid %d", o.PID)
		stopPID(o.PID)
	}
	return netdev.DeleteNetns(o.Netns)
}

// outsideServer is the _outside helper: a TCP and a UDP echo server on
// each of the comma-separated addresses that tell each client the address
// they saw it come from ("peer IP:PORT\n" first on TCP, before the echoed
// payload on UDP). It runs until killed or for outsideLife.
func outsideServer(addrs string, stdout io.Writer) error {
	list := strings.Split(addrs, ",")
	errc := make(chan error, len(list))
	for _, addr := range list {
		go func() { errc <- outsideServe(addr, stdout) }()
	}
	// The first to end ends the server: a listener that failed leaves a
	// server that answers on some addresses only, which no check expects.
	return <-errc
}

func outsideServe(addr string, stdout io.Writer) error {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	fmt.Fprintf(stdout, "outside server listening %s tcp+udp\n", addr)
	go func() {
		time.Sleep(outsideLife)
		ln.Close()
		pc.Close()
	}()
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			line := fmt.Sprintf("peer %s\n", from)
			out := append([]byte(line), buf[:min(n, len(buf)-len(line))]...)
			pc.WriteTo(out, from)
		}
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go serveEchoFor(conn, outsideConnLife)
	}
}

// outsideConnLife bounds one connection to the outside server: long
// enough for a stream held across a weftd restart.
const outsideConnLife = 5 * time.Minute

// OutsideProbe asks the outside server at dst, from inside netns, which
// address it sees: over TCP (with a short echo), UDP, or UDP with a
// datagram that leaves in fragments (udp-large).
func OutsideProbe(ctx context.Context, netns, network string, dst netip.AddrPort) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	switch network {
	case "tcp":
		conn, err := DialIn(ctx, netns, "tcp4", dst.String())
		if err != nil {
			return netip.Addr{}, err
		}
		defer conn.Close()
		peer, err := EchoProbe(conn, 1024, deadline)
		return peer.Addr(), err
	case "udp", "udp-large":
		conn, err := DialIn(ctx, netns, "udp4", dst.String())
		if err != nil {
			return netip.Addr{}, err
		}
		defer conn.Close()
		conn.SetDeadline(deadline)
		// UDP may lose the first datagram while a neighbour is resolved:
		// try a few times within the deadline.
		for try := 0; ; try++ {
			payload := "weft-sim-udp-" + strconv.Itoa(try)
			if network == "udp-large" {
				payload += strings.Repeat(".", largeUDPPayload)
			}
			if _, err := conn.Write([]byte(payload)); err != nil {
				return netip.Addr{}, err
			}
			conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			buf := make([]byte, 512+largeUDPPayload)
			n, err := conn.Read(buf)
			if err != nil {
				if time.Now().Add(500*time.Millisecond).Before(deadline) && isTimeout(err) {
					continue
				}
				return netip.Addr{}, fmt.Errorf("udp: no answer from %s: %w", dst, err)
			}
			line, rest, _ := strings.Cut(string(buf[:n]), "\n")
			s, ok := strings.CutPrefix(line, "peer ")
			if !ok || rest != payload {
				return netip.Addr{}, fmt.Errorf("udp: answer %q is not from a weft sim outside server", buf[:n])
			}
			ap, err := netip.ParseAddrPort(s)
			return ap.Addr(), err
		}
	}
	return netip.Addr{}, fmt.Errorf("network %q: want tcp, udp or udp-large", network)
}

// largeUDPPayload makes a udp-large probe's datagram larger than the pod
// MTU (1450), so that the pod's stack sends it, and the server its echo,
// in IP fragments.
const largeUDPPayload = 2000

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
