package kubecp

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
)

// TestOptionsRefused: options Start cannot work with are one clear error
// naming each problem, before anything is made.
func TestOptionsRefused(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want []string
	}{
		{"no netns or dir", Options{}, []string{`netns ""`, `dir ""`}},
		{"relative dir, long name", Options{Netns: strings.Repeat("n", 65), Dir: "rel"}, []string{"1-64 bytes", `dir "rel"`}},
		{"node mask", Options{Netns: "x", Dir: "/x", ClusterCIDR: netip.MustParsePrefix("10.0.0.0/24"), NodeCIDRMaskSize: 16}, []string{"node mask /16"}},
		{"service CIDR", Options{Netns: "x", Dir: "/x", ServiceCIDR: netip.MustParsePrefix("10.96.0.0/31")}, []string{"service CIDR 10.96.0.0/31"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(tc.opts, Binaries{})
			if err == nil {
				t.Fatal("Start succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestMissingBinaries: each missing binary is named, with how to build it.
func TestMissingBinaries(t *testing.T) {
	err := Binaries{Etcd: "/nonexistent/etcd", APIServer: "relative/kube-apiserver", ControllerManager: "/"}.Check(true)
	for _, want := range []string{"/nonexistent/etcd", "relative/kube-apiserver", "not an executable", "make tools"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check: %v, want it to mention %q", err, want)
		}
	}
}

// TestOwns: a process is the control plane's only if an argument names a
// path inside its Dir (a sibling directory with the same prefix is not).
func TestOwns(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want bool
	}{
		{"flag=path", []string{"--data-dir=" + dir + "/etcd", "60"}, true},
		{"path argument", []string{dir + "/x", "60"}, true},
		{"sibling prefix", []string{"--data-dir=" + dir + "-other/etcd", "60"}, false},
		{"dir itself", []string{dir, "60"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// `sh -c CMD ARGS...` puts ARGS into argv without sleep seeing them.
			cmd := exec.Command("sh", append([]string{"-c", "sleep 60"}, tc.args...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			// Until the child has exec'd, its command line is the test's.
			cmdline := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cmdline"
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if b, _ := os.ReadFile(cmdline); strings.HasPrefix(string(b), "sh\x00") {
					break
				}
			}
			if got := Owns(cmd.Process.Pid, dir); got != tc.want {
				t.Errorf("Owns(%v) = %v, want %v", tc.args, got, tc.want)
			}
		})
	}
	if Owns(os.Getpid(), "") {
		t.Error(`Owns(self, "") = true`)
	}
}

// TestDetachedStopFromRecord is the sim's life cycle: a detached control
// plane, encoded to JSON, is stopped by another ControlPlane value decoded
// from it (as `weft sim down` does in a later process): its components
// are killed by PID, its namespace and directory are gone.
func TestDetachedStopFromRecord(t *testing.T) {
	testenv.RequireRoot(t)
	bins := FindBinaries()
	if err := bins.Check(false); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	netns := testenv.UniqueName("kcp")
	dir := filepath.Join(t.TempDir(), "cp")
	testenv.RecordPath(dir)
	cp, err := Start(Options{Netns: netns, Dir: dir, Detach: true}, bins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Stop() })
	t.Logf("started: %s", cp.StartTimes())
	rec, err := json.Marshal(cp)
	if err != nil {
		t.Fatal(err)
	}
	var later ControlPlane
	if err := json.Unmarshal(rec, &later); err != nil {
		t.Fatal(err)
	}
	if len(later.Components) != 2 {
		t.Fatalf("decoded %d components, want etcd and kube-apiserver: %s", len(later.Components), rec)
	}
	// The decoded value reaches the API server through its kubeconfig.
	cs, err := later.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("get namespace default through the decoded control plane: %v", err)
	}
	if err := later.Stop(); err != nil {
		t.Fatalf("stop from the record: %v", err)
	}
	for _, c := range later.Components {
		if procstat.Alive(c.PID) {
			t.Errorf("%s (pid %d) still running", c.Name, c.PID)
		}
	}
	if _, err := os.Stat(netdev.NetnsPath(netns)); !os.IsNotExist(err) {
		t.Errorf("namespace %s: %v, want it gone", netns, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir %s: %v, want it gone", dir, err)
	}
}
