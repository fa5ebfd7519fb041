package sim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/netdev"
)

// MatrixOptions tune RunMatrix.
type MatrixOptions struct {
	// Helper is the command line that runs HelperMain; the helper's name
	// and flags are appended. Default: this executable followed by "sim"
	// (right for the weft binary; tests pass their own binary).
	Helper []string
	// Workers bounds how many checks run at once (default 8).
	Workers int
	// Port is the TCP port of the peer-report servers (default 7777; the
	// localhost check uses Port+1).
	Port int
	// Progress, if set, is told what is happening.
	Progress func(format string, args ...any)
}

// Endpoint is a row and column of the matrix: a node (its namespace,
// reached at its host address on weft0) or a pod.
type Endpoint struct {
	Name  string     `json:"name"`
	Kind  string     `json:"kind"` // "node" or "pod"
	Node  string     `json:"node"`
	Netns string     `json:"netns"`
	Addr  netip.Addr `json:"addr"`
}

// Cell is the result of one source -> destination pair. Empty error
// strings mean the check passed.
type Cell struct {
	From string `json:"from"`
	To   string `json:"to"`
	ICMP string `json:"icmp_error,omitempty"`
	TCP  string `json:"tcp_error,omitempty"`
	// Peer is the address the destination's server saw the connection
	// come from; NAT is set when it is not the source's own address.
	Peer netip.Addr `json:"peer_seen,omitzero"`
	NAT  string     `json:"nat_error,omitempty"`
}

// OK reports whether every check of the pair passed.
func (c Cell) OK() bool { return c.ICMP == "" && c.TCP == "" && c.NAT == "" }

// String is the cell as the table shows it: "ok" or "FAIL(icmp,tcp)".
func (c Cell) String() string {
	if c.OK() {
		return "ok"
	}
	var what []string
	if c.ICMP != "" {
		what = append(what, "icmp")
	}
	if c.TCP != "" {
		what = append(what, "tcp")
	}
	if c.NAT != "" {
		what = append(what, "nat")
	}
	return "FAIL(" + strings.Join(what, ",") + ")"
}

// Check is one of the checks beyond the matrix.
type Check struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
	Error  string `json:"error,omitempty"`
}

