package service

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

var testCIDRs = CIDRs{Service: DefaultServiceCIDR, Cluster: netip.MustParsePrefix("10.244.0.0/16")}

func decode(t testing.TB, yaml string) []objects.Object {
	t.Helper()
	objs, err := objects.Decode(strings.NewReader(yaml))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return objs
}

// pod is a published pod: what a node writes at attach.
func pod(name, node, ip, labels string, ports ...string) string {
	s := fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default, labels: {%s}}
spec:
  nodeName: %s
  containers:
  - name: main
    ports: [%s]
status: {podIP: %s}
`, name, labels, node, strings.Join(ports, ", "), ip)
	return s
}

const webService = `---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: named, port: 81, targetPort: alt}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 5353}
`

// backends renders a spec's backends compactly: addr:port plus flags
// r(eady) s(erving) t(erminating) l(ocal).
func backends(sp vswitch.ServiceSpec) string {
	var parts []string
	for _, b := range sp.Backends {
		f := ""
		for _, c := range []struct {
			on bool
			ch string
		}{{b.Ready, "r"}, {b.Serving, "s"}, {b.Terminating, "t"}, {b.Local, "l"}} {
			if c.on {
				f += c.ch
			}
		}
		parts = append(parts, fmt.Sprintf("%s:%d/%s", b.Addr, b.Port, f))
	}
	return strings.Join(parts, " ")
}

func specsByName(res Result) map[string]vswitch.ServiceSpec {
	m := map[string]vswitch.ServiceSpec{}
	for _, sp := range res.Specs {
		m[sp.Name] = sp
	}
	return m
}

func TestCompileSelector(t *testing.T) {
	objs := decode(t, webService+
		pod("web-a", "n1", "10.244.1.5", "app: web", "{name: alt, containerPort: 9090}")+
		pod("web-b", "n2", "10.244.2.5", "app: web, tier: x")+ // no port named alt
		pod("web-dead", "n3", "10.244.3.5", "app: web")+ // node without a lease
		pod("other", "n1", "10.244.1.6", "app: db")+
		pod("no-ip", "n1", "", "app: web"))
	res := Compile(Input{Node: "n1", CIDRs: testCIDRs, Objects: objs, LiveNode: func(n string) bool { return n != "n3" }})
	if len(res.Problems) > 0 {
		t.Fatalf("problems: %v", res.Problems)
	}
	got := specsByName(res)
	want := map[string]string{
		"default/web:http":    "10.244.1.5:8080/rsl 10.244.2.5:8080/rs 10.244.3.5:8080/",
		"default/web:named":   "10.244.1.5:9090/rsl",
		"default/web:dns":     "10.244.1.5:5353/rsl 10.244.2.5:5353/rs 10.244.3.5:5353/",
		"default/web:dns-tcp": "10.244.1.5:5353/rsl 10.244.2.5:5353/rs 10.244.3.5:5353/",
	}
	if len(got) != len(want) {
		t.Errorf("got %d frontends, want %d: %v", len(got), len(want), res.Specs)
	}
	for name, w := range want {
		if b := backends(got[name]); b != w {
			t.Errorf("%s backends = %q, want %q", name, b, w)
		}
	}
	if sp := got["default/web:dns"]; sp.Proto != packet.IPProtoUDP || sp.Port != 53 || sp.ClusterIP != netip.MustParseAddr("10.96.0.10") {
		t.Errorf("dns frontend = %v %d/%d, want 10.96.0.10 53/UDP", sp.ClusterIP, sp.Port, sp.Proto)
	}
	if sp := got["default/web:dns-tcp"]; sp.Proto != packet.IPProtoTCP {
		t.Errorf("dns-tcp proto %d, want TCP", sp.Proto)
	}
	s := res.Services[0]
	if s.Ready != 2 || s.Total != 3 || s.Source != "selector" || s.Skipped != "" {
		t.Errorf("summary = %+v, want 2 ready of 3 from the selector", s)
	}
}

func TestCompileEndpointSliceWins(t *testing.T) {
	objs := decode(t, `---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: api}
  sessionAffinity: ClientIP
  internalTrafficPolicy: Local
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: default, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: "", port: 8443, protocol: TCP}]
endpoints:
- addresses: [10.244.1.7]
  nodeName: n1
- addresses: [10.244.2.7]
  nodeName: n2
  conditions: {ready: false, serving: true, terminating: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-2, namespace: default, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: "", port: 8443, protocol: TCP}]
endpoints:
- addresses: [10.244.1.7]
  nodeName: n1
  conditions: {ready: false}
