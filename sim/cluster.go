// Package sim builds a weft cluster out of network namespaces on one
// machine: an underlay bridge in its own namespace, one namespace per node
// running its own weftd process, and pod namespaces attached through each
// node's API. With the etcd registry and no endpoints given, it also runs
// an etcd inside the underlay namespace on the bridge's address (.1); with
// the kube registry, a Kubernetes control plane in namespace NAME-k on the
// underlay (kube.go).
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
	"runtime"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/kubecp"
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
	// Registry is "file" (default; a directory under Dir), "etcd", or
	// "kube" (RegistryKube: the sim runs a Kubernetes control plane and
	// every weftd uses it; see kube.go).
	Registry string
	// KubeTools is the directory of the control plane's binaries for
	// Registry "kube" (KubeBinaries; "" = $WEFT_TOOLS or bin/tools).
	KubeTools string
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
	// NodeCPUs is each weftd's GOMAXPROCS: how many CPUs a node's Go
	// runtime runs on at once. 0 (the default) shares the machine's CPUs
	// out among the nodes Up starts, at least one each, as every node of a
	// real cluster has CPUs of its own (and as Go, since 1.25, sizes
	// GOMAXPROCS to a container's CPU limit); -1 leaves Go's default, every
	// CPU for every weftd. A GOMAXPROCS in weftd's environment (a --weftd
	// wrapper's, or the caller's) wins over both.
	NodeCPUs int
	// Progress, if set, is told what is happening ("node n1 up").
	Progress func(format string, args ...any)
	// DieWithCaller ties the weftds and the etcd to the process that
	// starts them (a parent-death signal, internal/childproc): tests set
	// it, so that a test binary that panics or times out leaves no daemon
	// running. `weft sim up` does not: its daemons outlive it by design.
	DieWithCaller bool
	// Outside adds the outside host (outside.go): the nodes' default
	// gateway with an echo server at 203.0.113.10, run by Helper (the
	// command line that runs HelperMain, as MatrixOptions.Helper).
	Outside bool
	Helper  []string
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
	// NodeCPUs is Options.NodeCPUs, resolved by Up (0 only before).
	NodeCPUs int `json:"node_cpus,omitempty"`
	// Services: the example Service is applied; `weft sim test` checks it.
	Services bool `json:"services,omitempty"`
	// Etcd is the etcd process the sim runs itself, if any.
	Etcd *EtcdProc `json:"etcd,omitempty"`
	// Kube is the Kubernetes control plane of a kube sim, and
	// WeftdKubeconfig the weftds' (deploy/'s ServiceAccount).
	Kube            *kubecp.ControlPlane `json:"kube,omitempty"`
	WeftdKubeconfig string               `json:"weftd_kubeconfig,omitempty"`
	Nodes           []*Node              `json:"nodes"`
	// Outside is the outside host, if the sim has one.
	Outside *Outside `json:"outside,omitempty"`

	progress      func(format string, args ...any)
	dieWithCaller bool
	kubeBins      kubecp.Binaries
	kubeCS        kubernetes.Interface
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
	// HostPorts are the pod's hostPort mappings (sims with an outside
	// host give one to the first pod of every node).
	HostPorts []api.PortMapping `json:"host_ports,omitempty"`
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

