// Package sim builds a weft cluster out of network namespaces on one
// machine: an underlay bridge in its own namespace, one namespace per node
// running its own weftd process, and pod namespaces attached through each
// node's API. With the etcd registry and no endpoints given, it also runs
// an etcd inside the underlay namespace on the bridge's address (.1).
// Nothing is added to the root namespace; every name carries the cluster's
// prefix, and a record (sim.json) in the state directory (default
// /run/weft-sim/<name>) lets Down remove everything even after the process
// that built it crashed.
//
// RunMatrix checks the cluster: every node and pod to every other (ICMP
// echo and TCP echo through a server that reports the peer address it saw,
// so NAT would show), two processes of one pod on localhost, and the path
// MTU across nodes. `weft sim` (cmd/weft) is the command line over it.
package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/netdev"
)

// Options describe a cluster to build.
type Options struct {
	// Name prefixes every namespace ("weft" -> weft-u, weft-n1, weft-n1-p1).
	// Keep it short: it only names namespaces, never interfaces.
	Name string
	// Dir holds the record, the registry, node state, sockets and logs
	// (default DefaultDir(Name): /run/weft-sim/<name>).
	Dir string
	// Weftd is the path of the weftd binary to run.
	Weftd string
	// Registry is "file" (default; a directory under Dir) or "etcd".
	Registry string
	// EtcdEndpoints are an etcd cluster to use with Registry "etcd". With
	// none, Up runs its own etcd inside the underlay namespace, listening
	// on the underlay bridge's address (.1 of UnderlayNet).
	EtcdEndpoints []string
	// Etcd is the etcd binary for a sim-run etcd (default: etcd on PATH).
	Etcd string
	// UnderlayNet holds the nodes' underlay addresses (default
	// 192.168.100.0/24; node i gets .i+10). They exist only inside the
	// sim's namespaces.
	UnderlayNet netip.Prefix
	// LeaseTTL for the nodes (default 6 s, so a killed node's routes go
	// quickly in tests).
	LeaseTTL time.Duration
	// ExtraArgs are appended to every weftd command line.
	ExtraArgs []string
	// Progress, if set, is told what is happening ("node n1 up").
	Progress func(format string, args ...any)
}

// Cluster is a running (or recorded) simulation.
type Cluster struct {
	Name          string       `json:"name"`
	Dir           string       `json:"dir"`
	Weftd         string       `json:"weftd"`
	Registry      string       `json:"registry"`
	EtcdEndpoints []string     `json:"etcd_endpoints,omitempty"`
	UnderlayNet   netip.Prefix `json:"underlay_net"`
	LeaseTTL      Duration     `json:"lease_ttl"`
	ExtraArgs     []string     `json:"extra_args,omitempty"`
	// Etcd is the etcd process the sim runs itself, if any.
	Etcd  *EtcdProc `json:"etcd,omitempty"`
	Nodes []*Node   `json:"nodes"`

	progress func(format string, args ...any)
}

// Node is one simulated node.
type Node struct {
	Name     string     `json:"name"` // n1, n2, ...
	Netns    string     `json:"netns"`
	Underlay netip.Addr `json:"underlay"`
	Socket   string     `json:"socket"`
	StateDir string     `json:"state_dir"`
	Log      string     `json:"log"`
	PID      int        `json:"pid"`
	// Subnet and HostAddr (.2, on weft0) are learnt from the node's API
	// once its weftd has a lease.
	Subnet   netip.Prefix `json:"subnet,omitzero"`
	HostAddr netip.Addr   `json:"host_addr,omitzero"`
	Pods     []*Pod       `json:"pods"`
}

// Pod is one simulated pod: a namespace with weft's eth0 in it.
type Pod struct {
	Name    string       `json:"name"` // n1-p1
	ID      string       `json:"id"`   // pod ID given to weftd
	Netns   string       `json:"netns"`
	Node    string       `json:"node"`
	Address netip.Prefix `json:"address"`
	MAC     string       `json:"mac"`
	Gateway netip.Addr   `json:"gateway"`
}

// IP is the pod's address.
func (p *Pod) IP() netip.Addr { return p.Address.Addr() }

// Duration is a time.Duration that records as "6s".
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

const recordFile = "sim.json"

// DefaultDir is where a sim named name keeps its state when no directory
// is given: under /run, root's place for runtime state, which a reboot
// clears along with the namespaces it describes.
func DefaultDir(name string) string { return filepath.Join("/run/weft-sim", name) }

// Exists reports whether a sim record is in dir.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, recordFile))
	return err == nil
}

