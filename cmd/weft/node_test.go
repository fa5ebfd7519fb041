package main

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
)

func (f *fakeService) AddForeignNode(_ context.Context, r api.ForeignNodeRequest) (api.ForeignNode, error) {
	return api.ForeignNode{Name: r.Name, Underlay: r.Underlay, VTEPMAC: r.VTEPMAC, Subnet: netip.MustParsePrefix("10.244.3.0/24"),
		VNI: 7, Port: 4789, MTU: 1450, Nodes: fakeSubnets}, f.err
}

func (f *fakeService) RemoveForeignNode(_ context.Context, name string) error { return f.err }

// TestNodeAddRemove: weft node add registers a foreign node through weftd
// and prints the commands it needs (issue 12 item 9); remove ends it.
func TestNodeAddRemove(t *testing.T) {
	sock := serve(t, &fakeService{})
	code, out, errOut := runCLI("--socket", sock, "node", "add", "--name", "k1", "--underlay", "192.168.50.20", "--vtep-mac", "02:6b:00:00:00:01", "--underlay-dev", "ens3")
	if code != exitOK {
		t.Fatalf("node add: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"ip link add weft.1 address 02:6b:00:00:00:01 type vxlan id 7 dstport 4789 local 192.168.50.20 dev ens3 nolearning",
		"ip addr add 10.244.3.0/32 dev weft.1",
		"ip route replace 10.244.1.0/24 via 10.244.1.0 dev weft.1 onlink",
		"bridge fdb append",
		"ethtool -K ens3 tx off",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("node add output lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{
		{"node", "add", "--name", "k1", "--underlay", "192.168.50.20"},
		{"node", "add", "--name", "k1", "--underlay", "nope", "--vtep-mac", "02:6b:00:00:00:01"},
		{"node"},
		{"node", "frob"},
	} {
		if code, _, _ := runCLI(append([]string{"--socket", sock}, args...)...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, out, errOut := runCLI("--socket", sock, "node", "remove", "--name", "k1"); code != exitOK || !strings.Contains(out, "removed node k1") {
		t.Errorf("node remove: exit %d, out %q, stderr %q", code, out, errOut)
	}
}
