package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/sim"
)

// TestDamagedRegistryFiles is issue 12 items 3 and 4 on a running cluster
// (file registry, weftds in their namespaces):
//   - n1's node file truncated: a node added next must not get n1's /24
//     (it did, and two pods had one address), and n1 rewrites its file;
//   - n2's node file forged to claim n1's /24: n2 keeps advertising the
//     subnet it serves, and no node routes n1's /24 to n2.
func TestDamagedRegistryFiles(t *testing.T) {
	c := upCluster(t, sim.Options{Name: testenv.UniqueName("r1")}, 2, 1)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	cl1, cl2 := nodeClient(t, n1), nodeClient(t, n2)
	s1, s2 := status(t, cl1).Subnet, status(t, cl2).Subnet
	nodes := filepath.Join(c.Dir, "registry", "nodes")
	file1 := filepath.Join(nodes, c.Name+"-"+n1.Name+".json")

	body, err := os.ReadFile(file1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file1, body[:len(body)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n3, err := c.AddNode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl3 := nodeClient(t, n3)
	p3, err := c.AddPod(ctx, n3)
	if err != nil {
		t.Fatal(err)
	}
	if s3 := status(t, cl3).Subnet; s3 == s1 || s3 == s2 {
		t.Fatalf("n3 got %s while n1 serves %s and n2 %s", s3, s1, s2)
	}
	waitFor(t, 10*time.Second, "n1 rewrites its damaged node file", func() (bool, string) {
		b, err := os.ReadFile(file1)
		var l struct{ Subnet string }
		if err != nil || json.Unmarshal(b, &l) != nil {
			return false, fmt.Sprintf("%q %v", b, err)
		}
		return l.Subnet == s1.String(), string(b)
	})

	file2 := filepath.Join(nodes, c.Name+"-"+n2.Name+".json")
	body, err = os.ReadFile(file2)
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(body), `"`+s2.String()+`"`, `"`+s1.String()+`"`, 1)
	if forged == string(body) {
		t.Fatalf("n2's file does not name %s: %s", s2, body)
	}
	if err := os.WriteFile(file2, []byte(forged), 0o644); err != nil {
		t.Fatal(err)
	}
	// For a few renewals: n2 serves and advertises s2; nobody routes s1 to
	// n2; n2's file is its own again.
	deadline := time.Now().Add(testLeaseTTL)
	for time.Now().Before(deadline) {
		if st := status(t, cl2); st.Subnet != s2 {
			t.Fatalf("n2 now says it serves %s, not %s", st.Subnet, s2)
		}
		for _, cl := range []*api.Client{cl1, cl3} {
			for _, r := range routes(t, cl) {
				if r.Kind == api.RoutePeer && r.Prefix == s1 && r.Via == n2.Underlay {
					t.Fatalf("a node routes n1's %s to n2 (%s)", s1, n2.Underlay)
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "n3 routes s2 to n2", func() (bool, string) {
		rs := routes(t, cl3)
		return hasPeerRoute(rs, s2) && hasPeerRoute(rs, s1), fmt.Sprint(rs)
	})
	if b, _ := os.ReadFile(file2); !strings.Contains(string(b), `"`+s2.String()+`"`) {
		t.Errorf("n2's file still does not name its subnet %s: %s", s2, b)
	}
	if p3.IP() == n1.Pods[0].IP() {
		t.Errorf("n3's pod and n1's pod both have %s", p3.IP())
	}
	pingAll(t, p3.Netns, n1.Pods[0].IP())
	pingAll(t, p3.Netns, n2.Pods[0].IP())
}
