package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/node"
)

// Config is weftd's configuration: defaults, then the YAML file given by
// --config, then the flags the user set, in that order of precedence
// (flags win). The YAML keys are the snake_case forms of the flag names;
// see ConfigUsage.
type Config struct {
	// NodeName is this node's name in the cluster registry; it also seeds
	// the router MAC. Default: the host name, lowercased.
	NodeName string `yaml:"node_name"`
	// Underlay is an interface name or an IPv4 address of this node; ""
	// means the interface holding the default route. Resolving it is the
	// node's job.
	Underlay string `yaml:"underlay"`
	// ClusterCIDR is the IPv4 network all pod subnets come from, as
	// written; ClusterPrefix returns it parsed.
	ClusterCIDR string `yaml:"cluster_cidr"`
	// ServiceCIDR holds the Services' cluster IPs; ServicePrefix returns
	// it parsed.
	ServiceCIDR string `yaml:"service_cidr"`
	// NodeMask is the prefix length of each node's pod subnet.
	NodeMask int `yaml:"node_mask"`
	VNI      int `yaml:"vni"`  // VXLAN network identifier, 1..16777215
	Port     int `yaml:"port"` // VXLAN UDP port
	// MTU is the pod MTU; 0 means the underlay's MTU less 50 (VXLAN over
	// IPv4).
	MTU      int            `yaml:"mtu"`
	Registry RegistryConfig `yaml:"registry"`
	StateDir string         `yaml:"state_dir"`
	Socket   string         `yaml:"socket"` // the API socket
	// MetricsAddr is host:port for /metrics; "" disables metrics
	// (LoadConfig turns "off" into "").
	MetricsAddr string `yaml:"metrics_addr"`
	LogLevel    string `yaml:"log_level"`  // debug, info, warn or error
	LogFormat   string `yaml:"log_format"` // text or json
	// Offload allows the kernel offloads (TAP TSO/checksum, UDP GSO/GRO);
	// each is still probed and stepped down if refused.
	Offload bool `yaml:"offload"`
	// TSO, USO and GRO turn single offloads off under Offload: TAP TSO
	// (USO needs it), TAP USO with UDP GSO on the underlay, UDP GRO with
	// coalescing for the TAPs. All on by default.
	TSO bool `yaml:"tso"`
	USO bool `yaml:"uso"`
	GRO bool `yaml:"gro"`
	// PartialCsum: under Offload, leave the TCP/UDP checksums pods leave
	// partial uncomputed towards local pods and towards weft peers that
	// advertise it (and advertise it ourselves). On by default.
	PartialCsum bool `yaml:"partial_csum"`
	// ZeroCopy: under Offload, MSG_ZEROCOPY on the transmitters' UDP GSO
	// sends of 10 KB and more. Off by default.
	ZeroCopy bool `yaml:"zerocopy"`
	// RxSpin: under Offload with UDP GRO, how long after a pod's traffic
	// left for a peer the underlay readers spin instead of parking
	// (0..maxRxSpin; 0, the default, never spins).
	RxSpin time.Duration `yaml:"rx_spin"`
	// Workers is the number of underlay receive workers: UDP sockets on
	// the VXLAN port in one SO_REUSEPORT group, spread by inner flow, one
	// reader each; 0 picks one per CPU.
	Workers int `yaml:"workers"`
	// TapQueues is how many queues each pod TAP gets (IFF_MULTI_QUEUE),
	// each with its own worker; needs Offload.
	TapQueues int `yaml:"tap_queues"`
	// NetnsRoots are directories whose entries weftd accepts as pod
	// namespace paths besides /run/netns, /var/run/netns and
	// /proc/PID/ns/net (e.g. containerd's netns_mounts_under_state_dir).
	NetnsRoots []string `yaml:"netns_roots"`
	// FloodRate (frames per second) and FloodBurst bound the broadcast,
	// multicast and unknown-unicast frames each pod (and the host port)
	// may have flooded to the others: a token bucket per port.
	FloodRate  int `yaml:"flood_rate"`
	FloodBurst int `yaml:"flood_burst"`
	// ConntrackSize bounds the connection tracking table (flows; 96 bytes
	// each, allocated at start); MaglevSize is the Maglev lookup table
	// per service frontend (a prime; 2 bytes a slot).
	ConntrackSize int `yaml:"conntrack_size"`
	MaglevSize    int `yaml:"maglev_size"`
	// FDBSize bounds the MACs the switch learns (24-96 bytes each,
	// allocated at start); a new MAC beyond it evicts the least recently
	// seen one (counted as fdb.evicted).
	FDBSize int `yaml:"fdb_size"`
	// Egress is the way out of the cluster (and hostPorts in) through the
	// node's own stack.
	Egress EgressConfig `yaml:"egress"`

	// File is the --config file that was read, "" if none.
	File string `yaml:"-"`
	// ShowVersion is --version: print the version and exit.
	ShowVersion bool `yaml:"-"`
}

