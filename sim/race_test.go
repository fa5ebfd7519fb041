package sim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDataPathRace runs weftd built with the race detector under real
// traffic: the connectivity matrix and bulk TCP both ways between nodes,
// with two receive workers and two-queue TAPs, so that the underlay
// workers drain TAPs while their port workers read them. The test fails if
// either weftd reports a data race. (The other tests run a plain weftd.)
func TestDataPathRace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds weftd with -race (about a minute)")
	}
	bin := filepath.Join(t.TempDir(), "weftd-race")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, "github.com/weftnet/weft/cmd/weftd").CombinedOutput(); err != nil {
		t.Fatalf("go build -race: %v\n%s", err, out)
	}
	c := newTestCluster(t, Options{ExtraArgs: []string{"--workers=2", "--tap-queues=2"}})
	c.Weftd = bin
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.Up(ctx, 2, 2); err != nil {
		t.Fatal(err)
	}
	r, err := RunMatrix(ctx, c, MatrixOptions{Helper: testHelper(t), Progress: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed() != 0 {
		t.Errorf("matrix under -race: %s", r.Summary())
	}
	a, b := c.Nodes[0].Pods[0], c.Nodes[1].Pods[0]
	for _, dir := range [][2]*Pod{{a, b}, {b, a}} {
		client, server := dir[0], dir[1]
		srv := Command(ctx, server.Netns, "iperf3", "-s", "-1", "-B", server.IP().String(), "-p", "5299")
		if err := srv.Start(); err != nil {
			t.Fatalf("iperf3 server: %v", err)
		}
		time.Sleep(300 * time.Millisecond) // the server binds asynchronously
		out, err := Command(ctx, client.Netns, "iperf3", "-c", server.IP().String(), "-p", "5299", "-t", "2", "-P", "4").CombinedOutput()
		srv.Wait()
		if err != nil {
			t.Errorf("iperf3 %s -> %s: %v\n%s", client.Name, server.Name, err, out)
		}
	}
	for _, n := range c.Nodes {
		log, err := os.ReadFile(n.Log)
		if err != nil {
			t.Fatal(err)
		}
		if i := strings.Index(string(log), "WARNING: DATA RACE"); i >= 0 {
			t.Errorf("weftd on %s reported a data race:\n%s", n.Name, string(log[i:min(len(log), i+4000)]))
		}
	}
}