- addresses: [10.244.3.7]
`+pod("api-pod", "n1", "10.244.1.99", "app: api"))
	res := Compile(Input{Node: "n1", CIDRs: testCIDRs, Objects: objs})
	if len(res.Specs) != 1 {
		t.Fatalf("specs = %v, want one", res.Specs)
	}
	sp := res.Specs[0]
	// The selector's pod is not used: slices exist. 10.244.1.7 is in both
	// slices, merged (ready in one).
	if b, w := backends(sp), "10.244.1.7:8443/rsl 10.244.2.7:8443/st 10.244.3.7:8443/rs"; b != w {
		t.Errorf("backends = %q, want %q", b, w)
	}
	if sp.Name != "default/api:443" || sp.AffinityTimeout != 10800*time.Second || !sp.InternalLocal {
		t.Errorf("spec = %s affinity %v local %v; want default/api:443, 3h, internal Local", sp.Name, sp.AffinityTimeout, sp.InternalLocal)
	}
	if s := res.Services[0]; s.Source != "EndpointSlice" || s.Ready != 2 || s.Total != 3 {
		t.Errorf("summary = %+v", s)
	}
}

func TestCompileSkipsAndProblems(t *testing.T) {
	objs := decode(t, `---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, selector: {app: x}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: other-proxy, labels: {service.kubernetes.io/service-proxy-name: foo}}
spec: {clusterIP: 10.96.0.30, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: first, creationTimestamp: "2025-01-01T00:00:00Z"}
spec: {clusterIP: 10.96.0.40, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: a-dup, creationTimestamp: "2025-06-01T00:00:00Z"}
spec: {clusterIP: 10.96.0.40, ports: [{port: 81}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bad, labels: {kubernetes.io/service-name: first}}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [127.0.0.1]}]
`)
	res := Compile(Input{Node: "n1", CIDRs: testCIDRs, Objects: objs})
	skipped := map[string]string{}
	for _, s := range res.Services {
		skipped[s.Name] = s.Skipped
	}
	for name, want := range map[string]string{
		"headless": "headless", "other-proxy": "service-proxy-name foo", "ext": "ExternalName",
		"outside": "invalid: spec.clusterIP 10.0.0.1: outside the service CIDR", "a-dup": "invalid: spec.clusterIP 10.96.0.40: already taken by Service default/first",
		"first": "",
	} {
		if got := skipped[name]; !strings.HasPrefix(got, want) || (want == "" && got != "") {
			t.Errorf("%s skipped = %q, want prefix %q", name, got, want)
		}
	}
	if len(res.Specs) != 1 || res.Specs[0].Name != "default/first:80" || len(res.Specs[0].Backends) != 0 {
		t.Errorf("specs = %v, want only default/first:80 without backends (its slice is bad)", res.Specs)
	}
	if len(res.Problems) != 3 {
		t.Errorf("problems = %v, want 3 (outside, a-dup, the bad slice)", res.Problems)
	}
}

// TestCompiledSpecsPassTheSwitch: whatever Compile emits, SetServices
// takes (it refuses a whole set for one bad spec).
func TestCompiledSpecsPassTheSwitch(t *testing.T) {
	objs := decode(t, webService+pod("web-a", "n1", "10.244.1.5", "app: web", "{name: alt, containerPort: 9090}")+
		pod("web-a-twin", "n2", "10.244.1.5", "app: web"))
	res := Compile(Input{Node: "n1", CIDRs: testCIDRs, Objects: objs})
	checkSwitchTakes(t, res.Specs)
}

func checkSwitchTakes(t testing.TB, specs []vswitch.ServiceSpec) {
	t.Helper()
	sw, err := vswitch.New(vswitch.Config{
		RouterMAC: packet.MAC{2, 0, 0, 0, 0, 1}, Subnet: netip.MustParsePrefix("10.244.1.0/24"),
		Gateway: netip.MustParseAddr("10.244.1.1"), MTU: 1450, ServiceCIDR: testCIDRs.Service,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.SetServices(specs); err != nil {
		t.Errorf("switch refused compiled specs: %v", err)
	}
}

func TestCheckApply(t *testing.T) {
	stored := decode(t, `---