// RegistryConfig says where the cluster's node leases live.
type RegistryConfig struct {
	Backend string `yaml:"backend"` // "file", "etcd" or "kube"
	// Dir is the file backend's directory, shared by every node that uses
	// it (all nodes of one machine, as in the simulation). Default
	// <state_dir>/registry.
	Dir       string   `yaml:"dir"`
	Endpoints []string `yaml:"endpoints"` // etcd client URLs
	Prefix    string   `yaml:"prefix"`    // etcd key prefix
	// Kubeconfig is the kube backend's kubeconfig file; "" = the
	// in-cluster configuration (weftd in a DaemonSet pod).
	Kubeconfig string `yaml:"kubeconfig"`
	// TTL is the lease time: a node silent for this long is dropped from
	// every peer table. Leases are renewed well before.
	TTL time.Duration `yaml:"ttl"`
	// ReleaseOnShutdown gives the node's subnet back on a clean stop;
	// off by default so that a restarted node keeps its subnet and pods.
	ReleaseOnShutdown bool `yaml:"release_on_shutdown"`
}

// EgressConfig says how pods reach addresses outside the cluster.
type EgressConfig struct {
	// Enabled routes pod traffic for addresses outside the cluster to the
	// node's stack and keeps weftd's nftables table (ip weft).
	Enabled bool `yaml:"enabled"`
	// Masquerade gives that traffic the node's address.
	Masquerade bool `yaml:"masquerade"`
	// NonMasqueradeCIDRs are destinations pods reach with their own
	// address; empty means the cluster CIDR (ip-masq-agent's default).
	NonMasqueradeCIDRs []string `yaml:"non_masquerade_cidrs"`
	// MasqueradeLinkLocal masquerades 169.254.0.0/16 too.
	MasqueradeLinkLocal bool `yaml:"masquerade_link_local"`
	// KeepIPForward: never turn net.ipv4.ip_forward on; fail if it is off.
	KeepIPForward bool `yaml:"keep_ip_forward"`
}

