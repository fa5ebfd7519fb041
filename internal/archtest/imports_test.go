// Package archtest checks that imports between weft's packages go the way
// DESIGN.md draws them.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/weftnet/weft/"

// forbidden maps a package to the weft packages it must never import.
// switch, overlay and netdev are siblings over packet; nothing below cmd/
// imports cmd/; the data plane never imports the control plane.
var forbidden = map[string][]string{
	"packet":   {"switch", "overlay", "netdev", "node", "api", "sim", "bench", "ipam", "registry", "cmd"},
	"switch":   {"overlay", "netdev", "node", "api", "sim", "bench", "ipam", "registry", "cmd"},
	"overlay":  {"switch", "netdev", "node", "api", "sim", "bench", "ipam", "registry", "cmd"},
	"netdev":   {"switch", "overlay", "node", "api", "sim", "bench", "ipam", "registry", "cmd"},
	"ipam":     {"switch", "overlay", "netdev", "node", "api", "sim", "bench", "registry", "cmd"},
	"registry": {"switch", "overlay", "netdev", "node", "api", "sim", "bench", "cmd"},
	// node implements api.Service over api's wire types; api stays a leaf
	// (types, server, client) that never reaches into a running node.
	"node": {"sim", "bench", "cmd"},
	"api":  {"node", "switch", "overlay", "netdev", "ipam", "registry", "sim", "bench", "cmd"},
	"sim":  {"bench", "cmd"},
	// objects is the schema (k8s.io/api types and their decoding): a leaf
	// every consumer may import.
	"objects": {"packet", "switch", "overlay", "netdev", "node", "api", "sim", "bench", "ipam", "registry", "cmd"},
	"bench":   {"sim", "cmd"},
	// The switch's stage helpers are leaves under the switch: pure Go over
	// byte slices and integers, importing no weft package but packet (and
	// never the switch that uses them).
	"switch/maglev":    {"switch", "overlay", "netdev", "node", "api", "sim", "bench", "ipam", "registry", "objects", "cmd"},
	"switch/conntrack": {"switch", "overlay", "netdev", "node", "api", "sim", "bench", "ipam", "registry", "objects", "cmd"},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		from := top(f[0])
		bad, ok := forbidden[from]
		if sub, isSub := forbidden[strings.TrimPrefix(f[0], mod)]; isSub {
			from, bad, ok = strings.TrimPrefix(f[0], mod), sub, true
		}
		if !ok {
			continue
		}
		checked++
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			to := top(imp)
			for _, b := range bad {
				if to == b || strings.TrimPrefix(imp, mod) == b {
					t.Errorf("%s imports %s: DESIGN.md forbids %s -> %s", f[0], imp, from, to)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list returned no weft packages to check")
	}
}

// top returns the first path element below the module ("switch" for
// github.com/weftnet/weft/switch/fdb).
func top(p string) string {
	p = strings.TrimPrefix(p, mod)
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return p
}