// toolPackages names the Debian package of each external tool the sim runs.
var toolPackages = map[string]string{
	"nsenter": "util-linux", "ip": "iproute2", "ping": "iputils-ping",
	"tcpdump": "tcpdump", "etcd": "etcd-server",
}

// CheckTools returns an error naming the first of tools not on PATH.
func CheckTools(tools ...string) error {
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			pkg := toolPackages[t]
			if pkg == "" {
				pkg = t
			}
			return fmt.Errorf("sim: %s not found on PATH (package %s): run make deps", t, pkg)
		}
	}
	return nil
}

func (c *Cluster) underlayNS() string  { return c.Name + "-u" }
func (c *Cluster) nodeNS(i int) string { return fmt.Sprintf("%s-n%d", c.Name, i) }
func (c *Cluster) logf(format string, args ...any) {
	if c.progress != nil {
		c.progress(format, args...)
	}
}

// New checks opts and returns an empty cluster; Up builds it.
func New(opts Options) (*Cluster, error) {
	if opts.Name == "" {
		opts.Name = "weft"
	}
	if strings.ContainsAny(opts.Name, "/ \t") || len(opts.Name) > 32 {
		return nil, fmt.Errorf("sim name %q: want at most 32 characters, no '/' or spaces", opts.Name)
	}
	if opts.Dir == "" {
		opts.Dir = DefaultDir(opts.Name)
	}
	// weftd gets paths under Dir, and Down recognises its processes by
	// them: they must not depend on the working directory.
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("sim dir %s: %w", opts.Dir, err)
	}
	opts.Dir = dir
	if opts.Registry == "" {
		opts.Registry = "file"
	}
	if opts.Registry != "file" && opts.Registry != "etcd" {
		return nil, fmt.Errorf("sim registry %q: want file or etcd", opts.Registry)
	}
	var etcdBin string
	if opts.Registry == "etcd" && len(opts.EtcdEndpoints) == 0 {
		etcdBin = opts.Etcd
		if etcdBin == "" {
			etcdBin = "etcd"
		}
		p, err := exec.LookPath(etcdBin)
		if err != nil {
			return nil, fmt.Errorf("sim registry etcd: %s not found (package etcd-server): run make deps", etcdBin)
		}
		etcdBin = p
	}
	if !opts.UnderlayNet.IsValid() {
		opts.UnderlayNet = netip.MustParsePrefix("192.168.100.0/24")
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 6 * time.Second
	}
	if opts.Weftd == "" {
		return nil, errors.New("sim: no weftd binary given")
	}
	if _, err := os.Stat(opts.Weftd); err != nil {
		return nil, fmt.Errorf("sim: weftd binary: %w (run make build)", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("sim: must run as root (it creates network namespaces and TAP devices)")
	}
	if err := CheckTools("nsenter", "ip"); err != nil {
		return nil, err
	}
	c := &Cluster{
		Name: opts.Name, Dir: opts.Dir, Weftd: opts.Weftd, Registry: opts.Registry,
		EtcdEndpoints: opts.EtcdEndpoints, UnderlayNet: opts.UnderlayNet.Masked(),
		LeaseTTL: Duration(opts.LeaseTTL), ExtraArgs: opts.ExtraArgs, progress: opts.Progress,
	}
	if etcdBin != "" {
		c.Etcd = &EtcdProc{Bin: etcdBin}
	}
	return c, nil
}

// Load reads the record of a sim brought up earlier (possibly by another
// process) from dir.
func Load(dir string) (*Cluster, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return nil, fmt.Errorf("sim record: %w", err)
	}
	var c Cluster
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("sim record %s: %w", filepath.Join(dir, recordFile), err)
	}
	return &c, nil
}

// SetProgress sets the progress callback of a loaded cluster.
func (c *Cluster) SetProgress(f func(format string, args ...any)) { c.progress = f }

// save writes the record; it is written before each thing is created, so
// Down finds everything even if Up dies half-way.
func (c *Cluster) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.Dir, recordFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("sim record: %w", err)
	}
	return os.Rename(tmp, filepath.Join(c.Dir, recordFile))
}