// NonMasqueradePrefixes returns NonMasqueradeCIDRs parsed (nil for
// none); valid after Validate.
func (e EgressConfig) NonMasqueradePrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range e.NonMasqueradeCIDRs {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// Registry backends.
const (
	BackendFile = "file"
	BackendEtcd = "etcd"
	BackendKube = "kube"
)

// Defaults that are not "" or 0.
const (
	defaultClusterCIDR = "10.244.0.0/16"
	defaultServiceCIDR = "10.96.0.0/12" // kube-apiserver's --service-cluster-ip-range default
	defaultNodeMask    = 24
	defaultVNI         = 1
	defaultPort        = 4789
	defaultStateDir    = "/var/lib/weft"
	defaultSocket      = "/run/weft/weftd.sock"
	defaultMetricsAddr = "127.0.0.1:9470"
	defaultPrefix      = "/weft"
	defaultTTL         = 30 * time.Second
)

// Limits of the checked fields.
const (
	maxVNI       = 1<<24 - 1
	minMTU       = 576  // the least every IPv4 host must accept (RFC 791)
	maxMTU       = 9000 // jumbo frames; weftd's frame buffers are sized for it
	maxNodeMask  = 29   // .0 network, .1 gateway, .2 host, last broadcast: a /29 leaves 4 pods
	minTTL       = 2 * time.Second
	maxTTL       = 24 * time.Hour
	maxWorkers   = 256
	maxRxSpin    = 2 * time.Millisecond
	maxSocketLen = 107 // sockaddr_un.sun_path less the NUL
	maxFlood     = 10_000_000
)

// DefaultConfig returns the built-in defaults. NodeName and Registry.Dir
// are left empty: LoadConfig derives them from the host name and the final
// state directory.
func DefaultConfig() Config {
	return Config{
		ClusterCIDR: defaultClusterCIDR,
		ServiceCIDR: defaultServiceCIDR,
		NodeMask:    defaultNodeMask,
		VNI:         defaultVNI,
		Port:        defaultPort,
		Registry: RegistryConfig{
			Backend: BackendFile,
			Prefix:  defaultPrefix,
			TTL:     defaultTTL,
		},
		StateDir:    defaultStateDir,
		Socket:      defaultSocket,
		MetricsAddr: defaultMetricsAddr,
		LogLevel:    "info",
		LogFormat:   "text",
		Offload:     true,
		TSO:         true,
		USO:         true,
		GRO:         true,
		PartialCsum: true,
		Workers:     1,
		TapQueues:   1,
		FloodRate:   node.DefaultFloodRate,
		FloodBurst:  node.DefaultFloodBurst,

		ConntrackSize: node.DefaultConntrackSize,
		MaglevSize:    node.DefaultMaglevSize,
		FDBSize:       node.DefaultFDBSize,
		Egress:        EgressConfig{Enabled: true, Masquerade: true},
	}
}

// LoadConfig builds the configuration from weftd's command-line arguments
// (without the program name): defaults, then the --config file, then the
// flags that were given. It returns a validated Config, or one error line
// starting "config: " for main to print before exiting with status 2. For
// -h/--help it returns flag.ErrHelp and main prints ConfigUsage; with
// --version it returns a Config with only ShowVersion set.
func LoadConfig(args []string) (Config, error) {
	// Pass 1 finds --config and which flags were set; pass 2 applies those
	// flags over defaults+file, so that flags win wherever they appear.
	scratch := DefaultConfig()
	var file string
	fs1 := newFlagSet(&scratch, &file)
	if err := fs1.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, flag.ErrHelp
		}
		return Config{}, flagError(err)
	}
	if fs1.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q (weftd takes only flags; see weftd --help)", fs1.Arg(0))
	}
	if scratch.ShowVersion {
		// --version must work whatever else is wrong with the command line.
		return Config{ShowVersion: true}, nil
	}

	cfg := DefaultConfig()
	if file != "" {
		if err := loadFile(file, &cfg); err != nil {
			return Config{}, err
		}
		cfg.File = file
	}
	fs2 := newFlagSet(&cfg, &file)
	var setErr error
	fs1.Visit(func(f *flag.Flag) {
		if err := fs2.Set(f.Name, f.Value.String()); err != nil && setErr == nil {
			setErr = fmt.Errorf("config: --%s: %w", f.Name, err)
		}
	})
	if setErr != nil {
		return Config{}, setErr
	}
	if err := cfg.complete(); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// complete fills the defaults that depend on other fields or on the host,
// and normalizes spellings.
func (c *Config) complete() error {
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return fmt.Errorf("config: node-name: not set, and the host name is unknown (%v); give --node-name", err)
		}
		// Kubernetes lowercases host names into node names too.
		c.NodeName = strings.ToLower(h)
	}
	if c.Registry.Backend == BackendFile && c.Registry.Dir == "" && c.StateDir != "" {
		c.Registry.Dir = filepath.Join(c.StateDir, "registry")
	}
	if c.MetricsAddr == "off" {
		c.MetricsAddr = ""
	}
	c.LogLevel = strings.ToLower(c.LogLevel)
	c.LogFormat = strings.ToLower(c.LogFormat)
	return nil
}

// loadFile decodes the YAML file at path over cfg. Keys it does not know
// are errors, so that a misspelt key is not silently ignored.
func loadFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: --config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %s", path, yamlErrorLine(err))
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: more than one YAML document; weftd reads one", path)
	}
	return nil
}

var unknownKeyRE = regexp.MustCompile(`^(line \d+): field (\S+) not found in type main\.(\w+)$`)

// yamlErrorLine makes one line of a yaml.v3 error, which may list several
// problems on separate lines.
func yamlErrorLine(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return oneLine(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	msg := oneLine(te.Errors[0])
	if m := unknownKeyRE.FindStringSubmatch(msg); m != nil {
		where := ""
		switch m[3] {
		case "RegistryConfig":
			where = " under registry"
		case "EgressConfig":
			where = " under egress"
		}
		msg = fmt.Sprintf("%s: unknown key %q%s", m[1], m[2], where)
	}
	if n := len(te.Errors) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more)", n)
	}
	return msg
}

// oneLine blanks control characters (yaml.v3 quotes offending values
// raw, newlines included) so that an error stays on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

