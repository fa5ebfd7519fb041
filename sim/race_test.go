package sim

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/childproc"
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
		bulkTCP(ctx, t, dir[0], dir[1])
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

// bulkTCP runs iperf3 (4 streams, 2 s) from client to a one-off iperf3
// server in server. It starts the client once the server listens (seen
// with ss in the server's namespace, not guessed with a sleep), and stops
// the server by PID if it has not ended 10 s after the client did (a
// client that never connected leaves a -1 server waiting forever).
func bulkTCP(ctx context.Context, t *testing.T, client, server *Pod) {
	t.Helper()
	const port = "5299"
	var srvOut bytes.Buffer
	srv := Command(ctx, server.Netns, "iperf3", "-s", "-1", "-B", server.IP().String(), "-p", port)
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	p, err := childproc.Start(srv) // dies with the test binary
	if err != nil {
		t.Fatalf("iperf3 server: %v", err)
	}
	defer func() {
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("iperf3 server in %s still running 10 s after the client ended; stopping pid %d", server.Name, p.Pid())
			srv.Process.Kill()
			p.Wait()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !tcpListening(ctx, server.Netns, port) {
		select {
		case <-p.Done():
			t.Fatalf("iperf3 server in %s exited before listening: %v\n%s", server.Name, p.Wait(), srvOut.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("iperf3 server in %s not listening on %s after 30 s", server.Name, port)
		}
	}
	out, err := Command(ctx, client.Netns, "iperf3", "-c", server.IP().String(), "-p", port, "-t", "2", "-P", "4").CombinedOutput()
	if err != nil {
		t.Errorf("iperf3 %s -> %s: %v\n%s", client.Name, server.Name, err, out)
		srv.Process.Kill() // it waits for a client that will not come
	}
}

// tcpListening reports whether a TCP socket listens on port in netns.
func tcpListening(ctx context.Context, netns, port string) bool {
	out, err := Command(ctx, netns, "ss", "-Hltn", "sport = :"+port).Output()
	return err == nil && len(bytes.TrimSpace(out)) > 0
}