// Report is what RunMatrix found.
type Report struct {
	Endpoints []Endpoint    `json:"endpoints"`
	Cells     []Cell        `json:"cells"` // every ordered pair of distinct endpoints
	Checks    []Check       `json:"checks"`
	Notes     []string      `json:"notes,omitempty"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	// Registry is the sim's registry backend (file, etcd or kube).
	Registry string `json:"registry,omitempty"`
}

// Passed counts the cells and checks that passed.
func (r *Report) Passed() int { return r.total() - r.Failed() }

// Failed counts the cells and checks that failed.
func (r *Report) Failed() int {
	n := 0
	for _, c := range r.Cells {
		if !c.OK() {
			n++
		}
	}
	for _, c := range r.Checks {
		if c.Error != "" {
			n++
		}
	}
	return n
}

func (r *Report) total() int { return len(r.Cells) + len(r.Checks) }

// Summary is the one-line verdict: "sim test: 75 passed, 0 failed".
func (r *Report) Summary() string {
	return fmt.Sprintf("sim test: %d passed, %d failed", r.Passed(), r.Failed())
}

// WriteTo writes the matrix (rows are sources, columns destinations), the
// failures' reasons, the extra checks and the summary line.
func (r *Report) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	cell := make(map[[2]string]Cell, len(r.Cells))
	for _, c := range r.Cells {
		cell[[2]string{c.From, c.To}] = c
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	head := []string{"FROM \\ TO"}
	for _, e := range r.Endpoints {
		head = append(head, e.Name)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, src := range r.Endpoints {
		row := []string{fmt.Sprintf("%s %s", src.Name, addrOrDash(src.Addr))}
		for _, dst := range r.Endpoints {
			if c, ok := cell[[2]string{src.Name, dst.Name}]; ok {
				row = append(row, c.String())
			} else {
				row = append(row, "-")
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	for _, c := range r.Cells {
		if c.OK() {
			continue
		}
		for _, e := range []struct{ what, err string }{{"icmp", c.ICMP}, {"tcp", c.TCP}, {"nat", c.NAT}} {
			if e.err != "" {
				fmt.Fprintf(&b, "  %s -> %s %s: %s\n", c.From, c.To, e.what, e.err)
			}
		}
	}
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, c := range r.Checks {
		status, text := "ok", c.Detail
		if c.Error != "" {
			status, text = "FAIL", c.Detail+": "+c.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", status, c.Name, text)
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	reg := ""
	if r.Registry != "" {
		reg = "registry " + r.Registry + ", "
	}
	fmt.Fprintf(&b, "%s (%s%d endpoints, %d pairs, %d checks, %s)\n",
		r.Summary(), reg, len(r.Endpoints), len(r.Cells), len(r.Checks), r.Elapsed.Round(100*time.Millisecond))
	n, err := w.Write(b.Bytes())
	return int64(n), err
}

func addrOrDash(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

// Endpoints lists the nodes, then the pods, as matrix rows and columns.
func (c *Cluster) Endpoints() []Endpoint {
	var out []Endpoint
	for _, n := range c.Nodes {
		out = append(out, Endpoint{Name: n.Name, Kind: "node", Node: n.Name, Netns: n.Netns, Addr: c.hostAddr(n)})
	}
	for _, p := range c.Pods() {
		out = append(out, Endpoint{Name: p.Name, Kind: "pod", Node: p.Node, Netns: p.Netns, Addr: p.IP()})
	}
	return out
}

// hostAddr is node n's address on weft0, from the record, else from its
// pods' subnet (.2).
func (c *Cluster) hostAddr(n *Node) netip.Addr {
	if n.HostAddr.IsValid() {
		return n.HostAddr
	}
	for _, p := range n.Pods {
		if p.Address.IsValid() {
			return p.Address.Masked().Addr().Next().Next()
		}
	}
	return netip.Addr{}
}

// Timeouts of single checks.
const (
	pingWait    = "1" // ping -W: seconds to wait for each reply
	dialTimeout = 2 * time.Second
	echoTimeout = 5 * time.Second
	echoBytes   = 16 << 10 // more than a segment: TCP segmentation is in play
)

// RunMatrix checks connectivity between every pair of the cluster's
// endpoints (ICMP echo and a TCP echo whose server reports the address it
// saw), then the extra checks: no NAT between pods, two processes of a pod
// meeting on localhost, and the path MTU across nodes. It returns an error
// only when the checks could not run at all; failed checks are in the
// Report.
func RunMatrix(ctx context.Context, c *Cluster, opts MatrixOptions) (*Report, error) {
	start := time.Now()
	if err := CheckTools("nsenter", "ping", "ip"); err != nil {
		return nil, err
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.Port == 0 {
		opts.Port = 7777
	}
	if len(opts.Helper) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("sim test: find own executable for the helper: %w", err)
		}
		opts.Helper = []string{exe, "sim"}
	}
	logf := func(format string, args ...any) {
		if opts.Progress != nil {
			opts.Progress(format, args...)
		}
	}
	r := &Report{Endpoints: c.Endpoints(), Registry: c.Registry}
	if len(r.Endpoints) == 0 {
		return nil, errors.New("sim test: the sim has no nodes")
	}
	if note := c.waitConverged(ctx, 5*time.Second); note != "" {
		r.Notes = append(r.Notes, note)
	}

	// One peer-report server per endpoint, each a process in its namespace.
	logf("starting %d TCP servers (port %d)", len(r.Endpoints), opts.Port)
	servers := make([]*helperProc, len(r.Endpoints))
	serverErr := make([]error, len(r.Endpoints))
	var wg sync.WaitGroup
	for i, e := range r.Endpoints {
		wg.Go(func() {
			servers[i], serverErr[i] = startServer(ctx, opts.Helper, e.Netns, ":"+strconv.Itoa(opts.Port))
		})
	}
	wg.Wait()
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()

	type job struct{ src, dst int }
	var jobs []job
	for i := range r.Endpoints {
		for j := range r.Endpoints {
			if i != j {
				jobs = append(jobs, job{i, j})
			}
		}
	}
	r.Cells = make([]Cell, len(jobs))
	logf("checking %d pairs with %d workers (ICMP echo, TCP echo with peer report)", len(jobs), opts.Workers)
	next := make(chan int)
	for range opts.Workers {
		wg.Go(func() {
			for k := range next {
				src, dst := r.Endpoints[jobs[k].src], r.Endpoints[jobs[k].dst]
				cell := Cell{From: src.Name, To: dst.Name}
				if err := Ping(ctx, src.Netns, dst.Addr); err != nil {
					cell.ICMP = err.Error()
				}
				if err := serverErr[jobs[k].dst]; err != nil {
					cell.TCP = "no server at the destination: " + err.Error()
				} else {
					cell.Peer, cell.TCP = tcpCheck(ctx, src.Netns, netip.AddrPortFrom(dst.Addr, uint16(opts.Port)))
					if cell.TCP == "" && cell.Peer != src.Addr {
						cell.NAT = fmt.Sprintf("server saw %s, want %s", cell.Peer, src.Addr)
					}
				}
				r.Cells[k] = cell
			}
		})
	}
	for k := range jobs {
		select {
		case next <- k:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sim test: %w", err)
	}

	logf("extra checks: no NAT, localhost, MTU")
	r.Checks = append(r.Checks, noNATCheck(ctx, c, opts))
	r.Checks = append(r.Checks, localhostCheck(ctx, c, opts))
	r.Checks = append(r.Checks, mtuCheck(ctx, c))
	r.Checks = append(r.Checks, serviceChecks(ctx, c, r.Endpoints, opts)...)
	r.Checks = append(r.Checks, outsideChecks(ctx, c, opts)...)
	r.Elapsed = time.Since(start)
	return r, nil
}

// waitConverged waits until every live node lists every other live node
// as a peer, and says what it saw if that does not happen in time. Nodes
// whose weftd is not running are named at once, not waited for.
func (c *Cluster) waitConverged(ctx context.Context, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		var dead, missing []string
		var live []*Node
		for _, n := range c.Nodes {
			if pidAlive(n.PID) {
				live = append(live, n)
			} else {
				dead = append(dead, n.Name+" (weftd not running)")
			}
		}
		for _, n := range live {
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			cl := api.NewClient(n.Socket)
			st, err := cl.Status(qctx)
			cl.Close()
			cancel()
			switch {
			case err != nil:
				missing = append(missing, fmt.Sprintf("%s (API: %v)", n.Name, err))
			case st.Peers < len(live)-1:
				missing = append(missing, fmt.Sprintf("%s (%d of %d peers)", n.Name, st.Peers, len(live)-1))
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			if all := append(dead, missing...); len(all) > 0 {
				return "not converged: " + strings.Join(all, ", ")
			}
			return ""
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Ping sends two ICMP echo requests from netns to dst and succeeds if one
// is answered.
func Ping(ctx context.Context, netns string, dst netip.Addr, extra ...string) error {
	if !dst.IsValid() {
		return errors.New("no address")
	}
	out, err := pingOut(ctx, netns, dst, extra...)
	if err != nil {
		return fmt.Errorf("%w: %s", err, lastLines(out, 2))
	}
	return nil
}

func pingOut(ctx context.Context, netns string, dst netip.Addr, extra ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	args := append([]string{"ping", "-n", "-c", "2", "-i", "0.2", "-W", pingWait}, extra...)
	cmd := Command(ctx, netns, append(args, dst.String())...)
	cmd.Env = append(os.Environ(), "LC_ALL=C") // the MTU check reads ping's messages
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lastLines condenses command output to its last n non-empty lines.
func lastLines(s string, n int) string {
	var ls []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " / ")
}

// tcpCheck connects from inside netns to dst, and runs the echo probe.
func tcpCheck(ctx context.Context, netns string, dst netip.AddrPort) (peer netip.Addr, errText string) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := DialIn(dctx, netns, "tcp4", dst.String())
	cancel()
	if err != nil {
		return peer, err.Error()
	}
	defer conn.Close()
	p, err := EchoProbe(conn, echoBytes, time.Now().Add(echoTimeout))
	if err != nil {
		return p.Addr(), err.Error()
	}
	return p.Addr(), ""
}

// helperProc is a helper server running in a namespace.
type helperProc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func (h *helperProc) stop() {
	if h == nil {
		return
	}
	h.cmd.Process.Kill()
	h.cmd.Wait()
}

// startServer starts a _tcpserver helper in netns and waits until it
// listens.
func startServer(ctx context.Context, helper []string, netns, listen string) (*helperProc, error) {
	argv := append(append([]string(nil), helper...), HelperTCPServer, "--listen", listen, "--timeout", "5m")
	cmd := Command(ctx, netns, argv...)
	h := &helperProc{cmd: cmd, stderr: new(bytes.Buffer)}
	cmd.Stderr = h.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start helper: %w", err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
		io.Copy(io.Discard, out)
	}()
	select {
	case s := <-line:
		if strings.HasPrefix(s, "listening ") {
			return h, nil
		}
		h.stop()
		return nil, fmt.Errorf("helper server in %s: %s", netns, strings.TrimSpace(s+" "+h.stderr.String()))
	case <-time.After(5 * time.Second):
		h.stop()
		return nil, fmt.Errorf("helper server in %s did not start within 5s: %s", netns, strings.TrimSpace(h.stderr.String()))
	}
}

// runClient runs a _tcpclient helper in netns.
func runClient(ctx context.Context, helper []string, netns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	argv := append(append(append([]string(nil), helper...), HelperTCPClient), args...)
	out, err := Command(ctx, netns, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// crossPair picks a pod on the first node with pods and a pod on another
// node, or two pods of one node when only one node has pods.
func (c *Cluster) crossPair() (a, b *Pod, cross bool) {
	for _, n := range c.Nodes {
		if len(n.Pods) == 0 {
			continue
		}
		if a == nil {
			a = n.Pods[0]
			continue
		}
		return a, n.Pods[0], true
	}
	for _, n := range c.Nodes {
		if len(n.Pods) >= 2 {
			return n.Pods[0], n.Pods[1], false
		}
	}
	return nil, nil, false
}

// noNATCheck has a client process in one pod connect to the server in a
// pod of another node, which must have seen the client pod's own address.
func noNATCheck(ctx context.Context, c *Cluster, opts MatrixOptions) Check {
	a, b, _ := c.crossPair()
	if a == nil {
		return Check{Name: "no-nat", Detail: "needs two pods", Error: "not enough pods"}
	}
	// The matrix's server in b is still up.
	dst := netip.AddrPortFrom(b.IP(), uint16(opts.Port))
	ch := Check{Name: "no-nat", Detail: fmt.Sprintf("client process in %s (%s) -> %s %s", a.Name, a.IP(), b.Name, dst)}
	out, err := runClient(ctx, opts.Helper, a.Netns, "--connect", dst.String(), "--expect-peer", a.IP().String())
	if err != nil {
		ch.Error = err.Error()
		return ch
	}
	ch.Detail += ": server saw " + strings.TrimPrefix(out, "peer ")
	return ch
}

// localhostCheck has two processes in one pod meet on 127.0.0.1, as two
// containers of a pod do.
func localhostCheck(ctx context.Context, c *Cluster, opts MatrixOptions) Check {
	pods := c.Pods()
	if len(pods) == 0 {
		return Check{Name: "localhost", Detail: "needs a pod", Error: "no pods"}
	}
	p := pods[0]
	addr := "127.0.0.1:" + strconv.Itoa(opts.Port+1)
	ch := Check{Name: "localhost", Detail: fmt.Sprintf("two processes in %s meet on %s", p.Name, addr)}
	srv, err := startServer(ctx, opts.Helper, p.Netns, addr)
	if err != nil {
		ch.Error = err.Error()
		return ch
	}
	defer srv.stop()
	if _, err := runClient(ctx, opts.Helper, p.Netns, "--connect", addr, "--expect-peer", "127.0.0.1"); err != nil {
		ch.Error = err.Error()
	}
	return ch
}

// mtuCheck sends the largest DF ping that fits the pod MTU across nodes,
// then one byte more: the pod refuses it at its own MTU, and with the
// pod's interface MTU lifted for a moment the gateway answers it with
// ICMP fragmentation-needed naming the pod MTU.
func mtuCheck(ctx context.Context, c *Cluster) Check {
	a, b, cross := c.crossPair()
	if a == nil {
		return Check{Name: "mtu", Detail: "needs two pods", Error: "not enough pods"}
	}
	ch := Check{Name: "mtu", Detail: a.Name + " -> " + b.Name}
	if !cross {
		ch.Detail += " (same node: only one node has pods)"
	}
	mtu, err := linkMTU(a.Netns, "eth0")
	if err != nil {
		ch.Error = err.Error()
		return ch
	}
	fit := mtu - 28 // IPv4 20 + ICMP 8
	if err := Ping(ctx, a.Netns, b.IP(), "-M", "do", "-s", strconv.Itoa(fit)); err != nil {
		ch.Error = fmt.Sprintf("DF ping -s %d (IP %d bytes): %v", fit, mtu, err)
		return ch
	}
	ch.Detail += fmt.Sprintf(": DF ping -s %d (IP %d = pod MTU) crosses", fit, mtu)
	out, err := pingOut(ctx, a.Netns, b.IP(), "-M", "do", "-s", strconv.Itoa(fit+1))
	if err == nil {
		ch.Error = fmt.Sprintf("DF ping -s %d got through a %d-byte MTU: %s", fit+1, mtu, lastLines(out, 2))
		return ch
	}
	ch.Detail += fmt.Sprintf("; -s %d refused by the pod (%s)", fit+1, firstMatch(out, "message too long", "Frag needed"))
	// Lift the pod's own MTU so the oversized packet reaches the router.
	if err := setLinkMTU(a.Netns, "eth0", mtu+50); err != nil {
		ch.Error = err.Error()
		return ch
	}
	defer setLinkMTU(a.Netns, "eth0", mtu)
	// A remembered path MTU would make the pod refuse it again.
	Command(ctx, a.Netns, "ip", "route", "flush", "cache").Run()
	out, err = pingOut(ctx, a.Netns, b.IP(), "-M", "do", "-s", strconv.Itoa(fit+1))
	want := fmt.Sprintf("mtu = %d", mtu)
	switch {
	case err == nil:
		ch.Error = fmt.Sprintf("DF ping -s %d with eth0 at %d got through", fit+1, mtu+50)
	case !strings.Contains(out, "Frag needed") || !strings.Contains(out, want):
		ch.Error = fmt.Sprintf("DF ping -s %d with eth0 at %d: want \"Frag needed ... (%s)\" from the gateway, got: %s", fit+1, mtu+50, want, lastLines(out, 3))
	default:
		ch.Detail += fmt.Sprintf("; with eth0 at %d the router answers %q", mtu+50, firstMatch(out, "Frag needed"))
	}
	return ch
}

// firstMatch returns the first line of out containing one of subs.
func firstMatch(out string, subs ...string) string {
	for _, l := range strings.Split(out, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				return strings.TrimSpace(l)
			}
		}
	}
	return lastLines(out, 1)
}

func linkMTU(netns, ifName string) (int, error) {
	h, err := netdev.OpenHandle(netdev.NetnsPath(netns))
	if err != nil {
		return 0, err
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err != nil {
		return 0, fmt.Errorf("%s in %s: %w", ifName, netns, err)
	}
	return l.Attrs().MTU, nil
}

func setLinkMTU(netns, ifName string, mtu int) error {
	h, err := netdev.OpenHandle(netdev.NetnsPath(netns))
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err == nil {
		err = h.LinkSetMTU(l, mtu)
	}
	if err != nil {
		return fmt.Errorf("set mtu %d on %s in %s: %w", mtu, ifName, netns, err)
	}
	return nil
}