// Up creates the underlay and n nodes, each with podsPerNode pods.
func (c *Cluster) Up(ctx context.Context, nodes, podsPerNode int) error {
	if nodes < 1 || nodes > 200 {
		return fmt.Errorf("sim: %d nodes: want 1..200", nodes)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, recordFile)); err == nil {
		return fmt.Errorf("sim %q is already up (record in %s): run `weft sim down --name %s` first", c.Name, c.Dir, c.Name)
	}
	if left := c.strayNamespaces(); len(left) > 0 {
		return fmt.Errorf("sim %q: namespaces %s exist but no record of them does (another sim of that name whose directory is gone?); remove them with `ip netns del NAME` or pick another --name",
			c.Name, strings.Join(left, ", "))
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "registry"), 0o700); err != nil {
		return fmt.Errorf("sim dir: %w", err)
	}
	if err := c.save(); err != nil {
		return err
	}
	c.logf("underlay: bridge in namespace %s, %s", c.underlayNS(), c.UnderlayNet)
	if _, err := netdev.NewNetns(c.underlayNS()); err != nil {
		return err
	}
	if err := runIn(c.underlayNS(), "ip", "link", "add", "br0", "type", "bridge"); err != nil {
		return err
	}
	if err := runIn(c.underlayNS(), "ip", "link", "set", "br0", "up"); err != nil {
		return err
	}
	if c.Etcd != nil {
		if err := c.startEtcd(ctx); err != nil {
			return err
		}
	}
	for range nodes {
		if _, err := c.AddNode(ctx); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		for range podsPerNode {
			if _, err := c.AddPod(ctx, n); err != nil {
				return err
			}
		}
	}
	// Nodes started later are seen by the earlier ones one registry watch
	// later; a sim is up when every node has every other as a peer.
	if note := c.waitConverged(ctx, 10*time.Second); note != "" {
		return fmt.Errorf("sim %s: %s", c.Name, note)
	}
	c.logf("sim %s: every node sees its %d peers", c.Name, len(c.Nodes)-1)
	return nil
}

// AddNode creates the next node namespace, wires it to the underlay and
// starts its weftd.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	i := len(c.Nodes) + 1
	under := c.UnderlayNet.Addr().As4()
	under[3] = byte(10 + i)
	n := &Node{
		Name: fmt.Sprintf("n%d", i), Netns: c.nodeNS(i), Underlay: netip.AddrFrom4(under),
		StateDir: filepath.Join(c.Dir, fmt.Sprintf("n%d", i)),
	}
	n.Socket = filepath.Join(n.StateDir, "weftd.sock")
	n.Log = filepath.Join(c.Dir, n.Name+".log")
	c.Nodes = append(c.Nodes, n)
	if err := c.save(); err != nil {
		return nil, err
	}
	c.logf("node %s: namespace %s, underlay %s", n.Name, n.Netns, n.Underlay)
	if _, err := netdev.NewNetns(n.Netns); err != nil {
		return nil, err
	}
	if err := netdev.NewVeth(
		netdev.VethEnd{Name: "u0", NetnsPath: netdev.NetnsPath(n.Netns), Addr: netip.PrefixFrom(n.Underlay, c.UnderlayNet.Bits())},
		netdev.VethEnd{Name: n.Name, NetnsPath: netdev.NetnsPath(c.underlayNS())},
	); err != nil {
		return nil, fmt.Errorf("node %s underlay: %w", n.Name, err)
	}
	if err := runIn(c.underlayNS(), "ip", "link", "set", n.Name, "master", "br0", "up"); err != nil {
		return nil, err
	}
	if err := c.StartNode(ctx, n); err != nil {
		return nil, err
	}
	return n, nil
}

// weftdArgs is the command line of node n's weftd.
func (c *Cluster) weftdArgs(n *Node) []string {
	args := []string{
		"--node-name", c.Name + "-" + n.Name, "--underlay", "u0",
		"--state-dir", n.StateDir, "--socket", n.Socket, "--metrics-addr", "off",
		"--registry", c.Registry, "--registry-ttl", time.Duration(c.LeaseTTL).String(),
	}
	if c.Registry == "file" {
		args = append(args, "--registry-dir", filepath.Join(c.Dir, "registry"))
	} else {
		args = append(args, "--etcd-endpoints", strings.Join(c.EtcdEndpoints, ","))
	}
	return append(args, c.ExtraArgs...)
}