func (c *Cluster) underlayNS() string { return c.Name + "-u" }

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
	if opts.Registry != "file" && opts.Registry != "etcd" && opts.Registry != RegistryKube {
		return nil, fmt.Errorf("sim registry %q: want file, etcd or kube", opts.Registry)
	}
	var kubeBins kubecp.Binaries
	if opts.Registry == RegistryKube {
		kubeBins = KubeBinaries(opts.KubeTools)
		if err := kubeBins.Check(true); err != nil {
			return nil, fmt.Errorf("sim registry kube: %w", err)
		}
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
	if opts.Outside && len(opts.Helper) == 0 {
		return nil, errors.New("sim: the outside host needs a helper command line")
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
		LeaseTTL: Duration(opts.LeaseTTL), ExtraArgs: opts.ExtraArgs, NodeCPUs: opts.NodeCPUs, progress: opts.Progress,
		dieWithCaller: opts.DieWithCaller, kubeBins: kubeBins,
	}
	if etcdBin != "" {
		c.Etcd = &EtcdProc{Bin: etcdBin}
	}
	if opts.Outside {
		c.Outside = &Outside{Helper: opts.Helper}
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
	if c.NodeCPUs == 0 {
		c.NodeCPUs = max(1, runtime.NumCPU()/nodes)
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
	if c.Registry == RegistryKube {
		if err := c.startKube(ctx); err != nil {
			return err
		}
	}
	if c.Outside != nil {
		if err := c.upOutside(ctx, c.Outside.Helper); err != nil {
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
	if c.Outside != nil {
		if err := c.applyNodePortServices(ctx); err != nil {
			return err
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
	if err := c.routeOutside(n); err != nil {
		return nil, err
	}
	if c.Registry == RegistryKube {
		if err := c.kubeRouteNode(n); err != nil {
			return nil, err
		}
		// Before weftd: the controller manager gives the Node its pod
		// CIDR, which weftd's lease waits for.
		if err := c.createKubeNode(ctx, n); err != nil {
			return nil, err
		}
	}
	if err := c.StartNode(ctx, n); err != nil {
		return nil, err
	}
	return n, nil
}

// AddPod creates a pod namespace on node n and attaches it through n's API.
func (c *Cluster) AddPod(ctx context.Context, n *Node) (*Pod, error) {
	return c.AddPodMeta(ctx, n, "", "", api.PodMeta{})
}

// AddPodMeta is AddPod with the pod's Kubernetes namespace, name and
// metadata ("" and an empty PodMeta: the sim's own, PodNamespace, the sim
// pod's name and podLabels).
func (c *Cluster) AddPodMeta(ctx context.Context, n *Node, namespace, name string, meta api.PodMeta) (*Pod, error) {
	return c.addPod(ctx, n, namespace, name, meta, nil)
}

// addPod is AddPodMeta; beforeAttach, if given, runs once the pod's
// namespace exists and before its port is attached (servers that must be
// listening when the first packet arrives).
func (c *Cluster) addPod(ctx context.Context, n *Node, namespace, name string, meta api.PodMeta, beforeAttach func(*Pod) error) (*Pod, error) {
	p := &Pod{Name: fmt.Sprintf("%s-p%d", n.Name, len(n.Pods)+1), Node: n.Name, HostPorts: c.podPortMappings(len(n.Pods))}
	p.ID = c.Name + "-" + p.Name
	p.Netns = c.Name + "-" + p.Name
	n.Pods = append(n.Pods, p)
	if err := c.save(); err != nil {
		return nil, err
	}
	if _, err := netdev.NewNetns(p.Netns); err != nil {
		return nil, err
	}
	if beforeAttach != nil {
		if err := beforeAttach(p); err != nil {
			return nil, fmt.Errorf("pod %s: %w", p.Name, err)
		}
	}
	cl := api.NewClient(n.Socket)
	defer cl.Close()
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if namespace == "" {
		namespace = PodNamespace
	}
	if name == "" {
		name = p.Name
	}
	if meta.Labels == nil {
		meta.Labels = podLabels(p)
	}
	if c.Registry == RegistryKube {
		if err := c.createKubePod(ctx, n, p, namespace, name, meta); err != nil {
			return nil, err
		}
	}
	resp, err := cl.Attach(actx, api.AttachRequest{PodID: p.ID, Netns: netdev.NetnsPath(p.Netns),
		PodNamespace: namespace, PodName: name, PodMeta: meta, PortMappings: p.HostPorts})
	if err != nil {
		return nil, fmt.Errorf("pod %s: attach: %w", p.Name, err)
	}
	p.Address, p.MAC, p.Gateway = resp.Address, resp.MAC.String(), resp.Gateway
	if err := c.save(); err != nil {
		return nil, err
	}
	if c.Registry == RegistryKube {
		if err := c.kubePodRunning(ctx, n, p, namespace, name); err != nil {
			return nil, err
		}
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
