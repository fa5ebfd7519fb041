package sim

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/registry/etcd/etcdtest"
)

// testHelper runs the helper subcommands through this test binary.
func testHelper(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe}
}

func runMatrix(t *testing.T, c *Cluster) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunMatrix(ctx, c, MatrixOptions{Helper: testHelper(t), Progress: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r.WriteTo(&b)
	t.Logf("matrix:\n%s", b.String())
	// Every caller wants every cell and check to pass; one that forgot to
	// say so (TestEgressAndHostPortMatrix counted checks only) must not
	// pass with failures.
	if r.Failed() > 0 {
		t.Errorf("matrix: %d failed (above)", r.Failed())
	}
	return r
}

func TestMatrix(t *testing.T) {
	tests := []struct {
		name        string
		registry    string
		nodes, pods int
		offload     bool // weftd's --offload (TAP TSO/USO, UDP GSO/GRO); the matrix must pass both ways
		workers     int  // weftd's --workers (receiving sockets); 0 leaves the default (1)
		queues      int  // weftd's --tap-queues; 0 leaves the default (1)
	}{
		{"file 3x2", "file", 3, 2, true, 0, 0},
		{"etcd 2x2 workers 2 tap-queues 2", "etcd", 2, 2, true, 2, 2},
		{"file 2x2 offload off workers 2", "file", 2, 2, false, 2, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.registry == "etcd" {
				etcdtest.Require(t)
			}
			opts := Options{Registry: tc.registry}
			if !tc.offload {
				opts.ExtraArgs = append(opts.ExtraArgs, "--offload=false")
			}
			if tc.workers > 0 {
				opts.ExtraArgs = append(opts.ExtraArgs, fmt.Sprintf("--workers=%d", tc.workers))
			}
			if tc.queues > 0 {
				opts.ExtraArgs = append(opts.ExtraArgs, fmt.Sprintf("--tap-queues=%d", tc.queues))
			}
			c := newTestCluster(t, opts)
			start := time.Now()
			if err := c.Up(context.Background(), tc.nodes, tc.pods); err != nil {
				t.Fatal(err)
			}
			t.Logf("up %dx%d in %s", tc.nodes, tc.pods, time.Since(start).Round(time.Millisecond))
			for _, n := range c.Nodes {
				st := nodeStatus(t, n)
				if st.Registry.Backend != tc.registry || st.Registry.State != api.RegistryOK {
					t.Errorf("node %s registry %+v, want %s and ok", n.Name, st.Registry, tc.registry)
				}
				if (st.Offload != "off") != tc.offload {
					t.Errorf("node %s offload %q, want offload %v", n.Name, st.Offload, tc.offload)
				}
				if want := max(1, tc.workers); st.RxWorkers != want {
					t.Errorf("node %s has %d receive workers, want %d", n.Name, st.RxWorkers, want)
				}
				if tc.offload {
					for _, p := range nodePorts(t, n) {
						if want := max(1, tc.queues); p.Queues != want {
							t.Errorf("node %s port %s has %d TAP queues, want %d", n.Name, p.TapName, p.Queues, want)
						}
					}
				}
			}
			r := runMatrix(t, c)
			endpoints := tc.nodes * (1 + tc.pods)
			if got, want := len(r.Cells), endpoints*(endpoints-1); got != want {
				t.Errorf("%d cells, want %d", got, want)
			}
			if r.Failed() != 0 || r.Passed() != len(r.Cells)+len(r.Checks) {
				t.Errorf("%s; want every cell and check to pass", r.Summary())
			}
		})
	}
}

func nodePorts(t *testing.T, n *Node) []api.Port {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl := api.NewClient(n.Socket)
	defer cl.Close()
	ps, err := cl.Ports(ctx)
	if err != nil {
		t.Fatalf("node %s ports: %v", n.Name, err)
	}
	return ps
}

func nodeStatus(t *testing.T, n *Node) api.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl := api.NewClient(n.Socket)
	defer cl.Close()
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatalf("node %s status: %v", n.Name, err)
	}
	return st
}