// StartNode starts node n's weftd inside its namespace and waits until its
// API answers with a lease.
func (c *Cluster) StartNode(ctx context.Context, n *Node) error {
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("node %s log: %w", n.Name, err)
	}
	defer logf.Close()
	args := append([]string{"--net=" + netdev.NetnsPath(n.Netns), c.Weftd}, c.weftdArgs(n)...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C on `weft sim up` must not kill the
	// daemons the sim is meant to leave running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node %s: start weftd: %w", n.Name, err)
	}
	n.PID = cmd.Process.Pid
	// nsenter execs weftd in place, so the PID is weftd's. Reap it in the
	// background so a killed weftd does not linger as a zombie.
	go cmd.Wait()
	if err := c.save(); err != nil {
		return err
	}
	c.logf("node %s: weftd pid %d, log %s", n.Name, n.PID, n.Log)
	if err := c.WaitReady(ctx, n, 20*time.Second); err != nil {
		return err
	}
	c.logf("node %s: ready, subnet %s, host address %s", n.Name, n.Subnet, n.HostAddr)
	return c.save()
}

// WaitReady polls node n's API until it reports a registry lease.
func (c *Cluster) WaitReady(ctx context.Context, n *Node, timeout time.Duration) error {
	cl := api.NewClient(n.Socket)
	defer cl.Close()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !pidAlive(n.PID) {
			return fmt.Errorf("node %s: weftd (pid %d) exited; see %s:\n%s", n.Name, n.PID, n.Log, tail(n.Log, 10))
		}
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cl.Status(qctx)
		cancel()
		if err == nil && st.Subnet.IsValid() {
			n.Subnet, n.HostAddr = st.Subnet, st.HostAddr
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("node %s: weftd not ready after %s: %v; see %s", n.Name, timeout, last, n.Log)
}

// AddPod creates a pod namespace on node n and attaches it through n's API.
func (c *Cluster) AddPod(ctx context.Context, n *Node) (*Pod, error) {
	p := &Pod{Name: fmt.Sprintf("%s-p%d", n.Name, len(n.Pods)+1), Node: n.Name}
	p.ID = c.Name + "-" + p.Name
	p.Netns = c.Name + "-" + p.Name
	n.Pods = append(n.Pods, p)
	if err := c.save(); err != nil {
		return nil, err
	}
	if _, err := netdev.NewNetns(p.Netns); err != nil {
		return nil, err
	}
	cl := api.NewClient(n.Socket)
	defer cl.Close()
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := cl.Attach(actx, api.AttachRequest{PodID: p.ID, Netns: netdev.NetnsPath(p.Netns), PodNamespace: "sim", PodName: p.Name})
	if err != nil {
		return nil, fmt.Errorf("pod %s: attach: %w", p.Name, err)
	}
	p.Address, p.MAC, p.Gateway = resp.Address, resp.MAC.String(), resp.Gateway
	if err := c.save(); err != nil {
		return nil, err
	}
	c.logf("pod %s on %s: %s (mac %s)", p.Name, n.Name, p.Address, p.MAC)
	return p, nil
}

// Node finds a node by name ("n1" or "<sim>-n1").
func (c *Cluster) Node(name string) (*Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name || c.Name+"-"+n.Name == name {
			return n, true
		}
	}
	return nil, false
}

// Pod finds a pod by name ("n1-p1"), ID, or address.
func (c *Cluster) Pod(name string) (*Pod, bool) {
	for _, p := range c.Pods() {
		if p.Name == name || p.ID == name || p.IP().String() == name {
			return p, true
		}
	}
	return nil, false
}

// Pods lists every pod, node by node.
func (c *Cluster) Pods() []*Pod {
	var out []*Pod
	for _, n := range c.Nodes {
		out = append(out, n.Pods...)
	}
	return out
}

// Kill kills node n's weftd with SIGKILL, as a crash would.
func (c *Cluster) Kill(n *Node) error {
	if !pidAlive(n.PID) {
		return fmt.Errorf("node %s: weftd (pid %d) is not running", n.Name, n.PID)
	}
	if err := syscall.Kill(n.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("node %s: kill %d: %w", n.Name, n.PID, err)
	}
	waitExit(n.PID, 5*time.Second)
	return nil
}

// Stop stops node n's weftd gracefully (SIGTERM).
func (c *Cluster) Stop(n *Node) error {
	if !pidAlive(n.PID) {
		return nil
	}
	if err := syscall.Kill(n.PID, syscall.SIGTERM); err != nil {
		return fmt.Errorf("node %s: SIGTERM %d: %w", n.Name, n.PID, err)
	}
	if !waitExit(n.PID, 10*time.Second) {
		syscall.Kill(n.PID, syscall.SIGKILL)
		waitExit(n.PID, 5*time.Second)
		return fmt.Errorf("node %s: weftd did not stop within 10s of SIGTERM; killed", n.Name)
	}
	return nil
}

// Restart stops node n's weftd (gracefully) if it runs and starts it again.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	if err := c.Stop(n); err != nil {
		return err
	}
	return c.StartNode(ctx, n)
}

