// Package archtest checks that imports between weft's packages go the way
// DESIGN.md draws them.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/weftnet/weft/"

// allowed maps each package (a top-level directory; cmd/* and internal/*
// one by one) to the weft packages it may import: DESIGN.md's arrows,
//
//	cmd/*    -> node, api, sim, bench
//	node     -> datapath, switch, overlay, netdev, ipam, registry
//	datapath -> switch, overlay, netdev, packet
//	switch, overlay, netdev -> packet (never each other)
//
// and what lies below them (imports go downward only). A package missing
// here fails the test: a new package takes its place in the table.
var allowed = map[string][]string{
	"packet":  {},
	"objects": {}, // the schema (k8s.io/api types and their decoding): a leaf
	"switch":  {"packet", "policy"},
	"overlay": {"packet"},
	"netdev":  {"packet"},
	"ipam":    {"packet"},
	// registry holds leases (packet's MAC) and will hold objects' kinds.
	"registry": {"packet", "ipam", "objects", "internal/childproc", "internal/testenv"},
	// registry/kube is the Kubernetes API as a backend (client-go): the
	// registry's interfaces over Nodes and the objects' kinds.
	"registry/kube": {"registry", "packet", "objects"},
	// api is a leaf of wire types, server and client that never reaches
	// into a running node.
	"api":      {"packet", "objects"},
	"datapath": {"switch", "overlay", "netdev", "packet"},
	// service compiles objects into the switch's ServiceSpecs: pure, no
	// devices, registry or node.
	"service": {"switch", "packet", "objects"},
	// node implements api.Service over api's wire types.
	// node sizes the switch's conntrack table (switch/conntrack.Config).
	"node": {"datapath", "switch", "switch/conntrack", "overlay", "netdev", "ipam", "registry", "api", "packet", "objects", "service", "policy", "nft"},
	// nft keeps weftd's own nftables table (egress, hostPort): a leaf that
	// node alone imports.
	"nft": {},
	// sim runs weftd as processes: it talks to them through api, never node.
	// A kube sim runs its weftds with deploy/'s RBAC (the embedded manifest).
	"sim": {"api", "netdev", "registry", "ipam", "packet", "objects", "policy", "internal/childproc", "internal/kubecp", "internal/procstat", "deploy"},
	// bench replays captures through datapath over fakes.
	"bench":          {"datapath", "switch", "overlay", "netdev", "packet", "internal/childproc", "internal/procstat", "bench/internal/outerframe"},
	"cmd/weftd":      {"node", "api", "registry", "registry/kube", "ipam", "netdev", "overlay", "packet", "objects"},
	"cmd/weft":       {"api", "sim", "policy", "packet", "objects", "internal/kubecp"},
	"cmd/weft-cni":   {"api", "netdev", "packet"},
	"cmd/weft-bench": {"bench", "packet"},
	// bench/scale (make bench-scale) runs weftd in a sim against a file
	// registry it fills through the registry's own API.
	"bench/scale": {"sim", "api", "registry", "ipam", "packet", "internal/testenv", "internal/procstat"},

	// Full outer VXLAN frames (pcap, AF_PACKET): bench's only, never weftd's.
	"bench/internal/outerframe": {"overlay", "packet"},

	// The switch's stage helpers are leaves under the switch: pure Go over
	// byte slices and integers, importing no weft package but packet (and
	// never the switch that uses them). An entry for a package below a
	// top-level one overrides the top-level entry.
	"switch/maglev":    {"packet"},
	"switch/conntrack": {"packet"},
	"internal/testenv": {},
	// childproc starts the daemons tests and the sim run, tied to their
	// starter by a parent-death signal (registry's etcdtest, sim, bench/e2e).
	"internal/childproc": {},
	"internal/archtest":  {},
	// procstat reads a process's CPU, start time and memory from /proc for
	// the benchmarks.
	"internal/procstat": {},
	// kubecp runs a real control plane (etcd, kube-apiserver,
	// kube-controller-manager) in a namespace: processes through childproc,
	// the namespace and its links through netdev. The sim and the commands
	// use it; kubetest is its testing layer.
	"internal/kubecp":   {"netdev", "internal/childproc", "internal/procstat"},
	"internal/kubetest": {"internal/kubecp", "internal/testenv"},
	// kubecluster brings up a cluster of real kubelets, containerd and
	// weftd processes around a kubecp control plane (make e2e-k8s):
	// namespaces and links through netdev, daemons through childproc; it
	// talks to weftd only as a process.
	"internal/kubecluster": {"netdev", "internal/childproc", "internal/kubecp", "internal/procstat"},
	// test/e2e-k8s/kcluster is make e2e-k8s's command over kubecluster.
	"test": {"internal/kubecluster", "netdev"},
	// deploy: the install files (embedded) and their test; imports nothing.
	"deploy": {},
	// frametest builds the inner frames of the VXLAN tests (overlay's,
	// bench's outer frames) with gopacket; only tests import it.
	"internal/frametest": {"packet"},
	// policy is the NetworkPolicy engine (and policy/policytest, its proof
	// harness): pure Go over the objects/ schema, no syscalls; the data path
	// and the control plane call into it, never the other way.
	"policy": {"objects"},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], mod) {
			continue
		}
		from := top(f[0])
		if _, sub := allowed[strings.TrimPrefix(f[0], mod)]; sub {
			from = strings.TrimPrefix(f[0], mod)
		}
		ok, known := allowed[from]
		if !known {
			t.Errorf("package %s (%s) is not in archtest's table: add it with the imports DESIGN.md allows it", f[0], from)
			continue
		}
		checked[from] = true
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			to := top(imp)
			if _, sub := allowed[strings.TrimPrefix(imp, mod)]; sub && from != to {
				to = strings.TrimPrefix(imp, mod) // a sub-package with its own entry
			}
			if to == from || strings.HasPrefix(to, from+"/") {
				continue
			}
			if !contains(ok, to) {
				t.Errorf("%s imports %s: DESIGN.md has no arrow %s -> %s", f[0], imp, from, to)
			}
		}
	}
	for p := range allowed {
		if !checked[p] && (!strings.Contains(p, "/") || strings.HasPrefix(p, "cmd/")) {
			t.Errorf("archtest's table names %s, which go list does not know: remove it", p)
		}
	}
}

// TestSiblingsApart: switch, overlay and netdev never import each other
// (the table says so; this keeps it from being loosened by accident).
func TestSiblingsApart(t *testing.T) {
	sib := []string{"switch", "overlay", "netdev"}
	for _, a := range sib {
		for _, b := range sib {
			if a != b && contains(allowed[a], b) {
				t.Errorf("archtest allows %s -> %s", a, b)
			}
		}
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// top returns the package's entry in the table: the first path element
// below the module ("switch" for github.com/weftnet/weft/switch/fdb), two
// for cmd/ and internal/ ("cmd/weftd").
func top(p string) string {
	p = strings.TrimPrefix(p, mod)
	parts := strings.SplitN(p, "/", 3)
	if len(parts) > 1 && (parts[0] == "cmd" || parts[0] == "internal") {
		return parts[0] + "/" + parts[1]
	}
	return parts[0]
}
