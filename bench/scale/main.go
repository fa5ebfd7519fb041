// Command scale is weft's control-plane scale benchmark (`make
// bench-scale`, issue 16): for each N it runs one real weftd (a one-node
// `weft sim`, in its own namespaces) against a file registry that holds N
// other nodes' leases, and measures
//
//   - converge: from the weftd process's start until its API reports N
//     peers (the lease watch's first snapshot: N leases appearing at once),
//     with the weftd's CPU time and RSS at that moment;
//   - change: one lease moves to another underlay address (Acquire through
//     the registry API), until weftd's route for that subnet encapsulates
//     to the new address (weft trace from the host port);
//   - vanish: that lease is released, until the route is gone;
//   - idle: the weftd's CPU over SCALE_IDLE with nothing changing, as a
//     share of one core, and its RSS (VmRSS) and peak (VmHWM) after.
//
// The leases are written through registry/file's own Acquire, each into a
// staging registry of its own (Acquire reads every lease of its directory,
// so N Acquires into one directory cost O(N^2): 7.6 minutes for 2,000 on
// the loaded build machine), and the staged files are then moved into the
// benchmark's registry before weftd starts. Everything lives under
// /dev/shm, so no figure waits for a disk.
//
// It prints a table and writes it into docs/BENCHMARKS.md between
// <!-- scale:begin --> and <!-- scale:end --> (SCALE_DOCS=0: not).
//
// Run from the repository root, as root: go run ./bench/scale
//
// Environment:
//
//	SCALE_N=100,1000,5000,20000   the lease counts
//	SCALE_IDLE=10s                the idle window
//	SCALE_DOCS=1                  0 leaves docs/ alone
//	SCALE_OUT=bench/out/scale     where the weftd binary and logs go
package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/file"
	"github.com/weftnet/weft/sim"
)

// The benchmark cluster: node /24s out of 10.0.0.0/8 (65,536 of them),
// services elsewhere; the fake nodes' underlay addresses from 172.16.0.0/12.
var (
	clusterCIDR = netip.MustParsePrefix("10.0.0.0/8")
	serviceCIDR = "172.30.0.0/16"
	nodeMask    = 24
	movedTo     = netip.MustParseAddr("172.31.255.254") // the changed lease's new underlay
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		os.Exit(1)
	}
}

// result is one row of the table.
type result struct {
	N                          int
	Prefill                    time.Duration
	Converge                   time.Duration
	ConvergeCPU                time.Duration
	Change, Vanish             time.Duration
	ChangeCPU                  time.Duration // both steps
	IdleCPU                    float64       // share of one core
	RSSConverged, RSS, PeakRSS int64         // KiB
	Note                       string
}

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (namespaces): run as root from the repository root")
	}
	sizes, err := parseSizes(envOr("SCALE_N", "100,1000,5000,20000"))
	if err != nil {
		return err
	}
	idle, err := time.ParseDuration(envOr("SCALE_IDLE", "10s"))
	if err != nil {
		return fmt.Errorf("SCALE_IDLE: %w", err)
	}
	out, err := filepath.Abs(envOr("SCALE_OUT", "bench/out/scale"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	weftd := filepath.Join(out, "weftd")
	if b, err := exec.Command("go", "build", "-o", weftd, "./cmd/weftd").CombinedOutput(); err != nil {
		return fmt.Errorf("build weftd: %w\n%s", err, b)
	}
	loadBefore := loadavg()
	started := time.Now().UTC()
	var rows []result
	for _, n := range sizes {
		fmt.Fprintf(os.Stderr, "bench-scale: %d leases ...\n", n)
		r, err := runOne(n, weftd, out, idle)
		if err != nil {
			return fmt.Errorf("%d leases: %w", n, err)
		}
		rows = append(rows, r)
		fmt.Fprintln(os.Stderr, formatRow(r))
	}
	table := report(rows, idle, started, loadBefore, loadavg())
	fmt.Print(table)
	if envOr("SCALE_DOCS", "1") != "0" {
		if err := writeDocs("docs/BENCHMARKS.md", table); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "bench-scale: table written into docs/BENCHMARKS.md")
	}
	return nil
}

