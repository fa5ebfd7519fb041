package sim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
)

// weftdBin is built once per test binary by TestMain.
var weftdBin string

func TestMain(m *testing.M) {
	// RunMatrix re-executes this test binary as its helper (testHelper).
	if len(os.Args) > 1 && IsHelper(os.Args[1]) {
		os.Exit(HelperMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	dir, err := os.MkdirTemp("", "weft-sim-bin-")
	if err != nil {
		panic(err)
	}
	testenv.RecordPath(dir) // removed by the next run if this one is killed
	weftdBin = filepath.Join(dir, "weftd")
	out, err := exec.Command("go", "build", "-o", weftdBin, "github.com/weftnet/weft/cmd/weftd").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.RemoveAll(dir)
		panic("build weftd: " + err.Error())
	}
	if os.Getenv(crashedRunEnv) != "" {
		crashedRun()
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newTestCluster builds an empty cluster with a unique name whose Down runs
// at the end of the test, pass or fail.
func newTestCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	testenv.RequireRoot(t)
	if opts.Name == "" {
		opts.Name = testenv.UniqueName("wst")
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "sim")
	}
	opts.Weftd = weftdBin
	opts.DieWithCaller = true
	testenv.RecordPath(opts.Dir)
	if opts.Progress == nil {
		opts.Progress = func(format string, args ...any) { t.Logf(format, args...) }
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- %s log:\n%s", n.Name, tail(n.Log, 40))
			}
		}
		if err := c.Down(); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	return c
}

func ping(t *testing.T, netns string, dst string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := Command(ctx, netns, "ping", "-c", "2", "-i", "0.2", "-W", "2", dst).CombinedOutput()
	if err != nil {
		t.Errorf("ping %s from %s: %v\n%s", dst, netns, err, out)
	}
}

func TestHarnessTwoNodes(t *testing.T) {
	c := newTestCluster(t, Options{})
	ctx := context.Background()
	if err := c.Up(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	p1, p2 := c.Nodes[0].Pods[0], c.Nodes[1].Pods[0]
	ping(t, p1.Netns, p2.IP().String())
	ping(t, p2.Netns, p1.IP().String())
	ping(t, c.Nodes[0].Netns, p2.IP().String())

	// Each weftd runs with its share of the machine's CPUs.
	want := "GOMAXPROCS=" + strconv.Itoa(max(1, runtime.NumCPU()/2))
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		want = "GOMAXPROCS=" + os.Getenv("GOMAXPROCS")
	}
	for _, n := range c.Nodes {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", n.PID))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(strings.Split(string(env), "\x00"), want) {
			t.Errorf("node %s: weftd's environment lacks %s", n.Name, want)
		}
	}
}
