package main

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func hostNodeName(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Skipf("no host name: %v", err)
	}
	return strings.ToLower(h)
}

func TestDefaults(t *testing.T) {
	cfg, err := LoadConfig(nil)
	if err != nil {
		t.Fatalf("LoadConfig(nil) = %v", err)
	}
	want := Config{
		NodeName:    hostNodeName(t),
		ClusterCIDR: "10.244.0.0/16",
		ServiceCIDR: "10.96.0.0/12",
		NodeMask:    24,
		VNI:         1,
		Port:        4789,
		Registry: RegistryConfig{
			Backend: BackendFile,
			Dir:     "/var/lib/weft/registry",
			Prefix:  "/weft",
			TTL:     30 * time.Second,
		},
		StateDir:    "/var/lib/weft",
		Socket:      "/run/weft/weftd.sock",
		MetricsAddr: "127.0.0.1:9470",
		LogLevel:    "info",
		LogFormat:   "text",
		Offload:     true,
		TSO:         true,
		USO:         true,
		GRO:         true,
		PartialCsum: true,
		Workers:     1,
		TapQueues:   1,
		FloodRate:   1000,
		FloodBurst:  500,

		ConntrackSize: 262144,
		MaglevSize:    16381,
		FDBSize:       8192,
		Egress:        EgressConfig{Enabled: true, Masquerade: true},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestFullFile(t *testing.T) {
	cfg, err := LoadConfig([]string{"--config", "testdata/full.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		NodeName:    "node-a.example",
		Underlay:    "192.168.50.10",
		ClusterCIDR: "10.200.0.0/16",
		ServiceCIDR: "10.100.0.0/16",
		NodeMask:    26,
		VNI:         42,
		Port:        8472,
		MTU:         1400,
		Registry: RegistryConfig{
			Backend:           BackendEtcd,
			Endpoints:         []string{"http://10.0.0.1:2379", "10.0.0.2:2379"},
			Prefix:            "/weft-test",
			TTL:               time.Minute,
			ReleaseOnShutdown: true,
		},
		StateDir:    "/srv/weft",
		Socket:      "/srv/weft/api.sock",
		MetricsAddr: "0.0.0.0:9999",
		LogLevel:    "debug",
		LogFormat:   "json",
		Offload:     false,
		TSO:         true,
		USO:         true,
		GRO:         false,
		PartialCsum: false,
		ZeroCopy:    true,
		RxSpin:      300 * time.Microsecond,
		Workers:     4,
		TapQueues:   1, // the default: full.yaml sets no tap_queues
		FloodRate:   200,
		FloodBurst:  50,

		ConntrackSize: 1000000,
		MaglevSize:    65521,
		FDBSize:       100000,
		Egress: EgressConfig{
			Enabled: false, Masquerade: false, NonMasqueradeCIDRs: []string{"10.0.0.0/8", "192.168.0.0/16"},
			MasqueradeLinkLocal: true, KeepIPForward: true,
		},
		File: "testdata/full.yaml",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("full.yaml:\n got %+v\nwant %+v", cfg, want)
	}
	if got := cfg.ClusterPrefix(); got != netip.MustParsePrefix("10.200.0.0/16") {
		t.Errorf("ClusterPrefix() = %v", got)
	}
	if a, ok := cfg.UnderlayAddr(); !ok || a != netip.MustParseAddr("192.168.50.10") {
		t.Errorf("UnderlayAddr() = %v, %v", a, ok)
	}
}

// writeConfig writes a YAML file for one test and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "weftd.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPrecedence(t *testing.T) {
	file := writeConfig(t, `
node_name: from-file
vni: 5
port: 8472
offload: false
state_dir: /srv/file
registry:
  backend: etcd
  endpoints: [http://file:2379]
  ttl: 10s
`)
	tests := []struct {
		name  string
		args  []string
		check func(Config) string // "" when right
	}{
		{"file over defaults", []string{"--config", file}, func(c Config) string {
			if c.NodeName != "from-file" || c.VNI != 5 || c.Port != 8472 || c.Offload || c.Registry.TTL != 10*time.Second || c.MTU != 0 {
				return "file values not applied"
			}
			return ""
		}},
		{"flags over file, before --config", []string{"--vni", "9", "--config", file}, func(c Config) string {
			if c.VNI != 9 || c.Port != 8472 {
				return "want vni from the flag, port from the file"
			}
			return ""
		}},
		{"flags over file, after --config", []string{"--config", file, "--port", "4790", "--offload", "--etcd-endpoints", "http://a:2379, http://b:2379"}, func(c Config) string {
			if c.Port != 4790 || !c.Offload || !reflect.DeepEqual(c.Registry.Endpoints, []string{"http://a:2379", "http://b:2379"}) {
				return "want port, offload and endpoints from the flags"
			}
			return ""
		}},
		{"offload knobs one by one", []string{"--config", file, "--offload", "--tso=false", "--gro=false"}, func(c Config) string {
			if !c.Offload || c.TSO || !c.USO || c.GRO {
				return "want offload on, TSO and GRO off, USO left on"
			}
			return ""
		}},
		{"flag switches backend, registry dir follows state dir", []string{"--config", file, "--registry", "file", "--etcd-endpoints", ""}, func(c Config) string {
			if c.Registry.Backend != BackendFile || c.Registry.Dir != "/srv/file/registry" {
				return "want the file backend in <state_dir>/registry"
			}
			return ""
		}},
		{"kube backend, no registry dir", []string{"--registry", "kube", "--kubeconfig", "/etc/weft/kubeconfig"}, func(c Config) string {
			if c.Registry.Backend != BackendKube || c.Registry.Dir != "" || c.Registry.Kubeconfig != "/etc/weft/kubeconfig" {
				return "want the kube backend with the kubeconfig and no registry dir"
			}
			return ""
		}},
		{"explicit registry dir wins", []string{"--registry-dir", "/tmp/sim/registry", "--state-dir", "/tmp/sim/a"}, func(c Config) string {
			if c.Registry.Dir != "/tmp/sim/registry" || c.StateDir != "/tmp/sim/a" {
				return "want the given registry dir"
			}
			return ""
		}},
		{"flag sets a false bool over a true default", []string{"--offload=false", "--release-on-shutdown"}, func(c Config) string {
			if c.Offload || !c.Registry.ReleaseOnShutdown {
				return "want offload off, release on"
			}
			return ""
		}},
		{"metrics off", []string{"--metrics-addr", "off"}, func(c Config) string {
			if c.MetricsAddr != "" {
				return `want "off" turned into ""`
			}
			return ""
		}},
		{"log level case", []string{"--log-level", "DEBUG", "--log-format", "JSON"}, func(c Config) string {
			if c.LogLevel != "debug" || c.LogFormat != "json" || c.SlogLevel() != slog.LevelDebug {
				return "want lowercased log settings"
			}
			return ""
		}},
		{"empty file", []string{"--config", "testdata/empty.yaml"}, func(c Config) string {
			if c.VNI != 1 || c.File != "testdata/empty.yaml" {
				return "want defaults from an empty file"
			}
			return ""
		}},
		{"double dash and single dash", []string{"-vni=3", "--port=5000"}, func(c Config) string {
			if c.VNI != 3 || c.Port != 5000 {
				return "want both flag spellings"
			}
			return ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadConfig(tc.args)
			if err != nil {
				t.Fatalf("LoadConfig(%q) = %v", tc.args, err)
			}
			if msg := tc.check(cfg); msg != "" {
				t.Errorf("%s: got %+v", msg, cfg)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		// Flags themselves.
		{"unknown flag", []string{"--bogus"}, "config: unknown flag --bogus (see weftd --help)"},
		{"positional", []string{"run"}, `config: unexpected argument "run" (weftd takes only flags; see weftd --help)`},
		{"not a number", []string{"--vni", "x"}, `config: --vni: "x" is not a whole number`},
		{"not a bool", []string{"--offload=maybe"}, `config: --offload: "maybe" is not true or false`},
		{"not a duration", []string{"--registry-ttl", "soon"}, `config: --registry-ttl: "soon" is not a duration such as 30s or 1m`},
		{"missing value", []string{"--vni"}, "config: flag needs an argument: -vni"},

		// Validation, one field each.
		{"node name", []string{"--node-name", "Node_A"}, `config: node-name: "Node_A" is not a DNS name (lowercase letters, digits, '-' and '.', as Kubernetes node names)`},
		{"node name label", []string{"--node-name", "a..b"}, `config: node-name: "a..b" is not a DNS name (lowercase letters, digits, '-' and '.', as Kubernetes node names)`},
		{"node name long", []string{"--node-name", strings.Repeat("a", 254)}, "config: node-name: 254 characters is longer than 253"},
		{"underlay v6", []string{"--underlay", "fd00::1"}, "config: underlay: fd00::1 is not IPv4 (weft's underlay is IPv4)"},
		{"underlay cidr", []string{"--underlay", "10.0.0.1/24"}, "config: underlay: 10.0.0.1/24: give an interface name or an IPv4 address, without a mask"},
		{"underlay unspecified", []string{"--underlay", "0.0.0.0"}, "config: underlay: 0.0.0.0 is not a unicast address"},
		{"underlay name", []string{"--underlay", "a-very-long-interface"}, `config: underlay: "a-very-long-interface" is neither an IPv4 address nor an interface name`},
		{"cluster not cidr", []string{"--cluster-cidr", "10.244.0.0"}, `config: cluster-cidr: "10.244.0.0" is not a CIDR such as 10.244.0.0/16`},
		{"cluster not network", []string{"--cluster-cidr", "10.244.1.0/16"}, "config: cluster-cidr: 10.244.1.0/16 is not a network address (did you mean 10.244.0.0/16?)"},
		{"cluster v6", []string{"--cluster-cidr", "fd00::/48"}, "config: cluster-cidr: fd00::/48 is not IPv4 (weft's pod network is IPv4)"},
		{"node mask short", []string{"--node-mask", "16"}, "config: node-mask: /16 must be longer than the cluster-cidr's /16"},
		{"node mask long", []string{"--node-mask", "30"}, "config: node-mask: /30 leaves no room for pods (at most /29: network, gateway, host and broadcast take 4 addresses)"},
		{"vni zero", []string{"--vni", "0"}, "config: vni: 0 is out of range 1..16777215"},
		{"vni big", []string{"--vni", "16777216"}, "config: vni: 16777216 is out of range 1..16777215"},
		{"port", []string{"--port", "65536"}, "config: port: 65536 is out of range 1..65535"},
		{"mtu small", []string{"--mtu", "500"}, "config: mtu: 500 is out of range 576..9000 (or 0 for the underlay MTU less 50)"},
		{"mtu big", []string{"--mtu", "9001"}, "config: mtu: 9001 is out of range 576..9000 (or 0 for the underlay MTU less 50)"},
		{"backend", []string{"--registry", "consul"}, `config: registry: "consul" is not file, etcd or kube`},
		{"kube with dir", []string{"--registry", "kube", "--registry-dir", "/x"}, "config: registry-dir: set, but only the file backend uses it (the registry backend is kube)"},
		{"kube with endpoints", []string{"--registry", "kube", "--etcd-endpoints", "http://a:2379"}, "config: etcd-endpoints: set, but the registry backend is kube; drop the endpoints"},
		{"kube relative kubeconfig", []string{"--registry", "kube", "--kubeconfig", "kc"}, `config: kubeconfig: "kc" is not an absolute path`},
		{"kubeconfig without kube", []string{"--kubeconfig", "/etc/kc"}, "config: kubeconfig: set, but the registry backend is file; give --registry kube or drop it"},
		{"etcd without endpoints", []string{"--registry", "etcd"}, "config: etcd-endpoints: required with the etcd registry backend, e.g. http://10.0.0.1:2379"},
		{"etcd bad endpoint", []string{"--registry", "etcd", "--etcd-endpoints", "http://a:2379,ftp://b"}, `config: etcd-endpoints: "ftp://b" is not an http:// or https:// URL with a host`},
		{"etcd bare endpoint", []string{"--registry", "etcd", "--etcd-endpoints", "etcd-0"}, `config: etcd-endpoints: "etcd-0" is neither a URL (http://host:port) nor host:port`},
		{"etcd with dir", []string{"--registry", "etcd", "--etcd-endpoints", "a:2379", "--registry-dir", "/x"}, "config: registry-dir: set, but only the file backend uses it (the registry backend is etcd)"},
		{"etcd prefix", []string{"--registry", "etcd", "--etcd-endpoints", "a:2379", "--registry-prefix", "weft"}, `config: registry-prefix: "weft" must start with / and have no spaces`},
		{"file with endpoints", []string{"--etcd-endpoints", "http://a:2379"}, "config: etcd-endpoints: set, but the registry backend is file; give --registry etcd or drop the endpoints"},
		{"relative registry dir", []string{"--registry-dir", "reg"}, `config: registry-dir: "reg" is not an absolute path`},
		{"ttl small", []string{"--registry-ttl", "1s"}, "config: registry-ttl: 1s is out of range 2s..24h0m0s"},
		{"ttl fraction", []string{"--registry-ttl", "2500ms"}, "config: registry-ttl: 2.5s is not a whole number of seconds (leases count seconds)"},
		{"state dir", []string{"--state-dir", "var/lib/weft"}, `config: state-dir: "var/lib/weft" is not an absolute path`},
		{"socket relative", []string{"--socket", "weftd.sock"}, `config: socket: "weftd.sock" is not an absolute path`},
		{"socket long", []string{"--socket", "/" + strings.Repeat("s", 107)}, `config: socket: "/` + strings.Repeat("s", 107) + `" is longer than the 107 bytes a unix socket path can have`},
		{"metrics", []string{"--metrics-addr", "9470"}, `config: metrics-addr: "9470" is not host:port (or "off")`},
		{"metrics port", []string{"--metrics-addr", "localhost:http"}, `config: metrics-addr: "localhost:http": port "http" is not a number 0..65535 (or "off")`},
		{"log level", []string{"--log-level", "trace"}, `config: log-level: "trace" is not debug, info, warn or error`},
		{"log format", []string{"--log-format", "xml"}, `config: log-format: "xml" is not text or json`},
		{"workers", []string{"--workers", "-1"}, "config: workers: -1 is out of range 0..256 (0 = one per CPU)"},
		{"tap queues", []string{"--tap-queues", "0"}, "config: tap-queues: 0 is out of range 1..16"},
		{"flood rate", []string{"--flood-rate", "0"}, "config: flood-rate: 0 is out of range 1..10000000"},
		{"conntrack size", []string{"--conntrack-size", "8"}, "config: conntrack-size: 8 is out of range 16..16777216"},
		{"fdb size zero", []string{"--fdb-size", "0"}, "config: fdb-size: 0 is out of range 1..1048576"},
		{"fdb size big", []string{"--fdb-size", "1048577"}, "config: fdb-size: 1048577 is out of range 1..1048576"},
		{"fdb size junk", []string{"--fdb-size", "8k"}, `config: --fdb-size: "8k" is not a whole number`},
		{"maglev size not prime", []string{"--maglev-size", "16383"}, "config: maglev-size: 16383 is not a prime in 7..131071 (e.g. 16381, 65521)"},
		{"flood burst", []string{"--flood-burst", "-1"}, "config: flood-burst: -1 is out of range 1..10000000"},
		{"tap queues plain", []string{"--tap-queues", "2", "--offload=false"}, "config: tap-queues: 2 queues need --offload (multi-queue TAPs carry virtio headers)"},
		{"non-masquerade cidr", []string{"--non-masquerade-cidrs", "10.0.0.0/8,fd00::/64"}, `config: non-masquerade-cidrs: "fd00::/64" is not an IPv4 CIDR such as 10.244.0.0/16`},
		{"non-masquerade junk", []string{"--non-masquerade-cidrs", "nope"}, `config: non-masquerade-cidrs: "nope" is not an IPv4 CIDR such as 10.244.0.0/16`},

		// The file.
		{"missing file", []string{"--config", "testdata/nope.yaml"}, "config: --config: open testdata/nope.yaml: no such file or directory"},
		{"unknown key", []string{"--config", "testdata/unknown-key.yaml"}, `config: testdata/unknown-key.yaml: line 2: unknown key "clustercidr"`},
		{"unknown nested key", []string{"--config", "testdata/unknown-nested-key.yaml"}, `config: testdata/unknown-nested-key.yaml: line 3: unknown key "endpoint" under registry`},
		{"two documents", []string{"--config", "testdata/two-docs.yaml"}, "config: testdata/two-docs.yaml: more than one YAML document; weftd reads one"},
		{"ttl as number", []string{"--config", "testdata/bad-ttl.yaml"}, "config: testdata/bad-ttl.yaml: line 2: cannot unmarshal !!int `30` into time.Duration"},
		{"file value invalid", []string{"--config", "testdata/full.yaml", "--vni", "0"}, "config: vni: 0 is out of range 1..16777215"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(tc.args)
			if err == nil {
				t.Fatalf("LoadConfig(%q) succeeded, want %q", tc.args, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("LoadConfig(%q)\n  = %s\nwant %s", tc.args, err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}

func TestYAMLErrorIsOneLine(t *testing.T) {
	path := writeConfig(t, "vni: x\nport: y\nmtu: z\n")
	_, err := LoadConfig([]string{"--config", path})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "line 1:") || !strings.HasSuffix(err.Error(), "(and 2 more)") {
		t.Errorf("three bad values: err = %q, want one line naming line 1 and 2 more", err)
	}
	path = writeConfig(t, "vni: [1\n")
	_, err = LoadConfig([]string{"--config", path})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), "config: "+path+": ") {
		t.Errorf("syntax error: err = %q", err)
	}
}

func TestValidateBuiltConfig(t *testing.T) {
	// A Config built in code (as a test or the simulation might) validates
	// without LoadConfig, once the derived fields are set.
	c := DefaultConfig()
	c.NodeName = "node-a"
	c.Registry.Dir = "/tmp/weft-sim/registry"
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	c.Registry.Dir = ""
	if err := c.Validate(); err == nil || err.Error() != "config: registry-dir: empty" {
		t.Errorf("Validate() without registry dir = %v", err)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--vni", "0", "-help"}} {
		if _, err := LoadConfig(args); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("LoadConfig(%q) = %v, want flag.ErrHelp", args, err)
		}
	}
	usage := ConfigUsage()
	def := DefaultConfig()
	fs := newFlagSet(&def, new(string))
	for _, s := range flagSpecs {
		if !strings.Contains(usage, "\n  --"+s.name) {
			t.Errorf("usage lacks --%s", s.name)
		}
		if s.yaml != "" && !strings.Contains(usage, "--"+s.name+" "+s.arg+"  ["+s.yaml+"]") && !strings.Contains(usage, "--"+s.name+"  ["+s.yaml+"]") {
			t.Errorf("usage lacks the YAML key of --%s", s.name)
		}
		if fs.Lookup(s.name) == nil {
			t.Errorf("flag --%s not defined", s.name)
		}
	}
	for _, want := range []string{
		"(default 10.244.0.0/16)", "(default 24)", "(default 1)", "(default 4789)", "(default 30s)",
		"(default /var/lib/weft)", "(default /run/weft/weftd.sock)", "(default 127.0.0.1:9470)",
		"(default info)", "(default true)", "(default the host name, lowercased)", "(default <state-dir>/registry)",
		"Example file", "flags given, each overriding",
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

// TestYAMLKeysMatchFlags keeps the usage's [yaml.key] annotations honest:
// each must be a key the decoder accepts.
func TestYAMLKeysMatchFlags(t *testing.T) {
	for _, s := range flagSpecs {
		if s.yaml == "" {
			continue
		}
		text := s.yaml + ": "
		if parent, key, ok := strings.Cut(s.yaml, "."); ok {
			text = parent + ":\n  " + key + ": "
		}
		// A value of the right type is not needed to catch an unknown key:
		// KnownFields reports the key first. A null leaves the default.
		path := writeConfig(t, text+"null\n")
		_, err := LoadConfig([]string{"--config", path, "--node-name", "n"})
		if err != nil && strings.Contains(err.Error(), "unknown key") {
			t.Errorf("--%s documents YAML key %s, which the decoder rejects: %v", s.name, s.yaml, err)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	cfg, err := LoadConfig([]string{"--version", "--vni", "0", "--config", "testdata/nope.yaml"})
	if err != nil || !cfg.ShowVersion {
		t.Errorf("LoadConfig(--version ...) = %+v, %v; want ShowVersion and no error", cfg, err)
	}
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		level, format string
		wantDebug     bool
		wantPrefix    string
	}{
		{"debug", "json", true, "{"},
		{"info", "text", false, "time="},
		{"error", "text", false, ""},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		c := Config{LogLevel: tc.level, LogFormat: tc.format}
		log := c.NewLogger(&buf)
		log.Debug("d")
		log.Info("i")
		if got := log.Enabled(t.Context(), slog.LevelDebug); got != tc.wantDebug {
			t.Errorf("%s: debug enabled = %v", tc.level, got)
		}
		if tc.wantPrefix != "" && !strings.HasPrefix(buf.String(), tc.wantPrefix) {
			t.Errorf("%s/%s: output %q, want prefix %q", tc.level, tc.format, buf.String(), tc.wantPrefix)
		}
		if tc.wantPrefix == "" && buf.Len() != 0 {
			t.Errorf("%s: info logged: %q", tc.level, buf.String())
		}
	}
}

// FuzzConfigFile loads arbitrary files: the result is either a Config that
// validates or one "config: " error line, never a panic.
func FuzzConfigFile(f *testing.F) {
	for _, name := range []string{"full.yaml", "unknown-key.yaml", "unknown-nested-key.yaml", "two-docs.yaml", "bad-ttl.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("vni: x\nport: y\n"))
	f.Add([]byte("registry:\n"))
	f.Add([]byte("{node_name: [a, b]}"))
	path := filepath.Join(f.TempDir(), "weftd.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig([]string{"--config", path, "--node-name", "fuzz"})
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "config: ") || strings.Contains(msg, "\n") {
				t.Fatalf("error is not one config line: %q", msg)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("LoadConfig returned a Config that does not validate: %v", err)
		}
	})
}

// TestRxWorkers: --workers 0 means one receive worker per CPU.
func TestRxWorkers(t *testing.T) {
	for _, tc := range []struct{ workers, want int }{{1, 1}, {3, 3}, {0, min(runtime.NumCPU(), maxWorkers)}} {
		if got := (Config{Workers: tc.workers}).RxWorkers(); got != tc.want {
			t.Errorf("Workers %d: RxWorkers() = %d, want %d", tc.workers, got, tc.want)
		}
	}
}