var flagValueRE = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-([\w-]+): (.*)$`)

// flagError rewrites the flag package's parse errors into one
// "config: --name: ..." line.
func flagError(err error) error {
	msg := err.Error()
	if m := flagValueRE.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("config: --%s: %s", m[2], m[3])
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("config: unknown flag --%s (see weftd --help)", strings.TrimPrefix(name, "-"))
	}
	return fmt.Errorf("config: %s", msg)
}

// Validate checks every field and returns the first problem as one line
// naming the field (by its flag name) and what is wrong.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	if err := checkNodeName(c.NodeName); err != nil {
		return bad("node-name", "%v", err)
	}
	if err := checkUnderlay(c.Underlay); err != nil {
		return bad("underlay", "%v", err)
	}
	cluster, err := parseCluster(c.ClusterCIDR)
	if err != nil {
		return bad("cluster-cidr", "%v", err)
	}
	svc, err := parseCluster(c.ServiceCIDR)
	switch {
	case err != nil:
		return bad("service-cidr", "%v", err)
	case svc.Overlaps(cluster):
		return bad("service-cidr", "%s overlaps the cluster-cidr %s", svc, cluster)
	case svc.Bits() > 30:
		return bad("service-cidr", "%s is too small: want at least a /30", svc)
	}
	switch {
	case c.NodeMask <= cluster.Bits():
		return bad("node-mask", "/%d must be longer than the cluster-cidr's /%d", c.NodeMask, cluster.Bits())
	case c.NodeMask > maxNodeMask:
		return bad("node-mask", "/%d leaves no room for pods (at most /%d: network, gateway, host and broadcast take 4 addresses)", c.NodeMask, maxNodeMask)
	}
	if c.VNI < 1 || c.VNI > maxVNI {
		return bad("vni", "%d is out of range 1..%d", c.VNI, maxVNI)
	}
	if c.Port < 1 || c.Port > 65535 {
		return bad("port", "%d is out of range 1..65535", c.Port)
	}
	if c.MTU != 0 && (c.MTU < minMTU || c.MTU > maxMTU) {
		return bad("mtu", "%d is out of range %d..%d (or 0 for the underlay MTU less 50)", c.MTU, minMTU, maxMTU)
	}
	if err := checkAbsDir(c.StateDir); err != nil {
		return bad("state-dir", "%v", err)
	}
	if err := c.Registry.validate(); err != nil {
		return err
	}
	switch {
	case !filepath.IsAbs(c.Socket):
		return bad("socket", "%q is not an absolute path", c.Socket)
	case len(c.Socket) > maxSocketLen:
		return bad("socket", "%q is longer than the %d bytes a unix socket path can have", c.Socket, maxSocketLen)
	}
	for _, d := range c.NetnsRoots {
		if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
			return bad("netns-roots", "%q is not a clean absolute directory other than /", d)
		}
	}
	if c.MetricsAddr != "" && c.MetricsAddr != "off" {
		if err := checkHostPort(c.MetricsAddr); err != nil {
			return bad("metrics-addr", "%v (or \"off\")", err)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return bad("log-level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch strings.ToLower(c.LogFormat) {
	case "text", "json":
	default:
		return bad("log-format", "%q is not text or json", c.LogFormat)
	}
	if c.Workers < 0 || c.Workers > maxWorkers {
		return bad("workers", "%d is out of range 0..%d (0 = one per CPU)", c.Workers, maxWorkers)
	}
	if c.RxSpin < 0 || c.RxSpin > maxRxSpin {
		return bad("rx-spin", "%v is out of range 0..%v", c.RxSpin, maxRxSpin)
	}
	if c.TapQueues < 1 || c.TapQueues > netdev.MaxQueues {
		return bad("tap-queues", "%d is out of range 1..%d", c.TapQueues, netdev.MaxQueues)
	}
	if c.TapQueues > 1 && !c.Offload {
		return bad("tap-queues", "%d queues need --offload (multi-queue TAPs carry virtio headers)", c.TapQueues)
	}
	if c.FloodRate < 1 || c.FloodRate > maxFlood {
		return bad("flood-rate", "%d is out of range 1..%d", c.FloodRate, maxFlood)
	}
	if c.FloodBurst < 1 || c.FloodBurst > maxFlood {
		return bad("flood-burst", "%d is out of range 1..%d", c.FloodBurst, maxFlood)
	}
	if c.ConntrackSize < 16 || c.ConntrackSize > 1<<24 {
		return bad("conntrack-size", "%d is out of range 16..%d", c.ConntrackSize, 1<<24)
	}
	if c.FDBSize < 1 || c.FDBSize > node.MaxFDBSize {
		return bad("fdb-size", "%d is out of range 1..%d", c.FDBSize, node.MaxFDBSize)
	}
	if c.MaglevSize < 7 || c.MaglevSize > 131071 || !isPrime(c.MaglevSize) {
		return bad("maglev-size", "%d is not a prime in 7..131071 (e.g. 16381, 65521)", c.MaglevSize)
	}
	for _, s := range c.Egress.NonMasqueradeCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return bad("non-masquerade-cidrs", "%q is not an IPv4 CIDR such as %s", s, defaultClusterCIDR)
		}
	}
	return nil
}

func (r RegistryConfig) validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch r.Backend {
	case BackendFile, BackendKube:
		if r.Backend == BackendKube {
			switch {
			case r.Dir != "":
				return bad("registry-dir", "set, but only the file backend uses it (the registry backend is kube)")
			case len(r.Endpoints) > 0:
				return bad("etcd-endpoints", "set, but the registry backend is kube; drop the endpoints")
			case r.Kubeconfig != "" && !filepath.IsAbs(r.Kubeconfig):
				return bad("kubeconfig", "%q is not an absolute path", r.Kubeconfig)
			}
			break
		}
		if r.Kubeconfig != "" {
			return bad("kubeconfig", "set, but the registry backend is %s; give --registry kube or drop it", r.Backend)
		}
		if len(r.Endpoints) > 0 {
			return bad("etcd-endpoints", "set, but the registry backend is file; give --registry etcd or drop the endpoints")
		}
		if err := checkAbsDir(r.Dir); err != nil {
			return bad("registry-dir", "%v", err)
		}
	case BackendEtcd:
		if r.Kubeconfig != "" {
			return bad("kubeconfig", "set, but the registry backend is %s; give --registry kube or drop it", r.Backend)
		}
		if r.Dir != "" {
			return bad("registry-dir", "set, but only the file backend uses it (the registry backend is etcd)")
		}
		if len(r.Endpoints) == 0 {
			return bad("etcd-endpoints", "required with the etcd registry backend, e.g. http://10.0.0.1:2379")
		}
		for _, ep := range r.Endpoints {
			if err := checkEndpoint(ep); err != nil {
				return bad("etcd-endpoints", "%v", err)
			}
		}
		if !strings.HasPrefix(r.Prefix, "/") || strings.ContainsAny(r.Prefix, " \t\n") {
			return bad("registry-prefix", "%q must start with / and have no spaces", r.Prefix)
		}
	default:
		return bad("registry", "%q is not file, etcd or kube", r.Backend)
	}
	switch {
	case r.TTL < minTTL || r.TTL > maxTTL:
		return bad("registry-ttl", "%v is out of range %v..%v", r.TTL, minTTL, maxTTL)
	case r.TTL%time.Second != 0:
		return bad("registry-ttl", "%v is not a whole number of seconds (leases count seconds)", r.TTL)
	}
	return nil
}

// dnsLabelRE is one label of an RFC 1123 DNS name, as Kubernetes requires
// of node names.
var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

func checkNodeName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("%d characters is longer than 253", len(name))
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) > 63 || !dnsLabelRE.MatchString(label) {
			return fmt.Errorf("%q is not a DNS name (lowercase letters, digits, '-' and '.', as Kubernetes node names)", name)
		}
	}
	return nil
}

func checkUnderlay(s string) error {
	if s == "" {
		return nil // the default route's interface
	}
	if _, err := netip.ParsePrefix(s); err == nil {
		return fmt.Errorf("%s: give an interface name or an IPv4 address, without a mask", s)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		switch {
		case !a.Is4():
			return fmt.Errorf("%s is not IPv4 (weft's underlay is IPv4)", s)
		case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return fmt.Errorf("%s is not a unicast address", s)
		}
		return nil
	}
	if len(s) > 15 || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n") {
		return fmt.Errorf("%q is neither an IPv4 address nor an interface name", s)
	}
	return nil
}

func parseCluster(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as %s", s, defaultClusterCIDR)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s is not IPv4 (weft's pod network is IPv4)", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s is not a network address (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

func checkAbsDir(dir string) error {
	if dir == "" {
		return errors.New("empty")
	}
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("%q is not an absolute path", dir)
	}
	return nil
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number 0..65535", addr, port)
	}
	if strings.ContainsAny(host, " \t/") {
		return fmt.Errorf("%q: bad host %q", addr, host)
	}
	return nil
}

func checkEndpoint(ep string) error {
	if !strings.Contains(ep, "://") {
		if err := checkHostPort(ep); err != nil {
			return fmt.Errorf("%q is neither a URL (http://host:port) nor host:port", ep)
		}
		return nil
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL with a host", ep)
	}
	return nil
}

// ClusterPrefix returns ClusterCIDR parsed; valid after Validate.
func (c Config) ClusterPrefix() netip.Prefix {
	p, _ := netip.ParsePrefix(c.ClusterCIDR)
	return p
}

// ServicePrefix returns ServiceCIDR parsed; valid after Validate.
func (c Config) ServicePrefix() netip.Prefix {
	p, _ := netip.ParsePrefix(c.ServiceCIDR)
	return p
}

// RxWorkers is Workers with 0 resolved to the number of CPUs.
func (c Config) RxWorkers() int {
	if c.Workers == 0 {
		return min(runtime.NumCPU(), maxWorkers)
	}
	return c.Workers
}

// UnderlayAddr returns Underlay as an address when it is one (as opposed
// to an interface name or "").
func (c Config) UnderlayAddr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(c.Underlay)
	return a, err == nil
}

// SlogLevel returns LogLevel as a slog.Level.
func (c Config) SlogLevel() slog.Level {
	switch strings.ToLower(c.LogLevel) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// NewLogger returns a logger writing to w at LogLevel in LogFormat.
func (c Config) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if strings.ToLower(c.LogFormat) == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// flagSpec is one weftd flag; the flag set and the usage text are both
// built from flagSpecs so that they cannot drift apart.
type flagSpec struct {
	name string
	arg  string // argument placeholder; "" for switches
	yaml string // the key in the config file; "" when there is none
	// def is the default as the usage shows it, when it is not simply
	// the flag's value in DefaultConfig.
	def  string
	help string
	bind func(c *Config, file *string) flag.Value
}

var flagSpecs = []flagSpec{
	{"config", "FILE", "", "none", "YAML configuration file; flags given on the command line win over it",
		func(_ *Config, file *string) flag.Value { return (*stringValue)(file) }},
	{"node-name", "NAME", "node_name", "the host name, lowercased", "this node's name in the cluster registry; also seeds its router MAC",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.NodeName) }},
	{"underlay", "IFACE|IPv4", "underlay", "the interface of the default route", "interface or address that carries VXLAN to the other nodes",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.Underlay) }},
	{"cluster-cidr", "CIDR", "cluster_cidr", "", "IPv4 network every node's pod subnet is cut from",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.ClusterCIDR) }},
	{"service-cidr", "CIDR", "service_cidr", "", "IPv4 network of the Services' cluster IPs; routed into weft on every node",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.ServiceCIDR) }},
	{"node-mask", "BITS", "node_mask", "", fmt.Sprintf("prefix length of each node's pod subnet: longer than the cluster's, at most %d", maxNodeMask),
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.NodeMask) }},
	{"vni", "N", "vni", "", fmt.Sprintf("VXLAN network identifier, 1..%d; the same on every node", maxVNI),
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.VNI) }},
	{"port", "PORT", "port", "", "VXLAN UDP port; the same on every node (and on kernel VXLAN peers)",
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.Port) }},
	{"mtu", "BYTES", "mtu", "0 = the underlay MTU less 50", fmt.Sprintf("pod MTU, %d..%d", minMTU, maxMTU),
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.MTU) }},
	{"registry", "file|etcd|kube", "registry.backend", "", "where node leases live: a directory (nodes of one machine), etcd (many machines), or kube: the Kubernetes API (subnets from the Nodes' spec.podCIDR; Services, policies and Pods from the cluster)",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.Registry.Backend) }},
	{"registry-dir", "DIR", "registry.dir", "<state-dir>/registry", "file backend: the shared directory; nodes using the same one see each other",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.Registry.Dir) }},
	{"etcd-endpoints", "URL,...", "registry.endpoints", "none", "etcd backend: comma-separated client URLs, e.g. http://10.0.0.1:2379",
		func(c *Config, _ *string) flag.Value { return (*listValue)(&c.Registry.Endpoints) }},
	{"registry-prefix", "PREFIX", "registry.prefix", "", "etcd backend: key prefix of weft's keys",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.Registry.Prefix) }},
	{"kubeconfig", "FILE", "registry.kubeconfig", "the in-cluster configuration", "kube backend: kubeconfig of the API server and credentials",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.Registry.Kubeconfig) }},
	{"registry-ttl", "DURATION", "registry.ttl", "", fmt.Sprintf("node lease time, %v..%v in whole seconds: a node silent this long leaves every peer table", minTTL, maxTTL),
		func(c *Config, _ *string) flag.Value { return (*durationValue)(&c.Registry.TTL) }},
	{"release-on-shutdown", "", "registry.release_on_shutdown", "", "give the subnet back on a clean stop (by default a restarted node keeps its subnet and pods)",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.Registry.ReleaseOnShutdown) }},
	{"state-dir", "DIR", "state_dir", "", "where pod address allocations and port records are kept across restarts",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.StateDir) }},
	{"socket", "PATH", "socket", "", "management API socket, root-only (weft --socket must match)",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.Socket) }},
	{"metrics-addr", "HOST:PORT", "metrics_addr", "", `Prometheus /metrics listen address; "off" disables`,
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.MetricsAddr) }},
	{"log-level", "LEVEL", "log_level", "", "debug, info, warn or error",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.LogLevel) }},
	{"log-format", "FORMAT", "log_format", "", "text or json",
		func(c *Config, _ *string) flag.Value { return (*stringValue)(&c.LogFormat) }},
	{"offload", "", "offload", "", "use kernel offloads (TAP TSO/checksum, UDP GSO/GRO) where the kernel has them; --offload=false turns them all off",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.Offload) }},
	{"tso", "", "tso", "", "with --offload: TCP segmentation offload on pod TAPs (64 KiB super-frames that weft splits for peers); --tso=false also turns USO off",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.TSO) }},
	{"uso", "", "uso", "", "with --offload: UDP segmentation, on pod TAPs (USO, Linux 6.2+) and on the underlay socket (UDP GSO)",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.USO) }},
	{"gro", "", "gro", "", "with --offload: UDP GRO on the underlay socket and coalescing of received segments into super-frames for pod TAPs",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.GRO) }},
	{"partial-csum", "", "partial_csum", "", "with --offload: leave the TCP/UDP checksums a pod leaves partial uncomputed for local pods and for weft peers that take them (advertised in the node's lease; VXLAN reserved bit, outer UDP checksum on the wire); kernel VXLAN peers and older weftds always get full checksums",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.PartialCsum) }},
	{"zerocopy", "", "zerocopy", "", "with --offload and UDP GSO: send pods' TSO traffic to peers with MSG_ZEROCOPY (each send waits for the kernel to release its pages; a socket whose path copies anyway, as a veth does, turns it off by itself); off by default",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.ZeroCopy) }},
	{"rx-spin", "DURATION", "rx_spin", "", fmt.Sprintf("with --offload and UDP GRO: for this long after a pod sent to a peer, the underlay readers are woken and retry instead of sleeping (polling that pod's TAP, yielding the CPU between tries), so the answer (echo reply, ACK) finds them awake: ping about 15 %% lower in weft sim; costs CPU while it spins; 0..%v, 0 (default) = never", maxRxSpin),
		func(c *Config, _ *string) flag.Value { return (*durationValue)(&c.RxSpin) }},
	{"workers", "N", "workers", "", fmt.Sprintf("underlay receive workers, 0..%d (0 = one per CPU): N sockets on the VXLAN port (SO_REUSEPORT) with a BPF program spreading datagrams by inner flow, one reader each; pod TAPs keep one worker each. On 2 CPUs 2 workers measured no faster than 1 (docs/BENCHMARKS.md)", maxWorkers),
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.Workers) }},
	{"tap-queues", "N", "tap_queues", "", fmt.Sprintf("queues per pod TAP, 1..%d (IFF_MULTI_QUEUE; needs --offload): the pod's stack spreads its flows over them and each queue gets its own worker. A TAP keeps the queue mode it was created with across restarts. On 2 CPUs 2 queues measured no faster than 1 (docs/BENCHMARKS.md)", netdev.MaxQueues),
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.TapQueues) }},
	{"netns-roots", "DIR,...", "netns_roots", "none", "directories whose entries are accepted as pod namespace paths besides /run/netns, /var/run/netns and /proc/PID/ns/net",
		func(c *Config, _ *string) flag.Value { return (*listValue)(&c.NetnsRoots) }},
	{"flood-rate", "N", "flood_rate", "", "broadcast, multicast and unknown-unicast frames per second each pod (and the host port) may have flooded to the others; the excess is dropped as flood_rate_limited",
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.FloodRate) }},
	{"conntrack-size", "N", "conntrack_size", "", "flows the connection tracking table holds (96 bytes each, allocated at start); a new service flow beyond it is dropped as conntrack_full",
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.ConntrackSize) }},
	{"fdb-size", "N", "fdb_size", "", fmt.Sprintf("MACs the switch's learning table (FDB) holds, 1..%d (24-96 bytes each, allocated at start); when full, a new MAC evicts the least recently seen one (counted as fdb.evicted, weft counters)", node.MaxFDBSize),
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.FDBSize) }},
	{"maglev-size", "N", "maglev_size", "", "Maglev table size per service frontend, a prime (16381 as Cilium; up to 131071): more slots spread more evenly and move fewer flows when backends change",
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.MaglevSize) }},
	{"flood-burst", "N", "flood_burst", "", "frames a port may flood back to back before --flood-rate applies",
		func(c *Config, _ *string) flag.Value { return (*intValue)(&c.FloodBurst) }},
	{"egress", "", "egress.enabled", "", "route pod traffic for addresses outside the cluster to the node's own stack, and keep weftd's nftables table (ip weft: masquerade, hostPorts); --egress=false: pods reach only the cluster",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.Egress.Enabled) }},
	{"masquerade", "", "egress.masquerade", "", "give pod traffic leaving the node the node's address (masquerade random,fully-random)",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.Egress.Masquerade) }},
	{"non-masquerade-cidrs", "CIDR,...", "egress.non_masquerade_cidrs", "the cluster CIDR", "destinations pods reach with their own address, as ip-masq-agent's nonMasqueradeCIDRs",
		func(c *Config, _ *string) flag.Value { return (*listValue)(&c.Egress.NonMasqueradeCIDRs) }},
	{"masquerade-link-local", "", "egress.masquerade_link_local", "", "masquerade traffic to 169.254.0.0/16 too (not masqueraded by default)",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.Egress.MasqueradeLinkLocal) }},
	{"keep-ip-forward", "", "egress.keep_ip_forward", "", "never turn on net.ipv4.ip_forward (weftd turns it on in its own network namespace by default); start fails if it is off",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.Egress.KeepIPForward) }},
	{"version", "", "", "", "print the version and exit",
		func(c *Config, _ *string) flag.Value { return (*boolValue)(&c.ShowVersion) }},
}

func newFlagSet(c *Config, file *string) *flag.FlagSet {
	fs := flag.NewFlagSet("weftd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, s := range flagSpecs {
		fs.Var(s.bind(c, file), s.name, s.help)
	}
	return fs
}

// ConfigUsage is weftd's --help text.
func ConfigUsage() string {
	var b strings.Builder
	b.WriteString(`Usage: weftd [flags]

