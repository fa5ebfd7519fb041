package main

import (
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/sim"
)

// TestCnitoolPortMappings: a network config declaring the portMappings
// capability, cnitool passing hostPorts in CAP_ARGS. ADD maps the hostPort
// (reached from another node's namespace on the node's address, with the
// client's address kept), CHECK verifies it, a second pod asking for the
// same hostPort fails with a clear error and leaves nothing behind, DEL
// removes the mapping.
func TestCnitoolPortMappings(t *testing.T) {
	tool := cnitool(t)
	c := simCluster(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	cl := weftdClient(t, n1.Socket)
	netName := testenv.UniqueName("egcn")
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "10-"+netName+".conflist"),
		conflist(t, "1.1.0", netName, map[string]any{"socket": n1.Socket, "pendingDir": t.TempDir(),
			"capabilities": map[string]bool{"portMappings": true}}), 0o644); err != nil {
		t.Fatal(err)
	}
	const hostPort = 18080
	capArgs := fmt.Sprintf(`{"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"}]}`, hostPort)
	cnitoolID := func(nsPath string) string {
		sum := sha512.Sum512([]byte(nsPath))
		return fmt.Sprintf("cnitool-%x", sum[:10])
	}
	_, statErr := os.Stat("/var/lib/cni")
	createdCNIDir := errors.Is(statErr, os.ErrNotExist)
	run := func(nsPath string, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, tool, append(args, netName, nsPath)...)
		cmd.Env = append(os.Environ(), "CNI_PATH="+pluginDir, "NETCONFPATH="+confDir, "CAP_ARGS="+capArgs, "CNI_IFNAME=eth0")
		out, err := cmd.CombinedOutput()
		t.Logf("cnitool %s -> exit %v\n%s", strings.Join(args, " "), err, out)
		return string(out), err
	}
	newPod := func() (string, string, string) {
		name, path := newPodNetns(t)
		id := cnitoolID(path)
		t.Cleanup(func() {
			os.Remove(filepath.Join("/var/lib/cni/results", netName+"-"+id+"-eth0"))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cl.Detach(ctx, api.DetachRequest{PodID: id, IfName: "eth0"})
		})
		return name, path, id
	}
	t.Cleanup(func() {
		if createdCNIDir {
			os.Remove("/var/lib/cni/results")
			os.Remove("/var/lib/cni")
		}
	})

	name, path, id := newPod()
	if _, err := run(path, "add"); err != nil {
		t.Fatalf("cnitool add: %v", err)
	}
	p, ok := findPort(t, cl, id)
	want := api.PortMapping{HostPort: hostPort, ContainerPort: 80, Protocol: "tcp"}
	if !ok || len(p.PortMappings) != 1 || p.PortMappings[0] != want {
		t.Fatalf("weftd's port for %s: %+v, want the mapping %s", id, p.PortMappings, want)
	}
	ln, err := sim.ListenIn(name, "tcp4", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go sim.ServeEcho(ln)
	front := netip.AddrPortFrom(n1.Underlay, hostPort)
	probe := func() (netip.Addr, error) { return hostPortProbe(n2.Netns, front) }
	if seen, err := probe(); err != nil || seen != n2.Underlay {
		t.Errorf("node n2 -> %s: the pod saw %s (err %v), want n2's own %s", front, seen, err, n2.Underlay)
	}
	if _, err := run(path, "check"); err != nil {
		t.Errorf("cnitool check: %v", err)
	}

	// A second pod asking for the same hostPort: a clear error, nothing left.
	_, path2, id2 := newPod()
	out, err := run(path2, "add")
	if err == nil || !strings.Contains(out, fmt.Sprintf("tcp %d on every node address is taken by %s", hostPort, id)) {
		t.Errorf("second add with hostPort %d: err %v, output %q; want a failure naming the holder %s", hostPort, err, out, id)
	}
	if _, ok := findPort(t, cl, id2); ok {
		t.Errorf("weftd has a port for %s after its ADD failed", id2)
	}
	run(path2, "del") // what a runtime does after a failed ADD

	if _, err := run(path, "del"); err != nil {
		t.Fatalf("cnitool del: %v", err)
	}
	if _, err := probe(); err == nil {
		t.Errorf("%s still reaches the pod after DEL", front)
	}
}
