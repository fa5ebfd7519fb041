package kubecluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/childproc"
	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/netdev"
)

// Options say what cluster to bring up.
type Options struct {
	// Name prefixes every namespace, cgroup root and directory the
	// cluster makes (default "kl"): Name-u (the underlay), Name-n1...
	Name string
	// Dir holds the record, the nodes' files and the logs (default
	// /var/lib/<Name>-kube). A record left there by a crashed run is
	// swept first.
	Dir string
	// Nodes is how many nodes (default 2).
	Nodes int
	// Tools holds etcd, kube-apiserver, kube-controller-manager (make
	// tools), kubelet, kube-scheduler and loopback (make e2e-tools).
	Tools string
	// Weftd and WeftCNI are weft's binaries.
	Weftd, WeftCNI string
	// Images are the OCI archives imported into every node (WriteImages).
	Images []string
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// The cluster's addresses. The underlay is a bridge in Name-u joining the
// nodes (.11, .12, ...) and the control plane (.1, in Name-cp), whose
// kubecp.APIAddr the nodes route there; the pod and Service networks are the controller
// manager's and the API server's defaults.
var (
	UnderlayNet = netip.MustParsePrefix("192.168.60.0/24")
	ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	ServiceCIDR = netip.MustParsePrefix("10.96.0.0/24")
	ClusterDNS  = netip.MustParseAddr("10.96.0.10")
)

// Cluster is a running cluster.
type Cluster struct {
	Name, Dir string
	CP        *kubecp.ControlPlane
	Nodes     []*Node
	// Timings of the bring-up's phases.
	Timings []Timing

	opts  Options
	rec   *record
	procs []*proc // in start order
	mu    sync.Mutex
}

// Timing is how long a phase of the bring-up took.
type Timing struct {
	Phase string
	Took  time.Duration
}

// Node is one node: a namespace with containerd, a kubelet and a weftd.
type Node struct {
	Name    string // the Node object's name: <Name>-n<i>
	Netns   string
	Address netip.Addr // InternalIP, on the underlay
	paths   nodePaths
}

// proc is a daemon of the cluster, logging to Dir/<name>.log.
type proc struct {
	name string
	log  string
	*childproc.Proc
}

func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = "kl"
	}
	if o.Dir == "" {
		o.Dir = "/var/lib/" + o.Name + "-kube"
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 200 {
		return o, fmt.Errorf("nodes %d: want 1..200", o.Nodes)
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	dir, err := filepath.Abs(o.Dir)
	o.Dir = dir
	return o, err
}

// Up brings the cluster up: control plane, underlay, the nodes (in
// parallel) and the scheduler, then waits until every Node is Ready and
// installs CoreDNS. On failure it takes down what it made.
func Up(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts, err = opts.withDefaults(); err != nil {
		return nil, err
	}
	if err := Sweep(opts.Dir); err != nil {
		return nil, fmt.Errorf("sweep a previous run's %s: %w", opts.Dir, err)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	c = &Cluster{Name: opts.Name, Dir: opts.Dir, opts: opts, rec: &record{Name: opts.Name, Dirs: []string{opts.Dir}}}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.LogTails(15))
			if derr := c.Down(); derr != nil {
				err = errors.Join(err, derr)
			}
			c = nil
		}
	}()
	start := time.Now()
	phase := start
	mark := func(name string) {
		now := time.Now()
		c.Timings = append(c.Timings, Timing{name, now.Sub(phase)})
		c.opts.Logf("%s: %s", name, now.Sub(phase).Round(10*time.Millisecond))
		phase = now
	}
	if err := c.underlay(); err != nil {
		return c, err
	}
	// The control plane (internal/kubecp) in Name-cp, its files in
	// Dir/cp: the sweep finds its processes by that path as it finds the
	// nodes'. Every controller runs: the suite's specs use
	// ReplicationControllers, Deployments, garbage collection.
	c.rec.Netns = append(c.rec.Netns, opts.Name+"-cp")
	if err := c.rec.save(c.Dir); err != nil {
		return c, err
	}
	bins := kubecp.Binaries{Etcd: filepath.Join(opts.Tools, "etcd"), APIServer: filepath.Join(opts.Tools, "kube-apiserver"),
		ControllerManager: filepath.Join(opts.Tools, "kube-controller-manager")}
	if c.CP, err = kubecp.Start(kubecp.Options{Netns: opts.Name + "-cp", Dir: filepath.Join(c.Dir, "cp"),
		ControllerManager: true, Controllers: []string{"*"}}, bins); err != nil {
		return c, err
	}
	mark("control plane")
	if err := c.joinControlPlane(); err != nil {
		return c, err
	}
	if err := c.startScheduler(); err != nil {
		return c, err
	}
	for i := 1; i <= opts.Nodes; i++ {
		a := UnderlayNet.Addr().As4()
		a[3] = byte(10 + i)
		n := &Node{Name: fmt.Sprintf("%s-n%d", opts.Name, i), Address: netip.AddrFrom4(a)}
		n.Netns = n.Name
		n.paths = newNodePaths(filepath.Join(c.Dir, n.Name))
		c.Nodes = append(c.Nodes, n)
		c.rec.Netns = append(c.rec.Netns, n.Netns)
		c.rec.Cgroups = append(c.rec.Cgroups, cgroupName(opts.Name, n.Name))
	}
	if err := c.rec.save(c.Dir); err != nil {
		return c, err
	}
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = c.startNode(ctx, n); errs[i] != nil {
				errs[i] = fmt.Errorf("node %s: %w", n.Name, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	mark("nodes started")
	cs, err := kubernetes.NewForConfig(c.CP.Config)
	if err != nil {
		return c, err
	}
	if err := waitNodesReady(ctx, cs, len(c.Nodes), 2*time.Minute); err != nil {
		return c, err
	}
	mark("nodes Ready")
	c.Timings = append(c.Timings, Timing{"two Ready nodes (total)", time.Since(start)})
	if err := installCoreDNS(ctx, cs, c.CP.Kubeconfig, 2*time.Minute); err != nil {
		return c, fmt.Errorf("coredns: %w", err)
	}
	mark("CoreDNS ready")
	c.Timings = append(c.Timings, Timing{"total", time.Since(start)})
	return c, nil
}

// underlay makes the bridge namespace Name-u.
func (c *Cluster) underlay() error {
	ns := c.Name + "-u"
	c.rec.Netns = append(c.rec.Netns, ns)
	if err := c.rec.save(c.Dir); err != nil {
		return err
	}
	if _, err := netdev.NewNetns(ns); err != nil {
		return err
	}
	if err := nsRun(ns, "ip", "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	return nsRun(ns, "ip", "link", "set", "br0", "up")
}

// joinControlPlane puts the control plane on the underlay at .1, so the
// nodes reach its APIAddr through it and the API server reaches the
// kubelets at their InternalIPs (exec, logs).
func (c *Cluster) joinControlPlane() error {
	a := UnderlayNet.Addr().As4()
	a[3] = 1
	if err := netdev.NewVeth(
		netdev.VethEnd{Name: "u0", NetnsPath: netdev.NetnsPath(c.CP.Netns), Addr: netip.PrefixFrom(netip.AddrFrom4(a), UnderlayNet.Bits())},
		netdev.VethEnd{Name: "cp", NetnsPath: netdev.NetnsPath(c.Name + "-u")},
	); err != nil {
		return fmt.Errorf("control plane on the underlay: %w", err)
	}
	return nsRun(c.Name+"-u", "ip", "link", "set", "cp", "master", "br0", "up")
}

func (c *Cluster) cpUnderlayAddr() netip.Addr {
	a := UnderlayNet.Addr().As4()
	a[3] = 1
	return netip.AddrFrom4(a)
}

func (c *Cluster) startScheduler() error {
	_, err := c.start("kube-scheduler", c.CP.Netns, filepath.Join(c.opts.Tools, "kube-scheduler"),
		"--kubeconfig="+c.CP.Kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false")
	return err
}

// start runs bin with args in namespace ns, logging to Dir/name.log, in a
// process group of its own and tied to this process (childproc).
func (c *Cluster) start(name, ns, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(c.Dir, name+".log")}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + netdev.NetnsPath(ns), "--", bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.Proc, err = childproc.Start(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// Down stops the daemons (newest first), the control plane, and sweeps
// what is left (Sweep).
func (c *Cluster) Down() error {
	var errs []error
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		syscall.Kill(p.Pid(), syscall.SIGKILL)
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("%s (pid %d) not reaped 10 s after SIGKILL", p.name, p.Pid()))
		}
	}
	if c.CP != nil {
		if err := c.CP.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := Sweep(c.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// LogTails is the last n lines of each daemon's log.
func (c *Cluster) LogTails(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out string
	for _, p := range c.procs {
		out += fmt.Sprintf("--- %s (%s), last %d lines:\n%s\n", p.name, p.log, n, kubecp.LogTail(p.log, n))
	}
	return out
}

// nsRun runs a command inside the named namespace.
func nsRun(ns string, args ...string) error {
	out, err := exec.Command("nsenter", append([]string{"--net=" + netdev.NetnsPath(ns), "--"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v in %s: %w: %s", args, ns, err, out)
	}
	return nil
}