apiVersion: v1
kind: Service
metadata: {name: old}
spec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}
`)
	tests := []struct {
		name, yaml string
		err        string // substring; "" = accepted
	}{
		{"ok", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.51, ports: [{port: 80}]}}`, ""},
		{"replace keeps own ip", `{apiVersion: v1, kind: Service, metadata: {name: old}, spec: {clusterIP: 10.96.0.50, ports: [{port: 81}]}}`, ""},
		{"outside cidr", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.0.0.5, ports: [{port: 80}]}}`, "outside the service CIDR 10.96.0.0/12"},
		{"taken", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}}`, "already taken by Service default/old"},
		{"sctp", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.52, ports: [{port: 80, protocol: SCTP}]}}`, "SCTP: weft serves TCP and UDP only"},
		{"unknown proto", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.52, ports: [{port: 80, protocol: ICMP}]}}`, `protocol "ICMP"`},
		{"port 0", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.52, ports: [{port: 0}]}}`, "port 0 is out of range"},
		{"no ports", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.52}}`, "at least one port"},
		{"unnamed ports", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.52, ports: [{port: 80}, {port: 81}]}}`, "must name each"},
		{"ipv6", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: "fd00::1", ports: [{port: 80}]}}`, "not IPv4"},
		{"network addr", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.0, ports: [{port: 80}]}}`, "network or broadcast"},
		{"bad target name", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.52, ports: [{port: 80, targetPort: "Not_OK"}]}}`, "lowercase"},
		{"affinity timeout", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.52, sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}, ports: [{port: 80}]}}`, "timeoutSeconds 0"},
		{"headless ok", `{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: None, ports: [{port: 80}]}}`, ""},
		// The kubernetes Service's endpoints are the API servers' host
		// addresses, outside the cluster CIDR: served.
		{"slice outside cluster ok", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{port: 6443}], endpoints: [{addresses: [172.30.0.1]}]}`, ""},
		{"slice loopback", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{port: 80}], endpoints: [{addresses: [127.0.0.9]}]}`, "address 127.0.0.9 is not a unicast address"},
		{"slice link-local", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{port: 80}], endpoints: [{addresses: [169.254.169.254]}]}`, "address 169.254.169.254 is not a unicast address"},
		{"slice multicast", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{port: 80}], endpoints: [{addresses: [224.0.0.5]}]}`, "address 224.0.0.5 is not a unicast address"},
		{"slice broadcast", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{port: 80}], endpoints: [{addresses: [255.255.255.255]}]}`, "not a unicast address"},
		{"slice unspecified", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{port: 80}], endpoints: [{addresses: [0.0.0.0]}]}`, "not a unicast address"},
		{"slice in service CIDR", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{port: 80}], endpoints: [{addresses: [10.96.0.9]}]}`, "inside the service CIDR 10.96.0.0/12"},
		{"slice ipv6", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv6, endpoints: []}`, "IPv4 endpoints only"},
		{"slice unowned", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s}, addressType: IPv4, endpoints: []}`, "no kubernetes.io/service-name label"},
		{"slice port 0", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{port: 0}], endpoints: []}`, "port 0 is out of range"},
		{"slice no port", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s, labels: {kubernetes.io/service-name: old}}, addressType: IPv4, ports: [{name: x}], endpoints: []}`, "no port number"},
		{"two in one apply", "{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.60, ports: [{port: 80}]}}\n---\n{apiVersion: v1, kind: Service, metadata: {name: b}, spec: {clusterIP: 10.96.0.60, ports: [{port: 80}]}}", "already taken by Service default/a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := decode(t, tc.yaml)
			out, err := CheckApply(stored, in, testCIDRs)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err != "" && err == nil:
				t.Fatalf("accepted, want an error with %q", tc.err)
			case tc.err != "" && !strings.Contains(err.Error(), tc.err):
				t.Fatalf("error %q, want it to contain %q", err, tc.err)
			case err != nil && !errors.Is(err, ErrInvalid):
				t.Errorf("error %v does not wrap ErrInvalid", err)
			case err != nil && out != nil:
				t.Errorf("refused, yet returned objects to store")
			}
		})
	}
}

func TestCheckApplyAllocates(t *testing.T) {
	stored := decode(t, `{apiVersion: v1, kind: Service, metadata: {name: old}, spec: {clusterIP: 10.96.1.0, ports: [{port: 80}]}}`)
	in := decode(t, `---
{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}
---
{apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{port: 80, targetPort: 0}]}}
---
{apiVersion: v1, kind: Service, metadata: {name: old}, spec: {ports: [{port: 8080}]}}
---
{apiVersion: v1, kind: Service, metadata: {name: static}, spec: {clusterIP: 10.96.1.1, ports: [{port: 80}]}}
`)
	out, err := CheckApply(stored, in, testCIDRs)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range out {
		got[o.Service.Name] = o.Service.Spec.ClusterIP
	}
	// The upper band of 10.96.0.0/12 starts after the first 256 addresses;
	// static asked for .1.1 first, old keeps .1.0.
	want := map[string]string{"a": "10.96.1.2", "b": "10.96.1.3", "old": "10.96.1.0", "static": "10.96.1.1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s got cluster IP %q, want %s", k, got[k], v)
		}
	}
	b := out[1].Service.Spec.Ports[0]
	if b.Protocol != "TCP" || b.TargetPort.IntValue() != 80 {
		t.Errorf("defaults not filled in: %+v", b)
	}
	if in[0].Service.Spec.ClusterIP != "" {
		t.Error("CheckApply changed its input")
	}
}

func TestAllocateExhausted(t *testing.T) {
	cidr := netip.MustParsePrefix("10.96.0.0/29")
	taken := map[netip.Addr]string{}
	for i := 0; ; i++ {
		a, err := AllocateClusterIP(cidr, taken)
		if err != nil {
			if i != 6 {
				t.Errorf("exhausted after %d, want 6 (8 less network and broadcast)", i)
			}
			if !strings.Contains(err.Error(), "every cluster IP is taken") {
				t.Errorf("error %q", err)
			}
			return
		}
		if a == cidr.Addr() || a == lastAddr(cidr) || taken[a] != "" {
			t.Fatalf("allocated %s (taken: %v)", a, taken)
		}
		taken[a] = "x"
	}
}