weftd runs one weft node: the pod network's switch and router for the pods of
this machine, VXLAN to the other nodes, pod address management, and the
management API that the weft CLI talks to.

Settings come from the built-in defaults, then the YAML file given by --config,
then the flags given, each overriding the one before. The YAML key of each
flag is shown in brackets; a dot means nesting (registry.ttl is ttl: under
registry:). Unknown keys in the file are an error.

Flags:
`)
	def := DefaultConfig()
	defaults := newFlagSet(&def, new(string))
	for _, s := range flagSpecs {
		line := "  --" + s.name
		if s.arg != "" {
			line += " " + s.arg
		}
		if s.yaml != "" {
			line += "  [" + s.yaml + "]"
		}
		d := s.def
		if d == "" && s.arg != "" {
			d = defaults.Lookup(s.name).Value.String()
		}
		if d == "" && s.arg == "" && s.yaml != "" {
			d = defaults.Lookup(s.name).Value.String() // a switch: true or false
		}
		help := s.help
		if d != "" {
			help += " (default " + d + ")"
		}
		fmt.Fprintf(&b, "%s\n        %s\n", line, help)
	}
	b.WriteString(`
Example file (weftd --config /etc/weft/weftd.yaml):
  node_name: node-a
  underlay: eth1
  cluster_cidr: 10.244.0.0/16
  registry:
    backend: etcd
    endpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]
    ttl: 30s
  metrics_addr: 127.0.0.1:9470
  log_level: info

Exit status: 0 after a clean stop, 2 for a bad configuration, 1 for other failures.
`)
	return b.String()
}

// Flag values. Their errors name the value so that flagError can build
// "config: --vni: "x" is not a whole number".

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

type intValue int

func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	*v = intValue(n)
	return nil
}

type boolValue bool

func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }
func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*v = boolValue(b)
	return nil
}

type durationValue time.Duration

func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 30s or 1m", s)
	}
	*v = durationValue(d)
	return nil
}

// listValue is a comma-separated list; each use of the flag replaces it.
type listValue []string

func (v *listValue) String() string { return strings.Join(*v, ",") }
func (v *listValue) Set(s string) error {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	*v = out
	return nil
}

// isPrime reports whether n is prime (trial division; n is small).
func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
