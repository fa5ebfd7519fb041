package sim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// The helper is a tiny TCP server and client that the connectivity checks
// run as processes inside pod and node namespaces (via nsenter), so that a
// check is what a workload in the pod would do, not a trick of the checking
// process. The server tells every client the address it saw the connection
// come from, which is how the no-NAT check sees through the network.
//
// The helper is a subcommand of whatever binary embeds sim: `weft sim
// _tcpserver ...`, or a test binary whose TestMain hands those arguments to
// HelperMain.
const (
	HelperTCPServer = "_tcpserver"
	HelperTCPClient = "_tcpclient"
)

// IsHelper reports whether arg names a helper subcommand.
func IsHelper(arg string) bool {
	return arg == HelperTCPServer || arg == HelperTCPClient || arg == HelperOutside
}

// HelperMain runs a helper subcommand (args[0] is its name) and returns the
// process exit code.
//
//	_tcpserver --listen ADDR [--timeout D]
//	    Prints "listening ADDR" once bound, then for each connection writes
//	    "peer IP:PORT\n" and echoes what it reads. Exits after --timeout, or
//	    when its parent process goes away.
//	_tcpclient --connect ADDR [--expect-peer IP] [--bytes N] [--timeout D]
//	    Connects, reads the peer line, sends N bytes and reads them back.
//	    Prints "peer IP:PORT"; exits 1 if anything fails or the peer address
//	    is not --expect-peer.
func HelperMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || !IsHelper(args[0]) {
		fmt.Fprintf(stderr, "sim helper: want %s or %s\n", HelperTCPServer, HelperTCPClient)
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":7777", "address to listen on")
	connect := fs.String("connect", "", "address to connect to")
	expect := fs.String("expect-peer", "", "IP the server must report")
	n := fs.Int("bytes", 16<<10, "bytes to echo")
	timeout := fs.Duration("timeout", 0, "give up after this long (server default 2m, client 5s)")
	fs.String("sim-dir", "", "the sim this server belongs to (marks the process as the sim's for Down)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if args[0] == HelperOutside {
		if err := outsideServer(*listen, stdout); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", HelperOutside, err)
			return 1
		}
		return 0
	}
	if args[0] == HelperTCPServer {
		if *timeout == 0 {
			*timeout = 2 * time.Minute
		}
		if err := tcpServer(*listen, *timeout, stdout); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", HelperTCPServer, err)
			return 1
		}
		return 0
	}
	if *timeout == 0 {
		*timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", *connect)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", HelperTCPClient, err)
		return 1
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	peer, err := EchoProbe(conn, *n, deadline)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", HelperTCPClient, err)
		return 1
	}
	fmt.Fprintf(stdout, "peer %s\n", peer)
	if *expect != "" && peer.Addr().String() != *expect {
		fmt.Fprintf(stderr, "%s: server saw %s, want %s\n", HelperTCPClient, peer.Addr(), *expect)
		return 1
	}
	return 0
}

// tcpServer is the _tcpserver helper.
func tcpServer(addr string, timeout time.Duration, stdout io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	ppid := os.Getppid()
	go func() {
		// Bounded life: gone with whoever started it, or after timeout.
		end := time.Now().Add(timeout)
		for time.Now().Before(end) && os.Getppid() == ppid {
			time.Sleep(200 * time.Millisecond)
		}
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go serveEcho(conn)
	}
}

// serveEcho reports the peer and echoes until EOF, for at most 30 s.
func serveEcho(conn net.Conn) { serveEchoFor(conn, 30*time.Second) }

func serveEchoFor(conn net.Conn, life time.Duration) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(life))
	if _, err := fmt.Fprintf(conn, "peer %s\n", conn.RemoteAddr()); err != nil {
		return
	}
	io.Copy(conn, conn)
}

// ServeEcho accepts on ln until it is closed and serves each connection
// as the _tcpserver helper does. Tests use it for in-process servers.
func ServeEcho(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go serveEcho(conn)
	}
}

// EchoProbe runs the client side of the helper protocol on conn: it reads
// the address the server saw, sends n bytes, reads them back and checks
// them, all before deadline.
func EchoProbe(conn net.Conn, n int, deadline time.Time) (peer netip.AddrPort, err error) {
	conn.SetDeadline(deadline)
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		return peer, fmt.Errorf("read peer line: %w", err)
	}
	s, ok := strings.CutPrefix(strings.TrimSpace(line), "peer ")
	if !ok {
		return peer, fmt.Errorf("peer line %q: not from a weft sim helper", strings.TrimSpace(line))
	}
	if peer, err = netip.ParseAddrPort(s); err != nil {
		return peer, fmt.Errorf("peer line %q: %w", s, err)
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if n <= 0 {
		return peer, nil
	}
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(i*7 + i>>8)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(out)
		werr <- err
	}()
	in := make([]byte, n)
	if _, err := io.ReadFull(br, in); err != nil {
		return peer, fmt.Errorf("echo: read %d bytes: %w", n, err)
	}
	if err := <-werr; err != nil {
		return peer, fmt.Errorf("echo: write: %w", err)
	}
	if !bytes.Equal(in, out) {
		return peer, errors.New("echo: data came back changed")
	}
	return peer, nil
}
