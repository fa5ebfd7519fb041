package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/sim"
)

// Built once per test binary by TestMain: weftd for the sim, and the
// plugin itself for the tests that run it as runtimes do (exec).
var (
	weftdBin  string
	pluginDir string // holds weft-cni: the CNI_PATH of the exec tests
	// ctdRoot is the root of the containerd the CRI tests start (one at a
	// time); its CRI mounts pod namespaces in ctdNetnsDir, which the sim's
	// weftds are told to accept (--netns-roots).
	ctdRoot string
)

func ctdNetnsDir() string {
	return filepath.Join(ctdRoot, "state", "io.containerd.grpc.v1.cri", "netns")
}

// The one sim cluster the root tests share (two nodes, one sim pod each),
// built on first use and torn down by TestMain.
var (
	clusterOnce sync.Once
	cluster     *sim.Cluster
	clusterErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wcn-bin-")
	if err != nil {
		panic(err)
	}
	testenv.RecordPath(dir) // removed by the next run if this one is killed
	weftdBin = filepath.Join(dir, "weftd")
	ctdRoot = filepath.Join(dir, "ctd")
	pluginDir = filepath.Join(dir, "cni")
	for _, b := range []struct{ out, pkg string }{
		{weftdBin, "github.com/weftnet/weft/cmd/weftd"},
		{filepath.Join(pluginDir, "weft-cni"), "github.com/weftnet/weft/cmd/weft-cni"},
	} {
		out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput()
		if err != nil {
			os.Stderr.Write(out)
			os.RemoveAll(dir)
			panic("build " + b.pkg + ": " + err.Error())
		}
	}
	code := m.Run()
	if cluster != nil {
		if err := cluster.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "sim down:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// simCluster returns the shared cluster, bringing it up on first use.
func simCluster(t *testing.T) *sim.Cluster {
	t.Helper()
	testenv.RequireRoot(t)
	clusterOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wcn-sim-")
		if err != nil {
			clusterErr = err
			return
		}
		testenv.RecordPath(dir)
		c, err := sim.New(sim.Options{Name: testenv.UniqueName("wcn"), Dir: dir, Weftd: weftdBin, DieWithCaller: true,
			ExtraArgs: []string{"--netns-roots=" + ctdNetnsDir()}})
		if err != nil {
			os.RemoveAll(dir)
			clusterErr = err
			return
		}
		cluster = c
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := c.Up(ctx, 2, 1); err != nil {
			clusterErr = fmt.Errorf("sim up: %w", err)
		}
	})
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range cluster.Nodes {
				b, _ := os.ReadFile(n.Log)
				t.Logf("--- %s log (last 3000 bytes):\n%s", n.Name, tailBytes(b, 3000))
			}
		}
	})
	return cluster
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// node1 is the sim node the tests attach their pods to.
func node1(t *testing.T) *sim.Node { return simCluster(t).Nodes[0] }

func weftdClient(t *testing.T, socket string) *api.Client {
	cl := api.NewClient(socket)
	t.Cleanup(cl.Close)
	return cl
}

// newPodNetns creates a namespace for a test pod; it is deleted at the end
// of the test.
func newPodNetns(t *testing.T) (name, path string) {
	t.Helper()
	name = testenv.UniqueName("wcnp")
	path, err := netdev.NewNetns(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netdev.DeleteNetns(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return name, path
}

// newContainerID returns a fresh container ID whose attachment (if the
// test leaves one) is detached from weftd at the end of the test.
func newContainerID(t *testing.T, socket string) string {
	t.Helper()
	id := testenv.UniqueName("wcnc")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := api.NewClient(socket).Detach(ctx, api.DetachRequest{PodID: id, IfName: "eth0"})
		if err != nil && !errors.Is(err, api.ErrNotFound) && !errors.Is(err, api.ErrNotRunning) {
			t.Errorf("cleanup: detach %s: %v", id, err)
		}
	})
	return id
}

// netConf is a network config for the plugin; extra fields are merged in.
func netConf(t *testing.T, version string, extra map[string]any) []byte {
	t.Helper()
	m := map[string]any{"cniVersion": version, "name": "weft", "type": "weft-cni"}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withPrevResult adds a result as prevResult to a config.
func withPrevResult(t *testing.T, conf []byte, r types.Result) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.PrintTo(&buf); err != nil {
		t.Fatal(err)
	}
	var prev map[string]any
	if err := json.Unmarshal(buf.Bytes(), &prev); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = prev
	b, _ := json.Marshal(m)
	return b
}

func cmdArgs(id, nsPath string, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: nsPath, IfName: "eth0", StdinData: conf,
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=wcn-ns;K8S_POD_NAME=wcn-pod;K8S_POD_UID=x"}
}

// The verbs run in-process through the CNI project's test helpers, which
// set the CNI environment and capture the result the plugin prints.

func doAdd(t *testing.T, a *skel.CmdArgs) (types.Result, error) {
	t.Helper()
	r, _, err := testutils.CmdAddWithArgs(a, func() error { return cmdAdd(a) })
	return r, err
}

func doCheck(a *skel.CmdArgs) error {
	return testutils.CmdCheckWithArgs(a, func() error { return cmdCheck(a) })
}

func doDel(a *skel.CmdArgs) error {
	return testutils.CmdDelWithArgs(a, func() error { return cmdDel(a) })
}

func doStatus(a *skel.CmdArgs) error {
	return testutils.CmdStatus(func() error { return cmdStatus(a) })
}

// mustAdd adds and returns the result as 1.1.0 (whatever the config's
// version) plus the raw result for prevResult.
func mustAdd(t *testing.T, a *skel.CmdArgs) (*current.Result, types.Result) {
	t.Helper()
	r, err := doAdd(t, a)
	if err != nil {
		t.Fatalf("ADD %s: %v", a.ContainerID, err)
	}
	cur, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatalf("ADD %s: convert result: %v", a.ContainerID, err)
	}
	return cur, r
}

// cniError asserts that err is a CNI error with code and a message
// containing every one of substrs.
func cniError(t *testing.T, err error, code uint, substrs ...string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v (%T), want a CNI error with code %d", err, err, code)
	}
	t.Logf("CNI error %d: %s", e.Code, e.Msg)
	if e.Code != code {
		t.Errorf("code %d (%s), want %d", e.Code, e.Msg, code)
	}
	for _, s := range substrs {
		if !strings.Contains(e.Msg, s) {
			t.Errorf("message %q does not mention %q", e.Msg, s)
		}
	}
}

func findPort(t *testing.T, cl *api.Client, id string) (api.Port, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ports, err := cl.Ports(ctx)
	if err != nil {
		t.Fatalf("ports: %v", err)
	}
	for _, p := range ports {
		if p.PodID == id {
			return p, true
		}
	}
	return api.Port{}, false
}

func ping(t *testing.T, netnsName, dst string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := sim.Command(ctx, netnsName, "ping", "-c", "2", "-i", "0.2", "-W", "3", dst).CombinedOutput()
	if err != nil {
		t.Errorf("ping %s from %s: %v\n%s", dst, netnsName, err, out)
		return
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.Contains(line, "packets transmitted") {
			t.Logf("ping %s from %s: %s", dst, netnsName, line)
		}
	}
}
