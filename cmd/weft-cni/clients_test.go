package main

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
)

// The tests in this file run the plugin binary the way runtimes do: by
// exec, through libcni (what containerd's go-cni and CRI-O use) and
// through cnitool.

// conflist is a network config list with weft-cni as its one plugin.
func conflist(t *testing.T, version, name string, plugin map[string]any) []byte {
	t.Helper()
	p := map[string]any{"type": "weft-cni"}
	for k, v := range plugin {
		p[k] = v
	}
	b, err := json.Marshal(map[string]any{"cniVersion": version, "name": name, "plugins": []any{p}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLibcni(t *testing.T) {
	c := simCluster(t)
	n1 := c.Nodes[0]
	cl := weftdClient(t, n1.Socket)
	nsName, nsPath := newPodNetns(t)
	id := newContainerID(t, n1.Socket)
	// The shipped config: libcni picks 1.1.0 from its cniVersions.
	list, err := libcni.ConfListFromBytes(shippedConflist(t, n1.Socket, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.1.0" {
		t.Fatalf("libcni chose version %s, want 1.1.0", list.CNIVersion)
	}
	cninet := libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: nsPath, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "libcni-pod"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	info, err := cninet.GetVersionInfo(ctx, "weft-cni")
	if err != nil {
		t.Fatalf("VERSION: %v", err)
	}
	if !slices.Equal(info.SupportedVersions(), supportedVersions) {
		t.Errorf("VERSION says %v, want %v", info.SupportedVersions(), supportedVersions)
	}
	if err := cninet.GetStatusNetworkList(ctx, list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	res, err := cninet.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r.PrintTo(&out)
	t.Logf("libcni ADD result:\n%s", out.String())
	p, ok := findPort(t, cl, id)
	if !ok {
		t.Fatalf("weftd has no port for %s", id)
	}
	if p.PodNamespace != "default" || p.PodName != "libcni-pod" {
		t.Errorf("weftd shows %s/%s, want default/libcni-pod", p.PodNamespace, p.PodName)
	}
	checkAgainstPort(t, r, p, nsPath, "1.1.0")
	if err := cninet.CheckNetworkList(ctx, list, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	ping(t, nsName, c.Nodes[0].Pods[0].IP().String())
	ping(t, nsName, c.Nodes[1].Pods[0].IP().String())

	valid := []types.GCAttachment{{ContainerID: id, IfName: "eth0"}}
	for _, sp := range n1.Pods {
		valid = append(valid, types.GCAttachment{ContainerID: sp.ID, IfName: "eth0"})
	}
	if err := cninet.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Errorf("GC: %v", err)
	}
	if _, ok := findPort(t, cl, id); !ok {
		t.Errorf("GC detached %s although it was listed as valid", id)
	}
	for i := range 2 {
		if err := cninet.DelNetworkList(ctx, list, rt); err != nil {
			t.Errorf("DEL #%d: %v", i+1, err)
		}
	}
	if _, ok := findPort(t, cl, id); ok {
		t.Errorf("weftd still has %s after DEL", id)
	}
}

// TestBinaryErrors: what skel does before our code runs (version
// negotiation, the about text) and that errors leave the binary as CNI
// error JSON with a non-zero exit.
func TestBinaryErrors(t *testing.T) {
	bin := filepath.Join(pluginDir, "weft-cni")
	missing := filepath.Join(t.TempDir(), "weftd.sock")
	base := []string{"CNI_CONTAINERID=wcnbin", "CNI_NETNS=/var/run/netns/wcn-none", "CNI_IFNAME=eth0", "CNI_PATH=" + pluginDir}
	tests := []struct {
		name   string
		env    []string
		stdin  string
		code   uint // 0: success
		stdout []string
		stderr []string
	}{
		{name: "about", stderr: []string{"weft-cni", "CNI protocol versions supported: 0.4.0, 1.0.0, 1.1.0"}},
		{name: "version", env: []string{"CNI_COMMAND=VERSION"},
			stdout: []string{`"supportedVersions":["0.4.0","1.0.0","1.1.0"]`}},
		{name: "old version", env: append([]string{"CNI_COMMAND=ADD"}, base...),
			stdin: `{"cniVersion":"0.3.1","name":"weft","type":"weft-cni"}`, code: types.ErrIncompatibleCNIVersion},
		{name: "GC needs 1.1.0", env: []string{"CNI_COMMAND=GC", "CNI_PATH=" + pluginDir},
			stdin: `{"cniVersion":"1.0.0","name":"weft","type":"weft-cni"}`, code: types.ErrIncompatibleCNIVersion},
		{name: "bad config", env: append([]string{"CNI_COMMAND=ADD"}, base...),
			stdin: `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"weftd.sock"}`,
			code:  types.ErrInvalidNetworkConfig, stdout: []string{"socket"}},
		{name: "weftd down", env: append([]string{"CNI_COMMAND=ADD"}, base...),
			stdin: `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"` + missing + `"}`,
			code:  types.ErrTryAgainLater, stdout: []string{"weftd is not running on " + missing}},
		{name: "status weftd down", env: []string{"CNI_COMMAND=STATUS", "CNI_PATH=" + pluginDir},
			stdin: `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","socket":"` + missing + `"}`,
			code:  types.ErrLimitedConnectivity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tt.env...)
			cmd.Stdin = strings.NewReader(tt.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if tt.code == 0 && err != nil {
				t.Fatalf("%v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
			}
			if tt.code != 0 {
				if err == nil {
					t.Fatalf("exit 0, want an error with code %d; stdout: %s", tt.code, stdout.String())
				}
				var e types.Error
				if jerr := json.Unmarshal(stdout.Bytes(), &e); jerr != nil || e.Code != tt.code || e.Msg == "" {
					t.Errorf("stdout %q (%v): want a CNI error with code %d", stdout.String(), jerr, tt.code)
				}
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout %q lacks %q", stdout.String(), s)
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr %q lacks %q", stderr.String(), s)
				}
			}
		})
	}
}

// cnitoolVersion is the cnitool the tests expect, from the cni module
// weft-cni is built on.
const cnitoolVersion = "v1.3.1"

// cnitool finds the cnitool binary: $WEFT_CNITOOL, else PATH. Missing, the
// test is skipped, except under CI where it fails.
func cnitool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("WEFT_CNITOOL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("WEFT_CNITOOL: %v", err)
		}
		return p
	}
	if p, err := exec.LookPath("cnitool"); err == nil {
		return p
	}
	msg := "cnitool not found in $WEFT_CNITOOL or PATH; install it with " +
		"`GOBIN=/usr/local/bin go install github.com/containernetworking/cni/cnitool@" + cnitoolVersion + "`"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestCnitool: cnitool add, check, status, del and del again on a pod
// namespace attached to a sim node; the pod pings the sim's pods in
// between.
func TestCnitool(t *testing.T) {
	tool := cnitool(t)
	c := simCluster(t)
	n1 := c.Nodes[0]
	cl := weftdClient(t, n1.Socket)
	nsName, nsPath := newPodNetns(t)
	netName := testenv.UniqueName("wcn")
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "10-"+netName+".conflist"),
		conflist(t, "1.1.0", netName, map[string]any{"socket": n1.Socket, "pendingDir": t.TempDir()}), 0o644); err != nil {
		t.Fatal(err)
	}
	// cnitool names the container after the namespace path and keeps its
	// result cache in /var/lib/cni/results whatever one says.
	sum := sha512.Sum512([]byte(nsPath))
	id := fmt.Sprintf("cnitool-%x", sum[:10])
	cache := filepath.Join("/var/lib/cni/results", netName+"-"+id+"-eth0")
	_, statErr := os.Stat("/var/lib/cni")
	createdCNIDir := errors.Is(statErr, os.ErrNotExist)
	t.Cleanup(func() {
		os.Remove(cache)
		if createdCNIDir {
			os.Remove("/var/lib/cni/results")
			os.Remove("/var/lib/cni")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl.Detach(ctx, api.DetachRequest{PodID: id, IfName: "eth0"})
	})
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, tool, args...)
		cmd.Env = append(os.Environ(), "CNI_PATH="+pluginDir, "NETCONFPATH="+confDir,
			"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=cnitool-pod", "CNI_IFNAME=eth0")
		out, err := cmd.CombinedOutput()
		t.Logf("cnitool %s -> exit %v\n%s", strings.Join(args, " "), err, out)
		if err != nil {
			t.Fatalf("cnitool %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}

	out := run("add", netName, nsPath)
	res, err := current.NewResult([]byte(out[strings.Index(out, "{"):]))
	if err != nil {
		t.Fatalf("cnitool add printed no 1.1.0 result: %v", err)
	}
	r := res.(*current.Result)
	p, ok := findPort(t, cl, id)
	if !ok {
		t.Fatalf("weftd has no port for %s", id)
	}
	if p.PodName != "cnitool-pod" {
		t.Errorf("weftd shows pod name %q, want cnitool-pod", p.PodName)
	}
	checkAgainstPort(t, r, p, nsPath, "1.1.0")
	run("check", netName, nsPath)
	run("status", netName, nsPath)
	ping(t, nsName, c.Nodes[0].Pods[0].IP().String())
	ping(t, nsName, c.Nodes[1].Pods[0].IP().String())
	run("del", netName, nsPath)
	if _, ok := findPort(t, cl, id); ok {
		t.Errorf("weftd still has %s after cnitool del", id)
	}
	run("del", netName, nsPath)
	if _, err := os.Stat(cache); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cnitool's result cache %s left after del: %v", cache, err)
	}
}