func runOne(n int, weftd, out string, idle time.Duration) (result, error) {
	r := result{N: n}
	base := "/dev/shm"
	if _, err := os.Stat(base); err != nil {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "weft-scale-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	pool, err := ipam.NewSubnetPool(clusterCIDR, nodeMask)
	if err != nil {
		return r, err
	}
	regDir := filepath.Join(dir, "registry")
	t := time.Now()
	if err := prefill(regDir, filepath.Join(dir, "stage"), pool, n); err != nil {
		return r, fmt.Errorf("prefill: %w", err)
	}
	r.Prefill = time.Since(t)

	c, err := sim.New(sim.Options{
		Name: testenv.UniqueName("wss"), Dir: dir, Weftd: weftd, DieWithCaller: true,
		ExtraArgs: []string{"--cluster-cidr", clusterCIDR.String(), "--service-cidr", serviceCIDR, "--node-mask", strconv.Itoa(nodeMask)},
	})
	if err != nil {
		return r, err
	}
	defer func() {
		if len(c.Nodes) > 0 {
			copyFile(c.Nodes[0].Log, filepath.Join(out, fmt.Sprintf("weftd-%d.log", n)))
		}
		c.Down()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// The node's socket is known before it starts: poll it from the
	// start, so the moment it reports N peers is seen within 10 ms.
	socket := filepath.Join(dir, "n1", "weftd.sock")
	type seen struct {
		at  time.Time
		pid int
		cpu time.Duration
		rss int64
	}
	conv := make(chan seen, 1)
	go func() {
		cl := api.NewClient(socket)
		defer cl.Close()
		for ctx.Err() == nil {
			qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := cl.Status(qctx)
			qcancel()
			if err == nil && st.Peers >= n {
				// The sim records weftd's PID before it waits for its API.
				s := seen{at: time.Now()}
				if rec, err := sim.Load(dir); err == nil && len(rec.Nodes) > 0 {
					s.pid = rec.Nodes[0].PID
					s.cpu, _ = cpuTime(s.pid)
					s.rss, _, _ = rss(s.pid)
				}
				conv <- s
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if err := c.Up(ctx, 1, 0); err != nil {
		return r, err
	}
	node := c.Nodes[0]
	start, err := procStart(node.PID)
	if err != nil {
		return r, err
	}
	var s seen
	select {
	case s = <-conv:
	case <-time.After(5 * time.Minute):
		return r, fmt.Errorf("weftd did not report %d peers within 5 minutes (log %s)", n, node.Log)
	}
	r.Converge = s.at.Sub(start)
	if s.pid != node.PID { // no record yet: take the figures now
		r.Note = "CPU/RSS at converge read after sim up returned"
		s.cpu, _ = cpuTime(node.PID)
		s.rss, _, _ = rss(node.PID)
	}
	r.ConvergeCPU, r.RSSConverged = s.cpu, s.rss

	cl := api.NewClient(node.Socket)
	defer cl.Close()
	reg, err := file.Open(file.Config{Dir: regDir, Options: registry.Options{Subnets: pool}})
	if err != nil {
		return r, err
	}
	defer reg.Close()
	target := fakeLease(n / 2)
	probe := target.Subnet.Addr().Next().Next().Next().Next().Next()
	if v, err := traceVerdict(ctx, cl, probe); err != nil || !strings.Contains(v, target.Underlay.String()) {
		return r, fmt.Errorf("before the change, a trace to %s gives %q (%v), want encap to %s", probe, v, err, target.Underlay)
	}

	cpu0, _ := cpuTime(node.PID)
	moved := request(n / 2)
	moved.Underlay = movedTo
	if _, err := reg.Acquire(ctx, moved); err != nil {
		return r, fmt.Errorf("change: %w", err)
	}
	if r.Change, err = waitVerdict(ctx, cl, probe, func(v string) bool { return strings.Contains(v, movedTo.String()) }); err != nil {
		return r, fmt.Errorf("change: %w", err)
	}
	if err := reg.Release(ctx, target.Node); err != nil {
		return r, fmt.Errorf("vanish: %w", err)
	}
	if r.Vanish, err = waitVerdict(ctx, cl, probe, func(v string) bool { return strings.HasPrefix(v, "drop") }); err != nil {
		return r, fmt.Errorf("vanish: %w", err)
	}
	cpu1, _ := cpuTime(node.PID)
	r.ChangeCPU = cpu1 - cpu0

	// Idle: let the keeper's renewals and the vanish's confirmation pass,
	// then nothing changes.
	time.Sleep(2 * time.Second)
	c0, _ := cpuTime(node.PID)
	w0 := time.Now()
	time.Sleep(idle)
	c1, _ := cpuTime(node.PID)
	r.IdleCPU = float64(c1-c0) / float64(time.Since(w0))
	r.RSS, r.PeakRSS, _ = rss(node.PID)
	return r, nil
}

// fakeLease is fake node i: subnet 10.x.y.0/24 from 10.0.1.0/24 on
// (10.0.0.0/24 stays free for the weftd under test), underlay in
// 172.16.0.0/12.
func fakeLease(i int) registry.Lease {
	j := i + 1
	return registry.Lease{
		Node:     fmt.Sprintf("fake-%05d", i),
		Underlay: netip.AddrFrom4([4]byte{172, 16 + byte(j>>16), byte(j >> 8), byte(j)}),
		Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j >> 8), byte(j), 0}), nodeMask),
	}
}

func request(i int) registry.AcquireRequest {
	l := fakeLease(i)
	return registry.AcquireRequest{Node: l.Node, Underlay: l.Underlay, Subnet: l.Subnet,
		RouterMAC: packet.MAC{0x02, 0x5c, 0, byte(i >> 16), byte(i >> 8), byte(i)}, TTL: 2 * time.Hour}
}

// prefill writes n fake leases into the registry regDir: each through
// registry/file's Acquire into a staging registry of its own (see the
// package comment), then the staged node file and claim index entry are
// moved into regDir.
func prefill(regDir, stage string, pool registry.SubnetSource, n int) error {
	reg, err := file.Open(file.Config{Dir: regDir, Options: registry.Options{Subnets: pool}})
	if err != nil {
		return err
	}
	reg.Close()
	workers := max(2, runtime.NumCPU())
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := stageOne(regDir, filepath.Join(stage, strconv.Itoa(i)), pool, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return os.RemoveAll(stage)
}

func stageOne(regDir, dir string, pool registry.SubnetSource, i int) error {
	reg, err := file.Open(file.Config{Dir: dir, Options: registry.Options{Subnets: pool}})
	if err != nil {
		return err
	}
	_, err = reg.Acquire(context.Background(), request(i))
	reg.Close()
	if err != nil {
		return fmt.Errorf("lease %d: %w", i, err)
	}
	for _, sub := range []string{"nodes", "subnets"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(regDir, sub), 0o755); err != nil {
			return err
		}
		for _, e := range entries {
			if err := os.Rename(filepath.Join(dir, sub, e.Name()), filepath.Join(regDir, sub, e.Name())); err != nil {
				return err
			}
		}
	}
	return os.RemoveAll(dir)
}

// traceVerdict traces an ICMP echo from the host port to dst.
func traceVerdict(ctx context.Context, cl *api.Client, dst netip.Addr) (string, error) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tr, err := cl.Trace(qctx, api.TraceRequest{In: "weft0", Dst: dst})
	return tr.Verdict, err
}

// waitVerdict traces every 10 ms until ok accepts the verdict, and returns
// how long that took.
func waitVerdict(ctx context.Context, cl *api.Client, dst netip.Addr, ok func(string) bool) (time.Duration, error) {
	start := time.Now()
	last := ""
	for time.Since(start) < 2*time.Minute {
		v, err := traceVerdict(ctx, cl, dst)
		if err == nil && ok(v) {
			return time.Since(start), nil
		}
		last = v
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("trace to %s still says %q after 2 minutes", dst, last)
}