// Down stops every weftd (and the etcd) the record names and deletes every
// namespace of the sim, then the state directory. Running it again, or on
// a sim that crashed half-way up, is fine.
func (c *Cluster) Down() error {
	var errs []error
	for _, n := range c.Nodes {
		if n.PID > 0 && c.ownsProc(n.PID) {
			c.logf("node %s: stopping weftd pid %d", n.Name, n.PID)
			stopPID(n.PID)
		}
	}
	if c.Etcd != nil && c.Etcd.PID > 0 && c.ownsProc(c.Etcd.PID) {
		c.logf("etcd: stopping pid %d", c.Etcd.PID)
		stopPID(c.Etcd.PID)
	}
	// A sim that crashed between starting a daemon and recording its PID
	// leaves one the record does not name; its command line names our
	// state directory.
	for _, pid := range c.unrecordedProcs() {
		c.logf("stopping pid %d (started by this sim, not in its record)", pid)
		stopPID(pid)
	}
	for _, n := range c.Nodes {
		for _, p := range n.Pods {
			if err := netdev.DeleteNetns(p.Netns); err != nil {
				errs = append(errs, err)
			}
		}
		if err := netdev.DeleteNetns(n.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := netdev.DeleteNetns(c.underlayNS()); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	c.logf("sim %s down", c.Name)
	return errors.Join(errs...)
}

// Command returns a command that runs argv inside netns (a pod's or a
// node's namespace name).
func Command(ctx context.Context, netns string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netdev.NetnsPath(netns), "--"}, argv...)...)
}

// runIn runs a short command in a namespace of the sim.
func runIn(netns string, argv ...string) error {
	out, err := Command(context.Background(), netns, argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), netns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	// A zombie still answers kill(0); look at its state too.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// procArgs returns the command line of pid, nil if it is gone.
func procArgs(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// ownsProc checks that pid is a weftd or etcd of this sim before Down
// signals it: a PID from an old record may since belong to another
// process, even to another sim's weftd. Ours name a directory of the
// sim's in their command line.
func (c *Cluster) ownsProc(pid int) bool {
	args := procArgs(pid)
	if len(args) == 0 {
		return false
	}
	bin := filepath.Base(args[0])
	for i := 1; i+1 < len(args); i++ {
		inDir := strings.HasPrefix(args[i+1], c.Dir+string(filepath.Separator))
		switch {
		case args[i] == "--state-dir" && inDir && strings.Contains(bin, "weftd"):
			return true
		case args[i] == "--data-dir" && inDir && strings.Contains(bin, "etcd"):
			return true
		}
	}
	return false
}

// unrecordedProcs lists the live processes this sim owns that its record
// does not name.
func (c *Cluster) unrecordedProcs() []int {
	known := map[int]bool{}
	for _, n := range c.Nodes {
		known[n.PID] = true
	}
	if c.Etcd != nil {
		known[c.Etcd.PID] = true
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || known[pid] || !pidAlive(pid) {
			continue
		}
		if c.ownsProc(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// stopPID asks pid to stop (SIGTERM) and kills it after 5 s.
func stopPID(pid int) {
	syscall.Kill(pid, syscall.SIGTERM)
	if !waitExit(pid, 5*time.Second) {
		syscall.Kill(pid, syscall.SIGKILL)
		waitExit(pid, 5*time.Second)
	}
}

// strayNamespaces lists namespaces named as this sim's would be.
func (c *Cluster) strayNamespaces() []string { return StrayNamespaces(c.Name) }

// StrayNamespaces lists the namespaces named as those of a sim called name
// would be (name-u, name-nI, name-nI-pJ).
func StrayNamespaces(name string) []string {
	ents, err := os.ReadDir(netdev.NetnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if ownNamespace(name, e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// ownNamespace reports whether ns has the form of a namespace of the sim
// called name: name-u, name-nI or name-nI-pJ.
func ownNamespace(name, ns string) bool {
	rest, ok := strings.CutPrefix(ns, name+"-")
	if !ok {
		return false
	}
	if rest == "u" {
		return true
	}
	node, pod, hasPod := strings.Cut(rest, "-")
	num := func(s, p string) bool {
		d, ok := strings.CutPrefix(s, p)
		if !ok || d == "" {
			return false
		}
		_, err := strconv.ParseUint(d, 10, 16)
		return err == nil
	}
	return num(node, "n") && (!hasPod || num(pod, "p"))
}

func waitExit(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !pidAlive(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !pidAlive(pid)
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
